"""Downsampled ImageNet (Imagenet32/Imagenet64): tiny files in the real pickled-batch format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from distillset.data import list_datasets, load_dataset
from distillset.errors import DataError


def rows(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3 * size * size), dtype=np.uint8)


def dump(path: Path, obj: object, protocol: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def batch(data: np.ndarray, labels: list[int], *, train: bool, bytes_keys: bool = False) -> dict:
    d: dict = {"data": data, "labels": labels}
    if train:  # the train batches also carry the mean image, which the loader ignores
        d["mean"] = data.mean(axis=0)
    return {k.encode(): v for k, v in d.items()} if bytes_keys else d


def make_ds(
    root: Path,
    *,
    size: int = 32,
    per_batch: int = 10,
    n_batches: int = 2,
    n_val: int = 6,
    classes: int = 5,
    suffix: str = "",
    train_dir: str = "",
    val_dir: str = "",
    bytes_keys: bool = False,
    protocol: int = 4,
) -> dict:
    """Batches train_data_batch_1..n and val_data; labels are 1-based, cycling over 1..classes."""
    out: dict = {"train": [], "train_labels": []}
    for i in range(1, n_batches + 1):
        data = rows(per_batch, size, i)
        labels = [(j + i) % classes + 1 for j in range(per_batch)]
        out["train"].append(data)
        out["train_labels"] += labels
        path = root / train_dir / f"train_data_batch_{i}{suffix}"
        dump(path, batch(data, labels, train=True, bytes_keys=bytes_keys), protocol)
    out["val"] = rows(n_val, size, 99)
    out["val_labels"] = [j % classes + 1 for j in range(n_val)]
    val = batch(out["val"], out["val_labels"], train=False, bytes_keys=bytes_keys)
    dump(root / val_dir / f"val_data{suffix}", val, protocol)
    return out


def as_float(a: np.ndarray, size: int) -> torch.Tensor:
    return torch.from_numpy(a.reshape(-1, 3, size, size)).float() / 255


def one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_dataset(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


class _Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_both_sizes_are_registered():
    assert {"imagenet32", "imagenet64"} <= set(list_datasets())


def test_imagenet32_round_trip(tmp_path):
    files = make_ds(tmp_path, size=32)
    ds = load_dataset("imagenet32", tmp_path, val_size=0)
    assert ds.train.x.shape == (20, 3, 32, 32) and ds.test.x.shape == (6, 3, 32, 32)
    assert ds.train.x.dtype == torch.float32 and ds.split["kind"] == "official"
    # Channel-major rows: channel 2 (blue), row 5, column 7 of image 3 of batch 1.
    value = int(files["train"][0][3, 2 * 1024 + 5 * 32 + 7])
    assert ds.train.x[3, 2, 5, 7].item() == pytest.approx(value / 255)
    # Batches in numeric order, labels 0-based, val_data as the test split.
    assert torch.equal(ds.train.x, as_float(np.concatenate(files["train"]), 32))
    assert ds.train.y.tolist() == [k - 1 for k in files["train_labels"]]
    assert torch.equal(ds.test.x, as_float(files["val"], 32))
    assert ds.test.y.tolist() == [k - 1 for k in files["val_labels"]]
    # A subset of the first 5 classes has 5 classes, named by index without map_clsloc.txt.
    assert ds.num_classes == 5 and ds.class_names == [f"class_{k:03d}" for k in range(5)]
    # ImageNet's standard statistics (computing them over 1.28M images would not fit beside the set)
    assert ds.mean == [0.485, 0.456, 0.406] and ds.std == [0.229, 0.224, 0.225]


def test_imagenet64_through_load_dataset(tmp_path):
    # The archives unzip into one folder each; the files may carry a .pkl suffix.
    files = make_ds(tmp_path, size=64, suffix=".pkl", train_dir="Imagenet64_train", val_dir="Imagenet64_val")
    ds = load_dataset("imagenet64", str(tmp_path), val_size=5, split_seed=3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 6)
    assert ds.train.x.shape[1:] == (3, 64, 64) and ds.split["val_size"] == 5
    assert torch.bincount(ds.val.y, minlength=5).tolist() == [1] * 5  # stratified out of train
    assert torch.equal(ds.test.x, as_float(files["val"], 64))
    assert ds.test.y.tolist() == [k - 1 for k in files["val_labels"]]
    again = load_dataset("imagenet64", tmp_path, val_size=5, split_seed=3)
    assert torch.equal(again.val.x, ds.val.x) and torch.equal(again.train.y, ds.train.y)


def test_any_number_of_batches_in_numeric_order(tmp_path):
    files = make_ds(tmp_path, n_batches=11, per_batch=2)
    ds = load_dataset("imagenet32", tmp_path, val_size=0)
    # train_data_batch_10 and _11 come after _2, not after _1.
    assert torch.equal(ds.train.x, as_float(np.concatenate(files["train"]), 32))


def test_python2_style_bytes_keys(tmp_path):
    make_ds(tmp_path, bytes_keys=True, protocol=2)
    ds = load_dataset("imagenet32", tmp_path, val_size=0)
    assert len(ds.train) == 20 and len(ds.test) == 6


def test_class_names_from_map_clsloc(tmp_path):
    make_ds(tmp_path, classes=3)
    lines = [f"n{k:08d} {k} name_{k}" for k in range(1000, 0, -1)]  # any order: sorted by the index
    (tmp_path / "map_clsloc.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset("imagenet32", tmp_path, val_size=0)
    assert ds.class_names == ["name_1", "name_2", "name_3"]
    (tmp_path / "map_clsloc.txt").write_text("n01440764 1 tench\nbroken line\n")
    one_line_error(r"map_clsloc.txt line 2 is not 'wnid index name'", "imagenet32", tmp_path)


def test_all_thousand_classes(tmp_path):
    make_ds(tmp_path, classes=1000, per_batch=4, n_batches=1, n_val=2)
    data = rows(2, 32, 5)
    dump(tmp_path / "train_data_batch_2", batch(data, [1000, 999], train=True))
    ds = load_dataset("imagenet32", tmp_path, val_size=0)
    assert ds.num_classes == 1000 and ds.class_names[-1] == "class_999"
    assert ds.train.y[-2:].tolist() == [999, 998]


def test_malicious_pickle_is_refused(tmp_path):
    make_ds(tmp_path)
    marker = tmp_path / "pwned"
    dump(tmp_path / "val_data", {"data": _Evil(f"touch {marker}"), "labels": [1]}, protocol=2)
    one_line_error(r"val_data was refused because it would call .*system", "imagenet32", tmp_path)
    assert not marker.exists()


def test_bad_row_length_and_wrong_size(tmp_path):
    make_ds(tmp_path, size=64)
    msg = one_line_error(r"imagenet64", "imagenet32", tmp_path)
    assert "holds 64x64 images, not 32x32" in msg
    dump(tmp_path / "train_data_batch_2", batch(rows(4, 16, 0), [1] * 4, train=True))
    msg = one_line_error(r"train_data_batch_2 has rows of 768 values", "imagenet64", tmp_path)
    assert "3*64*64 = 12288" in msg and "image-net.org" in msg


def test_bad_keys_and_labels(tmp_path):
    make_ds(tmp_path)
    path = tmp_path / "train_data_batch_1"
    for labels in ([0] + [1] * 9, [1001] + [1] * 9):
        dump(path, batch(rows(10, 32, 1), labels, train=True))
        one_line_error(r"train_data_batch_1 has labels .* outside 1..1000", "imagenet32", tmp_path)
    dump(path, {"data": rows(10, 32, 1)})
    one_line_error(r"train_data_batch_1 lacks a 'labels' list", "imagenet32", tmp_path)
    dump(path, {"labels": [1] * 10})
    one_line_error(r"train_data_batch_1 lacks a uint8 N x 3072 'data' array", "imagenet32", tmp_path)


def test_missing_files(tmp_path):
    one_line_error(r"needs data.root.*Downsampled ImageNet 64x64.*image-net.org", "imagenet64")
    one_line_error(r"does not exist.*image-net.org", "imagenet32", tmp_path / "nowhere")
    one_line_error(r"holds no train_data_batch_\* files.*image-net.org", "imagenet32", tmp_path)
    make_ds(tmp_path, n_batches=3)
    (tmp_path / "train_data_batch_2").unlink()
    one_line_error(r"train_data_batch_2 is missing .*1..3", "imagenet32", tmp_path)
    (tmp_path / "train_data_batch_3").unlink()
    (tmp_path / "val_data").unlink()
    one_line_error(r"val_data is missing", "imagenet32", tmp_path)
