"""Baselines that separate the images' gain from the labels': the soft-label random subset (its labels are
the labeller's logits on those very images), DD-Ranking's scores (hand-worked formulas), and the parts of
the evaluation they need (the set with hard labels, the recipe without DSA)."""

from __future__ import annotations

import importlib
import shutil

import pytest
import torch

from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.experts.store import TrajectoryStore
from distillset.experts.train import build_expert_model
from distillset.models.params import ParamLayout, functional_forward
from distillset.pipeline import run_pipeline
from distillset.synthetic import DistilledSet, random_real_indices
from distillset.utils import generator

ev = importlib.import_module("distillset.evaluate")  # the module (the package exports the function)

QUICK = [
    "model.width=8",
    "experts.num_experts=3",
    "experts.train_epochs=3",
    "distill.iterations=2",
    "distill.syn_steps=3",
    "distill.expert_epochs=1",
    "distill.max_start_epoch=2",
    "distill.current_max_start_epoch=1",
    "distill.eval_every=2",
    "distill.eval_epochs=2",
    "eval.runs=2",
    "eval.epochs=3",
    "eval.val_every=3",
    "data.ipc=2",
    "device=cpu",
]


@pytest.fixture(scope="module")
def soft_run(tmp_path_factory):
    """A tiny DATM run (correct-init, learned soft labels) with its experts in RUN/experts."""
    cfg = load_config("datm-digits", QUICK)
    out = tmp_path_factory.mktemp("datm")
    data = prepare(cfg.data, torch.device("cpu"))
    run_pipeline(cfg, out, data, evaluate_set=False, progress=False)
    return cfg, data, out


def _spy(monkeypatch):
    """Record every evaluation network's recipe tags, training data (epoch 0), DSA setting and lr, as the
    evaluation builds it (one by one or in an ensemble)."""
    seen = {}
    real = ev._network

    def spy(cfg, data, sources, name, subset, targets, lr, epochs, init_tags, recipe_tags, aug=True):  # noqa: ANN001, ANN202
        model, source, ecfg = real(
            cfg, data, sources, name, subset, targets, lr, epochs, init_tags, recipe_tags, aug
        )
        images, labels = source(0)
        seen.setdefault((recipe_tags, "dsa" if ecfg.dsa else "no-dsa"), []).append(
            (images.clone(), labels.clone(), lr)
        )
        return model, source, ecfg

    monkeypatch.setattr(ev, "_network", spy)
    return seen


def _hand_labels(cfg, data, out, images, labels):  # noqa: ANN001, ANN202
    """DATM's label initialisation, computed here from the raw trajectories: per image, the mean of the
    final-snapshot logits of the experts that classify it correctly, else expert 0's."""
    store = TrajectoryStore(out / "experts")
    model = build_expert_model(cfg, data, ("expert", 0, "init")).eval()
    layout = ParamLayout.from_model(model)
    logits = []
    for e in store.completed:
        final = store.load(e)[-1]  # the last row of the trajectory: the final epoch's parameters
        with torch.no_grad():
            logits.append(functional_forward(model, final, images, layout=layout))
    expected = torch.empty_like(logits[0])
    for i in range(images.shape[0]):
        right = [lg[i] for lg in logits if int(lg[i].argmax()) == int(labels[i])]
        expected[i] = torch.stack(right).mean(0) if right else logits[0][i]
    return expected


def test_soft_random_baseline_labels_are_the_experts_logits_on_its_images(soft_run, monkeypatch):
    cfg, data, out = soft_run
    art = DistilledSet.load(out / "distilled")
    assert art.label_kind == "soft" and cfg.distill.init == "correct"
    seen = _spy(monkeypatch)
    report = ev.evaluate(art, cfg, data, progress=False, artifact_path=out / "distilled")

    assert set(report["soft_random_baseline"]) == {"convnet"}
    assert len(report["soft_random_baseline"]["convnet"]["runs"]) == 2
    assert report["soft_random_labels"]["experts"] == str(out / "experts")
    for r in range(2):
        idx = random_real_indices(data.train_y, 2, data.num_classes, generator(cfg.seed, "baseline", r))
        ((hard_x, hard_y, hard_lr),) = seen[("baseline", "convnet", r), "dsa"]
        ((soft_x, soft_y, soft_lr),) = seen[("baseline-soft_random", "convnet", r), "dsa"]
        # the same real images as the hard-label random baseline of that run: only the labels differ
        assert torch.equal(soft_x, data.train_x[idx]) and torch.equal(hard_x, soft_x)
        assert torch.equal(hard_y, data.train_y[idx])
        assert soft_y.dtype == torch.float32 and soft_y.shape == (idx.numel(), data.num_classes)
        expected = _hand_labels(cfg, data, out, data.train_x[idx], data.train_y[idx])
        torch.testing.assert_close(soft_y, expected, rtol=1e-5, atol=1e-5)
        assert soft_lr == hard_lr == cfg.eval.default_lr


def test_soft_baseline_is_left_out_with_a_note_when_no_labeller_is_found(soft_run, tmp_path):
    cfg, data, out = soft_run
    moved = tmp_path / "elsewhere" / "distilled"
    shutil.copytree(out / "distilled", moved)
    art = DistilledSet.load(moved)
    fast = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"runs": 1, "epochs": 1})})
    report = ev.evaluate(art, fast, data, progress=False, artifact_path=moved)
    assert "soft_random_baseline" not in report
    assert any("eval.label_experts" in note for note in report["notes"])
    assert "note: soft-label random baseline left out" in ev.format_report(report)

    named = fast.model_copy(
        update={"eval": fast.eval.model_copy(update={"label_experts": str(out / "experts")})}
    )
    report = ev.evaluate(art, named, data, progress=False, artifact_path=moved)
    assert "soft_random_baseline" in report and "notes" not in report


