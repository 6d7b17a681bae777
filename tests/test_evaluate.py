import copy
import dataclasses

import pytest
import torch

from distillset.baseline import random_subset
from distillset.evaluate import evaluate, format_report, train_and_test
from distillset.experts.train import build_expert_model
from distillset.synthetic import DistilledSet
from tests.spies import Recorder, rows_found_in, schedule, steps_per_epoch, watched


def test_evaluate_report_contract(tiny_cfg, digits_data, tmp_path):
    art = random_subset(tiny_cfg, digits_data)
    cfg = tiny_cfg.model_copy(
        update={"eval": tiny_cfg.eval.model_copy(update={"models": ["convnet", "mlp"]})}
    )
    report = evaluate(art, cfg, digits_data, progress=False, artifact_path=tmp_path)
    assert report["ipc"] == 1 and set(report["results"]) == {"convnet", "mlp"}
    for section in ("results", "random_baseline"):
        for res in report[section].values():
            assert len(res["runs"]) == 2 and all(0.0 <= a <= 1.0 for a in res["runs"])
            assert res["mean"] == pytest.approx(sum(res["runs"]) / 2)
    assert report["protocol"]["checkpoint_selection"] == "validation"
    assert "random real" in format_report(report)
    # Same seed, same numbers.
    again = evaluate(art, cfg, digits_data, progress=False)
    assert again["results"]["mlp"]["runs"] == report["results"]["mlp"]["runs"]


LR = 0.1  # on this tiny set, validation peaks at epoch 3 of 8 and the test accuracy falls after it


def _val_accuracies(model, data):
    """A forward hook that records, at every evaluation-mode pass over the validation images, the accuracy
    (computed here, from the network's outputs, not by the code under test) and the weights."""
    seen, states = [], []

    def hook(module, args, out):
        x = args[0]
        if not module.training and x.data_ptr() == data.val_x.data_ptr():
            seen.append(int((out.argmax(1) == data.val_y[: x.shape[0]]).sum()) / x.shape[0])
            states.append(copy.deepcopy(module.state_dict()))

    model.register_forward_hook(hook)
    return seen, states


def test_checkpoint_is_chosen_on_validation_and_the_test_split_is_read_last(tiny_cfg, digits_data):
    """The checkpoint is the first with the best validation accuracy, computed here from the network's own
    outputs, and the accuracy reported is that checkpoint's on the test split (here not the last epoch's);
    no test image is touched before training has ended."""
    ecfg = tiny_cfg.eval.model_copy(update={"epochs": 8, "val_every": 1})
    log = []
    data = dataclasses.replace(
        digits_data,
        test_x=watched(digits_data.test_x, log, "test"),
        test_y=watched(digits_data.test_y, log, "test"),
    )
    idx = torch.arange(0, len(digits_data.train_y), 7)
    model = build_expert_model(tiny_cfg, digits_data, ("t",))
    model.register_forward_pre_hook(lambda m, a: log.append("train") if m.training else None)
    vals, states = _val_accuracies(model, digits_data)
    out = train_and_test(model, data.train_x[idx], data.train_y[idx], data, ecfg, LR, 8, ("t",), 0)
    assert len(vals) == 8 and len(set(vals)) > 1  # one check per epoch, and they differ
    best = vals.index(max(vals))
    assert out["val"] == max(vals) and out["epoch"] == best + 1 < 8
    chosen = build_expert_model(tiny_cfg, digits_data, ("t",))
    chosen.load_state_dict(states[best])
    chosen.eval()
    with torch.no_grad():
        right = int((chosen(digits_data.test_x).argmax(1) == digits_data.test_y).sum())
    assert out["test"] == right / len(digits_data.test_y) != out["final_test"]
    assert "test" in log  # the final score reads it ...
    assert log.index("test") > max(i for i, e in enumerate(log) if e == "train")  # ... only after training


def test_checkpoint_choice_ignores_the_test_images(tiny_cfg, digits_data):
    """With the authors' statistic on, the test split is read at every checkpoint; replacing the test images
    with noise changes that statistic and the reported accuracy but not which checkpoint is chosen."""
    ecfg = tiny_cfg.eval.model_copy(update={"epochs": 8, "val_every": 1, "authors_statistic": True})
    noise = dataclasses.replace(
        digits_data, test_x=torch.randn(digits_data.test_x.shape, generator=torch.Generator().manual_seed(0))
    )
    idx = torch.arange(0, len(digits_data.train_y), 7)
    outs = []
    for data in (digits_data, noise):
        model = build_expert_model(tiny_cfg, digits_data, ("t",))
        outs.append(
            train_and_test(model, data.train_x[idx], data.train_y[idx], data, ecfg, 0.01, 8, ("t",), 0)
        )
    real, noisy = outs
    assert real["max_test_authors"] >= real["test"]
    assert noisy["test"] != real["test"] and noisy["max_test_authors"] != real["max_test_authors"]
    assert (noisy["epoch"], noisy["val"]) == (real["epoch"], real["val"])


