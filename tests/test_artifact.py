import json

import pytest
import torch
from safetensors.torch import load_file

from distillset.baseline import random_subset
from distillset.errors import StoreError
from distillset.synthetic import DistilledSet, random_real_indices


def test_random_subset_round_trip(tiny_cfg, digits_data, tmp_path):
    cfg = tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={"ipc": 3})})
    art = random_subset(cfg, digits_data)
    art.save(tmp_path / "art")
    tensors = load_file(str(tmp_path / "art" / "synthetic.safetensors"))
    assert set(tensors) == {"images", "labels", "lr"}
    assert tensors["images"].dtype == torch.float32 and tensors["labels"].dtype == torch.int64
    assert tensors["images"].shape == (30, 1, 8, 8)
    assert torch.equal(torch.bincount(tensors["labels"]), torch.full((10,), 3))

    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["ipc"] == 3 and manifest["num_classes"] == 10 and manifest["label_kind"] == "hard"
    assert manifest["image_shape"] == [1, 8, 8] and manifest["method"] == "random"
    assert manifest["dataset"]["name"] == "digits" and manifest["split"] == digits_data.dataset.split
    assert manifest["preprocessing"]["zca"] is False
    assert manifest["storage_bytes"] == {
        "images": 30 * 64 * 4,
        "labels": 30 * 8,
        "lr": 4,
        "decoders": 0,
        "latents": 0,
        "total": 30 * 64 * 4 + 244,
    }
    # hand count: 30 images of 64 floats and the lr are floats; hard labels are integers (bytes only)
    assert manifest["storage"]["floats"] == 30 * 64 + 1
    assert manifest["storage"]["ipc_equivalent"] == pytest.approx((30 * 64 + 1) / (10 * 64))

    back = DistilledSet.load(tmp_path / "art")
    assert torch.equal(back.images, art.images) and torch.equal(back.labels, art.labels)
    assert back.lr == pytest.approx(art.lr) and back.meta == art.meta
    # The images are real training images in the network's input space.
    rows = (digits_data.train_x.unsqueeze(0) == back.images[:, None]).flatten(2).all(-1).any(-1)
    assert bool(rows.all())


def test_soft_label_artifact_round_trip(tmp_path):
    art = DistilledSet(
        images=torch.randn(4, 1, 8, 8), label_logits=torch.randn(4, 10), lr=0.03, meta={"ipc": 2}
    )
    art.save(tmp_path)
    back = DistilledSet.load(tmp_path)
    assert back.label_kind == "soft" and torch.equal(back.label_logits, art.label_logits)
    assert back.storage_bytes()["labels"] == 4 * 10 * 4
    # soft labels are floats: 4 images x 64 + 4 x 10 label logits + the lr, over 10 classes x 64 pixels
    assert back.storage()["floats"] == 4 * 64 + 40 + 1
    assert back.storage()["ipc_equivalent"] == pytest.approx(297 / 640)
    assert torch.equal(back.hard_labels, art.label_logits.argmax(1))


def test_artifact_errors(tmp_path):
    with pytest.raises(ValueError):
        DistilledSet(images=torch.zeros(2, 1, 2, 2), lr=0.1)
    with pytest.raises(StoreError, match="not a distilled-set artifact"):
        DistilledSet.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "synthetic.safetensors").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="corrupt"):
        DistilledSet.load(tmp_path)


def test_random_real_indices_per_class_distinct_and_seeded():
    y = torch.tensor([0] * 5 + [1] * 3 + [2] * 7)
    a = random_real_indices(y, 3, 3, torch.Generator().manual_seed(1))
    b = random_real_indices(y, 3, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert y[a].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(set(a.tolist())) == 9
