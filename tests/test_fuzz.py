"""Fuzzing with hypothesis: configs (key=value overrides, YAML files, presets) and every loader's files.

Each generated case must either work (and give a sane result) or stop with a DistillsetError whose
message is one line; any other exception is a bug. The files are real-format files made small and then
damaged: truncated, bytes flipped, header fields changed, huge declared sizes. The runs are derandomized
so that CI sees the same cases every time; DISTILLSET_FUZZ_EXAMPLES=N (see benchmarks/fuzz.py) runs N
cases per target instead of the default.
"""

from __future__ import annotations

import errno
import gzip
import io
import math
import os
import pickle
import re
import resource
import string
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from PIL import Image
from pydantic import BaseModel

import distillset
from distillset import utils
from distillset.cli import main
from distillset.config import Config, DataConfig, list_presets, load_config
from distillset.data import load_dataset
from distillset.data.prepared import PreparedData, prepare
from distillset.errors import DataError, DistillsetError, StoreError
from distillset.experts.store import TrajectoryStore
from distillset.synthetic import DistilledSet

EXAMPLES = int(os.environ.get("DISTILLSET_FUZZ_EXAMPLES", "0"))


def fuzz(default: int):  # noqa: ANN201 (a hypothesis settings decorator)
    """`default` cases per target (or DISTILLSET_FUZZ_EXAMPLES), the same cases on every run."""
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


def refused(fn, *args, **kwargs):  # noqa: ANN001, ANN201
    """`fn(*args, **kwargs)`, or None when it stops with a DistillsetError of one non-empty line."""
    try:
        out = fn(*args, **kwargs)
    except DistillsetError as e:
        message = str(e)
        assert message.strip() and "\n" not in message and "Traceback" not in message, repr(message)
        if currently_in_test_context():  # the share of each outcome, for --hypothesis-show-statistics
            event(f"refused: {type(e).__name__}")
        return None
    if currently_in_test_context():
        event("works")
    return out


# ---------------------------------------------------------------- configs


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _keys(sub, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


KEYS = _keys(Config)
SECTIONS = sorted({k.split(".")[0] for k in KEYS if "." in k})
PRESETS = sorted(list_presets())

# values a user might type, and ones YAML reads as something else than they look
TRICKY_VALUES = [
    "",
    "~",
    "null",
    "yes",
    "off",
    "1e400",
    "-1e400",
    ".nan",
    "-.inf",
    "0x10",
    "0o7",
    "1_000",
    "2001-12-14",
    "[1, 2",
    "{a: 1}",
    "[[[[[[[[[[]]]]]]]]]]",
    "[" * 3000,
    "{" * 3000,
    "&a [*a]",
    "!!python/object/apply:os.system ['true']",
    "!!binary aGVsbG8=",
    "- a\n- b",
    "a: b: c",
    "'unterminated",
    "\x00",
    "\ud800",
    "convnet,mlp",
    "convnet,,nonet",
    "99999999999999999999999999",
]

key_text = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(SECTIONS),
    st.builds(lambda k, c: k + c, st.sampled_from(KEYS), st.sampled_from(["x", ".", "..x", " ", "\n", "="])),
    st.text(alphabet=string.ascii_lowercase + "._- \n", max_size=20),
    st.text(max_size=12),
)
value_text = st.one_of(
    st.sampled_from(TRICKY_VALUES),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=20),
)
override = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", key_text, value_text),
    st.text(max_size=15),  # an item without '=' is not an override
)


@fuzz(100)
@given(source=st.one_of(st.none(), st.sampled_from(PRESETS)), overrides=st.lists(override, max_size=4))
@example(source=None, overrides=["data.name=" + "[" * 3000])
def test_fuzz_overrides(source, overrides):
    cfg = refused(load_config, source, overrides)
    if cfg is not None:
        assert isinstance(cfg, Config)
        assert Config.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg  # what a run directory keeps


def _yaml_values() -> st.SearchStrategy:
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=True),
        st.text(max_size=10),
        st.sampled_from(["convnet", "digits", "mlp", "trajectory", "sgd", "auto", "cpu"]),
    )
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


def _laughs(depth: int) -> str:
    """A YAML list whose aliases expand to 9**(depth + 1) ones (the billion laughs)."""
    if depth == 0:
        return "&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"
    return f"&a{depth} [{_laughs(depth - 1)}" + f", *a{depth - 1}" * 8 + "]"


