"""Distilled sets in and out of other tools: the authors' `.pt` files, DD-Ranking's, an image folder, an .npz.

Import (`import_authors`) reads the tensor files that the authors' code writes, MTT's `distill.py`
(`images_best.pt`, `labels_best.pt`, sometimes `lr_best.pt` or `syn_lr_best.pt`, per-iteration
`images_{it}.pt`), DATM's and PAD's (the same names in the run's `Normal/` folder, `labels_*.pt` being
learned label logits) and the ones DD-Ranking's evaluators load (`images.pt`, `labels.pt`, `lr.pt`), and
turns them into a `DistilledSet` whose manifest names our dataset, split and preprocessing, so that
`distillset evaluate` measures it with our protocol. Every file is read with
`torch.load(weights_only=True)`: a file that holds anything but plain tensors (a pickled object) is
refused without running its code.

Export (`export_artifact`) writes an artifact (or a distributional artifact's decoded means and fresh
samples) as PNGs per class, as an .npz that the `npz` dataset loader reads, or as DD-Ranking's three
files. The export goes to a temporary folder beside `out` that is renamed into place at the end, so an
interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .baseline import artifact_meta
from .config import Config
from .data.prepared import PreparedData
from .errors import ConfigError, DataError, StoreError
from .synthetic.artifact import DistilledSet
from .synthetic.latent_artifact import LatentSet
from .utils import atomic_write_dir, generator

SPACES = ("network", "pixel")
EXPORT_FORMATS = ("imagefolder", "npz", "ddranking")
_IMAGES_NAME = re.compile(r"images(?:_(best|\d+))?\.pt")
# torch.load(weights_only=True) raises these for a pickle of anything but tensors and containers, and
# for a file that is not a torch archive at all (truncated, another format).
_LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    KeyError,
    IndexError,
    zipfile.BadZipFile,
)


# ---------------------------------------------------------------- import


@dataclass(frozen=True)
class AuthorsFiles:
    """The files of one distilled set in another tool's layout: `labels`/`lr` are None when absent."""

    images: Path
    labels: Path | None
    lr: Path | None
    format: str  # "mtt" | "datm" | "ddranking"; "datm" stands for DATM's and PAD's layout

    def names(self) -> dict[str, str | None]:
        """The paths as strings, for the manifest."""
        parts = {"images": self.images, "labels": self.labels, "lr": self.lr}
        return {k: str(p) if p is not None else None for k, p in parts.items()}


def _tag(which: str | int) -> str:
    w = str(which).strip()
    if w == "best" or w.isdigit():
        return w
    raise ConfigError(f"which={which!r} is neither 'best' nor an iteration number (the IT of images_IT.pt).")


def _images_name(tag: str | None) -> str:
    return "images.pt" if tag is None else f"images_{tag}.pt"


def _companions(folder: Path, tag: str | None) -> tuple[Path | None, Path | None]:
    """The labels and lr files beside an images file of `tag` (None: DD-Ranking's unsuffixed names)."""
    suffix = "" if tag is None else f"_{tag}"
    labels = folder / f"labels{suffix}.pt"
    lr = next((p for p in (folder / f"lr{suffix}.pt", folder / f"syn_lr{suffix}.pt") if p.is_file()), None)
    return (labels if labels.is_file() else None), lr


def find_authors_files(src: str | Path, which: str | int = "best") -> AuthorsFiles:
    """Locate a distilled set's files: `src` is the folder holding them, the run folder holding
    `Normal/` (DATM, PAD), or an images file (whose name then decides the iteration).

    In a folder, `which="best"` takes `images_best.pt`, else DD-Ranking's `images.pt`; an iteration
    number takes `images_{it}.pt`. Raises DataError naming what was looked for when nothing matches.
    """
    src = Path(src).expanduser()
    tag: str | None = _tag(which)
    if src.is_file():
        m = _IMAGES_NAME.fullmatch(src.name)
        if m is None:
            raise DataError(
                f"{src} is not an images file (images_best.pt, images_IT.pt or images.pt); pass that file "
                "or the folder holding it."
            )
        if m.group(1) is not None and tag != "best" and tag != m.group(1):
            raise ConfigError(f"{src.name} is iteration {m.group(1)} but --which asks for {tag}; drop one.")
        folder, tag = src.parent, m.group(1)
    elif src.is_dir():
        folder = None
        tags = [tag, None] if tag == "best" else [tag]
        for candidate in (src, src / "Normal"):
            for t in tags:
                if (candidate / _images_name(t)).is_file():
                    folder, tag = candidate, t
                    break
            if folder is not None:
                break
        if folder is None:
            looked = " or ".join(_images_name(t) for t in tags)
            raise DataError(
                f"{src} holds no {looked} (nor does {src / 'Normal'}); pass the folder the distillation "
                "wrote (MTT: logged_files/<dataset>/<run>, DATM/PAD: its Normal/) or the images file."
            )
    else:
        raise DataError(
            f"{src} does not exist; pass the folder with the distilled set's images file, the run folder "
            "holding Normal/, or the images file itself."
        )
    labels, lr = _companions(folder, tag)
    fmt = "ddranking" if tag is None else ("datm" if folder.name == "Normal" else "mtt")
    return AuthorsFiles(folder / _images_name(tag), labels, lr, fmt)


