"""Flat parameter vectors: the pinned ConvNet layout, views, copies, and functional calls that match."""

import json

import pytest
import torch

from distillset.models import (
    ParamLayout,
    build_model,
    flat_params,
    functional_features,
    functional_forward,
    load_flat_,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny(name="convnet", **options):
    options = {"width": 8, **options} if name.startswith("convnet") else options
    return build_model(name, (3, 16, 16), 5, **options)


def test_cifar10_convnet_layout_is_pinned():
    layout = ParamLayout.from_model(build_model("convnet", (3, 32, 32), 10))
    assert layout.numel == 320_010
    # conv: 3*128*3*3 = 3456 + 128; norm: 128 + 128; conv: 128*128*9 = 147456 + 128; head: 2048*10 + 10.
    assert layout.param_boundaries()[:6] == [
        ("features.0.weight", 0, 3456),
        ("features.0.bias", 3456, 3584),
        ("features.1.weight", 3584, 3712),
        ("features.1.bias", 3712, 3840),
        ("features.4.weight", 3840, 151296),
        ("features.4.bias", 151296, 151424),
    ]
    assert layout.layer_boundaries() == [
        ("features.0", 0, 3584),
        ("features.1", 3584, 3840),
        ("features.4", 3840, 151424),
        ("features.5", 151424, 151680),
        ("features.8", 151680, 299264),
        ("features.9", 299264, 299520),
        ("classifier", 299520, 320010),
    ]
    assert layout.entries[-2].shape == (10, 2048)


def test_layer_boundaries_cover_the_vector_without_gaps():
    for name in ("resnet18_bn", "lenet", "vgg11"):
        layout = ParamLayout.from_model(build_model(name, (1, 8, 8), 3))
        spans = layout.layer_boundaries()
        assert spans[0].start == 0 and spans[-1].end == layout.numel
        assert all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False))
        assert len({s.name for s in spans}) == len(spans)


def test_unflatten_gives_views_and_gradients_reach_flat():
    model = tiny()
    layout = ParamLayout.from_model(model)
    flat = flat_params(model)
    views = layout.unflatten(flat)
    assert list(views) == layout.names
    flat[0] = 123.0
    assert views["features.0.weight"][0, 0, 0, 0] == 123.0

    flat = flat_params(model).requires_grad_()
    x = torch.randn(4, 3, 16, 16)
    functional_forward(model, flat, x).square().sum().backward()
    model(x).square().sum().backward()
    assert torch.allclose(flat.grad, torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert flat.grad.abs().sum() > 0


def test_functional_calls_equal_the_module_exactly():
    model = tiny()
    x = torch.randn(4, 3, 16, 16)
    flat = flat_params(model)
    assert torch.equal(functional_forward(model, flat, x), model(x))
    assert torch.equal(functional_features(model, flat, x), model.forward_features(x))
    layout = ParamLayout.from_model(model)
    assert torch.equal(functional_forward(model, flat, x, layout=layout), model(x))


def test_flat_params_is_a_copy_not_a_view():
    model = tiny()
    snapshot = flat_params(model)
    before = snapshot.clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert torch.equal(snapshot, before)
    assert not torch.equal(flat_params(model), before)
    assert not snapshot.requires_grad


def test_load_flat_round_trip():
    a, b = tiny(), tiny()
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(a(x), b(x))
    assert load_flat_(b, flat_params(a)) is b
    assert torch.equal(flat_params(b), flat_params(a))
    assert torch.equal(a(x), b(x))
    assert all(p.grad is None for p in b.parameters())


def test_float64():
    model = tiny().double()
    flat = flat_params(model)
    assert flat.dtype == torch.float64
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(functional_forward(model, flat, x), model(x))


def test_batch_norm_runs_functionally_with_buffers():
    model = tiny("convnet_bn")
    x = torch.randn(4, 3, 16, 16)
    flat = flat_params(model)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    own = {k: v.clone() for k, v in model.named_buffers()}

    key = "features.1.running_mean"
    out = functional_forward(model, flat, x, buffers)  # training mode: batch statistics
    # The running-statistics update lands in the buffers passed in; the model's own stay as they were.
    assert not torch.equal(buffers[key], own[key])
    assert torch.equal(model.get_buffer(key), own[key])
    assert torch.equal(out, model(x))  # ... which now takes the same update, so eval below agrees

    model.eval()
    assert torch.equal(functional_forward(model, flat, x, buffers), model(x))
    resnet = build_model("resnet18_bn", (3, 8, 8), 5).eval()
    small = x[:, :, :8, :8]
    state = dict(resnet.named_buffers())
    assert torch.equal(
        functional_features(resnet, flat_params(resnet), small, state), resnet.forward_features(small)
    )


def test_unrolled_step_differentiates_through_the_update():
    """The trajectory-matching inner loop: a gradient step on flat, differentiated back to the inputs."""
    model = tiny()
    flat = flat_params(model)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(functional_forward(model, flat.requires_grad_(), x), y)
    (g,) = torch.autograd.grad(loss, flat, create_graph=True)
    stepped = flat - 0.1 * g
    torch.nn.functional.cross_entropy(functional_forward(model, stepped, x), y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_flatten_and_errors():
    model = tiny("convnet_bn")
    layout = ParamLayout.from_model(model)
    assert torch.equal(layout.flatten(model), flat_params(model))
    assert torch.equal(layout.flatten(model.state_dict()), flat_params(model))  # buffers are ignored
    flat = flat_params(model).requires_grad_()
    assert layout.flatten(layout.unflatten(flat)).grad_fn is not None
    with pytest.raises(ValueError, match="another model"):
        layout.unflatten(torch.zeros(layout.numel + 1))
    with pytest.raises(ValueError, match="missing"):
        layout.flatten({})
    with pytest.raises(ValueError, match="another model"):
        functional_forward(tiny(width=4), flat, torch.randn(1, 3, 16, 16))


def test_fingerprint_and_dict_round_trip():
    a, b = ParamLayout.from_model(tiny()), ParamLayout.from_model(tiny())
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    assert a.fingerprint() != ParamLayout.from_model(tiny(width=4)).fingerprint()
    restored = ParamLayout.from_dict(json.loads(json.dumps(a.to_dict())))
    assert restored == a and restored.fingerprint() == a.fingerprint()
