"""The randomness of one inner loop, drawn up front: each step's mini-batch and DSA parameters.

Drawing the plan before the loop is what makes a step replayable: the adjoint sweep rebuilds step i
from (theta_i, plan.batches[i], plan.augment[i]) and gets the very computation of the forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.augment import DSAParams, sample_dsa


@dataclass
class InnerPlan:
    """`batches[i]`: indices into the synthetic set for step i; `augment[i]`: its DSA parameters or None."""

    batches: list[Tensor]
    augment: list[DSAParams | None]

    def __post_init__(self) -> None:
        if len(self.batches) != len(self.augment):
            raise ValueError(f"{len(self.batches)} batches but {len(self.augment)} augmentations.")

    @property
    def steps(self) -> int:
        return len(self.batches)


def sample_plan(
    num_images: int,
    syn_steps: int,
    batch_syn: int | None,
    image_size: tuple[int, int],
    strategy: str | None,
    gen: torch.Generator,
    device: torch.device | str = "cpu",
) -> InnerPlan:
    """MTT's batching: walk a fresh random permutation of the synthetic set in chunks of `batch_syn`
    (the last chunk of a permutation may be smaller), drawing a new permutation when one runs out;
    per-sample DSA parameters for every step (`strategy` None or 'none': no augmentation).

    All randomness comes from the CPU generator `gen`, so the plan is the same on every device.
    """
    if num_images < 1:
        raise ValueError("the synthetic set is empty.")
    batch = num_images if batch_syn is None else min(int(batch_syn), num_images)
    if batch < 1:
        raise ValueError(f"batch_syn must be at least 1, got {batch_syn}.")
    batches: list[Tensor] = []
    augment: list[DSAParams | None] = []
    chunks: list[Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            # The authors pop from the end of the chunk list; the order of chunks is immaterial.
            chunks = list(torch.split(torch.randperm(num_images, generator=gen), batch))[::-1]
        idx = chunks.pop()
        batches.append(idx.to(device))
        if strategy and strategy != "none":
            augment.append(sample_dsa(idx.numel(), image_size, strategy, gen, device))
        else:
            augment.append(None)
    return InnerPlan(batches, augment)
