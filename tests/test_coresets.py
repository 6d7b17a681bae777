"""The coreset baselines of Zhao et al.'s tables: herding and k-center, on hand-worked examples, as
artifacts, from the command line, and beside the random baseline in the evaluation."""

import importlib

import pytest
import torch
from click.testing import CliRunner

from distillset.baseline import (
    coreset_features,
    coreset_subset,
    herding_indices,
    kcenter_indices,
    random_subset,
)
from distillset.cli import cli
from distillset.config import load_config
from distillset.errors import ConfigError, DataError
from distillset.synthetic import DistilledSet
from tests.conftest import TINY

ev = importlib.import_module("distillset.evaluate")  # the module (the package exports the function)
parallel = importlib.import_module("distillset.parallel")

FAST = [*TINY, "eval.full_data_epochs=1"]


@pytest.fixture(scope="module")
def digits_feats(digits_data):
    """The coreset features of the FAST config: one network trained one epoch on all of digits."""
    return coreset_features(load_config("random-digits", FAST), digits_data)


# Labels interleaved on purpose: the answer must come class-major all the same.
#   position: 0  1  2  3  4  5  6
HERD_Y = [1, 0, 0, 1, 0, 1, 0]
HERD_F = [5, 0, 1, 3, 2, 4, 6]  # 1-D features


def _herd():
    return torch.tensor(HERD_F, dtype=torch.float32).unsqueeze(1), torch.tensor(HERD_Y)


def test_herding_by_hand():
    # Class 0: positions 1, 2, 4, 6 with features 0, 1, 2, 6; mean mu = 9/4 = 2.25.
    #   k=1: |mu - F_i|          = 2.25, 1.25, 0.25, 3.75     -> position 4 (feature 2), sum 2
    #   k=2: |mu - (2 + F_i)/2|  = |2.25 - 1|, |2.25 - 1.5|, |2.25 - 4| = 1.25, 0.75, 1.75
    #                                                          -> position 2 (feature 1), sum 3
    #   k=3: |mu - (3 + F_i)/3|  = |2.25 - 1|, |2.25 - 3| = 1.25, 0.75
    #                                                          -> position 6 (feature 6)
    #   (ranking by distance to the mean would take feature 0 third: herding corrects the running mean.)
    # Class 1: positions 0, 3, 5 with features 5, 3, 4; mu = 4.
    #   k=1: feature 4 (distance 0)                            -> position 5, sum 4
    #   k=2: |4 - (4 + 5)/2| = |4 - (4 + 3)/2| = 0.5, a tie    -> the lower index, position 0
    #   k=3: the one left                                      -> position 3
    f, y = _herd()
    assert herding_indices(f, y, 3, 2).tolist() == [4, 2, 6, 5, 0, 3]
    assert herding_indices(f, y, 2, 2).tolist() == [4, 2, 5, 0]  # greedy: a prefix of the longer answer
    assert herding_indices(f, y, 1, 2).tolist() == [4, 5]
    assert herding_indices(f.double(), y, 3, 2).tolist() == [4, 2, 6, 5, 0, 3]  # dtype does not matter


# Class 1 at positions 0, 3, 6; class 0 at 1, 2, 4, 5, 7 (2-D features).
KC_Y = [1, 0, 0, 1, 0, 0, 1, 0]
KC_F = [(0, 0), (0, 0), (1, 0), (1, 0), (10, 0), (0, 5), (2, 0), (2, 1)]


