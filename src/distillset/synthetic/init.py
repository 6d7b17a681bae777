"""Initialisations of a synthetic set from real data: random real images per class."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DataError


def random_real_indices(y: Tensor, ipc: int, num_classes: int, gen: torch.Generator) -> Tensor:
    """`ipc` distinct random indices per class, class-major (class 0's first), drawn from `gen`.

    The random-real baseline and MTT's initialisation.
    """
    y = y.cpu()
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(y == c, as_tuple=False).flatten()
        if idx.numel() < ipc:
            raise DataError(
                f"class {c} has {idx.numel()} training images, fewer than ipc={ipc}; lower data.ipc."
            )
        out.append(idx[torch.randperm(idx.numel(), generator=gen)[:ipc]])
    return torch.cat(out)
