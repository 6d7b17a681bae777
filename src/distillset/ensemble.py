"""Several networks of one architecture trained at once: their parameters stacked, one vmapped forward.

An evaluation trains R fresh networks per architecture on the same synthetic set (and R on each
baseline's subsets); with small sets every step is a few small kernels and Python's overhead dominates,
so training them as one stacked model (`torch.func.stack_module_state` + `vmap` of `functional_call`)
does R networks' steps for little more than one's. Each member keeps everything of its own: its initial
weights, its data order and DSA draws (its own generators, drawn exactly as the separate run draws
them), its lr, DSA on or off, and its checkpoint choice on the validation split. The arithmetic is the
same up to the order of floating-point sums inside the batched kernels, so a member's trajectory equals
the separate run's to about 1e-6 relative after an epoch, drifting by rounding as the separate runs of two
machines do (`tests/test_ensemble.py` states the tolerance).

Where it pays: on CUDA always; on the CPU only while a step is small, a member's batch costing at most
`CPU_FLOPS` forward FLOPs (counted on one image with torch's FlopCounterMode): there the overhead is most
of a step; beyond, the batched convolutions are no faster than separate ones, and the first layer's
grouped convolution is slower. Validation and test accuracies are computed member by member (a large
shared input runs no faster stacked). Measured side by side (`benchmarks/results/ensemble_eval.md`):
at IPC 1, 1.20x the networks per hour on digits and 1.03x on Fashion-MNIST, where the accuracy passes
over the large validation and test splits take most of the time; at IPC 10 no gain on digits and half
the speed on Fashion-MNIST, so those train one by one. Models with buffers that training updates
(BatchNorm's running statistics) are trained one by one.

Experts (`experts.ensemble`, experts/ensemble.py) train K at once the same way, each with its own
initialisation, data order and DSA draws, the epoch's lr, loss scale and curriculum subset shared. Where
it pays: on CUDA only (`pays(..., stage="experts")`). An expert's batch (256 real images) is large: on
one CPU thread a digits expert step (ConvNet-128-2 on 8x8, 3.7 GFLOP forward and backward a batch)
already runs at 98% of the matmul peak, a Fashion-MNIST expert step (ConvNet-32-3) at 43%, and the
vmapped grouped convolution was measured slower than separate ones on the CPU for evaluation at IPC 10,
so stacking has nothing to win there (`benchmarks/results/expert_ensemble.md` measures both ways).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from .data.augment import DSA
from .training import classification_loss

CPU_FLOPS = 100e6  # forward FLOPs of a member's batch up to which training together pays on the CPU
MAX_MEMBERS = 16


def image_flops(model: nn.Module, image_shape: Sequence[int]) -> float:
    """Forward FLOPs of `model` on one image (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *image_shape))
    return float(counter.get_total_flops())


def pays(
    model: nn.Module,
    device: torch.device,
    batch_images: int,
    image_shape: Sequence[int],
    stage: Literal["eval", "experts"] = "eval",
) -> bool:
    """Whether training copies of `model` together beats training them one by one (see the module):
    never with buffers; always on CUDA; on the CPU, evaluation networks while a member's batch costs at
    most `CPU_FLOPS` forward, experts never (a digits expert step runs at 98% of one thread's matmul peak,
    a Fashion-MNIST width-32 one at 43%, and the vmapped grouped convolution is slower on the CPU)."""
    if any(True for _ in model.buffers()):
        return False
    if device.type == "cuda":
        return True
    if stage == "experts":
        return False
    return batch_images * image_flops(model, image_shape) <= CPU_FLOPS


@dataclass
class Member:
    """One network of an ensemble: its fresh model, its epoch source, its lr, DSA (None: off) and its
    generators (order and DSA), as the separate run would have them."""

    model: nn.Module
    source: object  # epoch -> (images, targets)
    lr: float
    aug: DSA | None
    order_gen: torch.Generator
    aug_gen: torch.Generator


