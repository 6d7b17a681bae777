"""Gradient matching (DC, DSA) and distribution matching (DM): the distances by hand, the siamese draw,
PAD's filters on them, and short runs of the loop with each objective."""

from __future__ import annotations

import math

import pytest
import torch

from distillset.config import load_config
from distillset.data.augment import apply_dsa, sample_dsa
from distillset.errors import ConfigError
from distillset.models.params import ParamLayout
from distillset.objectives.distribution import block_outputs, mean_embedding_distance
from distillset.objectives.gradient import gradient_distance, kept_rows, loops
from distillset.objectives.real import siamese
from distillset.utils import generator
from tests.conftest import TINY

EPS = 1e-6


def _cos_rows(a: torch.Tensor, b: torch.Tensor) -> float:
    """sum over rows of 1 - <a,b> / (|a| |b| + 1e-6), written out with Python floats."""
    total = 0.0
    for ra, rb in zip(a.tolist(), b.tolist(), strict=True):
        dot = sum(x * y for x, y in zip(ra, rb, strict=True))
        na, nb = math.sqrt(sum(x * x for x in ra)), math.sqrt(sum(y * y for y in rb))
        total += 1 - dot / (na * nb + EPS)
    return total


def test_ours_distance_by_hand():
    """A linear weight (2 x 2), a bias (skipped), a conv weight (1 x 2 x 1 x 1: one row) and a LayerNorm
    affine (2 x 1 x 2: rows of H*W)."""
    lin_s, lin_r = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    bias_s, bias_r = torch.tensor([5.0, -3.0]), torch.tensor([-1.0, 7.0])  # 1-D: no term at all
    conv_s, conv_r = (
        torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1),
        torch.tensor([4.0, 3.0]).reshape(1, 2, 1, 1),
    )
    ln_s = torch.tensor([[[1.0, 2.0]], [[0.0, 1.0]]])
    ln_r = torch.tensor([[[2.0, 4.0]], [[1.0, 0.0]]])
    got = gradient_distance([lin_s, bias_s, conv_s, ln_s], [lin_r, bias_r, conv_r, ln_r], "ours")
    # linear: row 0 orthogonal -> 1; row 1 parallel -> 1 - 4 / (sqrt2 * sqrt8 + 1e-6) ~ 2.5e-7
    # conv: 1 - 24 / (5 * 5 + 1e-6) = 0.04; LayerNorm: row 0 parallel ~ 0, row 1 orthogonal -> 1
    expected = 1 + (1 - 4 / (math.sqrt(2) * math.sqrt(8) + EPS)) + (1 - 24 / (25 + EPS))
    expected += (1 - 10 / (math.sqrt(5) * math.sqrt(20) + EPS)) + 1
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(
        _cos_rows(lin_s, lin_r) + 0.04 + _cos_rows(ln_s.reshape(2, 2), ln_r.reshape(2, 2)), rel=1e-5
    )
    # The 1e-6 in the denominator: identical rows give 1 - n^2 / (n^2 + 1e-6), not exactly 0
    same = gradient_distance([lin_s.double()], [lin_s.double()], "ours")
    assert float(same) == pytest.approx((1 - 1 / (1 + EPS)) + (1 - 2 / (2 + EPS)), abs=1e-9)
    assert float(same) < 1e-5


def test_identical_gradients_have_zero_distance_for_every_metric():
    g = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(10, 16)]
    assert float(gradient_distance(g, g, "ours")) < 1e-5
    assert float(gradient_distance(g, g, "mse")) == 0.0
    assert float(gradient_distance(g, g, "cos")) == pytest.approx(0.0, abs=1e-6)


def test_mse_and_cos_over_the_concatenated_vectors():
    a, b = (
        [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])],
        [torch.tensor([0.0, 2.0]), torch.tensor([[1.0]])],
    )
    assert float(gradient_distance(a, b, "mse")) == pytest.approx(1 + 0 + 4)
    cos = (0 + 4 + 3) / (math.sqrt(14) * math.sqrt(5) + EPS)
    assert float(gradient_distance(a, b, "cos")) == pytest.approx(1 - cos, rel=1e-6)
    with pytest.raises(ConfigError):
        gradient_distance(a, b, "l1")