@st.composite
def yaml_documents(draw) -> bytes:
    """A config file: sections of known and unknown keys with odd values, then perhaps damaged."""
    doc: dict = {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=5)):
        node = doc
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = draw(_yaml_values())
    if draw(st.booleans()):
        doc[draw(key_text)] = draw(st.one_of(_yaml_values(), st.dictionaries(key_text, _yaml_values())))
    if draw(st.booleans()):
        doc["base"] = draw(
            st.one_of(st.sampled_from(PRESETS), st.sampled_from(["digits", "nope"]), _yaml_values())
        )
    text = yaml.safe_dump(doc, sort_keys=False).encode()
    damage = draw(st.sampled_from(["none", "truncate", "insert", "bytes"]))
    if damage == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "insert":
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from(["\t", ":", "- ", "&x ", "*x", "{", "'", "\n  "])).encode()
            + text[at:]
        )
    elif damage == "bytes":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=4)) + text[at:]
    return text


@fuzz(100)
@given(text=yaml_documents(), overrides=st.lists(override, max_size=2))
@example(text=b"data: {name: digits}\n\xff\xfe", overrides=[])
@example(text=b"[" * 3000, overrides=[])
@example(text=b"eval: {models: [" + _laughs(9).encode() + b"]}\n", overrides=[])
def test_fuzz_yaml_files(tmp_path_factory, text, overrides):
    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_bytes(text)
    cfg = refused(load_config, str(path), overrides)
    if cfg is not None:
        assert Config.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_resolves_and_round_trips(name, tmp_path):
    cfg = load_config(name)
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    assert load_config(str(tmp_path / "config.yaml")) == cfg


def test_one_line_messages_name_the_key():
    with pytest.raises(DistillsetError) as info:
        load_config(None, ["data.ip\nc=1"])
    assert "\n" not in str(info.value) and re.search(r"data\.ip\\nc", str(info.value))


# ---------------------------------------------------------------- loaders: what a loaded dataset must be


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


@pytest.fixture
def bounded_memory():
    """No case may allocate much: a huge declared size must be refused before it is allocated."""
    before = _peak_rss_mb()
    yield
    assert _peak_rss_mb() - before < 500, "a case grew the process by more than 500 MB"


def load(name: str, root: Path, **data) -> PreparedData | None:  # noqa: ANN003
    """The command line's path to a dataset (config section -> load -> preprocess), or None when refused."""
    cfg = DataConfig(name=name, root=str(root), **data)
    prepared = refused(prepare, cfg, torch.device("cpu"))
    if prepared is not None:
        check_sane(prepared)
    return prepared


def check_sane(data: PreparedData) -> None:
    ds = data.dataset
    shape = ds.train.x.shape[1:]
    assert len(shape) == 3 and min(shape) >= 1, shape
    assert ds.num_classes == len(ds.class_names) >= 1
    assert len(ds.train) >= 1 and len(ds.test) >= 1
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == shape
        assert split.y.dtype == torch.int64 and split.y.shape == (split.x.shape[0],)
        if len(split.y):
            assert 0 <= int(split.y.min()) and int(split.y.max()) < ds.num_classes
            assert float(split.x.min()) >= 0 and float(split.x.max()) <= 1
    assert len(ds.mean) == len(ds.std) == shape[0]
    assert all(math.isfinite(m) for m in ds.mean) and all(math.isfinite(s) and s > 0 for s in ds.std)
    for x in (data.train_x, data.val_x, data.test_x):
        assert bool(torch.isfinite(x).all())


# ---------------------------------------------------------------- loaders: damage to a file's bytes

INTERESTING_WORDS = [0, 1, 2, 3, 255, 256, 3072, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@st.composite
def damaged(draw, blob: bytes, header: int = 64, words: tuple[int, ...] = ()) -> bytes:  # noqa: ANN001
    """`blob` with one to three of: a truncation, bytes flipped or set, bytes inserted or cut out, or (at
    the offsets `words`) a 4-byte big-endian header field set to an interesting value. Positions favour
    the first `header` bytes, where the format's structure is."""
    data = bytearray(blob)
    kinds = ["truncate", "flip", "set", "insert", "cut"] + (["word"] * 3 if words else [])
    for _ in range(draw(st.integers(1, 3))):
        n = len(data)
        at = draw(st.one_of(st.integers(0, min(n, header)), st.integers(0, n)))
        kind = draw(st.sampled_from(kinds))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and at < n:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and at < n:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "word":
            offset = draw(st.sampled_from(words))
            value = draw(st.one_of(st.sampled_from(INTERESTING_WORDS), st.integers(0, 2**32 - 1)))
            data[offset : offset + 4] = struct.pack(">I", value)
    return bytes(data)


def fresh_dir(base: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=base))


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return head + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def idx_set() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        IDX_FILES[0]: idx_bytes(rng.integers(0, 256, (12, 6, 5), dtype=np.uint8)),
        IDX_FILES[1]: idx_bytes(np.arange(12, dtype=np.uint8) % 10),
        IDX_FILES[2]: idx_bytes(rng.integers(0, 256, (4, 6, 5), dtype=np.uint8)),
        IDX_FILES[3]: idx_bytes(np.arange(4, dtype=np.uint8) % 10),
    }