class Stacked:
    """The members' parameters stacked (R x ...), trained by SGD with momentum and weight decay, each
    member at its own lr: the elementwise update of `torch.optim.SGD` (no dampening, no Nesterov)."""

    def __init__(
        self, models: Sequence[nn.Module], lrs: Sequence[float], momentum: float, weight_decay: float
    ):
        self.base = copy.deepcopy(models[0]).to("meta")
        params, buffers = stack_module_state(list(models))
        self.params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        self.buffers = buffers
        self.momentum, self.weight_decay = momentum, weight_decay
        self.lrs = torch.tensor(list(lrs), dtype=torch.float64)
        self.bufs: dict[str, Tensor] = {}
        self._lr_cache: dict[tuple, Tensor] = {}
        self._lr_for: Tensor | None = None

        def one(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(self.base, (p, b), (x,))

        self._each = vmap(one, in_dims=(0, 0, 0))

    def __call__(self, x: Tensor) -> Tensor:
        """R x B x ... inputs (one batch per member) -> R x B x classes."""
        return self._each(self.params, self.buffers, x)

    def scale_lr(self, factor: float) -> None:
        self.lrs = self.lrs * factor

    def set_lr(self, lr: float) -> None:
        """Every member's lr (an expert epoch's `lr_at`)."""
        self.lrs = torch.full_like(self.lrs, lr)

    def _lr_like(self, p: Tensor) -> Tensor:
        """The lrs in `p`'s dtype, on its device, shaped to broadcast over it: copied to the device once
        per lr change, not once per step (a copy from the host waits for the device)."""
        key = (p.dtype, p.device, p.dim())
        if self._lr_for is not self.lrs:
            self._lr_cache, self._lr_for = {}, self.lrs
        if key not in self._lr_cache:
            self._lr_cache[key] = self.lrs.to(p.dtype).to(p.device).view(-1, *([1] * (p.dim() - 1)))
        return self._lr_cache[key]

    def flat(self) -> Tensor:
        """Every member's parameters as one flat vector each (R x P, a copy, in the model's order)."""
        return torch.cat([v.detach().flatten(1) for v in self.params.values()], dim=1)

    def momentum_flat(self) -> Tensor | None:
        """Every member's momentum buffer, flat (R x P), as `flat`; None before the first step or
        without momentum (where `torch.optim.SGD` keeps none either)."""
        if not self.momentum or len(self.bufs) != len(self.params):
            return None
        return torch.cat([self.bufs[k].flatten(1) for k in self.params], dim=1)

    def set_momentum(self, flat: Tensor) -> None:
        """The members' momentum buffers from `momentum_flat`'s R x P (a resumed run)."""
        offset = 0
        for k, p in self.params.items():
            n = p[0].numel()
            self.bufs[k] = flat[:, offset : offset + n].reshape(p.shape).to(p.device, p.dtype).clone()
            offset += n

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor]) -> None:
        for (name, p), g in zip(self.params.items(), grads, strict=True):
            d = g.add(p, alpha=self.weight_decay) if self.weight_decay else g
            if self.momentum:
                buf = self.bufs.get(name)
                if buf is None:
                    buf = self.bufs[name] = d.clone()
                else:
                    buf.mul_(self.momentum).add_(d)
                d = buf
            p.sub_(self._lr_like(p) * d)

    def state(self, r: int) -> dict[str, Tensor]:
        """Member r's parameters (a copy), named as the model's state dict."""
        return {k: v[r].detach().clone() for k, v in self.params.items()}

    def load_into(self, model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
        model.load_state_dict({**model.state_dict(), **state})
        return model


def train_epoch_together(
    stacked: Stacked,
    data: Sequence[tuple[Tensor, Tensor]],
    order_gens: Sequence[torch.Generator],
    augs: Sequence[DSA | None],
    aug_gens: Sequence[torch.Generator],
    batch_size: int,
    loss_scale: float = 1.0,
) -> list[tuple[float, float]]:
    """`training.train_epoch` for every member at once: member r on its own `data[r]` = (x, y) (all of
    one size), in its own random order (`order_gens[r]`) and with its own DSA draws (`augs[r]` with
    `aug_gens[r]`; None: no DSA), the loss `loss_scale * CE`; (mean plain loss, accuracy on the
    augmented training batches) per member, as `train_epoch` returns them."""
    count, n = len(data), data[0][0].shape[0]
    device = data[0][0].device
    orders = [torch.randperm(n, generator=g).to(device) for g in order_gens]
    params = list(stacked.params.values())
    totals, correct = [0.0] * count, [0] * count
    for start in range(0, n, batch_size):
        xs, ys = [], []
        for (x, y), order, aug, aug_gen in zip(data, orders, augs, aug_gens, strict=True):
            idx = order[start : start + batch_size]
            xb = x[idx]
            xs.append(aug(xb, aug_gen) if aug is not None else xb)
            ys.append(y[idx])
        logits = stacked(torch.stack(xs))
        losses = [classification_loss(logits[r], yb) for r, yb in enumerate(ys)]
        objective = sum(losses) if loss_scale == 1.0 else sum(loss * loss_scale for loss in losses)
        stacked.step(torch.autograd.grad(objective, params))
        # one transfer each from the device for all members (train_epoch's float(loss), int(correct))
        values = torch.stack([loss.detach() for loss in losses]).tolist()
        targets = torch.stack([yb.argmax(dim=1) if yb.is_floating_point() else yb for yb in ys])
        hits = (logits.detach().argmax(dim=2) == targets).sum(dim=1).tolist()
        for r, yb in enumerate(ys):
            totals[r] += values[r] * yb.shape[0]
            correct[r] += hits[r]
    return [(total / max(n, 1), c / max(n, 1)) for total, c in zip(totals, correct, strict=True)]