def test_kcenter_by_hand():
    # Class 0: positions 1, 2, 4, 5, 7 = (0,0), (1,0), (10,0), (0,5), (2,1); mean (2.6, 1.2).
    #   start: nearest the mean is (2,1) (distance sqrt(0.36 + 0.04) = 0.63)       -> position 7
    #   min distance to {(2,1)}: (0,0) 2.24, (1,0) 1.41, (10,0) 8.06, (0,5) 4.47   -> position 4 (10,0)
    #   min over {(2,1), (10,0)}: (0,0) 2.24, (1,0) 1.41, (0,5) min(4.47, 11.18)   -> position 5 (0,5)
    #   min over the three: (0,0) min(2.24, 10, 5) = 2.24, (1,0) min(1.41, 9, 5.10) -> position 1 (0,0)
    # Class 1: positions 0, 3, 6 = (0,0), (1,0), (2,0); mean (1,0).
    #   start: (1,0) (distance 0)                                                  -> position 3
    #   min distance to {(1,0)}: 1 and 1, a tie                       -> the lower index, position 0
    #   then the one left                                                          -> position 6
    f, y = torch.tensor(KC_F, dtype=torch.float32), torch.tensor(KC_Y)
    assert kcenter_indices(f, y, 3, 2).tolist() == [7, 4, 5, 3, 0, 6]
    assert kcenter_indices(f, y, 1, 2).tolist() == [7, 3]  # IPC 1: the image nearest the class mean
    assert kcenter_indices(f[[1, 2, 4, 5, 7]], torch.zeros(5, dtype=torch.long), 4, 1).tolist() == [
        4,
        2,
        3,
        0,
    ]


def test_identical_features_still_give_distinct_images():
    # Every distance is 0: each step is a tie among the images not yet taken, so 0, 1, 2 in turn.
    f, y = torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)
    assert herding_indices(f, y, 3, 1).tolist() == [0, 1, 2]
    assert kcenter_indices(f, y, 3, 1).tolist() == [0, 1, 2]


def test_class_major_order_and_class_sizes():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (60,), generator=gen)
    f = torch.randn(60, 5, generator=gen)
    for select in (herding_indices, kcenter_indices):
        idx = select(f, y, 3, 4)
        assert y[idx].tolist() == [c for c in range(4) for _ in range(3)]
        assert len(set(idx.tolist())) == 12
        assert torch.equal(select(f, y, 3, 4), idx)  # deterministic


@pytest.mark.parametrize("select", [herding_indices, kcenter_indices])
def test_too_small_class_is_a_data_error(select):
    f, y = _herd()  # class 1 has 3 images
    with pytest.raises(DataError, match="class 1 has 3 training images, fewer than ipc=4"):
        select(f, y, 4, 2)
    with pytest.raises(DataError, match="class 2 has 0"):
        select(f, y, 1, 3)


def test_coreset_artifacts_on_digits(digits_data, digits_feats, tmp_path):
    cfg = load_config("random-digits", FAST)
    feats = digits_feats
    assert feats.shape == (len(digits_data.train_y), 8 * 2 * 2)  # width 8, 8x8 pooled twice
    art = coreset_subset(cfg, digits_data, "herding")  # trains the same network again: deterministic
    idx = herding_indices(feats, digits_data.train_y, 1, 10)
    assert torch.equal(art.images, digits_data.train_x[idx])
    assert art.labels.tolist() == list(range(10)) and art.label_kind == "hard"
    assert art.lr == cfg.eval.default_lr
    assert art.meta["method"] == "herding" and art.meta["ipc"] == 1
    assert art.meta["selection"] == {
        "method": "herding",
        "features": "convnet trained 1 epochs on the full training set",
    }
    assert art.meta["dataset"] == random_subset(cfg, digits_data).meta["dataset"]
    back = DistilledSet.load(art.save(tmp_path / "herding"))
    assert torch.equal(back.images, art.images) and back.meta["selection"]["method"] == "herding"

    cfg2 = load_config("random-digits", [*FAST, "data.ipc=2"])
    kc = coreset_subset(cfg2, digits_data, "kcenter", features=feats)
    assert kc.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert torch.equal(kc.images, digits_data.train_x[kcenter_indices(feats, digits_data.train_y, 2, 10)])
    assert kc.meta["method"] == "kcenter" and kc.meta["ipc"] == 2
    with pytest.raises(ConfigError, match="valid methods: herding, kcenter"):
        coreset_subset(cfg, digits_data, "kmeans", features=feats)