@st.composite
def idx_cases(draw) -> tuple[dict[str, bytes], bool]:
    files = idx_set()
    target = draw(st.sampled_from(IDX_FILES))
    ndim = 3 if "images" in target else 1
    gz = draw(st.sampled_from(["plain", "gzip", "damaged gzip"]))
    if gz != "damaged gzip":
        files[target] = draw(damaged(files[target], 4 + 4 * ndim, tuple(4 + 4 * k for k in range(ndim))))
    if gz != "plain":
        files = {k: gzip.compress(v, mtime=0) for k, v in files.items()}
    if gz == "damaged gzip":
        files[target] = draw(damaged(files[target], 32))
    return files, gz != "plain"


@fuzz(80)
@given(case=idx_cases(), name=st.sampled_from(["mnist", "fashion-mnist"]))
@example(  # images of 0 x 5 pixels
    case=(
        {
            **idx_set(),
            IDX_FILES[0]: idx_bytes(np.zeros((12, 0, 5), np.uint8)),
            IDX_FILES[2]: idx_bytes(np.zeros((4, 0, 5), np.uint8)),
        },
        False,
    ),
    name="mnist",
)
def test_fuzz_idx(tmp_path_factory, bounded_memory, case, name):
    files, gz = case
    root = fresh_dir(tmp_path_factory.getbasetemp())
    for stem, blob in files.items():
        (root / (stem + (".gz" if gz else ""))).write_bytes(blob)
    load(name, root)


