import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import distillset.experts.scores as scores_mod
from distillset.cli import cli
from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.experts.scores import (
    KINDS,
    DifficultyScores,
    compute_scores,
    el2n,
    entropy,
    forgetting_events,
    grand,
    least_confidence,
    margin,
    spearman,
)
from tests.conftest import TINY, dies_on_call

# 300 training images (DSA dominates the time): the whole file runs in seconds
SCORES_TINY = [*TINY, "data.train_limit=300", "scores.num_models=2", "scores.epochs=2"]

# -- the pure score functions, against hand-computed values -----------------------------------------


def test_el2n_and_grand_by_hand():
    # logits [0, 0]: p = [0.5, 0.5]; logits [log 3, 0]: p = [0.75, 0.25]
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([0, 1])
    # errors [-0.5, 0.5] and [0.75, -0.75]
    expected = torch.tensor([math.sqrt(0.5), 0.75 * math.sqrt(2)])
    assert torch.allclose(el2n(logits, y), expected, atol=1e-6)
    feats = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # norms 5 and 0
    expected_grand = expected * torch.tensor([math.sqrt(26.0), 1.0])
    assert torch.allclose(grand(logits, y, feats), expected_grand, atol=1e-6)


def test_uncertainty_scores_by_hand():
    uniform = torch.zeros(2, 4)
    assert torch.allclose(entropy(uniform), torch.full((2,), math.log(4)), atol=1e-6)
    assert torch.allclose(least_confidence(uniform), torch.full((2,), 0.75), atol=1e-6)
    assert torch.allclose(margin(uniform), torch.ones(2), atol=1e-6)
    # p = [0.5, 0.25, 0.25] (logits log 2, 0, 0): entropy = 1.5 log 2, 1 - 0.5, 1 - (0.5 - 0.25)
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]])
    assert torch.allclose(entropy(logits), torch.tensor([1.5 * math.log(2)]), atol=1e-6)
    assert torch.allclose(least_confidence(logits), torch.tensor([0.5]), atol=1e-6)
    assert torch.allclose(margin(logits), torch.tensor([0.75]), atol=1e-6)
    certain = torch.tensor([[100.0, 0.0, 0.0]])
    assert entropy(certain).item() < 1e-6 and least_confidence(certain).item() < 1e-6
    assert margin(certain).item() < 1e-6


def test_grand_is_the_last_layers_per_sample_gradient_norm():
    torch.manual_seed(0)
    head = torch.nn.Linear(5, 3).double()
    feats = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    norms = []
    for i in range(4):
        loss = F.cross_entropy(head(feats[i : i + 1]), y[i : i + 1])
        gw, gb = torch.autograd.grad(loss, [head.weight, head.bias])
        norms.append(torch.sqrt(gw.pow(2).sum() + gb.pow(2).sum()))
    with torch.no_grad():
        got = grand(head(feats).double(), y, feats)
    assert torch.allclose(got.double(), torch.stack(norms), atol=1e-6)


def test_forgetting_events_by_hand():
    per_example = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1]], dtype=torch.bool)
    got = forgetting_events(per_example.T)  # T x N: one row per epoch
    assert got.dtype == torch.float32
    assert got.tolist() == [2.0, 0.0, 4.0, 1.0]  # never learned -> T = 4


def test_order_per_class_easy_to_hard_ties_by_index():
    labels = torch.tensor([0, 1, 0, 0, 1, 2, 0])  # class sizes 4, 2, 1
    el2n_rows = torch.tensor([[0.5, 0.9, 0.1, 0.5, 0.2, 0.3, 0.0], [0.5, 0.9, 0.1, 0.5, 0.2, 0.3, 0.2]])
    rows = {kind: el2n_rows for kind in KINDS}
    s = DifficultyScores(scores=rows, labels=labels, fingerprint="0" * 16, identity={})
    assert torch.allclose(s.values("el2n"), torch.tensor([0.5, 0.9, 0.1, 0.5, 0.2, 0.3, 0.1]))
    order = s.order("el2n", 4)
    # class 0: 2 (0.1) and 6 (0.1) tie -> by index; 0 (0.5) and 3 (0.5) tie -> by index
    assert [o.tolist() for o in order] == [[2, 6, 0, 3], [4, 1], [5], []]
    assert all(o.dtype == torch.int64 for o in order)
    assert s.num_models == 2 and s.kinds == KINDS
    with pytest.raises(ValueError, match="valid"):
        s.values("nope")


def test_spearman():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([10.0, 20.0, 40.0, 30.0])) == pytest.approx(0.8)


# -- computing on tiny digits ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores_cfg():
    return load_config("random-digits", SCORES_TINY)


@pytest.fixture(scope="module")
def small_data(scores_cfg):
    return prepare(scores_cfg.data, torch.device("cpu"))