def test_parameter_selection_skips_the_shallow_rows():
    """Layout: conv (2 x 1 x 2 x 1, rows of 2) at 0..3, bias at 4..5, linear (2 x 3) at 6..11."""
    layout = ParamLayout.from_shapes([("conv", (2, 1, 2, 1)), ("bias", (2,)), ("lin", (2, 3))])
    assert kept_rows(layout, 0) == [0, 0, 0]
    assert kept_rows(layout, 2) == [1, 0, 0]  # the conv's second row starts at 2
    assert kept_rows(layout, 3) == [2, 0, 0]  # a row cut in part is dropped
    assert kept_rows(layout, 7) == [2, 1, 1]  # the linear's second row starts at 9
    gs = [torch.tensor([[[[1.0], [0.0]]], [[[1.0], [1.0]]]]), torch.zeros(2), torch.eye(2, 3)]
    gr = [torch.tensor([[[[0.0], [1.0]]], [[[1.0], [1.0]]]]), torch.ones(2), torch.eye(2, 3).flip(0)]
    full = float(gradient_distance(gs, gr, "ours", layout, 0))
    assert full == pytest.approx(
        1 + 0 + 1 + 1, abs=1e-5
    )  # conv row 0 orthogonal, row 1 equal; linear rows swapped
    assert float(gradient_distance(gs, gr, "ours", layout, 2)) == pytest.approx(2, abs=1e-5)
    assert float(gradient_distance(gs, gr, "ours", layout, 9)) == pytest.approx(1, abs=1e-5)
    flat_s, flat_r = torch.cat([g.flatten() for g in gs]), torch.cat([g.flatten() for g in gr])
    assert float(gradient_distance(gs, gr, "mse", layout, 6)) == pytest.approx(
        float(((flat_s - flat_r)[6:] ** 2).sum())
    )


def test_loops_by_ipc_and_set_by_the_preset():
    assert (
        loops(1, None, None) == (1, 1)
        and loops(10, None, None) == (10, 50)
        and loops(50, None, None) == (50, 10)
    )
    assert loops(10, 3, None) == (3, 50) and loops(7, 2, 5) == (2, 5)
    with pytest.raises(ConfigError, match="outer_loop"):
        loops(7, None, None)


def test_one_shared_draw_replays_identically_on_a_real_and_a_synthetic_batch():
    """The siamese augmentation: one family and one parameter draw for every image of both batches."""
    real, syn = torch.rand(6, 1, 8, 8), torch.rand(2, 1, 8, 8)
    for seed in range(12):  # every family comes up
        a_real, a_syn = siamese(real, syn, "color_crop_cutout_flip_scale_rotate", generator(seed, "t"))
        params = sample_dsa(
            6, (8, 8), "color_crop_cutout_flip_scale_rotate", generator(seed, "t"), batchwise=True
        )
        assert torch.equal(a_real, apply_dsa(real, params)) and torch.equal(a_syn, apply_dsa(syn, params))
        # the same image gets the same transform in either batch
        both_real, both_syn = siamese(
            torch.cat([syn, real]), syn, "color_crop_cutout_flip_scale_rotate", generator(seed, "t")
        )
        assert torch.allclose(both_real[:2], both_syn, atol=1e-6)


def test_dm_loss_is_zero_for_identical_sets_and_its_gradient_agrees_with_finite_differences():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten()
    ).double()
    real = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    assert float(mean_embedding_distance([net(real)], [net(real)])) == 0.0
    syn = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    loss = mean_embedding_distance([net(real)], [net(syn)])
    (grad,) = torch.autograd.grad(loss, syn)
    h, fd = 1e-6, torch.zeros_like(syn)
    for i in range(syn.numel()):
        e = torch.zeros_like(syn).flatten()
        e[i] = h
        e = e.view_as(syn)
        with torch.no_grad():
            up = mean_embedding_distance([net(real)], [net(syn + e)])
            down = mean_embedding_distance([net(real)], [net(syn - e)])
        fd.view(-1)[i] = (up - down) / (2 * h)
    assert torch.allclose(grad, fd, atol=1e-6)
    # by hand: || mean(real) - mean(syn) ||^2 for a fixed embedding
    r, s = [torch.tensor([[1.0, 2.0], [3.0, 4.0]])], [torch.tensor([[0.0, 0.0]])]
    assert float(mean_embedding_distance(r, s)) == pytest.approx(2**2 + 3**2)


def test_block_outputs_end_with_the_trunk_output():
    from distillset.models import build_model

    net = build_model("convnet", (1, 28, 28), 10, width=4, depth=3)
    x = torch.randn(2, 1, 28, 28)
    outs = block_outputs(net, x)
    assert [o.shape[1] for o in outs] == [4 * 16 * 16, 4 * 8 * 8, 4 * 4 * 4]
    assert torch.equal(outs[-1], net.forward_features(x))