def test_idx_gzip_bomb_is_refused_without_reading_it_all(tmp_path):
    """A gzipped IDX file whose header promises 12 small images but that inflates to 200 MB."""
    files = idx_set()
    bomb = files[IDX_FILES[0]] + bytes(200 * 2**20)
    for stem, blob in files.items():
        (tmp_path / f"{stem}.gz").write_bytes(
            gzip.compress(bomb if stem == IDX_FILES[0] else blob, 1, mtime=0)
        )
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="train-images-idx3-ubyte.gz .*longer than its header"):
            load_dataset("mnist", tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


# -------------------------------------------------------------- pickled batches (CIFAR, Downsampled ImageNet)

ODD_LABELS = [  # label lists as a damaged or foreign batch may hold them (for 3 images)
    [0, 1],
    [0, 1, 2, 0],
    [-1, 0, 1],
    [0.5, 1.5, 2.5],
    ["0", "1", "2"],
    [2**70, 0, 1],
    [True, False, True],
    [[0], [1], [2]],
    [[0], 1, 2],
    np.array([0, 1, 2], dtype=np.float32),
    np.array([0, 1, 2], dtype=np.uint64) + np.uint64(2**63),
    np.array([[0, 1, 2]]),
    None,
    "012",
    {},
]


def odd_data(n: int, row: int) -> list:
    good = np.random.default_rng(1).integers(0, 256, (n, row), dtype=np.uint8)
    return [
        good[:, :-1],
        good.reshape(-1),
        good.astype(np.float64),
        good.astype(np.int16),
        good.tolist(),
        good[:0],
        good.reshape(n, 3, -1),
        np.zeros((n, 3 * 64 * 64 if row == 3072 else 3072), np.uint8),
        None,
        b"\x00" * row,
    ]


ODD_NAMES = [  # CIFAR-10's label_names
    [f"c{k}" for k in range(10)],
    [f"c{k}".encode() for k in range(9)],
    [b"\xff\xfe"] * 10,
    list(range(10)),
    [],
    None,
    b"names",
    [[b"a"]] * 10,
]


def keyed(d: dict, as_bytes: bool) -> dict:
    return {k.encode(): v for k, v in d.items()} if as_bytes else d


@st.composite
def pickled_batches(draw, good: dict[str, dict], labels_of: str, odd_labels: list, odd_data: list) -> dict:  # noqa: ANN001
    """The files of `good` (name -> dict) pickled, with one fault in one of them: odd labels or data, odd
    names (a meta file), a container other than a dict, str instead of bytes keys, or damaged bytes."""
    files = {name: pickle.dumps(keyed(obj, True), protocol=2) for name, obj in good.items()}
    target = draw(st.sampled_from(sorted(files)))
    obj = dict(good[target])
    meta = labels_of not in obj
    fault = draw(st.sampled_from(["field", "container", "str keys", "bytes", "bytes"]))
    if fault == "field" and meta:
        obj["label_names"] = draw(st.sampled_from(ODD_NAMES))
    elif fault == "field":
        key, odd = draw(st.sampled_from([(labels_of, odd_labels), ("data", odd_data)]))
        obj[key] = draw(st.sampled_from(odd))
    box: object = keyed(obj, fault != "str keys")
    if fault == "container":
        box = draw(st.sampled_from([[box], None, 3, "text", {"other": 1}, {}]))
    blob = pickle.dumps(box, protocol=draw(st.sampled_from([2, 4, 5])))
    files[target] = draw(damaged(blob, 128)) if fault == "bytes" else blob
    return files


# a pickle of a few bytes that makes the C unpickler grow its memo to 1.4 GB (a LONG_BINPUT index) ...
MEMO_BOMB = b"\x80\x02N" + b"r" + struct.pack("<I", 93_099_018) + b"."
# ... and one that declares a bytearray of 2 GB, which pickle allocates (zeroed) before reading it
BYTEARRAY_BOMB = b"\x80\x05\x96" + struct.pack("<Q", 2**31) + b"xx."


def cifar_files() -> dict[str, dict]:
    rng = np.random.default_rng(0)
    files = {
        name: {
            "batch_label": b"batch",
            "labels": [(i + j) % 10 for j in range(3)],
            "data": rng.integers(0, 256, (3, 3072), np.uint8),
        }
        for i, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"])
    }
    files["batches.meta"] = {"label_names": [f"c{k}".encode() for k in range(10)], "num_vis": 3072}
    return files


def cifar_with(name: str, key: str, value: object) -> dict[str, bytes]:  # noqa: ANN001
    files = cifar_files()
    files[name] = {**files[name], key: value}
    return {k: pickle.dumps(keyed(v, True), protocol=2) for k, v in files.items()}


@fuzz(150)
@given(files=pickled_batches(cifar_files(), "labels", ODD_LABELS, odd_data(3, 3072)))
@example(files={**cifar_with("test_batch", "labels", [0, 1, 2]), "data_batch_1": MEMO_BOMB})
@example(files={**cifar_with("test_batch", "labels", [0, 1, 2]), "data_batch_3": BYTEARRAY_BOMB})
@example(files=cifar_with("batches.meta", "label_names", [b"\xff"] * 10))  # not UTF-8
@example(files=cifar_with("data_batch_2", "labels", [2**70, 0, 1]))  # overflows int64
@example(files=cifar_with("data_batch_2", "labels", [0.5, 1.5, 2.5]))  # not integers
@example(files=cifar_with("test_batch", "labels", ["0", "1", "2"]))  # text
def test_fuzz_cifar_batches(tmp_path_factory, bounded_memory, files):
    root = fresh_dir(tmp_path_factory.getbasetemp())
    base = root / "cifar-10-batches-py"
    base.mkdir()
    for name, blob in files.items():
        (base / name).write_bytes(blob)
    load("cifar10", root)


def imagenet_ds_files(size: int) -> dict[str, dict]:
    row, rng = 3 * size * size, np.random.default_rng(0)
    return {
        name: {
            "data": rng.integers(0, 256, (3, row), np.uint8),
            "labels": [(i + j) % 4 + 1 for j in range(3)],
            "mean": np.zeros(row),
        }
        for i, name in enumerate(["train_data_batch_1", "train_data_batch_2", "val_data"])
    }


MAP_CLSLOC = "".join(f"n0{k} {k} name{k}\n" for k in range(1, 5))


@st.composite
def imagenet_ds_cases(draw) -> tuple[dict[str, bytes], int]:
    size = draw(st.sampled_from([32, 64]))
    odd_labels = [
        [v + 1 if isinstance(v, int) and not isinstance(v, bool) else v for v in y]
        if isinstance(y, list)
        else y
        for y in ODD_LABELS
    ]
    odd_labels += [[0, 1, 2], [1001, 1, 2]]
    files = draw(pickled_batches(imagenet_ds_files(size), "labels", odd_labels, odd_data(3, 3 * size * size)))
    names = draw(
        st.sampled_from(
            [
                None,
                None,
                None,
                MAP_CLSLOC,
                MAP_CLSLOC.replace(" 2 ", " \u00b2 "),  # a digit to str.isdigit, not to int()
                MAP_CLSLOC.replace(" 2 ", " 0 "),
                MAP_CLSLOC.replace(" 2 ", " 1 "),
                MAP_CLSLOC.replace(" 2 ", " 99999999999999999999 "),
                MAP_CLSLOC[:-12],
                "\ufeff" + MAP_CLSLOC,
            ]
        )
    )
    if names is not None:
        files["map_clsloc.txt"] = names.encode() if draw(st.booleans()) else names.encode("utf-16")
    return files, size


def imagenet_ds_with(
    name: str, key: str, value: object, map_clsloc: str | None = None
) -> tuple[dict[str, bytes], int]:  # noqa: ANN001
    files = imagenet_ds_files(32)
    files[name] = {**files[name], key: value}
    blobs = {k: pickle.dumps(v, protocol=4) for k, v in files.items()}
    if map_clsloc is not None:
        blobs["map_clsloc.txt"] = map_clsloc.encode()
    return blobs, 32


@fuzz(150)
@given(case=imagenet_ds_cases())
@example(case=imagenet_ds_with("val_data", "labels", [[1], 2, 3]))  # an inhomogeneous list
@example(case=imagenet_ds_with("val_data", "labels", [1, 2, 3], MAP_CLSLOC.replace(" 2 ", " \u00b2 ")))
def test_fuzz_imagenet_downsampled(tmp_path_factory, bounded_memory, case):
    files, size = case
    root = fresh_dir(tmp_path_factory.getbasetemp())
    for name, blob in files.items():
        (root / name).write_bytes(blob)
    load(f"imagenet{size}", root)


# ---------------------------------------------------------------- npz


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def npy_header_only(shape: tuple, descr: str = "|u1", data: bytes = b"") -> bytes:
    """An .npy member whose header declares `shape` but that holds only `data`."""
    return npy_raw(repr({"descr": descr, "fortran_order": False, "shape": shape}), data)


def npy_raw(header: str, data: bytes = b"") -> bytes:
    """An .npy member (version 1.0) with the header text `header`."""
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def npz_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (8, 5, 4), dtype=np.uint8),
        "y_train": np.arange(8) % 3,
        "x_test": rng.integers(0, 256, (3, 5, 4), dtype=np.uint8),
        "y_test": np.arange(3),
    }