@pytest.fixture(scope="module")
def reference(scores_cfg, small_data, tmp_path_factory):
    torch.set_num_threads(2)
    return compute_scores(scores_cfg, small_data, tmp_path_factory.mktemp("ref"), progress=False)


def _no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained although the scores were cached")

    monkeypatch.setattr(scores_mod, "train_epoch", refuse)


def _same(a: DifficultyScores, b: DifficultyScores) -> bool:
    return all(torch.equal(a.scores[k], b.scores[k]) for k in KINDS) and a.fingerprint == b.fingerprint


def test_shapes_and_values(reference, small_data, scores_cfg):
    n = small_data.train_x.shape[0]
    assert reference.kinds == KINDS and reference.num_models == 2
    for kind in KINDS:
        assert reference.scores[kind].shape == (2, n) and reference.scores[kind].dtype == torch.float32
        assert reference.values(kind).shape == (n,)
        assert torch.isfinite(reference.scores[kind]).all() and (reference.scores[kind] >= 0).all()
    assert not torch.equal(reference.scores["el2n"][0], reference.scores["el2n"][1])  # independent nets
    assert (reference.scores["forgetting"] <= scores_cfg.scores.epochs).all()
    order = reference.order("el2n", small_data.num_classes)
    assert sum(o.numel() for o in order) == n
    assert torch.equal(torch.cat(order).sort().values, torch.arange(n))
    for c, o in enumerate(order):
        assert (small_data.train_y[o] == c).all()
        assert (reference.values("el2n")[o].diff() >= 0).all()
    assert reference.path.name == f"scores-{reference.fingerprint}.safetensors"
    assert len(reference.fingerprint) == 16 and int(reference.fingerprint, 16) >= 0


def test_deterministic_and_cached(reference, scores_cfg, small_data, tmp_path, monkeypatch):
    again = compute_scores(scores_cfg, small_data, tmp_path, progress=False)
    assert _same(again, reference)
    _no_training(monkeypatch)
    cached = compute_scores(scores_cfg, small_data, tmp_path, progress=False)
    assert _same(cached, reference)


def test_other_settings_get_their_own_file(reference, small_data, tmp_path):
    cfg = load_config("random-digits", [*SCORES_TINY, "scores.num_models=1", "scores.epochs=1"])
    other = compute_scores(cfg, small_data, reference.path.parent, progress=False)
    assert other.fingerprint != reference.fingerprint and other.path.exists() and reference.path.exists()


def test_interrupted_computation_resumes_at_the_next_model(
    reference, scores_cfg, small_data, tmp_path, monkeypatch
):
    real = scores_mod.train_epoch
    # killed at model 1's first epoch
    monkeypatch.setattr(scores_mod, "train_epoch", dies_on_call(scores_cfg.scores.epochs + 1, real))
    with pytest.raises(KeyboardInterrupt):
        compute_scores(scores_cfg, small_data, tmp_path, progress=False)
    assert len(list(tmp_path.glob("scores-*.safetensors"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))

    trained = []
    monkeypatch.setattr(scores_mod, "train_epoch", real)
    one = scores_mod.score_one_model
    monkeypatch.setattr(
        scores_mod,
        "score_one_model",
        lambda cfg, data, k: trained.append(k) or one(cfg, data, k),
    )
    resumed = compute_scores(scores_cfg, small_data, tmp_path, progress=False)
    assert trained == [1]
    assert _same(resumed, reference)


def test_file_with_other_labels_is_recomputed(reference, scores_cfg, small_data, tmp_path):
    from safetensors.torch import safe_open, save_file

    from distillset.integrity import checksum

    path = tmp_path / reference.path.name
    with safe_open(str(reference.path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["labels"] = (tensors["labels"] + 1) % small_data.num_classes
    for kind in KINDS:
        tensors[kind] = torch.zeros_like(tensors[kind])
    meta = {**meta, "checksum": checksum(tensors)}  # a sound file, written for other labels
    save_file(tensors, str(path), metadata=meta)
    with pytest.warns(UserWarning, match="labels differ"):
        again = compute_scores(scores_cfg, small_data, tmp_path, progress=False)
    assert _same(again, reference)


def test_scores_command(tmp_path):
    tiny = [*TINY, "data.train_limit=300", "scores.num_models=2", "scores.epochs=1"]
    args = ["scores", "random-digits", *tiny, "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "config.yaml").exists()
    files = list((tmp_path / "scores").glob("scores-*.safetensors"))
    assert len(files) == 1
    lines = result.output.strip().splitlines()
    for kind in KINDS:
        assert any(line.startswith(kind + " ") and "rank corr. with el2n" in line for line in lines)
    assert any(line.startswith("el2n ") and line.endswith("1.00") for line in lines)
