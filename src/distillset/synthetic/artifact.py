"""The distilled-set artifact: `synthetic.safetensors` (images, labels or label logits, lr) + `manifest.json`.

Images are stored in the network's input space (after mean/std or ZCA); the manifest says which
preprocessing, and how the dataset was split, so any evaluator can rebuild the same test set.

Loading verifies the tensors' checksum (integrity.py) and refuses, with one line, a set no network could
train on or whose manifest is not its own: NaN or Inf, a dtype or shape other than the ones written,
labels outside the classes, an lr that is not a positive number, or a manifest whose image count, image
shape, label kind, classes, IPC or lr disagree with the tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .. import __version__, integrity
from ..errors import CorruptFileError, InvalidValuesError, StoreError
from ..utils import read_json
from .latent_artifact import (
    ARTIFACT_FIX,
    LatentSet,
    check_fields,
    check_lr,
    check_manifest,
    image_storage,
    num_classes_of,
    save_artifact,
)

FORMAT = "distillset.distilled/1"


@dataclass
class DistilledSet:
    """A distilled set: N images, hard labels or label logits, and the learned (or given) lr.

    `meta` carries the manifest fields that are not tensors: dataset (name, root, split), ipc,
    num_classes, class_names, preprocessing, method.
    """

    images: Tensor
    lr: float
    labels: Tensor | None = None
    label_logits: Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.labels is None) == (self.label_logits is None):
            raise ValueError("a distilled set has exactly one of labels (hard) or label_logits (soft).")
        n = self.images.shape[0]
        lab = self.labels if self.labels is not None else self.label_logits
        if lab.shape[0] != n:
            raise ValueError(f"{n} images but {lab.shape[0]} labels.")

    @property
    def label_kind(self) -> str:
        return "hard" if self.labels is not None else "soft"

    @property
    def targets(self) -> Tensor:
        """What the evaluation trains on: int labels, or label logits for soft cross-entropy."""
        return self.labels if self.labels is not None else self.label_logits

    @property
    def hard_labels(self) -> Tensor:
        return self.labels if self.labels is not None else self.label_logits.argmax(dim=1)

    def with_hard_labels(self) -> DistilledSet:
        """The same images with the argmax of the label logits as hard labels (DD-Ranking's syn-hard)."""
        if self.labels is not None:
            return self
        return DistilledSet(self.images, self.lr, labels=self.hard_labels, meta=self.meta)

    def tensors(self) -> dict[str, Tensor]:
        out = {
            "images": self.images.detach().to("cpu", torch.float32).contiguous(),
            "lr": torch.tensor(float(self.lr), dtype=torch.float32),
        }
        if self.labels is not None:
            out["labels"] = self.labels.detach().to("cpu", torch.int64).contiguous()
        else:
            out["label_logits"] = self.label_logits.detach().to("cpu", torch.float32).contiguous()
        return out

    kind = "images"

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        if "num_classes" in self.meta:
            return int(self.meta["num_classes"])
        if self.label_logits is not None:
            return int(self.label_logits.shape[1])
        return int(self.labels.max()) + 1

    def baseline_ipc(self) -> int:
        """Random real images per class for the baseline: the artifact's own IPC."""
        return int(self.meta.get("ipc", 1))

    def epoch_data(self, seed: int, tags: tuple, samples: int = 1) -> FixedData:
        """The training data of every epoch: the images and targets themselves."""
        return FixedData(self.images, self.targets)

    def storage_bytes(self) -> dict[str, int]:
        """Bytes of each stored part (the 'storage' axis when methods are compared)."""
        return self.storage()["bytes"]

    def storage(self) -> dict:
        """Bytes per part (images, labels, lr; no decoders or latents), the stored floats and their
        IPC-equivalents (see `storage_summary`): hard labels are integers, label logits floats."""
        logits = int(self.label_logits.shape[1]) if self.label_logits is not None else 0
        return image_storage(int(self.images.shape[0]), self.image_shape, self.num_classes, logits)

    def manifest(self) -> dict:
        storage = self.storage()
        return {
            "format": FORMAT,
            "distillset_version": __version__,
            **self.meta,
            "num_images": int(self.images.shape[0]),
            "image_shape": list(self.images.shape[1:]),
            "kind": self.kind,
            "label_kind": self.label_kind,
            "lr": float(self.lr),
            "storage_bytes": storage["bytes"],
            "storage": storage,
        }

    def save(self, directory: str | Path) -> Path:
        """Write the artifact; the manifest goes last, so a directory with a manifest is complete."""
        return save_artifact(directory, self.tensors(), self.manifest())

    @classmethod
    def load(cls, directory: str | Path) -> DistilledSet | LatentSet:
        """Read an artifact of either kind: images (this class) or distributional (a `LatentSet`)."""
        return load_artifact(directory)[0]


DERIVED = {
    "format",
    "distillset_version",
    "num_images",
    "image_shape",
    "label_kind",
    "lr",
    "storage_bytes",
    "storage",
    "kind",
}  # manifest fields computed from the tensors: not part of `meta`


def load_artifact(directory: str | Path) -> tuple[DistilledSet | LatentSet, bool]:
    """The artifact in `directory`, checked (see the module docstring), and whether its tensors carried a
    checksum (False: written by an older version, read without that check)."""
    directory = Path(directory)
    mpath, tpath = directory / "manifest.json", directory / "synthetic.safetensors"
    if not mpath.exists() or not tpath.exists():
        raise StoreError(
            f"{directory} is not a distilled-set artifact (it needs manifest.json and "
            "synthetic.safetensors); make one with `distillset run` or `distillset baseline`."
        )
    try:
        manifest = read_json(mpath)
    except (json.JSONDecodeError, OSError) as e:
        raise CorruptFileError(mpath, f"corrupt ({e})", ARTIFACT_FIX) from e
    t, metadata = integrity.read(tpath, ARTIFACT_FIX)
    checked = integrity.CHECKSUM_KEY in metadata
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{directory} is not a {FORMAT} artifact.")
    check_fields(directory, manifest)
    if manifest.get("kind") == LatentSet.kind:
        return LatentSet.from_files(directory, manifest, t), checked
    if "images" not in t or "lr" not in t:
        raise StoreError(f"{directory} is not a {FORMAT} artifact.")
    check_image_set(directory, manifest, t)
    meta = {k: v for k, v in manifest.items() if k not in DERIVED}
    art = DistilledSet(
        images=t["images"],
        lr=float(t["lr"]),
        labels=t.get("labels"),
        label_logits=t.get("label_logits"),
        meta=meta,
    )
    return art, checked


def check_image_set(directory: Path, manifest: dict, t: dict[str, Tensor]) -> None:
    """An image artifact's tensors, and its manifest against them (see the module docstring)."""
    tpath, fix = directory / "synthetic.safetensors", ARTIFACT_FIX
    images = t["images"]
    integrity.check_dtype(tpath, "images", images.dtype, (torch.float32,), fix)
    integrity.check_shape(tpath, "images", images.shape, (None, None, None, None), fix)
    integrity.check_finite(tpath, "images", images, fix, unit="image")
    n = int(images.shape[0])
    lr = check_lr(tpath, t["lr"])
    if ("labels" in t) == ("label_logits" in t):
        raise InvalidValuesError(tpath, "it must hold exactly one of labels or label_logits", fix)
    c = num_classes_of(directory, manifest)
    if "labels" in t:
        integrity.check_shape(tpath, "labels", t["labels"].shape, (n,), fix)
        integrity.check_labels(tpath, "labels", t["labels"], c if c is not None else 2**62, fix)
        kind = "hard"
    else:
        logits = t["label_logits"]
        integrity.check_dtype(tpath, "label_logits", logits.dtype, (torch.float32,), fix)
        integrity.check_shape(tpath, "label_logits", logits.shape, (n, c), fix)
        integrity.check_finite(tpath, "label_logits", logits, fix, unit="image")
        kind = "soft"
    shape = list(images.shape[1:])
    found = {
        "num_images": (n, f"{n} images"),
        "image_shape": (shape, f"images of shape {shape}"),
        "label_kind": (kind, f"{kind} labels"),
        "lr": (lr, f"lr {lr:g}"),
    }
    if c is not None:
        # a distilled set holds ipc x classes images; an imported one may hold a few more
        found["ipc"] = (max(1, n // c), f"{n} images of {c} classes")
    check_manifest(directory, manifest, found)


class FixedData:
    """The same images and targets every epoch (an image artifact's training data)."""

    def __init__(self, x: Tensor, y: Tensor):
        self.x, self.y = x, y

    def to_device(self, device: torch.device | str) -> FixedData:
        return FixedData(self.x.to(device), self.y.to(device))

    def for_network(self, *tags: object) -> FixedData:
        return self

    def shape(self) -> tuple[int, bool]:
        """(images per epoch, whether the targets are soft)."""
        return int(self.x.shape[0]), bool(self.y.is_floating_point())

    def __call__(self, epoch: int) -> tuple[Tensor, Tensor]:
        return self.x, self.y