def odd_images() -> list:
    x = np.random.default_rng(2).integers(0, 256, (8, 5, 4), dtype=np.uint8)
    f = x.astype(np.float32) / 255
    return [
        x[..., None],  # N x H x W x 1
        np.repeat(x[:, None], 3, axis=1),  # N x 3 x H x W
        np.repeat(x[..., None], 4, axis=3),  # RGBA, channels last
        f,
        f.astype(np.float16),
        f * 2,
        np.where(x > 128, np.nan, f),
        np.where(x > 128, -np.inf, f),
        x.astype(np.int16),
        x > 128,
        f.astype(np.complex64),
        x.astype("datetime64[s]"),
        x.astype("S1"),
        np.zeros(8, dtype=[("a", "u1"), ("b", "f4")]),
        np.array(x, dtype=object),
        x[0, 0, 0],  # 0-d
        x.reshape(8, -1)[:, 0],  # 1-d
        x[:, :, :, None, None],  # 5-d
        x[:, :0],  # 0 rows
        x[:0],  # no images
        np.repeat(x[:, None], 2, axis=1),  # 2 channels
        np.asfortranarray(np.repeat(x[..., None], 3, axis=3)),
    ]


def odd_npz_labels() -> list:
    y = np.arange(8) % 3
    return [
        y.astype(np.int8),
        y.astype(np.uint64) + np.uint64(2**63),
        y.astype(np.float32),
        y.astype(bool),
        y[:, None],
        np.stack([y, y], axis=1),
        y.astype(str),
        y - 1,
        y[:-1],
        np.int64(1),
        np.array([2**62] * 8),
    ]


@st.composite
def npz_cases(draw) -> bytes:
    """An .npz file (written with zipfile, so that a damaged member still has a valid CRC) with one fault."""
    members = {f"{k}.npy": npy_bytes(v) for k, v in npz_arrays().items()}
    fault = draw(
        st.sampled_from(["images", "labels", "names", "missing", "raw", "huge", "member bytes", "zip bytes"])
    )
    key = draw(
        st.sampled_from(["x_train", "x_test"] if fault in ("images", "huge") else ["y_train", "y_test"])
    )
    if fault == "images":
        members[f"{key}.npy"] = npy_bytes(draw(st.sampled_from(odd_images())))
    elif fault == "labels":
        odd = draw(st.sampled_from(odd_npz_labels()))
        members[f"{key}.npy"] = npy_bytes(odd if key == "y_train" or odd.ndim == 0 else odd[:3])
    elif fault == "names":
        names = draw(
            st.sampled_from(
                [
                    ["a", "b", "c"],
                    ["a", "b"],
                    [b"\xff", b"b", b"c"],
                    [],
                    [[1, 2], [3, 4]],
                    [1, 2, 3],
                    ["\ud800", "b", "c"],
                ]
            )
        )
        members["class_names.npy"] = npy_bytes(
            np.array(names)
            if not any(isinstance(n, str) and "\ud800" in n for n in names)
            else np.array(names, dtype=object)
        )
    elif fault == "missing":
        del members[draw(st.sampled_from(sorted(members)))]
    elif fault == "raw":  # a member that is not an .npy array
        name = draw(st.sampled_from(sorted(members)))
        members[name.removesuffix(".npy") if draw(st.booleans()) else name] = b"not an array"
        members.pop(name, None) if not name.endswith(".npy") else None
    elif fault == "huge":
        shape = draw(
            st.sampled_from([(10**12, 5, 4), (2**40,), (10**6, 1000, 1000), (-1, 5, 4), (8, 5, 4, 10**9)])
        )
        members[f"{key}.npy"] = npy_header_only(
            shape, draw(st.sampled_from(["|u1", "<f4", "<f8"])), b"\x00" * 64
        )
    elif fault == "member bytes":
        name = draw(st.sampled_from(sorted(members)))
        members[name] = draw(damaged(members[name], 128))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    blob = buf.getvalue()
    return draw(damaged(blob, 256)) if fault == "zip bytes" else blob


