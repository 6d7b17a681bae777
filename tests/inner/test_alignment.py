"""AST's parts: the balanced inner loss factor, the start-point perturbation, representative init."""

from __future__ import annotations

import math

import pytest
import torch

from distillset.inner.alignment import balance_factor, perturb_conv_weights
from distillset.models import ParamLayout, build_model
from distillset.models.params import flat_params
from distillset.synthetic import representative_real_indices


def test_balance_factor_by_hand():
    # max_start_epoch 20: h = 10
    assert balance_factor(10, 20) == pytest.approx(math.log(8, 5))
    assert balance_factor(17, 20) == pytest.approx(math.log(15, 5))
    assert balance_factor(0, 20) == pytest.approx(1 / math.log(18, 5))
    assert balance_factor(9, 20) == pytest.approx(1 / math.log(9, 5))


def test_balance_factor_is_above_one_late_and_below_one_early():
    for top in (2, 5, 20, 41):
        h = top // 2
        assert all(balance_factor(t, top) > 1 for t in range(h, top))
        assert all(balance_factor(t, top) < 1 for t in range(0, h))


def test_perturbation_touches_only_conv_weights_and_is_bounded():
    model = build_model("convnet", (1, 8, 8), 3, width=4, depth=2)
    layout = ParamLayout.from_model(model)
    theta = flat_params(model)
    out = perturb_conv_weights(theta, layout, 1.0, torch.Generator().manual_seed(0))
    conv = [e for e in layout if len(e.shape) == 4]
    assert len(conv) == 2
    for e in layout:
        w, dw = theta[e.offset : e.end], (out - theta)[e.offset : e.end]
        if len(e.shape) != 4:
            assert torch.equal(dw, torch.zeros_like(dw))  # biases, norms, classifier untouched
            continue
        assert dw.abs().max() > 0
        assert torch.all(dw.abs() <= w.abs() + 1e-7)  # |d_ij| <= 1 since ||d||_F = 1
        assert dw.norm() <= w.abs().max() + 1e-7  # ||alpha d*W||_F <= alpha max|W|
    half = perturb_conv_weights(theta, layout, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(half - theta, 0.5 * (out - theta), atol=1e-7)  # linear in alpha, same d
    again = perturb_conv_weights(theta, layout, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(again, out) and not torch.equal(theta, out)


@pytest.mark.parametrize("ipc", [1, 3])
def test_representative_init_picks_distinct_images_per_class_deterministically(ipc):
    torch.manual_seed(0)
    y = torch.arange(3).repeat_interleave(torch.tensor([7, 5, 9]))
    x = torch.randn(21, 2)
    classifier = lambda v: v * 3.0  # noqa: E731  (logits of a toy expert)
    idx = representative_real_indices(x, y, ipc, 3, classifier, seed=0)
    assert idx.shape == (3 * ipc,)
    for c in range(3):
        part = idx[c * ipc : (c + 1) * ipc]
        assert len(set(part.tolist())) == ipc and torch.all(y[part] == c)
    assert torch.equal(idx, representative_real_indices(x, y, ipc, 3, classifier, seed=0))


def test_representative_init_at_ipc_one_takes_the_image_nearest_the_class_mean():
    y = torch.zeros(4, dtype=torch.long)
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [4.5, 0.0], [7.0, 0.0]])  # mean (5.375, 0)
    idx = representative_real_indices(x, y, 1, 1, lambda v: v, seed=1)
    assert idx.tolist() == [2]  # 0.875 from the mean; the authors' version selects nothing at IPC 1


def test_representative_init_takes_the_image_nearest_each_k_means_centre():
    """IPC 3 on a class whose expert logits form three far-apart clusters: one image per cluster, the one
    nearest its cluster's mean (the k-means centre), not the three nearest the class mean."""
    clusters = [
        [(0.0, 0.0), (2.0, 0.0), (0.9, 0.1)],  # mean (0.97, 0.03): nearest (0.9, 0.1)
        [(100.0, 0.0), (100.0, 2.0), (100.0, 1.2)],  # mean (100, 1.07): nearest (100, 1.2)
        [(0.0, 100.0), (3.0, 100.0), (1.0, 100.0), (0.0, 103.0)],  # mean (1, 100.75): nearest (1, 100)
    ]
    points = [p for c in clusters for p in c]
    perm = torch.randperm(len(points), generator=torch.Generator().manual_seed(0))
    x = torch.tensor(points, dtype=torch.float64)[perm]
    other = torch.tensor([[50.0, 50.0], [51.0, 50.0], [50.0, 51.0]], dtype=torch.float64)  # in between
    x = torch.cat([x, other])
    y = torch.cat([torch.zeros(len(points), dtype=torch.long), torch.ones(3, dtype=torch.long)])
    idx = representative_real_indices(x, y, 3, 2, lambda v: v, seed=0)
    chosen = {tuple(x[i].tolist()) for i in idx[:3]}
    assert chosen == {(0.9, 0.1), (100.0, 1.2), (1.0, 100.0)}
    assert set(idx[3:].tolist()) == {len(points), len(points) + 1, len(points) + 2}
