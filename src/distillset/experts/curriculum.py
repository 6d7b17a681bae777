"""PAD's data selection: train the experts on a curriculum of each class's easy-to-hard order.

With `n_c` the size of class c and `e` the 0-based epoch being trained (the first epoch is e = 0):

- e <= add_end_epoch: the easiest `int(p * n_c)`, with
  `p = min(1, init_ratio + (1 - init_ratio) * e / add_end_epoch)`;
- add_end_epoch < e <= rm_epoch_first: all of the class;
- rm_epoch_first < e <= rm_epoch_second: all but the easiest `int(rm_easy_ratio_first * n_c)`;
- e > rm_epoch_second: all but the easiest `int(rm_easy_ratio_second * n_c)`.

The authors' code uses 5000 for every `n_c` (CIFAR-10's class size): on CIFAR-100 and Tiny ImageNet its
curriculum keeps every image early on and its removal phase empties the data set. Here each class's own
size is used, so unequal classes (a `train_limit` subset, a validation split, an image folder) get their
own counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ExpertsConfig
from ..errors import ConfigError


def kept_range(n_c: int, epoch: int, ecfg: ExpertsConfig) -> tuple[int, int]:
    """The half-open range [lo, hi) of a class's easy-to-hard order that epoch `epoch` trains on."""
    if epoch <= ecfg.add_end_epoch:
        p = min(1.0, ecfg.init_ratio + (1 - ecfg.init_ratio) * epoch / ecfg.add_end_epoch)
        return 0, int(p * n_c)
    if epoch <= ecfg.rm_epoch_first:
        return 0, n_c
    if epoch <= ecfg.rm_epoch_second:
        return int(ecfg.rm_easy_ratio_first * n_c), n_c
    return int(ecfg.rm_easy_ratio_second * n_c), n_c


@dataclass
class Curriculum:
    """Per-class easy-to-hard orders (indices into the training set) and the schedule over epochs."""

    orders: list[Tensor]
    ecfg: ExpertsConfig

    def __post_init__(self) -> None:
        if any(o.numel() == 0 for o in self.orders):
            empty = [c for c, o in enumerate(self.orders) if o.numel() == 0]
            raise ConfigError(f"classes {empty} have no training images; a curriculum needs every class.")

    @property
    def class_sizes(self) -> list[int]:
        return [int(o.numel()) for o in self.orders]

    def counts(self, epoch: int) -> list[int]:
        """Images per class trained at `epoch`."""
        return [hi - lo for lo, hi in (kept_range(n, epoch, self.ecfg) for n in self.class_sizes)]

    def indices(self, epoch: int) -> Tensor:
        """The training-set indices of `epoch`'s subset, class by class, easy to hard within a class."""
        parts = [o[slice(*kept_range(o.numel(), epoch, self.ecfg))] for o in self.orders]
        return torch.cat(parts)

    def summary(self, epochs: int) -> dict:
        """What the manifest records: the class sizes and, per epoch, the images kept per class."""
        return {
            "difficulty": self.ecfg.difficulty,
            "class_sizes": self.class_sizes,
            "subset_sizes": [self.counts(e) for e in range(epochs)],
        }