@pytest.mark.parametrize("method", ["herding", "kcenter"])
def test_baseline_command(method, digits_data, digits_feats, tmp_path):
    out = tmp_path / method
    args = ["baseline", method, "--ipc", "2", "--out", str(out), "random-digits", *FAST]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"{method} artifact (IPC 2, digits" in result.output and str(out) in result.output
    art = DistilledSet.load(out)
    assert art.meta["method"] == method and art.meta["selection"]["method"] == method
    assert art.labels.tolist() == [c for c in range(10) for _ in range(2)]
    select = herding_indices if method == "herding" else kcenter_indices
    assert torch.equal(art.images, digits_data.train_x[select(digits_feats, digits_data.train_y, 2, 10)])


def test_evaluate_with_coreset_baselines(tiny_cfg, digits_data, digits_feats, monkeypatch):
    """Each coreset baseline trains `runs` networks per architecture on one fixed subset, with the random
    baseline's recipe and the distilled set's initial weights; the features are computed once; the rest of
    the report does not move."""
    art = random_subset(tiny_cfg, digits_data)
    # one network at a time: the spy below sees each through train_and_test (ensembles: test_ensemble.py)
    short = tiny_cfg.eval.model_copy(update={"epochs": 2, "val_every": 1, "ensemble": "off"})
    plain = ev.evaluate(art, tiny_cfg.model_copy(update={"eval": short}), digits_data, progress=False)

    calls, feature_calls, bars = [], [], []
    real_train = ev.train_and_test

    def spy_train(model, x, y, data, ecfg, lr, epochs, seed_tags, seed):
        init = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        images = x(0)[0] if y is None else x  # an epoch source: the images of epoch 0
        calls.append({"x": images, "lr": lr, "epochs": epochs, "tags": seed_tags, "init": init})
        return real_train(model, x, y, data, ecfg, lr, epochs, seed_tags, seed)

    def spy_features(cfg, data):
        # the fixture's features are this config's (tested above); returned without retraining
        feature_calls.append((cfg.model.name, cfg.eval.full_data_epochs, data is digits_data))
        return digits_feats

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.done = total, 0
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.done += n

        def set_postfix(self, **kwargs):
            pass

    monkeypatch.setattr(ev, "train_and_test", spy_train)
    monkeypatch.setattr(ev, "coreset_features", spy_features)
    monkeypatch.setattr(parallel, "progress_bar", Bar)
    ecfg = short.model_copy(update={"baselines": ["herding", "kcenter"], "full_data_epochs": 1})
    cfg = tiny_cfg.model_copy(update={"eval": ecfg})
    report = ev.evaluate(art, cfg, digits_data, progress=False)

    assert feature_calls == [("convnet", 1, True)]  # once, for both baselines
    # the progress bar counts models x runs x (distilled, random, herding, k-center) networks
    assert bars[0].total == bars[0].done == 1 * 2 * 4
    assert set(report["baselines"]) == {"herding", "kcenter"}
    for method in ("herding", "kcenter"):
        res = report["baselines"][method]["convnet"]
        assert len(res["runs"]) == 2 and all(0.0 <= a <= 1.0 for a in res["runs"])
        assert res["mean"] == pytest.approx(sum(res["runs"]) / 2)
    # every key the report had is unchanged (the protocol only gains the two settings changed here)
    assert set(report) == set(plain) | {"baselines"}
    for key in plain:
        if key != "protocol":
            assert report[key] == plain[key], key
    proto = {k: v for k, v in report["protocol"].items() if k not in ("baselines", "full_data_epochs")}
    assert proto == {k: v for k, v in plain["protocol"].items() if k not in ("baselines", "full_data_epochs")}

    by_tags = {c["tags"]: c for c in calls}
    for r in range(2):
        distilled = by_tags[("eval", "convnet", r)]
        for method, select in (("herding", herding_indices), ("kcenter", kcenter_indices)):
            c = by_tags[(f"baseline-{method}", "convnet", r)]
            idx = select(digits_feats, digits_data.train_y, 1, 10)
            assert torch.equal(c["x"], digits_data.train_x[idx])  # the same fixed subset in every run
            assert c["lr"] == cfg.eval.default_lr and c["epochs"] == cfg.eval.epochs
            assert torch.equal(c["init"], distilled["init"])
    table = ev.format_report(report)
    assert "random real" in table and "herding (fixed subset)" in table and "k-center (fixed subset)" in table
    assert table.splitlines()[2].count("+-") == 4
