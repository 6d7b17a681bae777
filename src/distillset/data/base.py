"""The in-memory dataset every stage consumes: three splits of float images in [0, 1] plus metadata."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import DataError
from ..integrity import nonfinite


@dataclass
class Split:
    """Images (float32, N x C x H x W, values in [0, 1]) and their integer labels (int64, N)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def class_indices(self, c: int) -> Tensor:
        return torch.nonzero(self.y == c, as_tuple=False).flatten()


@dataclass
class Dataset:
    """A classification dataset split into train / validation / test.

    `split` records how the splits were made so that any evaluator can rebuild the same test set:
    ``{"kind": "official" | "seeded", "split_seed": int, "val_size": int, "test_size": int, ...}``.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str]
    mean: list[float]
    std: list[float]
    split: dict = field(default_factory=dict)
    source: str = ""
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.train.x.shape[2]), int(self.train.x.shape[3])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.channels, *self.size

    def check(self) -> None:
        """Stop on splits that break the contract above: images that are not float32 N x C x H x W in
        [0, 1] (NaN and Inf included), labels that are not integers in 0..num_classes - 1, or counts that
        disagree (the loaders check their files; this checks a dataset built by hand)."""
        shape = None
        for which, split in (("training", self.train), ("validation", self.val), ("test", self.test)):
            x, y = split.x, split.y
            if x.dtype != torch.float32 or x.dim() != 4:
                raise DataError(f"The {which} images of {self.name} must be a float32 N x C x H x W tensor.")
            if shape is not None and tuple(x.shape[1:]) != shape:
                raise DataError(f"The {which} images of {self.name} are {tuple(x.shape[1:])}, not {shape}.")
            shape = tuple(x.shape[1:])
            if y.dim() != 1 or y.dtype != torch.int64 or y.shape[0] != x.shape[0]:
                raise DataError(
                    f"The {which} labels of {self.name} must be an int64 tensor of one label per image."
                )
            bad = nonfinite(x, "image")
            if bad is not None:
                raise DataError(f"The {which} images of {self.name} hold {bad}.")
            if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
                raise DataError(f"The {which} images of {self.name} must lie in [0, 1].")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(
                    f"The {which} labels of {self.name} range over {int(y.min())}..{int(y.max())} but it "
                    f"has {self.num_classes} classes (0..{self.num_classes - 1})."
                )

    def fingerprint(self) -> str:
        """A short hash of the name, the split recipe and the training images and labels (computed once)."""
        if self._fingerprint is not None:
            return self._fingerprint
        h = hashlib.blake2b(digest_size=8)
        h.update(repr((self.name, sorted(self.split.items()), tuple(self.train.x.shape))).encode())
        h.update(self.train.x.contiguous().numpy().tobytes())
        h.update(self.train.y.contiguous().numpy().tobytes())
        self._fingerprint = h.hexdigest()
        return self._fingerprint