def _load(path: Path, what: str, numbers: bool = False) -> Tensor:
    """One plain tensor (or, with `numbers`, a Python float or int) from a torch file, never unpickling
    anything else: `weights_only=True` refuses every other object before its code can run."""
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except _LOAD_ERRORS as e:
        raise DataError(
            f"{path} holds no plain tensor (torch.load(weights_only=True) refuses it: {type(e).__name__}); "
            f"save the {what} with torch.save(tensor.detach().cpu(), path)."
        ) from None
    if numbers and isinstance(obj, int | float) and not isinstance(obj, bool):
        return torch.tensor(float(obj), dtype=torch.float64)
    if not isinstance(obj, Tensor):
        raise DataError(
            f"{path} holds a {type(obj).__name__}, not a plain tensor; save the {what} tensor itself with "
            "torch.save(tensor.detach().cpu(), path)."
        )
    return obj.detach()


def _check_finite(t: Tensor, path: Path, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise DataError(
            f"{path} holds non-finite {what} (NaN or inf); the distillation diverged, take another file."
        )


def _read_images(path: Path, data: PreparedData, space: str) -> Tensor:
    x = _load(path, "images")
    c, h, w = data.image_shape
    name = data.dataset.name
    if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise DataError(
            f"{path} holds images of shape {tuple(x.shape)} but {name} images are N x {c} x {h} x {w}; "
            "import with the config of the dataset they were distilled on (data.name=..., data.image_size=)."
        )
    if x.shape[0] == 0:
        raise DataError(f"{path} holds no images.")
    if space == "pixel" and x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    if not x.is_floating_point():
        raise DataError(f"{path} holds {x.dtype} images; the distilled images must be float.")
    x = x.to(torch.float32).contiguous()
    _check_finite(x, path, "images")
    if space == "pixel":
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{path} holds values in {lo:.3g}..{hi:.3g}, not [0, 1] pixels; if they are already the "
                "network's input, import with --space network."
            )
        x = data.prep.apply(x).to("cpu", torch.float32).contiguous()
    return x


