"""Trajectory matching's normalised parameter loss (MTT, DATM, PAD, AST).

    L(theta_N) = sum_K (theta_N - theta*)^2 / sum_K (theta_t - theta*)^2

with theta_t the expert's snapshot the student starts from, theta* = theta_{t+M} the target, and K the
matched index set (all of the flat vector for MTT/DATM; PAD's deep-parameter filter keeps a subset).
The authors divide numerator and denominator by P, which cancels. With zero inner steps L = 1.

PAD's parameter selection ("information embedding") comes in three variants:

- `flat` (the paper's): K = every index from `int(depth_ratio * P)` on. The cut need not fall on a layer
  boundary: on the CIFAR-10 ConvNet, ratio 0.5 drops conv1, norm1, conv2, norm2 and 5.6% of conv3's weights.
- `layers`: the cut moves back to the last layer boundary at or below `int(depth_ratio * P)`, so whole
  leading layers are dropped and no layer is matched in part.
- `loss_ratio` (the authors' later code, which crashes as shipped on an undefined option): per call,
  drop the `int(loss_ratio * |K|)` smallest per-element errors `(theta_N - theta*)^2` and sum numerator
  and denominator over the rest. With zero inner steps it still gives 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...errors import ConfigError, DistillsetError
from ...models.params import ParamLayout


def deep_parameters(layout: ParamLayout, depth_ratio: float, mask: str = "flat") -> slice | None:
    """PAD's kept index set: the flat vector from the cut on (None when nothing is dropped)."""
    if not 0 <= depth_ratio < 1:
        raise ConfigError(f"distill.depth_ratio must be in [0, 1), got {depth_ratio}.")
    cut = int(depth_ratio * layout.numel)
    if mask == "layers":
        cut = max((span.end for span in layout.layer_boundaries() if span.end <= cut), default=0)
    elif mask != "flat":
        raise ConfigError(f"distill.mask must be 'flat' or 'layers', got {mask!r}.")
    return slice(cut, layout.numel) if cut > 0 else None


def dropped_share(layout: ParamLayout, keep: slice | None) -> dict[str, float]:
    """For each parameter tensor that `keep` leaves out in part or whole, the fraction left out."""
    if keep is None:
        return {}
    out = {}
    for e in layout:
        dropped = max(0, min(e.end, keep.start) - e.offset)
        if dropped:
            out[e.name] = dropped / e.numel
    return out


@dataclass
class ParameterMatch:
    """The normalised distance to `target`, relative to the distance from `start`, over `keep`."""

    start: Tensor
    target: Tensor
    keep: Tensor | slice | None = None  # None: every parameter; a slice or an index/bool tensor
    loss_ratio: float = 0.0  # drop this fraction of the smallest per-element errors on every call

    def __post_init__(self) -> None:
        diff = self._select(self.start - self.target)
        self.start_errors = diff * diff
        self.denominator = self.start_errors.sum()
        if not float(self.denominator) > 0:
            raise DistillsetError(
                "the expert's start and target snapshots are identical over the matched parameters, so "
                "the normalised loss is undefined; check the expert store (were snapshots copied?) "
                "and distill.expert_epochs."
            )

    def _select(self, theta: Tensor) -> Tensor:
        return theta if self.keep is None else theta[self.keep]

    def __call__(self, theta: Tensor) -> Tensor:
        diff = self._select(theta - self.target)
        errors = diff * diff
        drop = int(self.loss_ratio * errors.numel())
        if drop == 0:
            return errors.sum() / self.denominator
        # The kept set depends on theta but is piecewise constant: no gradient flows through the choice.
        kept = torch.topk(errors.detach(), errors.numel() - drop, sorted=False).indices
        return errors[kept].sum() / self.start_errors[kept].sum()


@dataclass
class Weighted:
    """`beta * term(theta)`: an intermediate term of AST's matching loss."""

    term: ParameterMatch
    beta: float

    def __call__(self, theta: Tensor) -> Tensor:
        return self.term(theta) * self.beta if self.beta != 1.0 else self.term(theta)


def intermediate_steps(
    syn_steps: int, expert_epochs: int, beta: str = "constant"
) -> list[tuple[int, int, float]]:
    """AST's intermediate matching points: `(k_i, i, beta_i)` for i = 1..M-1 with `k_i = (N // M) * i`,
    the student's state after k_i inner steps being matched to the expert's epoch t + i, and
    `beta_i = 1` ("constant") or `i / M` ("adaptive")."""
    if beta not in ("constant", "adaptive"):
        raise ConfigError(f"distill.intermediate_beta must be 'constant' or 'adaptive', got {beta!r}.")
    if expert_epochs < 2:
        raise ConfigError(
            "intermediate matching needs distill.expert_epochs >= 2 (there is no expert epoch between the "
            "start and the target otherwise)."
        )
    stride = syn_steps // expert_epochs
    if stride < 1:
        raise ConfigError(
            f"intermediate matching needs distill.syn_steps ({syn_steps}) >= distill.expert_epochs "
            f"({expert_epochs}): the matching points k_i = (N // M) * i would all fall on the start."
        )
    return [
        (stride * i, i, 1.0 if beta == "constant" else i / expert_epochs) for i in range(1, expert_epochs)
    ]


def normalized_match(
    start: Tensor, target: Tensor, keep: Tensor | slice | None = None, loss_ratio: float = 0.0
) -> ParameterMatch:
    return ParameterMatch(start, target, keep, loss_ratio)
