import json

import numpy as np
import pytest
import torch

import distillset.experts.train as train_mod
from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.errors import StoreError
from distillset.experts.store import TrajectoryStore
from distillset.experts.train import build_expert_model, train_experts
from distillset.identity import first_difference
from distillset.models import ParamLayout, flat_params
from distillset.objectives.trajectory import open_experts
from tests.conftest import TINY, counting, dies_on_call, sigkilled_at


def test_experts_record_every_epoch_with_copies(tiny_cfg, digits_data, tmp_path):
    store = train_experts(tiny_cfg, tmp_path / "experts", digits_data, progress=False)
    assert store.completed == [0, 1]
    traj = store.load(0)
    model = build_expert_model(tiny_cfg, digits_data, ("expert", 0, "init"))
    assert traj.shape == (tiny_cfg.experts.train_epochs + 1, ParamLayout.from_model(model).numel)
    # The first snapshot is the seeded initialisation; every later one differs from the one before
    # (saved snapshots that alias the live weights would all be equal).
    assert torch.equal(traj[0], flat_params(model))
    assert all(not torch.equal(traj[e], traj[e + 1]) for e in range(traj.shape[0] - 1))
    assert torch.equal(store.snapshot(0, 2), traj[2])
    assert not torch.equal(store.load(0)[0], store.load(1)[0])  # independent initialisations
    manifest = json.loads((tmp_path / "experts" / "manifest.json").read_text())
    rec = manifest["experts"]["0"]
    assert len(rec["val_acc"]) == len(rec["train_acc"]) == tiny_cfg.experts.train_epochs
    assert manifest["num_params"] == traj.shape[1]
    bounds = manifest["layer_boundaries"]
    assert bounds[0][1] == 0 and bounds[-1][2] == traj.shape[1]
    assert manifest["identity"]["data"]["name"] == "digits"


def test_rerun_keeps_finished_experts_and_adds_more(tiny_cfg, digits_data, tmp_path):
    train_experts(tiny_cfg, tmp_path, digits_data, progress=False)
    shard = tmp_path / "shard-00000.safetensors"
    before = shard.stat().st_mtime_ns
    more = tiny_cfg.model_copy(update={"experts": tiny_cfg.experts.model_copy(update={"num_experts": 3})})
    store = train_experts(more, tmp_path, digits_data, progress=False)
    assert store.completed == [0, 1, 2]
    assert shard.stat().st_mtime_ns == before


MOMENTUM = [*TINY, "experts.momentum=0.9"]


def _cut_in_expert_1(cfg, out, monkeypatch):
    """Train into `out`, interrupted in expert 1's second epoch (after its checkpoint at epoch 1); then
    count the epochs the resumed run trains."""
    real = train_mod.train_epoch
    monkeypatch.setattr(train_mod, "train_epoch", dies_on_call(5, real))
    with pytest.raises(KeyboardInterrupt):
        train_experts(cfg, out, progress=False)
    epochs = []
    monkeypatch.setattr(train_mod, "train_epoch", counting(real, epochs))
    return epochs


def test_interrupted_expert_resumes_to_the_same_trajectory(digits_data, tmp_path, monkeypatch):
    """Interrupted in expert 1's second epoch, the run resumes to the uninterrupted trajectories. Restarting
    expert 1 would give the same trajectory (every draw derives from the seed): resuming trains only its
    epochs 2 and 3, and expert 0, finished, is not trained again."""
    cfg = load_config("random-digits", MOMENTUM)
    reference = train_experts(cfg, tmp_path / "a", digits_data, progress=False)
    epochs = _cut_in_expert_1(cfg, tmp_path / "b", monkeypatch)
    assert (tmp_path / "b" / "partial-00001.safetensors").exists()
    resumed = train_experts(cfg, tmp_path / "b", digits_data, progress=False)
    assert len(epochs) == 2
    assert not (tmp_path / "b" / "partial-00001.safetensors").exists()
    for i in (0, 1):
        assert torch.equal(resumed.load(i), reference.load(i))
        assert resumed.record(i)["val_acc"] == reference.record(i)["val_acc"]


def test_resuming_an_expert_continues_from_its_checkpoint_on_disk(digits_data, tmp_path, monkeypatch):
    """The partial checkpoint is what the resumed expert continues from: weights moved on disk are its
    snapshot 1, and its later epochs start from them."""
    cfg = load_config("random-digits", MOMENTUM)
    reference = train_experts(cfg, tmp_path / "whole", digits_data, progress=False)
    epochs = _cut_in_expert_1(cfg, tmp_path / "cut", monkeypatch)
    store = TrajectoryStore(tmp_path / "cut")
    tensors, meta = store.read_partial(1)
    tensors["snapshots"][1] += 0.25
    store.write_partial(1, tensors, meta)
    resumed = train_experts(cfg, tmp_path / "cut", progress=False)
    moved, ref = resumed.load(1), reference.load(1)
    assert torch.equal(moved[1], ref[1] + 0.25)
    assert (moved[2:] - ref[2:]).abs().max() > 0.1
    assert len(epochs) == 2


