"""Prototypes: synthetic images with hard labels or learnable label logits, and a synthetic lr.

Trajectory matching learns the images, the lr and (DATM) the label logits, each by its own SGD with
momentum; gradient and distribution matching learn the images only, and the lr is the evaluation's
default. The checkpoint tensors are `images`, `lr`, `labels` or `label_logits`, and `momentum.<name>`
for every optimiser with a momentum buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .artifact import DistilledSet
from .set import SyntheticSet


class Prototypes(SyntheticSet):
    """`images` (N x C x H x W), `labels` (N) or `label_logits` (N x classes), `lr` (a scalar tensor).

    `learn` maps each learnable tensor's name to its (lr, momentum); the others stay fixed.
    """

    def __init__(
        self,
        images: Tensor,
        lr: Tensor,
        learn: dict[str, tuple[float, float]],
        labels: Tensor | None = None,
        label_logits: Tensor | None = None,
    ):
        if (labels is None) == (label_logits is None):
            raise ValueError("prototypes have exactly one of labels (hard) or label_logits (soft).")
        learnable = {"images": images, "lr": lr, **({"label_logits": label_logits} if labels is None else {})}
        unknown = set(learn) - set(learnable)
        if unknown:
            raise ValueError(f"prototypes cannot learn {sorted(unknown)}; they have {sorted(learnable)}.")
        self.images, self._lr, self.labels, self.label_logits = images, lr, labels, label_logits
        self.parameters = {k: v.requires_grad_(True) for k, v in learnable.items() if k in learn}
        self.optimizers = {
            k: torch.optim.SGD([self.parameters[k]], lr=lr_k, momentum=mom)
            for k, (lr_k, mom) in learn.items()
        }

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def lr(self) -> Tensor:
        return self._lr

    @property
    def targets(self) -> Tensor:
        return self.label_logits if self.label_logits is not None else self.labels

    def decode(self) -> tuple[Tensor, Tensor]:
        return self.images, self.targets

    def _state(self) -> dict[str, Tensor]:
        out = {"images": self.images, "lr": self._lr}
        if self.label_logits is not None:
            out["label_logits"] = self.label_logits
        return out

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        out = {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in self._state().items()}
        if self.labels is not None:
            out[f"{prefix}labels"] = self.labels.cpu().contiguous()
        if not prefix:
            for name, opt in self.optimizers.items():
                buf = opt.state.get(opt.param_groups[0]["params"][0], {}).get("momentum_buffer")
                if buf is not None:
                    out[f"momentum.{name}"] = buf.detach().cpu().contiguous()
        return out

    def load_(self, tensors: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for k, v in self._state().items():
                v.copy_(tensors[k])
        for name, opt in self.optimizers.items():
            key = f"momentum.{name}"
            if key in tensors:
                p = opt.param_groups[0]["params"][0]
                opt.state[p]["momentum_buffer"] = tensors[key].to(p.device, p.dtype).clone()

    def snapshot(self) -> dict[str, Tensor]:
        out = {k: v.detach().clone() for k, v in self._state().items()}
        if self.labels is not None:
            out["labels"] = self.labels.clone()
        return out

    def artifact(self, snapshot: dict[str, Tensor], meta: dict) -> DistilledSet:
        return DistilledSet(
            images=snapshot["images"].detach().cpu(),
            lr=float(snapshot["lr"]),
            labels=snapshot["labels"].cpu() if "labels" in snapshot else None,
            label_logits=snapshot["label_logits"].detach().cpu() if "label_logits" in snapshot else None,
            meta=meta,
        )