DC_TINY = [
    *TINY,
    "distill.iterations=2",
    "distill.eval_every=1",
    "distill.eval_epochs=2",
    "distill.checkpoint_every=1",
    "distill.batch_real=16",
]


@pytest.mark.parametrize("preset", ["dc-digits", "dsa-digits", "dm-digits"])
def test_each_matcher_runs_in_the_loop_and_resumes(tmp_path, digits_data, preset):
    from distillset.distill import run_distillation

    cfg = load_config(preset, [*DC_TINY, "distill.outer_loop=2", "distill.inner_loop=1"])
    first = run_distillation(cfg, tmp_path / "a", digits_data, progress=False)
    assert first.artifact.images.shape == (10, 1, 8, 8) and first.artifact.lr == cfg.eval.default_lr
    assert first.artifact.meta["method"] == preset.split("-")[0]
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"event"' not in ln]) == 2
    # the images moved, and a second run resumes (nothing to do) to the same artifact
    init = first.artifact.meta["distill"]["init"]
    assert init == ("noise" if preset.startswith("dc") else "real")
    assert not torch.equal(
        first.final.images,
        run_distillation(
            cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"iterations": 0})}),
            tmp_path / "zero",
            digits_data,
            progress=False,
        ).final.images,
    )
    again = run_distillation(cfg, tmp_path / "a", digits_data, progress=False)
    assert torch.equal(again.final.images, first.final.images)


def test_a_resumed_gradient_run_equals_an_uninterrupted_one(tmp_path, digits_data):
    from distillset.distill import run_distillation

    cfg = load_config("dsa-digits", [*DC_TINY, "distill.iterations=3", "distill.checkpoint_every=2"])
    whole = run_distillation(cfg, tmp_path / "whole", digits_data, progress=False)
    short = cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"iterations": 2})})
    run_distillation(short, tmp_path / "cut", digits_data, progress=False)
    resumed = run_distillation(cfg, tmp_path / "cut", digits_data, progress=False)
    assert torch.equal(resumed.final.images, whole.final.images)
    assert torch.equal(resumed.artifact.images, whole.artifact.images)


def test_pad_data_selection_drops_each_class_end_of_the_pool(tmp_path, digits_data):
    from distillset.distill import run_distillation
    from distillset.experts.scores import compute_scores

    over = [
        *DC_TINY,
        "distill.iterations=1",
        "distill.drop_hard=0.3",
        "distill.drop_easy=0.1",
        "scores.num_models=1",
        "scores.epochs=1",
    ]
    cfg = load_config("dm-digits", over)
    result = run_distillation(cfg, tmp_path, digits_data, progress=False)
    pool = result.artifact.meta["distill"]["real_pool"]
    sizes = torch.bincount(digits_data.train_y, minlength=10).tolist()
    assert pool["class_sizes"] == [n - int(0.1 * n) - int(0.3 * n) for n in sizes]
    # the pool is the middle of each class's easy -> hard order
    from distillset.objectives.real import RealPool

    real_pool, _ = RealPool.build(cfg, digits_data, tmp_path, progress=False)
    order = compute_scores(cfg, digits_data, tmp_path / "scores", progress=False).order("el2n", 10)
    for c in range(10):
        n = order[c].numel()
        assert torch.equal(real_pool.pools[c], order[c][int(0.1 * n) : n - int(0.3 * n)])


def test_dc_parameter_selection_and_dm_deep_features_are_recorded(tmp_path, digits_data):
    from distillset.distill import run_distillation

    dc = load_config(
        "dc-digits", [*DC_TINY, "distill.iterations=1", "distill.depth_ratio=0.5", "distill.mask=layers"]
    )
    info = run_distillation(dc, tmp_path / "dc", digits_data, progress=False).artifact.meta["distill"]
    assert info["matched_parameters"]["from_index"] > 0
    dm = load_config("dm-digits", [*DC_TINY, "distill.iterations=1", "distill.depth_ratio=0.5"])
    info = run_distillation(dm, tmp_path / "dm", digits_data, progress=False).artifact.meta["distill"]
    assert info["matched_features"]["from_block"] == 1


def test_matchers_refuse_expert_initialisations():
    with pytest.raises(ConfigError, match="init"):
        from distillset.pipeline import check

        check(load_config("dc-digits", ["distill.init=correct"]))