def _evaluated(tiny_cfg, digits_data, **eval_update):
    """evaluate() on a 3-per-class random set with lr 0.02, its optimiser steps and batches recorded; the
    networks one by one (the reference that the ensembles equal: tests/test_ensemble.py)."""
    eval_update = {"ensemble": "off", **eval_update}
    ecfg = tiny_cfg.eval.model_copy(update={"runs": 2, "epochs": 6, "batch": 8, **eval_update})
    cfg = tiny_cfg.model_copy(update={"eval": ecfg, "data": tiny_cfg.data.model_copy(update={"ipc": 3})})
    base = random_subset(cfg, digits_data)
    art = DistilledSet(images=base.images, labels=base.labels, lr=0.02, meta=base.meta)
    recorder = Recorder(momentum=0.9, weight_decay=5e-4)
    with recorder.record():
        report = evaluate(art, cfg, digits_data, progress=False)
    return cfg, art, recorder, report


def test_evaluation_recipe_sgd_momentum_decay_schedule_and_dsa(tiny_cfg, digits_data):
    """Every step of every evaluation network is SGD with momentum 0.9 and weight decay 5e-4 at the lr of
    the protocol (the learned lr, x0.1 from the half), measured from the parameter updates themselves, and
    every training batch is augmented (no batch is made of the set's own images)."""
    cfg, art, recorder, _ = _evaluated(tiny_cfg, digits_data)
    spe = steps_per_epoch(len(art.labels), cfg.eval.batch)
    assert spe == 4
    distilled = [r for r in recorder.order if r.lrs[0] == pytest.approx(0.02)]
    assert len(distilled) == cfg.eval.runs
    for run in distilled:
        assert run.lrs == pytest.approx(schedule(0.02, 6, spe, 0.5), rel=1e-4)
        assert max(run.residuals) < 1e-4
        assert len(run.inputs) == 6 * spe
        assert not any(rows_found_in(x, art.images).all() for x in run.inputs)


def test_random_baseline_gets_the_same_recipe_and_initialisation(tiny_cfg, digits_data):
    """The random-real baseline of run r starts from the same weights as the distilled set's network r and
    trains the same epochs, schedule, momentum, weight decay and DSA; only its lr differs, by design: the
    evaluation's default lr (0.01), since a random subset has no learned lr."""
    cfg, art, recorder, report = _evaluated(tiny_cfg, digits_data)
    spe = steps_per_epoch(len(art.labels), cfg.eval.batch)
    distilled = [r for r in recorder.order if r.lrs[0] == pytest.approx(0.02)]
    baseline = [r for r in recorder.order if r.lrs[0] == pytest.approx(0.01)]
    assert len(distilled) == len(baseline) == cfg.eval.runs == len(recorder.order) // 2
    assert report["lr"] == {"distilled": 0.02, "random_baseline": cfg.eval.default_lr}
    for r, (syn, real) in enumerate(zip(distilled, baseline, strict=True)):
        assert torch.equal(syn.init, real.init)  # the same initialisation for the same run
        assert not torch.equal(syn.init, distilled[1 - r].init)  # and a fresh one per run
        assert real.lrs == pytest.approx(schedule(0.01, 6, spe, 0.5), rel=1e-4)
        assert max(real.residuals) < 1e-4
        assert len(real.inputs) == len(syn.inputs) == 6 * spe
        assert not any(rows_found_in(x, digits_data.train_x).all() for x in real.inputs)
        # real training images (before augmentation), of the set's size: a real random subset


def test_soft_labels_train(tiny_cfg, digits_data):
    art = random_subset(tiny_cfg, digits_data)
    soft = DistilledSet(
        images=art.images,
        label_logits=10 * torch.nn.functional.one_hot(art.labels, 10).float(),
        lr=0.01,
        meta=art.meta,
    )
    cfg = tiny_cfg.model_copy(
        update={"eval": tiny_cfg.eval.model_copy(update={"baseline": False, "runs": 1})}
    )
    report = evaluate(soft, cfg, digits_data, progress=False)
    assert "random_baseline" not in report
    assert 0.0 <= report["results"]["convnet"]["mean"] <= 1.0


def test_evaluation_refuses_another_dataset(tiny_cfg, digits_data):
    from distillset.errors import StoreError

    art = random_subset(tiny_cfg, digits_data)
    art.meta["dataset"]["fingerprint"] = "0000000000000000"
    with pytest.raises(StoreError, match="differs"):
        evaluate(art, tiny_cfg, digits_data, progress=False)