def npz_with(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, blob in {**{f"{k}.npy": npy_bytes(v) for k, v in npz_arrays().items()}, **members}.items():
            z.writestr(name, blob)
    return buf.getvalue()


@fuzz(150)
@given(blob=npz_cases())
@example(blob=npz_with(**{"x_train.npy": npy_header_only((10**12, 5, 4))}))  # 20 TB declared
@example(blob=npz_with(**{"y_test.npy": npy_bytes(np.array([0, 1, 10**12]))}))  # 10**12 classes
@example(blob=npz_with(**{"x_test.npy": b"not an array"}))
@example(
    blob=npz_with(**{"y_test.npy": npy_raw("{'descr': ['<i8', 'fortran_order': False, 'shape': (3,), }")})
)
@example(blob=npz_with(**{"class_names.npy": npy_bytes(np.array([b"\xff", b"b", b"c"]))}))
def test_fuzz_npz(tmp_path_factory, bounded_memory, blob):
    path = fresh_dir(tmp_path_factory.getbasetemp()) / "data.npz"
    path.write_bytes(blob)
    load("npz", path)


# ---------------------------------------------------------------- image folders and Tiny ImageNet

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF", ".webp": "WEBP"}


def image_bytes(suffix: str, size: tuple[int, int] = (6, 5), mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, IMAGE_FORMATS[suffix])
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header (with a correct CRC) declares width x height pixels."""
    blob = bytearray(image_bytes(".png"))
    ihdr = blob[12:29]  # 'IHDR' + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", width, height)
    blob[12:29] = ihdr
    blob[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(blob)


def folder_files(suffixes: tuple[str, ...] = (".png", ".jpg")) -> dict[str, bytes]:
    return {
        f"{cls}/img{i}{suffix}": image_bytes(suffix, seed=10 * k + i)
        for k, cls in enumerate(["cat", "dog"])
        for i, suffix in enumerate(suffixes)
    }


ODD_IMAGES = [
    b"",
    b"not an image",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"BM" + bytes(60),
]


@st.composite
def folder_cases(draw) -> tuple[dict[str, bytes | None], int | None]:
    """An image folder (two classes of two images, or train/ and test/) with one fault; None marks a
    directory where a file belongs."""
    suffixes = tuple(draw(st.lists(st.sampled_from(sorted(IMAGE_FORMATS)), min_size=2, max_size=2)))
    files: dict[str, bytes | None] = dict(folder_files(suffixes))
    if draw(st.booleans()):
        files = {f"train/{k}": v for k, v in files.items()}
        files.update({f"test/{k}": v for k, v in folder_files((suffixes[0],)).items()})
    name = draw(st.sampled_from(sorted(files)))
    suffix = Path(name).suffix
    fault = draw(
        st.sampled_from(["none", "bytes", "bytes", "png size", "other size", "mode", "odd", "dir", "layout"])
    )
    if fault == "bytes":
        files[name] = draw(damaged(files[name], 64))
    elif fault == "png size":
        w, h = draw(
            st.sampled_from([(0, 5), (1, 1), (6, 0), (2**31 - 1, 1), (12000, 12000), (30000, 30000), (7, 5)])
        )
        files[str(Path(name).with_suffix(".png"))] = png_with_size(w, h)
    elif fault == "other size":
        files[name] = image_bytes(suffix, draw(st.sampled_from([(5, 6), (1, 1), (64, 3)])))
    elif fault == "mode":
        suffix_of = {
            "L": ".jpg",
            "P": ".gif",
            "RGBA": ".png",
            "LA": ".png",
            "1": ".bmp",
            "I": ".tif",
            "F": ".tif",
        }
        mode = draw(st.sampled_from([*suffix_of, "CMYK", "I;16"]))
        target = {**suffix_of, "CMYK": ".jpg", "I;16": ".png"}[mode]
        del files[name]
        files[str(Path(name).with_suffix(target))] = image_bytes(target, mode=mode)
    elif fault == "odd":
        files[name] = draw(st.sampled_from(ODD_IMAGES))
    elif fault == "dir":
        files[name] = None
    elif fault == "layout":
        change = draw(st.sampled_from(["extra test class", "empty class", "no classes", "empty test"]))
        if change == "extra test class":
            files["test/bird/x.png"] = image_bytes(".png")
        elif change == "empty class":
            files = {k: v for k, v in files.items() if "/dog/" not in f"/{k}"}
            files["dog/.keep" if not any(k.startswith("train/") for k in files) else "train/dog/.keep"] = b""
        elif change == "no classes":
            files = {"readme.txt": b"hello"}
        else:
            files = {k: v for k, v in files.items() if not k.startswith("test/")}
            files["test/cat/readme.txt"] = b""
    image_size = draw(st.sampled_from([None, None, 4, 1, 3]))
    return files, image_size


def write_tree(root: Path, files: dict[str, bytes | None]) -> None:
    for name, blob in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if blob is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(blob)


@fuzz(120)
@given(case=folder_cases())
@example(case=({**folder_files((".png", ".png")), "dog/img1.png": png_with_size(12000, 12000)}, None))
@example(case=({**folder_files((".png", ".png")), "dog/img1.png": png_with_size(0, 5)}, None))
def test_fuzz_image_folders(tmp_path_factory, bounded_memory, case):
    files, image_size = case
    root = fresh_dir(tmp_path_factory.getbasetemp())
    write_tree(root, files)
    load("imagefolder", root, image_size=image_size)


def tiny_files() -> dict[str, bytes]:
    wnids = ["n02", "n01"]
    files = {
        "wnids.txt": "\n".join(wnids).encode() + b"\n",
        "words.txt": b"n01\tgoldfish, fish\nn02\tlemon\n",
    }
    for k, w in enumerate(wnids):
        for i in range(2):
            files[f"train/{w}/images/{w}_{i}.JPEG"] = image_bytes(".jpg", (8, 8), seed=k * 2 + i)
    lines = []
    for i in range(2):
        files[f"val/images/val_{i}.JPEG"] = image_bytes(".jpg", (8, 8), seed=9 + i)
        lines.append(f"val_{i}.JPEG\t{wnids[i]}\t0\t0\t7\t7")
    files["val/val_annotations.txt"] = ("\n".join(lines) + "\n").encode()
    return files


@st.composite
def tiny_cases(draw) -> dict[str, bytes]:
    files = tiny_files()
    name = draw(st.sampled_from(sorted(files)))
    fault = draw(st.sampled_from(["bytes", "bytes", "utf-16", "not utf-8", "odd", "missing", "none"]))
    if fault == "bytes":
        files[name] = draw(damaged(files[name], 64))
    elif fault == "utf-16" and name.endswith(".txt"):
        files[name] = files[name].decode().encode("utf-16")
    elif fault == "not utf-8":
        files[name] = files[name][:3] + b"\xff\xfe" + files[name][3:]
    elif fault == "odd":
        files[name] = draw(st.sampled_from([*ODD_IMAGES, b"\t\t\t\n", b"\n\n"]))
    elif fault == "missing":
        del files[name]
    return files


@fuzz(60)
@given(files=tiny_cases())
@example(files={**tiny_files(), "wnids.txt": b"n02\n\xff\xfen01\n"})
@example(files={**tiny_files(), "val/val_annotations.txt": b"val_0.JPEG\tn02\xff\n"})
def test_fuzz_tinyimagenet(tmp_path_factory, bounded_memory, files):
    root = fresh_dir(tmp_path_factory.getbasetemp())
    write_tree(root / "tiny-imagenet-200", files)
    load("tinyimagenet", root, image_size=8)


# ---------------------------------------------------------------- the command line

CLI_BASE = ["baseline", "random", "--ipc", "1", "random-digits", "device=cpu"]


def cli(capsys, argv: list[str]) -> tuple[int, str]:  # noqa: ANN001
    """Exit status and stderr of `distillset ARGV`, run in this process."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def check_one_line(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
        assert "Traceback" not in err


@fuzz(15)
@given(overrides=st.lists(st.builds(lambda k, v: f"{k}={v}", key_text, value_text), max_size=3))
@example(overrides=["data.ipcc=2"])
@example(overrides=["data.ip\nc=2"])
def test_fuzz_command_line_overrides(tmp_path_factory, capsys, overrides):
    out = fresh_dir(tmp_path_factory.getbasetemp()) / "art"
    check_one_line(*cli(capsys, [*CLI_BASE, "--out", str(out), *overrides]))


@pytest.mark.parametrize("items", [["random-digits", "mtt-digits"], ["nope.yaml"]])
def test_source_errors_are_one_line(tmp_path, capsys, items):
    code, err = cli(capsys, ["baseline", "random", "--ipc", "1", "--out", str(tmp_path / "a"), *items])
    assert code == 2
    check_one_line(code, err)


def test_bad_data_files_through_a_real_process(tmp_path):
    """The installed entry point, in a fresh interpreter: exit status 2, one line, no traceback."""
    (tmp_path / "bad.npz").write_bytes(npz_with(**{"x_train.npy": npy_header_only((10**12, 5, 4))}))
    env = {**os.environ, "PYTHONPATH": str(Path(distillset.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    items = ["random-digits", "data.name=npz", f"data.root={tmp_path / 'bad.npz'}"]
    argv = [sys.executable, "-m", "distillset", *CLI_BASE[:4], "--out", str(tmp_path / "art"), *items]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "declares shape (1000000000000, 5, 4)" in proc.stderr, proc.stderr
    check_one_line(proc.returncode, proc.stderr)
    assert not (tmp_path / "art").exists()


# ---------------------------------------------------------------- a full disk


def no_space(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    raise OSError(errno.ENOSPC, "No space left on device")


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path, monkeypatch, where):
    path = tmp_path / "manifest.json"
    path.write_text("old")

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            f.write(b"new" * 1000)
            if where == "write":  # the disk fills up half-way through
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    if where != "write":
        monkeypatch.setattr(utils.os, where if where == "fsync" else "replace", no_space)
    with pytest.raises(StoreError) as info:
        utils.atomic_write(path, write)
    monkeypatch.undo()
    message = str(info.value)
    assert (
        message.startswith(f"{path} could not be written: no space is left on the device")
        and "\n" not in message
    )
    assert path.read_text() == "old" and listing(tmp_path) == ["manifest.json"]


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
def test_a_full_disk_leaves_no_half_written_directory(tmp_path, monkeypatch, where, existing):
    dest = tmp_path / "export"
    if existing:
        dest.mkdir()  # an empty directory to fill

    def write(tmp: Path) -> None:
        (tmp / "0").mkdir()
        (tmp / "0" / "a.png").write_bytes(b"x" * 100)
        if where == "write":
            raise OSError(errno.ENOSPC, "No space left on device")
        (tmp / "0" / "b.png").write_bytes(b"y" * 100)

    if where != "write":
        monkeypatch.setattr(utils.os, where if where == "fsync" else "replace", no_space)
    with pytest.raises(StoreError, match="no space is left on the device"):
        utils.atomic_write_dir(dest, write)
    monkeypatch.undo()
    assert listing(tmp_path) == (["export"] if existing else [])


@fuzz(12)
@given(fail_at=st.integers(1, 4))
def test_a_full_disk_during_a_command(tmp_path_factory, capsys, fail_at):
    """The disk fills up at the fail_at-th file synced by `distillset baseline random`: one line, exit 2,
    and no half-written file (an artifact directory without its manifest, written last, is incomplete)."""
    out = fresh_dir(tmp_path_factory.getbasetemp()) / "art"
    calls, real = [], utils._fsync

    def fsync(path: str | Path) -> None:
        calls.append(path)
        if len(calls) == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    with mock.patch.object(utils, "_fsync", fsync):
        code, err = cli(capsys, [*CLI_BASE, "--out", str(out)])
    check_one_line(code, err)
    assert code == (2 if len(calls) >= fail_at else 0)
    if code:
        assert "no space is left on the device" in err or "No space left on device" in err
    assert not [p for p in out.parent.rglob("*") if p.name.endswith(".tmp")]
    if (out / "manifest.json").exists():
        DistilledSet.load(out)


def test_a_command_stopped_by_a_full_disk_continues_to_the_same_result(tmp_path, capsys):
    """Expert training stopped by a full disk at its third write, then run again: the same experts as a
    run that was never stopped."""
    argv = ["experts", "mtt-digits", "model.width=8", "experts.num_experts=1", "experts.train_epochs=2"]
    argv += ["experts.batch_train=256", "device=cpu"]
    calls, real = [], utils._fsync

    def fsync(path: str | Path) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    with mock.patch.object(utils, "_fsync", fsync):
        code, err = cli(capsys, [*argv, "--out", str(tmp_path / "cut")])
    assert code == 2 and "no space is left on the device" in err
    check_one_line(code, err)
    assert cli(capsys, [*argv, "--out", str(tmp_path / "cut")])[0] == 0
    assert cli(capsys, [*argv, "--out", str(tmp_path / "whole")])[0] == 0
    cut = TrajectoryStore(tmp_path / "cut" / "experts").load(0)
    assert torch.equal(cut, TrajectoryStore(tmp_path / "whole" / "experts").load(0))


def test_other_os_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    code, err = cli(capsys, [*CLI_BASE, "--out", str(tmp_path / "file" / "art")])
    assert code == 2 and "Not a directory" in err and str(tmp_path / "file") in err
    check_one_line(code, err)
