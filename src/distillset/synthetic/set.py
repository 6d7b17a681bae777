"""The learnable synthetic set: the one interface the distillation loop sees.

A synthetic set owns its learnable tensors and their optimisers, decodes to what a network trains on
(images and targets), and converts to and from checkpoint tensors and to an artifact. Prototypes
(images, labels or label logits, a learnable lr) are one kind; a distributional set (latent priors and
a decoder) is another. The loop steps a set by the names of the tensors an objective's term moves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ..inner.plan import InnerPlan
from .artifact import DistilledSet


class SyntheticSet(ABC):
    """What distillation learns. `parameters` and `optimizers` share their keys."""

    parameters: dict[str, Tensor]
    optimizers: dict[str, torch.optim.Optimizer]

    @abstractmethod
    def decode(self) -> tuple[Tensor, Tensor]:
        """The images and targets a network trains on (differentiable in the parameters)."""

    @abstractmethod
    def __len__(self) -> int:
        """How many items (images, priors) the inner loop's mini-batches index."""

    def inner_batches(self, plan: InnerPlan, gen: torch.Generator) -> tuple[Tensor, Tensor, InnerPlan]:
        """What a student trains on in one inner loop of `plan`: images, targets and the plan indexing
        them. By default the decoded set itself; a distributional set decodes a fresh sample of each
        step's batch (drawing from `gen`)."""
        images, targets = self.decode()
        return images, targets, plan

    @property
    @abstractmethod
    def lr(self) -> Tensor:
        """The lr a network trains on the set with (learned by trajectory matching, else fixed)."""

    def step(self, moves: tuple[str, ...], loss: Tensor) -> None:
        """One optimiser step of the tensors named in `moves` on `loss`."""
        opts = [self.optimizers[name] for name in moves]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()

    @abstractmethod
    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """The set for a checkpoint; without a prefix also the optimisers' state."""

    @abstractmethod
    def load_(self, tensors: dict[str, Tensor]) -> None:
        """Restore what `tensors()` wrote."""

    @abstractmethod
    def snapshot(self) -> dict[str, Tensor]:
        """A detached copy of the set (the best set so far is kept as one)."""

    @abstractmethod
    def artifact(self, snapshot: dict[str, Tensor], meta: dict) -> DistilledSet:
        """The artifact of a snapshot."""