def test_experts_killed_by_sigkill_resume_to_the_same_trajectories(digits_data, tmp_path, monkeypatch):
    """A real SIGKILL in another process during expert 1's second epoch: the resumed run trains the two
    remaining epochs and ends with the trajectories of an uninterrupted run."""
    cfg = load_config("random-digits", MOMENTUM)
    reference = train_experts(cfg, tmp_path / "whole", digits_data, progress=False)
    body = (
        "from distillset.config import load_config\n"
        "from distillset.experts.train import train_experts\n"
        f"cfg = load_config('random-digits', {MOMENTUM!r})\n"
        f"train_experts(cfg, {str(tmp_path / 'cut')!r}, progress=False)\n"
    )
    sigkilled_at("distillset.experts.train:train_epoch", 5, body, tmp_path)
    assert (tmp_path / "cut" / "partial-00001.safetensors").exists()
    epochs = []
    monkeypatch.setattr(train_mod, "train_epoch", counting(train_mod.train_epoch, epochs))
    resumed = train_experts(cfg, tmp_path / "cut", progress=False)
    assert len(epochs) == 2
    for i in (0, 1):
        assert torch.equal(resumed.load(i), reference.load(i))
        assert resumed.record(i)["val_acc"] == reference.record(i)["val_acc"]


def test_store_made_for_another_setting_is_refused(tiny_cfg, digits_data, tmp_path):
    train_experts(tiny_cfg, tmp_path, digits_data, progress=False)
    other = load_config("random-digits", [*TINY, "experts.lr_teacher=0.05"])
    with pytest.raises(StoreError, match="lr_teacher"):
        train_experts(other, tmp_path, digits_data, progress=False)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.zca=true", "data.preprocessing"),  # the same images, whitened
        ("data.split_seed=1", r"data\.(fingerprint|split)"),  # another validation split of the same data
        ("data.train_limit=600", r"data\.(fingerprint|split)"),  # a subset of the training set
    ],
)
def test_store_made_for_other_data_is_refused_by_training_and_by_distillation(
    tiny_cfg, digits_data, tmp_path, override, named
):
    """Experts trained on differently prepared data are refused, with the difference named, both when
    more experts are trained into the store and when distillation opens it."""
    train_experts(tiny_cfg, tmp_path, digits_data, progress=False)
    other = load_config("random-digits", [*TINY, override])
    data = prepare(other.data, torch.device("cpu"))
    with pytest.raises(StoreError, match=f"another setting: {named}"):
        train_experts(other, tmp_path, data, progress=False)
    with pytest.raises(StoreError, match=f"another setting: {named}"):
        open_experts(load_config("mtt-digits", [*TINY, override]), data, tmp_path)


def test_bf16_storage(tiny_cfg, digits_data, tmp_path):
    cfg = load_config("random-digits", [*TINY, "experts.dtype=bfloat16", "experts.num_experts=1"])
    store = train_experts(cfg, tmp_path, digits_data, progress=False)
    traj = store.load(0)
    assert traj.dtype == torch.float32
    assert torch.equal(traj, traj.to(torch.bfloat16).float())


def test_missing_or_corrupt_store(tmp_path):
    with pytest.raises(StoreError, match="no manifest.json"):
        TrajectoryStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        TrajectoryStore(tmp_path)


def test_identity_tolerates_last_bit_differences_in_fitted_statistics():
    a = {"data": {"preprocessing": {"mean": [0.30530558708462185], "std": [0.4]}}, "lr": 0.01}
    b = {"data": {"preprocessing": {"mean": [0.3053055870846244], "std": [0.4]}}, "lr": 0.01}
    assert first_difference(a, b) is None
    c = {"data": {"preprocessing": {"mean": [0.3054], "std": [0.4]}}, "lr": 0.01}
    assert "data.preprocessing.mean" in first_difference(a, c)
    assert "lr" in first_difference(a, {**a, "lr": 0.02})


def test_store_made_for_another_dataset_of_the_same_shape_is_refused(tiny_cfg, digits_data, tmp_path):
    """Another dataset with the same image shape and classes (so the same network and parameter layout):
    its experts are not digits experts."""
    train_experts(tiny_cfg, tmp_path / "experts", digits_data, progress=False)
    rng = np.random.default_rng(0)
    path = tmp_path / "other.npz"
    x = rng.random((300, 8, 8), dtype=np.float32)
    np.savez(path, x_train=x, y_train=np.arange(300) % 10, x_test=x[:50], y_test=np.arange(50) % 10)
    other = [*TINY, "data.name=npz", f"data.root={path}"]
    data = prepare(load_config("random-digits", other).data, torch.device("cpu"))
    assert data.image_shape == digits_data.image_shape and data.num_classes == digits_data.num_classes
    with pytest.raises(StoreError, match=r"another setting: data\.(fingerprint|name)"):
        train_experts(load_config("random-digits", other), tmp_path / "experts", data, progress=False)
    with pytest.raises(StoreError, match=r"another setting: data\.(fingerprint|name)"):
        open_experts(load_config("mtt-digits", other), data, tmp_path / "experts")
