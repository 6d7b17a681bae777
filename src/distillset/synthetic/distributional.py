"""D3's distributional synthetic set: per class `lpc` diagonal Gaussian priors and one decoder.

A prior is (mu, log sigma^2) in R^z, both initialised N(0, 1) (the authors' `randn(N, z, 2)`); a sample
is `decoder(mu + exp(log sigma^2 / 2) * eps)`, and the set's fixed view decodes mu. Priors are ordered by
class (lpc of class 0, then class 1, ...), labels are hard (the block's local labels while distilling).
The synthetic lr is learned as a raw scalar alpha; the student steps with `LeakyReLU(alpha) + 1e-4`.

Optimisers (the authors'): latents SGD(lr_latent, momentum 0.5), alpha SGD(lr_lr, momentum 0.5), the
decoder Adam(lr_decode, weight decay 1e-5). Checkpoint tensors: `latents`, `alpha`, `decoder.<name>`,
and `opt.<optimiser>.<param index>.<state>` for every optimiser's state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import D3Config
from ..inner.plan import InnerPlan
from .decoders import Decoder, DecoderSpec
from .latent_artifact import LatentSet, sample_latents, step_size
from .set import SyntheticSet


def optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    """An optimiser's per-parameter state as flat checkpoint tensors `opt.<name>.<index>.<key>`."""
    out = {}
    params = [p for g in opt.param_groups for p in g["params"]]
    for j, p in enumerate(params):
        for key, value in opt.state.get(p, {}).items():
            t = value if isinstance(value, Tensor) else torch.tensor(value)
            out[f"opt.{name}.{j}.{key}"] = t.detach().cpu().contiguous()
    return out


def load_optimizer_tensors(name: str, opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    prefix = f"opt.{name}."
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        j, state_key = key[len(prefix) :].split(".", 1)
        p = params[int(j)]
        opt.state[p][state_key] = value.to(p.device) if state_key != "step" else value.clone()


class LatentPriors(SyntheticSet):
    """`latents` (N x z x 2), one `decoder`, the raw lr `alpha`, hard `labels` (N)."""

    def __init__(
        self,
        latents: Tensor,
        decoder: Decoder,
        alpha: Tensor,
        labels: Tensor,
        dcfg: D3Config,
        lr_lr: float,
        momentum_lr: float,
    ):
        self.latents = latents.requires_grad_(True)
        self.decoder, self.alpha, self.labels = decoder, alpha.requires_grad_(True), labels
        self.parameters = {"latents": self.latents, "lr": self.alpha}
        self.optimizers = {
            "latents": torch.optim.SGD([self.latents], lr=dcfg.lr_latent, momentum=dcfg.momentum_latent),
            "lr": torch.optim.SGD([self.alpha], lr=lr_lr, momentum=momentum_lr),
            "decoder": torch.optim.Adam(
                decoder.parameters(), lr=dcfg.lr_decode, weight_decay=dcfg.decoder_weight_decay
            ),
        }

    @classmethod
    def initial(
        cls,
        dcfg: D3Config,
        spec: DecoderSpec,
        num_classes: int,
        alpha0: float,
        lr_lr: float,
        momentum_lr: float,
        gen: torch.Generator,
        device: torch.device,
    ) -> LatentPriors:
        """lpc priors per class with mu and log sigma^2 both N(0, 1), a decoder initialised from `gen`."""
        n = num_classes * dcfg.lpc
        latents = torch.randn(n, dcfg.z_dim, 2, generator=gen).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            decoder = Decoder(spec)
        labels = torch.arange(num_classes).repeat_interleave(dcfg.lpc).to(device)
        return cls(
            latents,
            decoder.to(device),
            torch.tensor(float(alpha0), device=device),
            labels,
            dcfg,
            lr_lr,
            momentum_lr,
        )

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    @property
    def lr(self) -> Tensor:
        return step_size(self.alpha)

    def decode(self) -> tuple[Tensor, Tensor]:
        """The fixed view: every prior's mean, decoded as one batch."""
        return self.decoder(self.latents[..., 0]), self.labels

    def samples(self, gen: torch.Generator, draws: int = 1) -> Tensor:
        """`draws` fresh samples of every prior (draws x N x C x H x W), each draw decoded as one batch."""
        return torch.stack([self.decoder(sample_latents(self.latents, gen)) for _ in range(draws)])

    def inner_batches(self, plan: InnerPlan, gen: torch.Generator) -> tuple[Tensor, Tensor, InnerPlan]:
        """A fresh sample of each inner step's priors, the step's batch decoded as one batch: the images
        of all steps side by side, and the plan re-indexed into them."""
        images, batches, offset = [], [], 0
        for idx in plan.batches:
            images.append(self.decoder(sample_latents(self.latents[idx], gen)))
            batches.append(torch.arange(offset, offset + idx.numel(), device=idx.device))
            offset += idx.numel()
        labels = torch.cat([self.labels[idx] for idx in plan.batches])
        return torch.cat(images), labels, InnerPlan(batches, list(plan.augment))

    def _state(self) -> dict[str, Tensor]:
        return {
            "latents": self.latents,
            "alpha": self.alpha,
            **{f"decoder.{k}": v for k, v in self.decoder.state_dict().items()},
        }

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        out = {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in self._state().items()}
        out[f"{prefix}labels"] = self.labels.cpu().contiguous()
        if not prefix:
            for name, opt in self.optimizers.items():
                out.update(optimizer_tensors(name, opt))
        return out

    def load_(self, tensors: dict[str, Tensor]) -> None:
        with torch.no_grad():
            self.latents.copy_(tensors["latents"])
            self.alpha.copy_(tensors["alpha"])
        self.decoder.load_state_dict(
            {k[len("decoder.") :]: v for k, v in tensors.items() if k.startswith("decoder.")}
        )
        for name, opt in self.optimizers.items():
            load_optimizer_tensors(name, opt, tensors)

    def snapshot(self) -> dict[str, Tensor]:
        out = {k: v.detach().clone() for k, v in self._state().items()}
        out["labels"] = self.labels.clone()
        return out

    def artifact(self, snapshot: dict[str, Tensor], meta: dict) -> LatentSet:
        decoder = {
            k[len("decoder.") :]: v.detach().cpu() for k, v in snapshot.items() if k.startswith("decoder.")
        }
        num_classes = int(snapshot["labels"].max()) + 1
        return LatentSet(
            spec=self.decoder.spec,
            blocks=[
                {
                    "offset": 0,
                    "num_classes": num_classes,
                    "latents": snapshot["latents"].detach().cpu(),
                    "decoder": decoder,
                    "alpha": float(snapshot["alpha"]),
                }
            ],
            lpc=len(self) // num_classes,
            soft_labels=None,
            meta=meta,
        )
