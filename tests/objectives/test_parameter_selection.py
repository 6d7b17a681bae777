"""PAD's parameter selection: the kept index sets of the three variants and the masked loss."""

from __future__ import annotations

import pytest
import torch

from distillset.errors import ConfigError
from distillset.models import ParamLayout, build_model
from distillset.objectives import ParameterMatch, deep_parameters, dropped_share


@pytest.fixture(scope="module")
def cifar_layout():
    """The CIFAR-10 ConvNet (width 128, depth 3, instance norm): P = 320,010."""
    return ParamLayout.from_model(build_model("convnet", (3, 32, 32), 10))


def test_the_papers_cut_on_the_cifar10_convnet(cifar_layout):
    assert cifar_layout.numel == 320_010
    keep = deep_parameters(cifar_layout, 0.5)
    assert keep == slice(160_005, 320_010)
    share = dropped_share(cifar_layout, keep)
    whole = [n for n, s in share.items() if s == 1.0]
    assert whole == [
        f"features.{i}.{p}" for i in (0, 1, 4, 5) for p in ("weight", "bias")
    ]  # conv1, norm1, conv2, norm2
    assert share["features.8.weight"] == pytest.approx((160_005 - 151_680) / (128 * 128 * 9))
    assert round(100 * share["features.8.weight"], 1) == 5.6
    assert set(share) == {*whole, "features.8.weight"}  # conv3's bias and everything after: matched


def test_the_layer_aligned_cut_drops_whole_leading_layers(cifar_layout):
    keep = deep_parameters(cifar_layout, 0.5, "layers")
    assert keep == slice(151_680, 320_010)  # the end of norm2
    assert all(s == 1.0 for s in dropped_share(cifar_layout, keep).values())
    assert deep_parameters(cifar_layout, 0.25, "layers") == slice(3840, 320_010)  # conv1 and norm1
    assert deep_parameters(cifar_layout, 0.005, "layers") is None  # conv1 alone is 1.1% of P


def test_ratio_zero_keeps_everything_and_bad_options_stop(cifar_layout):
    assert deep_parameters(cifar_layout, 0.0) is None
    assert deep_parameters(cifar_layout, 0.0, "layers") is None
    with pytest.raises(ConfigError, match="depth_ratio"):
        deep_parameters(cifar_layout, 1.0)
    with pytest.raises(ConfigError, match="mask"):
        deep_parameters(cifar_layout, 0.5, "blocks")


def test_masked_loss_sums_over_the_kept_indices_only():
    start = torch.tensor([1.0, 2.0, 3.0, 4.0])
    target = torch.zeros(4)
    theta = torch.tensor([100.0, -50.0, 1.0, 2.0])
    match = ParameterMatch(start, target, slice(2, 4))
    assert float(match(theta)) == pytest.approx((1 + 4) / (9 + 16))
    assert float(match(start)) == 1.0  # zero inner steps


def test_loss_ratio_drops_the_smallest_errors():
    start = torch.tensor([1.0, 1.0, 1.0, 1.0])
    target = torch.zeros(4)
    theta = torch.tensor([0.1, 3.0, 0.2, 2.0], requires_grad=True)
    match = ParameterMatch(start, target, loss_ratio=0.5)  # drops the 2 smallest errors (0.01, 0.04)
    loss = match(theta)
    assert float(loss.detach()) == pytest.approx((9 + 4) / 2)
    loss.backward()
    assert theta.grad.tolist() == pytest.approx([0.0, 3.0, 0.0, 2.0])  # d/dtheta of sum theta^2 / 2
    spread = start * torch.arange(1.0, 5.0)
    assert float(ParameterMatch(spread, target, loss_ratio=0.5)(spread)) == 1.0  # zero inner steps


def test_loss_ratio_combines_with_the_depth_cut():
    start = torch.tensor([5.0, 1.0, 1.0, 1.0, 1.0])
    theta = torch.tensor([0.0, 0.1, 3.0, 0.2, 2.0])
    match = ParameterMatch(start, torch.zeros(5), slice(1, 5), loss_ratio=0.5)
    assert float(match(theta)) == pytest.approx((9 + 4) / 2)


@pytest.mark.parametrize(("mask", "loss_ratio"), [("flat", 0.0), ("layers", 0.0), ("flat", 0.3)])
def test_masked_losses_keep_the_adjoint_exact(mask, loss_ratio):
    """The adjoint sweep differentiates PAD's masked (and loss-ratio) losses exactly as the unroll does."""
    from distillset.inner import Student, meta_loss, sample_plan
    from distillset.models.params import flat_params

    torch.manual_seed(0)
    model = build_model("convnet", (1, 8, 8), 3, width=4, depth=2).double()
    theta0 = flat_params(model)
    target = theta0 + 0.05 * torch.randn_like(theta0)
    images = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    labels = torch.arange(6) % 3
    plan = sample_plan(6, 4, None, (8, 8), None, torch.Generator().manual_seed(1))
    keep = deep_parameters(ParamLayout.from_model(model), 0.5, mask)
    assert keep is not None
    grads = {}
    for engine in ("unroll", "adjoint"):
        imgs = images.clone().requires_grad_(True)
        lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        terms = {4: ParameterMatch(theta0, target, keep, loss_ratio)}
        meta_loss(engine, Student.of(model), theta0, imgs, labels, lr, plan, terms).backward()
        grads[engine] = (imgs.grad, lr.grad)
    assert torch.allclose(grads["adjoint"][0], grads["unroll"][0], rtol=1e-12, atol=1e-14)
    assert torch.allclose(grads["adjoint"][1], grads["unroll"][1], rtol=1e-12)
    assert grads["unroll"][0].abs().sum() > 0
