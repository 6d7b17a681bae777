import dataclasses

import pytest
import torch

from distillset.baseline import random_subset
from distillset.evaluate import evaluate, format_report, train_and_test
from distillset.experts.train import build_expert_model
from distillset.synthetic import DistilledSet


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


def test_checkpoint_is_chosen_on_validation(tiny_cfg, digits_data):
    """With the test split standing in as the validation split, the checkpoint chosen on validation is the
    one with the best test accuracy, so the reported accuracy equals the authors' max-over-checkpoints."""
    ecfg = tiny_cfg.eval.model_copy(update={"epochs": 8, "val_every": 1, "authors_statistic": True})
    data = dataclasses.replace(digits_data, val_x=digits_data.test_x, val_y=digits_data.test_y)
    idx = torch.arange(0, len(digits_data.train_y), 7)
    model = build_expert_model(tiny_cfg, digits_data, ("t",))
    out = train_and_test(model, data.train_x[idx], data.train_y[idx], data, ecfg, 0.01, 8, ("t",), 0)
    assert out["test"] == out["max_test_authors"] == out["val"]
    assert 1 <= out["epoch"] <= 8

    # With the real validation split the selection no longer sees the test set.
    model = build_expert_model(tiny_cfg, digits_data, ("t",))
    honest = train_and_test(
        model, data.train_x[idx], data.train_y[idx], digits_data, ecfg, 0.01, 8, ("t",), 0
    )
    assert honest["max_test_authors"] >= honest["test"]
    assert honest["final_test"] == out["final_test"]  # the same training run, only the selection differs


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
