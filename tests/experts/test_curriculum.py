"""PAD's curriculum: per-class counts from each class's own size, at every phase of the schedule."""

from __future__ import annotations

import pytest
import torch

from distillset.config import ExpertsConfig
from distillset.errors import ConfigError
from distillset.experts.curriculum import Curriculum, kept_range
from distillset.identity import mismatch

README = ExpertsConfig(curriculum=True)  # 0.75 / 20 / 40 / 60 / 0.1 / 0.2


@pytest.mark.parametrize(
    ("epoch", "n_c", "expected"),
    [
        (0, 5000, (0, 3750)),  # init_ratio of the class
        (10, 5000, (0, 4375)),  # p = 0.75 + 0.25 * 10 / 20
        (20, 5000, (0, 5000)),  # all of it at add_end_epoch
        (21, 5000, (0, 5000)),
        (40, 5000, (0, 5000)),
        (41, 5000, (500, 5000)),  # drop the easiest 10%
        (60, 5000, (500, 5000)),
        (61, 5000, (1000, 5000)),  # drop the easiest 20%
        (99, 5000, (1000, 5000)),
        (0, 500, (0, 375)),  # CIFAR-100's class size: the authors' 5000 would keep all 500
        (10, 500, (0, 437)),  # int(0.875 * 500)
        (61, 500, (100, 500)),  # the authors' 5000 would drop int(0.2 * 5000) = 1000 > 500: everything
        (5, 7, (0, 5)),  # int((0.75 + 0.25 * 5 / 20) * 7) = int(5.6875)
        (45, 7, (0, 7)),  # int(0.1 * 7) = 0 dropped
        (70, 7, (1, 7)),  # int(0.2 * 7) = 1 dropped
    ],
)
def test_kept_range_follows_the_schedule(epoch, n_c, expected):
    assert kept_range(n_c, epoch, README) == expected


def test_counts_and_indices_for_unequal_classes():
    ecfg = ExpertsConfig(
        curriculum=True,
        init_ratio=0.5,
        add_end_epoch=2,
        rm_epoch_first=3,
        rm_epoch_second=4,
        rm_easy_ratio_first=0.25,
        rm_easy_ratio_second=0.5,
    )
    orders = [torch.tensor([7, 3, 5, 1]), torch.tensor([0, 2, 4, 6, 8, 9, 10, 11]), torch.tensor([12, 13])]
    cur = Curriculum(orders, ecfg)
    assert cur.class_sizes == [4, 8, 2]
    # epoch: 0 p=.5, 1 p=.75, 2 p=1, 3 all, 4 drop 25%, 5 drop 50%
    assert [cur.counts(e) for e in range(6)] == [
        [2, 4, 1],
        [3, 6, 1],
        [4, 8, 2],
        [4, 8, 2],
        [3, 6, 2],
        [2, 4, 1],
    ]
    assert cur.indices(0).tolist() == [7, 3, 0, 2, 4, 6, 12]  # easiest first within each class
    assert cur.indices(5).tolist() == [5, 1, 8, 9, 10, 11, 13]  # the hardest remain
    summary = cur.summary(6)
    assert summary["class_sizes"] == [4, 8, 2] and summary["subset_sizes"][1] == [3, 6, 1]


def test_an_empty_class_stops():
    with pytest.raises(ConfigError, match="no training images"):
        Curriculum([torch.tensor([0, 1]), torch.tensor([], dtype=torch.long)], README)


def test_curriculum_epochs_must_be_ordered():
    from distillset.config import load_config

    with pytest.raises(ConfigError, match="rm_epoch_first"):
        load_config(None, ["experts.curriculum=true", "experts.rm_epoch_first=5"])


def test_curriculum_experts_train_on_the_schedule_and_record_it(tmp_path, digits_data, monkeypatch):
    import importlib

    from distillset.config import load_config
    from tests.conftest import TINY

    train_mod = importlib.import_module("distillset.experts.train")
    cfg = load_config(
        "pad-digits",
        [
            *TINY,
            "experts.num_experts=1",
            "experts.add_end_epoch=1",
            "experts.rm_epoch_first=1",
            "experts.rm_epoch_second=2",
            "scores.num_models=1",
            "scores.epochs=1",
        ],
    )
    seen = []
    real = train_mod.train_epoch

    def spy(model, x, y, *args, **kwargs):
        seen.append(torch.bincount(y, minlength=10).tolist())
        return real(model, x, y, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", spy)
    store = train_mod.train_experts(cfg, tmp_path / "experts", digits_data, progress=False)
    sizes = torch.bincount(digits_data.train_y, minlength=10).tolist()
    record = store.manifest["curriculum"]
    assert record["class_sizes"] == sizes and record["difficulty"] == "el2n"
    expected = [
        [int(0.75 * n) for n in sizes],  # e = 0
        sizes,  # e = 1 = add_end_epoch
        [n - int(0.1 * n) for n in sizes],  # rm_epoch_first < e <= rm_epoch_second
    ]
    assert record["subset_sizes"] == expected
    assert seen == expected  # what the expert really trained on, class by class
    assert len(list((tmp_path / "scores").glob("scores-*.safetensors"))) == 1
    assert store.identity["experts"]["curriculum"] and store.identity["scores"]["num_models"] == 1

    # Plain experts do not depend on the scores, and a store written before the curriculum's keys existed
    # (its identity lacks them) still matches plain experts, but not curriculum experts.
    plain = load_config("pad-digits", [*TINY, "experts.curriculum=false"])
    plain_identity = train_mod.store_identity(
        plain, digits_data, train_mod.build_expert_model(plain, digits_data, ())
    )
    assert "scores" not in plain_identity and "add_end_epoch" not in plain_identity["experts"]
    older = {**plain_identity, "experts": dict(plain_identity["experts"])}
    for key in ("curriculum", "difficulty", "init_ratio", "add_end_epoch", "rm_epoch_first"):
        older["experts"].pop(key, None)
    assert mismatch(older, plain_identity) is None
    assert mismatch(older, {**plain_identity, "experts": store.identity["experts"]}).startswith("experts.")
