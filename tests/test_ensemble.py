"""Evaluation networks trained together (ensemble.py) equal the same networks trained one by one: the same
SGD with momentum and weight decay at each member's own lr, the decay, each member's data order and DSA
draws, and each member's checkpoint choice. The tolerance: parameters within 1e-4 relative (1e-5
absolute) after 6 epochs with a decay, the float rounding of batched against separate kernels."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch

from distillset.baseline import random_subset
from distillset.config import load_config
from distillset.data.augment import DSA
from distillset.ensemble import CPU_FLOPS, Member, image_flops, pays
from distillset.networks import seeded_model
from distillset.parallel import Task
from distillset.synthetic.artifact import FixedData
from distillset.utils import generator

ev = importlib.import_module("distillset.evaluate")  # the module (the package exports the function)


def _members(cfg, data, x, y, lrs, dsa):  # noqa: ANN001, ANN202
    """Fresh members and, for each, an identical twin (model copy and generators) for the reference."""
    out, twins = [], []
    for r, (lr, on) in enumerate(zip(lrs, dsa, strict=True)):
        model = seeded_model(cfg.model, data.image_shape, data.num_classes, 0, "ens", r)
        aug = DSA(data.dsa_strategy) if on else None
        out.append(Member(model, FixedData(x[r], y[r]), lr, aug, generator(0, r, "o"), generator(0, r, "a")))
        twins.append((copy.deepcopy(model), lr, on, r))
    return out, twins


def _reference(twin, member, data, ecfg, epochs):  # noqa: ANN001, ANN202
    model, lr, on, r = twin
    ecfg_r = ecfg.model_copy(update={"dsa": on})
    opt, _o, aug, _a = ev._recipe(model, ecfg_r, lr, data, (), 0)
    order_gen, aug_gen = generator(0, r, "o"), generator(0, r, "a")
    source = member.source
    best_val, best_state, best_epoch = -1.0, None, epochs
    for epoch in range(epochs):
        ev._epoch(model, source, ecfg_r, opt, epoch, epochs, lr, order_gen, aug, aug_gen)
        if (epoch + 1) % ecfg.val_every == 0 or epoch + 1 == epochs:
            val = ev.accuracy(model, data.val_x, data.val_y)
            if val > best_val:
                best_val, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch + 1
    model.load_state_dict(best_state)
    return model, best_val, best_epoch


@pytest.mark.parametrize("soft", [False, True])
def test_members_follow_the_trajectories_of_separate_runs(tiny_cfg, digits_data, soft):
    data = digits_data
    ecfg = tiny_cfg.eval.model_copy(update={"epochs": 6, "batch": 8, "val_every": 2})
    art = random_subset(
        tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={"ipc": 3})}), data
    )
    x = [art.images, art.images, torch.flip(art.images, [0])]  # two members share data, one has its own
    labels = art.labels if not soft else 5 * torch.nn.functional.one_hot(art.labels, 10).float()
    y = [labels, labels, torch.flip(labels, [0])]
    lrs, dsa = [0.02, 0.01, 0.03], [True, True, False]
    members, twins = _members(tiny_cfg, data, x, y, lrs, dsa)
    rows = ev.train_and_test_ensemble(members, data, ecfg, 6)

    for member, twin, row in zip(members, twins, rows, strict=True):
        ref, val, epoch = _reference(twin, member, data, ecfg, 6)
        for (name, a), (_, b) in zip(
            member.model.state_dict().items(), ref.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        assert row["epoch"] == epoch
        assert abs(row["val"] - val) <= 1 / len(data.val_y)
        assert abs(row["test"] - ev.accuracy(ref, data.test_x, data.test_y)) <= 1 / len(data.test_y)
    # the members did learn different things: own lr, own DSA, own data
    a, b, c = (torch.cat([p.flatten() for p in m.model.parameters()]) for m in members)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_evaluate_with_ensembles_equals_one_by_one(tiny_cfg, digits_data):
    cfg = tiny_cfg.model_copy(update={"data": tiny_cfg.data.model_copy(update={"ipc": 2})})
    art = random_subset(cfg, digits_data)

    def run(mode):  # noqa: ANN001, ANN202
        ecfg = cfg.eval.model_copy(update={"ensemble": mode, "epochs": 4, "val_every": 2})
        return ev.evaluate(art, cfg.model_copy(update={"eval": ecfg}), digits_data, progress=False)

    together, alone = run("on"), run("off")
    for key in ("results", "random_baseline"):
        for r_on, r_off in zip(
            together[key]["convnet"]["details"], alone[key]["convnet"]["details"], strict=True
        ):
            assert r_on["epoch"] == r_off["epoch"]
            assert abs(r_on["test"] - r_off["test"]) <= 1 / len(digits_data.test_y)


def test_auto_groups_the_small_sets_and_leaves_the_rest_alone(tiny_cfg, digits_data):
    cfg = tiny_cfg.model_copy(update={"eval": tiny_cfg.eval.model_copy(update={"full_data": True})})
    art = random_subset(cfg, digits_data)
    sources = {"distilled": art.epoch_data(0, ("eval",))}
    tasks = ev.evaluation_tasks(cfg, digits_data, art.baseline_ipc(), 0.01, 0.01, {})
    groups = ev.group_tasks(cfg, digits_data, sources, tasks)
    sizes = sorted(len(t.args[0]) for t in groups)
    # the distilled and random networks (same size, hard labels) together; the full-data one alone
    assert sizes == [1, 2 * cfg.eval.runs] and sum(sizes) == len(tasks)
    off = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"ensemble": "off"})})
    assert all(len(t.args[0]) == 1 for t in ev.group_tasks(off, digits_data, sources, tasks))
    assert all(isinstance(t, Task) for t in groups)


def test_where_ensembles_pay(tiny_cfg):
    digits = seeded_model(load_config("datm-digits").model, (1, 8, 8), 10, 0)  # ConvNet-128-2
    bn = seeded_model(tiny_cfg.model.model_copy(update={"norm": "batch"}), (1, 8, 8), 10, 0)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert 4e6 < image_flops(digits, (1, 8, 8)) < 6e6  # 4.9 MFLOP an image
    assert pays(digits, cpu, 10, (1, 8, 8))  # IPC 1: the overhead dominates
    assert not pays(digits, cpu, 100, (1, 8, 8)) and 100 * image_flops(digits, (1, 8, 8)) > CPU_FLOPS
    assert pays(digits, cuda, 256, (1, 8, 8))
    assert not pays(bn, cuda, 10, (1, 8, 8))  # running statistics: one by one
    cfg = load_config("random-digits", ["model.norm=batch", "eval.ensemble=on"])
    assert cfg.eval.ensemble == "on"
