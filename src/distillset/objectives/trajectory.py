"""Trajectory matching's normalised parameter loss (MTT, DATM, PAD, AST).

    L(theta_N) = sum_K (theta_N - theta*)^2 / sum_K (theta_t - theta*)^2

with theta_t the expert's snapshot the student starts from, theta* = theta_{t+M} the target, and K the
matched index set (all of the flat vector for MTT/DATM; PAD's deep-parameter filter keeps a subset).
The authors divide numerator and denominator by P, which cancels. With zero inner steps L = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..errors import DistillsetError


@dataclass
class ParameterMatch:
    """The normalised distance to `target`, relative to the distance from `start`, over `keep`."""

    start: Tensor
    target: Tensor
    keep: Tensor | slice | None = None  # None: every parameter; a slice or an index/bool tensor

    def __post_init__(self) -> None:
        diff = self._select(self.start - self.target)
        self.denominator = (diff * diff).sum()
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
        return (diff * diff).sum() / self.denominator


def normalized_match(start: Tensor, target: Tensor, keep: Tensor | slice | None = None) -> ParameterMatch:
    return ParameterMatch(start, target, keep)
