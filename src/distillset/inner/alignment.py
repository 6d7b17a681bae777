"""AST's alignment of student and expert in the inner loop: the balanced inner loss and the weight
perturbation of the start point (Shen, Lam, Yang, 2023)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..models.params import ParamLayout


def balance_factor(start_epoch: int, max_start_epoch: int) -> float:
    """The factor on the student's cross-entropy: with `h = max_start_epoch // 2`,
    `log_5(t - h + 8)` for t >= h and `1 / log_5(h - t + 8)` otherwise (above 1 late, below 1 early)."""
    h = max_start_epoch // 2
    if start_epoch >= h:
        return math.log(start_epoch - h + 8, 5)
    return 1 / math.log(h - start_epoch + 8, 5)


def perturb_conv_weights(theta: Tensor, layout: ParamLayout, alpha: float, gen: torch.Generator) -> Tensor:
    """A copy of the flat vector `theta` whose 4-D (convolution) weights W become `W + alpha * (d * W)`,
    with `d ~ N(0, I)` normalised to unit Frobenius norm per weight; every other entry is unchanged."""
    out = theta.clone()
    for e in layout:
        if len(e.shape) != 4:
            continue
        d = torch.randn(e.numel, generator=gen, dtype=torch.float64).to(theta.device, theta.dtype)
        d = d / d.norm()
        w = theta[e.offset : e.end]
        out[e.offset : e.end] = w + alpha * d * w
    return out