def test_hard_label_sets_get_no_soft_baseline(soft_run):
    cfg, data, out = soft_run
    art = DistilledSet.load(out / "distilled").with_hard_labels()
    assert art.label_kind == "hard" and torch.equal(art.labels, art.hard_labels)
    fast = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"runs": 1, "epochs": 1})})
    report = ev.evaluate(art, fast, data, progress=False, artifact_path=out / "distilled")
    assert "soft_random_baseline" not in report and "notes" not in report


def test_ddranking_scores_by_hand():
    def s(runs):  # noqa: ANN001, ANN202
        return {"convnet": {"runs": runs, "mean": sum(runs) / len(runs), "std": 0.0}}

    report = {
        "results": s([0.8, 0.82]),
        "random_baseline": s([0.1, 0.1]),  # not used: the soft-label random baseline is the "any" one
        "soft_random_baseline": s([0.7, 0.75]),
        "label_hard": s([0.6, 0.7]),
        "full_data": s([0.9]),
        "no_aug": {"distilled": s([0.7, 0.72]), "random": s([0.65, 0.7])},
    }
    scores = ev.ddranking_scores(report)["models"]["convnet"]
    # run 0: HLR 0.9 - 0.6 = 0.3, IOR 0.8 - 0.7 = 0.1, a = 0.5 * 0.1 - 0.5 * 0.3 = -0.1,
    # LRS = 100 (e^-0.1 - e^-1) / (e - e^-1) = 22.8454; b = 0.5 * 0.1 + 0.5 * 0.05 = 0.075, ARS 30.2078
    # run 1: HLR 0.2, IOR 0.07, a = -0.065, LRS 24.2166; b = 0.5 * 0.07 + 0.5 * 0.02 = 0.045, ARS 28.8524
    assert scores["hlr"]["runs"] == pytest.approx([0.3, 0.2])
    assert scores["ior"]["runs"] == pytest.approx([0.1, 0.07])
    assert scores["lrs"]["runs"] == pytest.approx([22.8454, 24.2166], abs=1e-4)
    assert scores["ars"]["runs"] == pytest.approx([30.2078, 28.8524], abs=1e-4)
    assert scores["lrs"]["mean"] == pytest.approx((22.8454 + 24.2166) / 2, abs=1e-4)
    assert scores["lrs"]["std"] == pytest.approx((24.2166 - 22.8454) / 2, abs=1e-4)
    # the bounds of the normalisation: a difference of +1 scores 100, of -1 scores 0
    assert ev._normalised_score(1.0) == pytest.approx(100.0)
    assert ev._normalised_score(-1.0) == pytest.approx(0.0)
    # a hard-label set: syn-hard is the set itself and "any" the hard random baseline
    hard = {**report, "random_baseline": s([0.7, 0.75])}
    del hard["soft_random_baseline"], hard["label_hard"]
    scores = ev.ddranking_scores(hard, w=1.0)["models"]["convnet"]
    assert scores["hlr"]["runs"] == pytest.approx([0.1, 0.08])
    assert scores["lrs"]["runs"] == pytest.approx([ev._normalised_score(0.1), ev._normalised_score(0.07)])


def test_ddranking_trains_the_hard_label_and_no_dsa_networks(soft_run, monkeypatch):
    cfg, data, out = soft_run
    art = DistilledSet.load(out / "distilled")
    seen = _spy(monkeypatch)
    ecfg = cfg.eval.model_copy(update={"baselines": ["ddranking"], "full_data_epochs": 1, "epochs": 2})
    report = ev.evaluate(
        art, cfg.model_copy(update={"eval": ecfg}), data, progress=False, artifact_path=out / "distilled"
    )
    for key in ("label_hard", "no_aug", "full_data", "ddranking", "soft_random_baseline"):
        assert key in report, key
    sc = report["ddranking"]["models"]["convnet"]
    assert 0.0 <= sc["lrs"]["mean"] <= 100.0 and 0.0 <= sc["ars"]["mean"] <= 100.0
    for r in range(2):
        init = ("eval", "convnet", r)
        # with DSA: the distilled set as it is, and its images with the argmax of its label logits
        (own_x, own_y, _), (hard_x, hard_y, _) = sorted(
            seen[init, "dsa"], key=lambda v: v[1].dtype.is_floating_point, reverse=True
        )
        assert torch.equal(own_x, art.images) and torch.equal(own_y, art.label_logits)
        assert torch.equal(hard_x, art.images) and torch.equal(hard_y, art.label_logits.argmax(1))
        # without DSA: the set with its own labels, and the same random subset with the same soft labels
        ((nx, ny, _),) = seen[init, "no-dsa"]
        assert torch.equal(nx, art.images) and torch.equal(ny, art.label_logits)
        ((rx, ry, _),) = seen[("baseline", "convnet", r), "no-dsa"]
        ((sx, sy, _),) = seen[("baseline-soft_random", "convnet", r), "dsa"]
        assert torch.equal(rx, sx) and torch.equal(ry, sy)
    # the full-data reference trained once per architecture
    assert any(k[0] == ("full", "convnet") for k in seen)
    text = ev.format_report(report)
    assert "DD-Ranking (convnet): LRS" in text and "random real, same soft labels" in text


def test_ddranking_needs_the_random_baseline(soft_run):
    cfg, data, out = soft_run
    art = DistilledSet.load(out / "distilled")
    ecfg = cfg.eval.model_copy(update={"baselines": ["ddranking"], "baseline": False})
    with pytest.raises(ev.ConfigError, match="eval.baseline=true"):
        ev.evaluate(art, cfg.model_copy(update={"eval": ecfg}), data, progress=False)
