"""Experts trained together (experts/ensemble.py) equal the same experts trained one by one.

The logic is pinned in float64: with momentum, weight decay, AST's clipping loss and lr decay, or PAD's
curriculum, every member's trajectory equals its one-by-one trajectory to 1e-12 of a snapshot's largest
entry after 3 epochs on digits (measured: at most 2.2e-16, the last place; the vmapped grouped
convolution sums in another order than separate ones, so it is not bit for bit).

Through the store, in float32, the tolerance is 3e-5 of a snapshot's largest entry: float32 rounding
(about 6e-8) is usually all there is, but a rounding-sized difference can cross a kink (a ReLU whose
input is within rounding of zero) and send one gradient another way. Measured on an AMD EPYC machine:
one member of the curriculum recipe differs by up to 4.5e-6 (about 1e-5 of its largest entry) in 7
parameters of one first-layer filter, from its first epoch on, not growing after; the same runs in
float64 agree to 2.2e-16. The store identity and the manifest are the same, and an interrupted group
resumes to the uninterrupted group's trajectories bit for bit.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch

import distillset.experts.train as train_mod
from distillset.config import ExpertsConfig, load_config
from distillset.ensemble import pays
from distillset.errors import ConfigError
from distillset.experts.store import TrajectoryStore
from distillset.experts.train import build_curriculum, build_expert_model, train_experts
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


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 3e-5) -> None:
    """Within `rel` of the largest entry (a trajectory's snapshots, or a history's values)."""
    torch.testing.assert_close(a, b, rtol=0, atol=rel * float(a.abs().max()))


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


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_in_float64_the_members_equal_their_one_by_one_trajectories_to_the_last_place(
    digits_data, tmp_path, recipe
):
    """The same tasks without the store (which keeps float32): the group's members and the experts
    alone, in float64, agree to 1e-12 of each snapshot's largest entry, and so do their losses."""
    cfg = _cfg("on", *RECIPES[recipe])
    curriculum = build_curriculum(cfg, digits_data, tmp_path / "scores", progress=False)
    assert (curriculum is not None) == (recipe == "curriculum")
    data = dataclasses.replace(
        digits_data, train_x=digits_data.train_x.double(), val_x=digits_data.val_x.double()
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the experts' networks are built in float64
    try:
        alone = {i: train_mod.expert_task(cfg, data, None, curriculum, i) for i in range(3)}
        together = ens_mod.group_task(cfg, data, None, curriculum, (0, 1, 2))
    finally:
        torch.set_default_dtype(default)
    for i in range(3):
        (a, ha), (b, hb) = alone[i], together[i]
        assert a.dtype == b.dtype == torch.float64 and a.shape == b.shape == (4, a.shape[1])
        assert torch.equal(a[0], b[0])
        for k in range(4):
            _close(a[k], b[k], rel=1e-12)
        _close(torch.tensor(ha["train_loss"]), torch.tensor(hb["train_loss"]), rel=1e-12)
        assert ha["lr"] == hb["lr"] and ha["val_acc"] == hb["val_acc"]
    assert not torch.allclose(together[0][0][-1], together[1][0][-1])


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