def _read_labels(
    path: Path | None, images: Path, n: int, num_classes: int
) -> tuple[Tensor | None, Tensor | None]:
    """(hard labels, label logits), exactly one not None."""
    if path is None:
        if n % num_classes:
            raise DataError(
                f"{images} holds {n} images, not a multiple of the {num_classes} classes, and no labels file "
                "lies beside it; put its labels file (labels_best.pt, labels.pt) next to it."
            )
        return torch.arange(num_classes).repeat_interleave(n // num_classes), None
    y = _load(path, "labels")
    if y.dim() == 0:
        raise DataError(f"{path} holds one number, not a label per image; take the labels file of {images}.")
    if y.shape[0] != n:
        raise DataError(
            f"{path} holds {y.shape[0]} labels for the {n} images of {images}; take one iteration's files."
        )
    if y.is_floating_point():
        if y.dim() != 2 or y.shape[1] != num_classes:
            raise DataError(
                f"{path} holds float labels of shape {tuple(y.shape)}, not N x {num_classes} label logits "
                f"(one per class); import with the config of the dataset they were distilled on."
            )
        y = y.to(torch.float32).contiguous()
        _check_finite(y, path, "label logits")
        return None, y
    if y.dtype == torch.bool or y.dim() != 1:
        raise DataError(
            f"{path} holds {y.dtype} labels of shape {tuple(y.shape)}; labels are N class indices (int) or "
            f"N x {num_classes} label logits (float)."
        )
    y = y.to(torch.int64).contiguous()
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(
            f"{path} holds class labels {lo}..{hi} but the dataset has {num_classes} classes "
            f"(0..{num_classes - 1}); import with the config of the dataset they were distilled on."
        )
    return y, None


def _read_lr(path: Path | None, default: float) -> tuple[float, str]:
    if path is None:
        return float(default), "default"
    t = _load(path, "learned lr", numbers=True)
    if t.numel() != 1 or not t.is_floating_point():
        raise DataError(
            f"{path} holds a {t.dtype} tensor of shape {tuple(t.shape)}, not one float lr; "
            "save it with torch.save(syn_lr.detach().cpu(), path)."
        )
    lr = float(t.reshape(()))
    if not np.isfinite(lr) or lr <= 0:
        raise DataError(
            f"{path} holds the lr {lr}, not a positive number; evaluate with eval.lr=... instead."
        )
    return lr, "file"


def import_authors(
    src: str | Path,
    cfg: Config,
    data: PreparedData,
    *,
    method: str | None = None,
    space: str = "network",
    which: str | int = "best",
) -> DistilledSet:
    """A distilled set from another tool's files (see `find_authors_files` for `src` and `which`).

    `space="network"`: the images are taken as already in this config's input space (`data.prep`).
    The authors normalise with the field's constants, which the base presets use; with ZCA the authors'
    matrix was fitted on their full training set, ours on our training split, so the match is close but
    not exact. `space="pixel"`: the files hold [0, 1] images (or uint8), and `data.prep` is applied.
    Integer labels are hard labels; float N x C labels are label logits (DATM's, PAD's: the target is
    their softmax); without a labels file the set is taken as class-major (the first N/C images class 0).
    The lr is the file's, else `cfg.eval.default_lr`. Raises DataError for any file that does not fit.
    """
    if space not in SPACES:
        raise ConfigError(f"space={space!r} is not one of {', '.join(SPACES)}.")
    files = find_authors_files(src, which)
    images = _read_images(files.images, data, space)
    n, num_classes = int(images.shape[0]), data.num_classes
    labels, logits = _read_labels(files.labels, files.images, n, num_classes)
    lr, lr_source = _read_lr(files.lr, cfg.eval.default_lr)
    fmt = "datm" if files.format == "mtt" and logits is not None else files.format
    ipc = max(1, n // num_classes)
    meta = artifact_meta(cfg, data, method or "imported")
    meta["ipc"] = ipc
    meta["config"]["data"]["ipc"] = ipc
    meta["imported"] = {
        "from": str(src),
        "files": files.names(),
        "space": space,
        "lr_source": lr_source,
        "format": fmt,
    }
    return DistilledSet(images=images, lr=lr, labels=labels, label_logits=logits, meta=meta)


def describe_import(art: DistilledSet) -> str:
    """One line: how many images, IPC, the label kind and the lr with its source."""
    imp = art.meta.get("imported", {})
    source = Path(imp["files"]["lr"]).name if imp.get("lr_source") == "file" else "the config's default"
    labels = "soft labels (label logits)" if art.label_kind == "soft" else "hard labels"
    return (
        f"{art.images.shape[0]} images (IPC {art.meta.get('ipc')}, {labels}, lr {art.lr:.6g} from {source}) "
        f"in the {imp.get('format')} layout"
    )


# ---------------------------------------------------------------- export


@dataclass
class _Export:
    """What an export writes: images in the network's input space, hard labels, label logits (soft
    sets), the lr, and what each image is (an image, a prior's decoded mean, a sample of it)."""

    images: Tensor
    labels: Tensor
    logits: Tensor | None
    lr: float
    kinds: list[str]


def _export_parts(art: DistilledSet | LatentSet, samples: int) -> _Export:
    if samples < 0:
        raise ConfigError(f"samples={samples} must be at least 0.")
    if art.kind != LatentSet.kind:
        if samples:
            raise ConfigError(
                "samples apply to distributional artifacts (fresh samples of each prior); this one holds "
                "images: drop --samples."
            )
        return _Export(
            art.images.detach().to("cpu", torch.float32).contiguous(),
            art.hard_labels.to("cpu", torch.int64),
            None if art.label_logits is None else art.label_logits.detach().to("cpu", torch.float32),
            float(art.lr),
            ["image"] * int(art.images.shape[0]),
        )
    decoders = art.decoders()
    means = art.means(decoders=decoders)
    if samples:
        drawn = art.samples(generator(0, "export"), samples, decoders=decoders).flatten(0, 1)
        images = torch.cat([means, drawn])
    else:
        images = means
    reps = 1 + samples
    logits = None
    if art.soft_labels is not None:  # a prior's probabilities, as logits (log-probabilities)
        logits = torch.log(art.soft_labels.detach().float().clamp_min(1e-30)).repeat(reps, 1)
    return _Export(
        images.detach().to("cpu", torch.float32).contiguous(),
        art.hard_labels.to(torch.int64).repeat(reps),
        logits,
        float(art.lr),
        ["mean"] * art.num_priors + ["sample"] * (samples * art.num_priors),
    )


def _class_names(art: DistilledSet | LatentSet) -> list[str]:
    names = art.meta.get("class_names")
    return [str(n) for n in names] if names else [str(k) for k in range(art.num_classes)]


def _safe_name(name: str) -> str:
    """A class name as a file name: runs of anything but letters, digits, '.', '-', '_' become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def _write_imagefolder(art: DistilledSet | LatentSet, ex: _Export, tmp: Path) -> list[Path]:
    from .synthetic.viewing import pil_image, viewer_for

    viewer = viewer_for(art.meta)
    pixels = viewer.pixels(ex.images)
    channels = int(pixels.shape[1])
    if channels not in (1, 3):
        raise DataError(f"images with {channels} channels cannot be saved as PNGs; export them as npz.")
    names = _class_names(art)
    written, entries = [], []
    for i, (img, label) in enumerate(zip(pixels, ex.labels.tolist(), strict=True)):
        rel = Path(f"{label:03d}-{_safe_name(names[label])}") / f"{i:05d}.png"
        (tmp / rel.parent).mkdir(exist_ok=True)
        pil_image(img.permute(1, 2, 0).numpy()).save(tmp / rel)  # uint8: mode L or RGB
        entry: dict = {"file": rel.as_posix(), "label": int(label), "kind": ex.kinds[i]}
        if ex.logits is not None:
            entry["label_logits"] = [float(v) for v in ex.logits[i]]
        entries.append(entry)
        written.append(tmp / rel)
    index = {
        "class_names": names,
        "label_kind": "soft" if ex.logits is not None else "hard",
        "lr": ex.lr,
        "pixels": viewer.how,
        "exact": viewer.exact,
        "preprocessing": art.meta.get("preprocessing"),
        "files": entries,
    }
    (tmp / "labels.json").write_text(json.dumps(index, indent=2) + "\n")
    return [*written, tmp / "labels.json"]


def _write_npz(art: DistilledSet | LatentSet, ex: _Export, tmp: Path) -> list[Path]:
    from .synthetic.viewing import viewer_for

    pixels = viewer_for(art.meta).pixels(ex.images).numpy()
    arrays = {
        "x_train": pixels,
        "y_train": ex.labels.numpy().astype(np.int64),
        "x_test": np.zeros((0, *pixels.shape[1:]), dtype=np.uint8),
        "y_test": np.zeros((0,), dtype=np.int64),
        "class_names": np.array(_class_names(art), dtype=str),
        "images": ex.images.numpy().astype(np.float32),
        "lr": np.array(ex.lr, dtype=np.float32),
    }
    if ex.logits is not None:
        arrays["label_logits"] = ex.logits.numpy().astype(np.float32)
    path = tmp / "distilled.npz"
    np.savez(path, **arrays)
    return [path]


def _preprocessing_text(meta: dict) -> str:
    prep = meta.get("preprocessing") or {}
    ds = (meta.get("dataset") or {}).get("name", "the dataset")
    if prep.get("kind") == "normalize":
        return (
            f"mean/std normalisation: (x - mean) / std per channel of [0, 1] pixels, mean = {prep['mean']}, "
            f"std = {prep['std']}.\nDD-Ranking normalises the real {ds} images with its own constants: "
            "they must be these (use_zca: false)."
        )
    if prep.get("kind") == "zca":
        split = meta.get("split") or {}
        return (
            f"ZCA whitening of [0, 1] pixels (kornia's ZCAWhitening, eps = {prep.get('zca_eps')}), fitted "
            f"on distillset's training split of {ds} ({split.get('train_size', '?')} images, split seed "
            f"{split.get('split_seed', '?')}; fingerprint {prep.get('zca_fingerprint')}).\nSet use_zca: true "
            "in DD-Ranking; its ZCA is fitted on the full training set, so the match is close but not exact."
        )
    return "unknown: the artifact's manifest names no preprocessing."


def _write_ddranking(art: DistilledSet | LatentSet, ex: _Export, tmp: Path) -> list[Path]:
    labels = ex.logits.clone() if ex.logits is not None else ex.labels.clone()
    paths = [tmp / "images.pt", tmp / "labels.pt", tmp / "lr.pt"]
    torch.save(ex.images.clone(), paths[0])
    torch.save(labels, paths[1])
    torch.save(torch.tensor(ex.lr, dtype=torch.float32), paths[2])
    n, c = int(ex.images.shape[0]), len(_class_names(art))
    shape = " x ".join(str(s) for s in ex.images.shape)
    if ex.logits is not None:
        label_text = (
            f"float32 {n} x {c} label logits (the soft target is their softmax, as DATM's labels_best.pt)"
        )
        evaluator = (
            "evaluator = SoftLabelEvaluator(\n"
            "        ..., soft_label_mode='S', soft_label_criterion='sce', use_zca=...\n    )\n"
            "    evaluator.compute_metrics(image_tensor=images, soft_labels=labels, syn_lr=lr)"
        )
    else:
        label_text = f"int64 {n} hard labels (class indices)"
        evaluator = (
            "evaluator = HardLabelEvaluator(..., use_zca=...)\n"
            "    evaluator.compute_metrics(image_tensor=images, hard_labels=labels, syn_lr=lr)"
        )
    ds = (art.meta.get("dataset") or {}).get("name", "?")
    ipc = art.meta.get("ipc")
    text = f"""A distilled set exported by distillset for DD-Ranking ({ds}, {c} classes, IPC {ipc}).

images.pt  float32 {shape} tensor, in the network's input space (as the authors' images_best.pt)
labels.pt  {label_text}
lr.pt      0-d float32 tensor: the learned lr ({ex.lr:.6g})

The images' preprocessing: {_preprocessing_text(art.meta)}

Each file holds one plain tensor, so torch.load(path, weights_only=True) reads it:

    import torch
    from ddranking.metrics import HardLabelEvaluator, SoftLabelEvaluator
    images = torch.load("images.pt", weights_only=True)
    labels = torch.load("labels.pt", weights_only=True)
    lr = torch.load("lr.pt", weights_only=True)
    {evaluator}
"""
    (tmp / "README.txt").write_text(text)
    return [*paths, tmp / "README.txt"]


_WRITERS: dict[str, Callable[[DistilledSet | LatentSet, _Export, Path], list[Path]]] = {
    "imagefolder": _write_imagefolder,
    "npz": _write_npz,
    "ddranking": _write_ddranking,
}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out} is a file; name a new or empty folder for the export.")
    if out.is_dir() and any(out.iterdir()):
        raise StoreError(
            f"{out} already holds files; name a new or empty folder for the export (it would mix with them)."
        )


def export_artifact(
    art: DistilledSet | LatentSet, out: str | Path, fmt: str, *, samples: int = 0
) -> list[Path]:
    """Write `art` into the new (or empty) folder `out` in format `fmt`; returns the files written.

    `imagefolder`: PNGs in viewing space, `out/<class:03d>-<name>/<i:05d>.png` (i: the image's index in
    the set), plus `out/labels.json` (each file's hard label, and label logits for a soft set).
    `npz`: `out/distilled.npz`, readable by the `npz` dataset loader (x_train: uint8 pixels, y_train: hard
    labels, empty x_test/y_test, class_names), plus `images` (float32, the network's input space, exact),
    `label_logits` (soft sets) and `lr`. `ddranking`: `out/images.pt` (network space), `out/labels.pt`
    (hard int64, or float label logits), `out/lr.pt` (0-d) and `out/README.txt`.
    A distributional artifact exports its priors' decoded means and `samples` fresh samples per prior
    (seed 0), each with its prior's label (soft labels as log-probabilities).
    """
    if fmt not in _WRITERS:
        raise ConfigError(f"unknown export format {fmt!r}; valid formats: {', '.join(EXPORT_FORMATS)}.")
    out = Path(out).expanduser()
    _check_out(out)
    ex = _export_parts(art, samples)

    def write(tmp: Path) -> list[Path]:
        written = _WRITERS[fmt](art, ex, tmp)
        _check_out(out)  # nothing appeared there meanwhile
        return [out / p.relative_to(tmp) for p in written]

    return atomic_write_dir(out, write)


def describe_export(
    art: DistilledSet | LatentSet, fmt: str, out: str | Path, paths: list[Path], samples: int = 0
) -> str:
    """One line: what was written, where."""
    if art.kind == LatentSet.kind:
        what = f"{art.num_priors} decoded means and {samples} sample(s) of each prior"
    else:
        what = f"{art.images.shape[0]} images"
    files = f"{len(paths)} file" + ("s" if len(paths) != 1 else "")
    return f"{what} exported as {fmt} ({files}) to {out}"


__all__ = [
    "EXPORT_FORMATS",
    "SPACES",
    "AuthorsFiles",
    "describe_export",
    "describe_import",
    "export_artifact",
    "find_authors_files",
    "import_authors",
]
