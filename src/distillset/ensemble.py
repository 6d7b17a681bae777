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
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from .data.augment import DSA

CPU_FLOPS = 100e6  # forward FLOPs of a member's batch up to which training together pays on the CPU
MAX_MEMBERS = 16


def image_flops(model: nn.Module, image_shape: Sequence[int]) -> float:
    """Forward FLOPs of `model` on one image (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *image_shape))
    return float(counter.get_total_flops())


def pays(model: nn.Module, device: torch.device, batch_images: int, image_shape: Sequence[int]) -> bool:
    """Whether training copies of `model` together beats training them one by one (see the module)."""
    if any(True for _ in model.buffers()):
        return False
    if device.type == "cuda":
        return True
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

        def one(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(self.base, (p, b), (x,))

        self._each = vmap(one, in_dims=(0, 0, 0))

    def __call__(self, x: Tensor) -> Tensor:
        """R x B x ... inputs (one batch per member) -> R x B x classes."""
        return self._each(self.params, self.buffers, x)

    def scale_lr(self, factor: float) -> None:
        self.lrs = self.lrs * factor

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
            lr = self.lrs.to(p.dtype).to(p.device).view(-1, *([1] * (p.dim() - 1)))
            p.sub_(lr * d)

    def state(self, r: int) -> dict[str, Tensor]:
        """Member r's parameters (a copy), named as the model's state dict."""
        return {k: v[r].detach().clone() for k, v in self.params.items()}

    def load_into(self, model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
        model.load_state_dict({**model.state_dict(), **state})
        return model
