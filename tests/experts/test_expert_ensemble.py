"""Experts trained together (experts/ensemble.py) equal the same experts trained one by one.

The tolerance: on digits in float32, every snapshot within 1e-5 relative (1e-6 absolute) after 3 epochs,
with momentum, weight decay, AST's clipping loss and lr decay, or PAD's curriculum; measured, the
largest difference is about 6e-8 (a few units in the last place), the rounding of the vmapped grouped
convolution against separate ones. It is not exact in float64 either (about 1e-16). The store identity
and the manifest are the same, and an interrupted group resumes to the uninterrupted group's trajectories
bit for bit.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import distillset.experts.train as train_mod
from distillset.config import ExpertsConfig, load_config
from distillset.ensemble import pays
from distillset.errors import ConfigError
from distillset.experts.store import TrajectoryStore
from distillset.experts.train import build_expert_model, train_experts
from distillset.identity import settings
from tests.conftest import TINY, counting, dies_on_call

ens_mod = importlib.import_module("distillset.experts.ensemble")

THREE = [*TINY, "experts.num_experts=3"]
RECIPES = {
    "sgd": [],
    "momentum-ast": [
        "experts.momentum=0.9",
        "experts.weight_decay=5e-4",
        "experts.clip_loss=true",
        "experts.clip_fraction=0.67",  # clipped epochs 0 and 1 of 3
        "experts.lr_decay=0.5",
        "experts.lr_decay_at=0.5",  # the lr halves from epoch 1 on
    ],
    "curriculum": [
        "experts.curriculum=true",
        "experts.init_ratio=0.5",
        "experts.add_end_epoch=2",  # 50%, 75%, 100% of each class in epochs 0, 1, 2
        "experts.rm_epoch_first=2",
        "experts.rm_epoch_second=2",
        "scores.num_models=1",
        "scores.epochs=1",
    ],
}


def _cfg(mode: str, *extra: str):  # noqa: ANN202
    return load_config("random-digits", [*THREE, f"experts.ensemble={mode}", *extra])


def _spied(monkeypatch) -> dict[str, list]:  # noqa: ANN001
    """Count the epochs trained together and the experts trained one by one."""
    calls: dict[str, list] = {"together": [], "alone": []}
    monkeypatch.setattr(
        ens_mod, "train_epoch_together", counting(ens_mod.train_epoch_together, calls["together"])
    )
    monkeypatch.setattr(train_mod, "expert_task", counting(train_mod.expert_task, calls["alone"]))
    return calls


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_experts_trained_together_follow_the_one_by_one_trajectories(
    digits_data, tmp_path, monkeypatch, recipe
):
    extra = RECIPES[recipe]
    scores = tmp_path / "scores"  # computed once, read by both runs
    alone = train_experts(_cfg("off", *extra), tmp_path / "alone", digits_data, False, scores)
    calls = _spied(monkeypatch)
    together = train_experts(_cfg("on", *extra), tmp_path / "together", digits_data, False, scores)
    assert len(calls["together"]) == 3 and not calls["alone"]  # one group, 3 epochs, none alone

    assert together.manifest["identity"] == alone.manifest["identity"]
    assert {k: v for k, v in together.manifest.items() if k != "experts"} == {
        k: v for k, v in alone.manifest.items() if k != "experts"
    }
    assert together.completed == alone.completed == [0, 1, 2]
    n_val = len(digits_data.val_y)
    for i in range(3):
        a, b = together.load(i), alone.load(i)
        assert a.shape == b.shape == (4, a.shape[1])
        assert torch.equal(a[0], b[0])  # the same initialisation
        _close(a, b)
        ra, rb = together.record(i), alone.record(i)
        assert set(ra) == set(rb) and all(len(ra[k]) == len(rb[k]) == 3 for k in ("train_loss", "val_acc"))
        assert len(ra["seconds"]) == len(ra["lr"]) == 3 and ra["lr"] == rb["lr"]
        _close(torch.tensor(ra["train_loss"]), torch.tensor(rb["train_loss"]))
        assert all(abs(x - y) <= 1 / n_val for x, y in zip(ra["val_acc"], rb["val_acc"], strict=True))
        assert all(abs(x - y) <= 1 / 128 for x, y in zip(ra["train_acc"], rb["train_acc"], strict=True))
    # the members learned different things (their own initialisation, order and DSA draws)
    assert not torch.allclose(together.load(0)[-1], together.load(1)[-1])
    if recipe == "momentum-ast":
        assert together.record(0)["lr"] == [0.01, 0.005, 0.005]
    if recipe == "curriculum":
        assert [sum(c) for c in together.manifest["curriculum"]["subset_sizes"]][0] < len(digits_data.train_y)


def test_an_interrupted_group_resumes_to_the_same_trajectories(digits_data, tmp_path, monkeypatch):
    """Stopped in the group's second epoch (after every member's checkpoint at epoch 1), the group
    resumes together from epoch 1 and ends bit for bit where the uninterrupted group ends."""
    cfg = _cfg("on", "experts.momentum=0.9")
    whole = train_experts(cfg, tmp_path / "whole", digits_data, progress=False)
    real = ens_mod.train_epoch_together
    monkeypatch.setattr(ens_mod, "train_epoch_together", dies_on_call(2, real))
    with pytest.raises(KeyboardInterrupt):
        train_experts(cfg, tmp_path / "cut", digits_data, progress=False)
    cut = TrajectoryStore(tmp_path / "cut")
    assert cut.completed == []
    for i in range(3):
        tensors, meta = cut.read_partial(i)
        assert meta["epoch"] == 1 and tensors["snapshots"].shape[0] == 2 and "momentum" in tensors
    monkeypatch.setattr(ens_mod, "train_epoch_together", real)
    calls = _spied(monkeypatch)
    resumed = train_experts(cfg, tmp_path / "cut", digits_data, progress=False)
    assert len(calls["together"]) == 2 and not calls["alone"]  # epochs 2 and 3, together
    assert not list((tmp_path / "cut").glob("partial-*"))
    for i in range(3):
        assert torch.equal(resumed.load(i), whole.load(i))
        assert resumed.record(i)["val_acc"] == whole.record(i)["val_acc"]
        assert resumed.record(i)["train_loss"] == whole.record(i)["train_loss"]


def test_members_stopped_at_different_epochs_resume_each_from_its_own(digits_data, tmp_path, monkeypatch):
    """Killed between two members' checkpoints (expert 0 at epoch 2, experts 1 and 2 at epoch 1): expert
    0 finishes alone from its checkpoint (written by the group, read by `expert_task`), experts 1 and 2
    together from theirs; every trajectory matches the uninterrupted group's, bit for bit up to its
    checkpoint."""
    cfg = _cfg("on", "experts.momentum=0.9")
    whole = train_experts(cfg, tmp_path / "whole", digits_data, progress=False)
    real = TrajectoryStore.write_partial
    monkeypatch.setattr(TrajectoryStore, "write_partial", dies_on_call(5, real))  # epoch 2, expert 1
    with pytest.raises(KeyboardInterrupt):
        train_experts(cfg, tmp_path / "cut", digits_data, progress=False)
    monkeypatch.setattr(TrajectoryStore, "write_partial", real)
    cut = TrajectoryStore(tmp_path / "cut")
    assert [cut.read_partial(i)[1]["epoch"] for i in range(3)] == [2, 1, 1]
    calls = _spied(monkeypatch)
    alone_epochs: list = []
    monkeypatch.setattr(train_mod, "train_epoch", counting(train_mod.train_epoch, alone_epochs))
    resumed = train_experts(cfg, tmp_path / "cut", digits_data, progress=False)
    assert len(calls["alone"]) == 1 and len(alone_epochs) == 1  # expert 0: its last epoch, alone
    assert len(calls["together"]) == 2  # experts 1 and 2: epochs 2 and 3
    for i, kept in ((0, 3), (1, 2), (2, 2)):  # the snapshots up to the checkpoint bit for bit
        now, ref = resumed.load(i), whole.load(i)
        assert torch.equal(now[:kept], ref[:kept])
        _close(now, ref)  # then alone, or in a group of two: other kernels, other rounding
        assert len(resumed.record(i)["val_acc"]) == 3


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ("experts.optimizer=gsam", "second, perturbed pass"),
        ("experts.grad_penalty=1.0", "input gradient"),
        ("model.norm=batch", "running statistics"),
    ],
)
def test_recipes_that_cannot_train_together_train_one_by_one(
    digits_data, tmp_path, monkeypatch, override, why
):
    extra = [override, "experts.train_epochs=1", "experts.num_experts=2"]
    alone = train_experts(_cfg("off", *extra), tmp_path / "alone", digits_data, progress=False)
    calls = _spied(monkeypatch)
    with pytest.warns(UserWarning, match=f"experts.ensemble=on: the experts train one by one .*{why}"):
        store = train_experts(_cfg("on", *extra), tmp_path / "on", digits_data, progress=False)
    assert not calls["together"] and len(calls["alone"]) == 2
    for i in (0, 1):
        assert torch.equal(store.load(i), alone.load(i))


def test_the_plan_groups_where_it_pays(tiny_cfg, digits_data):
    probe = build_expert_model(tiny_cfg, digits_data, ("expert", 0, "init"))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    todo = list(range(17))
    assert ens_mod.plan(_cfg("auto"), todo, probe, cpu) == [(i,) for i in todo]  # never on the CPU
    assert ens_mod.plan(_cfg("auto"), todo, probe, cuda) == [tuple(range(9)), tuple(range(9, 17))]
    assert ens_mod.plan(_cfg("on"), todo[:16], probe, cpu) == [tuple(range(16))]  # MAX_MEMBERS
    assert ens_mod.plan(_cfg("on"), [4, 7], probe, cpu) == [(4, 7)]
    assert ens_mod.plan(_cfg("on"), [3], probe, cpu) == [(3,)]
    assert ens_mod.plan(_cfg("off"), todo, probe, cuda) == [(i,) for i in todo]
    assert ens_mod.plan(_cfg("auto", "experts.optimizer=gsam"), todo, probe, cuda) == [(i,) for i in todo]
    assert not pays(probe, cpu, 256, (), stage="experts") and pays(probe, cuda, 256, (), stage="experts")
    assert pays(probe, cpu, 10, digits_data.image_shape)  # evaluation at IPC 1: still pays on the CPU


def test_the_ensemble_key_is_validated_and_leaves_the_store_identity_alone(digits_data, tmp_path):
    assert load_config("random-digits", ["experts.ensemble=on"]).experts.ensemble == "on"  # YAML's on: True
    assert load_config("random-digits", ["experts.ensemble=off"]).experts.ensemble == "off"
    assert ExpertsConfig().ensemble == "auto"
    with pytest.raises(ConfigError, match="experts.ensemble"):
        load_config("random-digits", ["experts.ensemble=sometimes"])
    assert "ensemble" not in settings(ExpertsConfig(ensemble="on"))
    assert settings(ExpertsConfig(ensemble="on")) == settings(ExpertsConfig(ensemble="off"))
    # a store trained one by one is extended together, and the other way round
    train_experts(_cfg("off", "experts.num_experts=1"), tmp_path, digits_data, progress=False)
    store = train_experts(_cfg("on"), tmp_path, digits_data, progress=False)
    assert store.completed == [0, 1, 2]
