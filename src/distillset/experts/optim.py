"""Expert optimisers: plain SGD (MTT) and GSAM (Zhuang et al. 2022), which FTD and DATM train experts with.

GSAM, one step on a batch whose loss has been back-propagated (gradient g at w):
  1. perturb: e = rho * g / ||g||, w' = w + e;
  2. g_p = the gradient at w' on the same (augmented) batch (the `closure`);
  3. decompose g against g_p: g_vert = g - cos(g, g_p) * ||g|| * g_p / ||g_p||, the part of g orthogonal
     to g_p; the update direction is g_p - alpha * g_vert;
  4. restore w and take the base SGD step (lr, momentum, weight decay) along that direction.
FTD's setting: rho 0.01 (constant), alpha 0.3, base SGD lr 0.01 without momentum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

EPS = 1e-12


class GSAM(torch.optim.Optimizer):
    """Surrogate-gap guided sharpness-aware minimisation over a base SGD optimiser."""

    needs_closure = True

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        rho: float = 0.01,
        alpha: float = 0.3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ):
        if rho < 0 or alpha < 0:
            raise ValueError(f"GSAM needs rho >= 0 and alpha >= 0, got rho={rho}, alpha={alpha}.")
        super().__init__(params, {"lr": lr, "rho": rho, "alpha": alpha})
        self.base = torch.optim.SGD(self.param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """`closure` zeroes nothing; it recomputes the loss on the same batch and calls backward()."""
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return self.base.step()
        old = [p.grad.detach().clone() for p in params]
        old_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in old]))
        group = self.param_groups[0]
        scale = group["rho"] / (old_norm + EPS)
        perturb = [g * scale for g in old]
        for p, e in zip(params, perturb, strict=True):
            p.add_(e)
            p.grad = None
        with torch.enable_grad():
            loss = closure()
        new = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        new_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in new]))
        inner = sum((o * n).sum() for o, n in zip(old, new, strict=True))
        cosine = inner / (new_norm * old_norm + EPS)
        for p, o, n, e in zip(params, old, new, perturb, strict=True):
            vertical = o - cosine * old_norm * n / (new_norm + EPS)
            p.grad = n - group["alpha"] * vertical
            p.sub_(e)
        self.base.step()
        return loss


def expert_optimizer(params: Iterable[Tensor], cfg) -> torch.optim.Optimizer:  # noqa: ANN001
    """The experts' optimiser from an `ExpertsConfig`: SGD, or GSAM over the same SGD."""
    if cfg.optimizer == "gsam":
        return GSAM(
            params,
            lr=cfg.lr_teacher,
            rho=cfg.rho,
            alpha=cfg.gsam_alpha,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.SGD(params, lr=cfg.lr_teacher, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def base_optimizer(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimiser that holds the momentum buffers (GSAM's base SGD, or the SGD itself)."""
    return getattr(opt, "base", opt)
