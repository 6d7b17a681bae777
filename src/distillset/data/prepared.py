"""A dataset made ready for a network: loaded, preprocessed (mean/std or ZCA) and moved to the device."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import DataError
from ..integrity import nonfinite
from .augment import DEFAULT_STRATEGY, DIGITS_STRATEGY
from .base import Dataset
from .preprocess import Preprocessor, fit_preprocessor
from .sources import load_dataset

# Handwritten digits must not be mirrored (a mirrored digit is another symbol).
HANDWRITTEN = {"digits", "mnist"}
SPLIT_TENSORS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


@dataclass
class PreparedData:
    """The raw dataset, its fitted preprocessing, and the three splits in the network's input space."""

    dataset: Dataset
    prep: Preprocessor
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    dsa_strategy: str

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.dataset.image_shape

    def to_device(self, device: torch.device | str) -> PreparedData:
        """The same data with its splits (and ZCA) on `device`: itself when already there."""
        device = torch.device(device)
        if self.train_x.device == device:
            return self
        prep = copy.deepcopy(self.prep).to(device) if self.prep.is_zca else self.prep
        moved = {k: getattr(self, k).to(device) for k in SPLIT_TENSORS}
        return dataclasses.replace(self, prep=prep, **moved)

    def fingerprint(self) -> dict:
        """What identifies this data for a trajectory store or an artifact."""
        return {
            "name": self.dataset.name,
            "fingerprint": self.dataset.fingerprint(),
            "split": self.dataset.split,
            "preprocessing": self.prep.to_manifest(),
        }


def default_dsa_strategy(name: str) -> str:
    return DIGITS_STRATEGY if name in HANDWRITTEN else DEFAULT_STRATEGY


def load_from_config(cfg: DataConfig) -> Dataset:
    extra = {"image_size": cfg.image_size} if cfg.image_size else {}
    val_size = int(cfg.val_size) if cfg.val_size >= 1 else cfg.val_size
    return load_dataset(
        cfg.name,
        cfg.root,
        val_size=val_size,
        split_seed=cfg.split_seed,
        train_limit=cfg.train_limit,
        test_size=cfg.test_size,
        **extra,
    )


def prepare(cfg: DataConfig, device: torch.device, dataset: Dataset | None = None) -> PreparedData:
    """Load (unless given: then it is checked, see `Dataset.check`), fit the preprocessing on the training
    split alone, apply it to all three; stops if the preprocessed images hold NaN or Inf."""
    if dataset is not None:
        dataset.check()
    ds = dataset if dataset is not None else load_from_config(cfg)
    prep = fit_preprocessor(ds.train.x, ds.mean, ds.std, zca=cfg.zca, device=device)
    data = PreparedData(
        dataset=ds,
        prep=prep,
        train_x=prep.apply(ds.train.x).to(device),
        train_y=ds.train.y.to(device),
        val_x=prep.apply(ds.val.x).to(device),
        val_y=ds.val.y.to(device),
        test_x=prep.apply(ds.test.x).to(device),
        test_y=ds.test.y.to(device),
        dsa_strategy=cfg.dsa_strategy or default_dsa_strategy(ds.name),
    )
    for name in ("train", "val", "test"):
        bad = nonfinite(getattr(data, f"{name}_x"), "image")
        if bad is not None:
            hint = "try data.zca=false" if prep.is_zca else "check the dataset's mean and std"
            raise DataError(f"The {name} images of {ds.name} hold {bad} after preprocessing; {hint}.")
    return data
