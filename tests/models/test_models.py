"""The networks: shapes on every input size, the field's exact ConvNet, the registry and its errors."""

import json

import pytest
import torch
from torch import nn

from distillset.errors import ConfigError
from distillset.models import (
    ConvNet,
    DistillModel,
    LeNet,
    ModelError,
    ParamLayout,
    build_model,
    build_model_from_spec,
    default_convnet_depth,
    list_models,
)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
# Canonical names plus one batch-norm alias each; small ConvNets keep the suite fast.
CASES = [
    ("convnet", {"width": 16}),
    ("convnet_bn", {"width": 16}),
    ("mlp", {}),
    ("lenet", {}),
    ("alexnet", {}),
    ("alexnet_bn", {}),
    ("vgg11", {}),
    ("vgg11_bn", {}),
    ("resnet18", {}),
    ("resnet18_bn", {}),
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("in_shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name,options", CASES, ids=[c[0] for c in CASES])
def test_every_model_runs_on_every_size(name, options, in_shape):
    model = build_model(name, in_shape, 7, **options)
    assert isinstance(model, DistillModel)
    x = torch.randn(2, *in_shape)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
        assert feats.shape == (2, model.feature_dim)
        assert logits.shape == (2, 7)
        assert torch.equal(logits, model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("name", list_models())
def test_spec_rebuilds_the_same_network(name):
    model = build_model(name, (1, 8, 8), 3)
    spec = json.loads(json.dumps(model.spec))  # as read back from a manifest
    rebuilt = build_model_from_spec(spec)
    assert type(rebuilt) is type(model)
    assert rebuilt.spec == model.spec
    assert ParamLayout.from_model(rebuilt) == ParamLayout.from_model(model)


def test_convnet_cifar10_is_the_fields_network():
    model = build_model("convnet", (3, 32, 32), 10)
    assert model.spec["options"] == {
        "width": 128,
        "depth": 3,
        "act": "relu",
        "norm": "instance",
        "pooling": "avg",
    }
    assert sum(p.numel() for p in model.parameters()) == 320_010
    norm = model.features[1]
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == 128 and norm.affine
    assert [type(m).__name__ for m in model.features[:4]] == ["Conv2d", "GroupNorm", "ReLU", "AvgPool2d"]
    assert model.classifier.in_features == 128 * 4 * 4


def test_convnet_mnist_pads_28_to_32():
    model = build_model("convnet", (1, 28, 28), 10)
    assert model.features[0].padding == (3, 3)
    assert model.classifier.in_features == 128 * 4 * 4
    # Padding 3 is only for 28x28 MNIST-like inputs: digits keep padding 1.
    digits = build_model("convnet", (1, 8, 8), 10)
    assert digits.features[0].padding == (1, 1)
    assert digits.spec["options"]["depth"] == 2
    assert digits.classifier.in_features == 128 * 2 * 2


def test_default_convnet_depth():
    assert [default_convnet_depth((s, s)) for s in (8, 28, 32, 64, 128)] == [2, 3, 3, 4, 5]
    assert build_model("convnet", (3, 64, 64), 10, width=8).spec["options"]["depth"] == 4
    # An explicit depth wins over the size default; a direct ConvNet keeps the field's depth 3.
    assert build_model("convnet", (3, 64, 64), 10, width=8, depth=2).spec["options"]["depth"] == 2
    assert ConvNet(3, 10, width=8, im_size=(64, 64)).spec["options"]["depth"] == 3


@pytest.mark.parametrize(
    "norm,kind",
    [("instance", nn.GroupNorm), ("batch", nn.BatchNorm2d), ("layer", nn.LayerNorm), ("group", nn.GroupNorm)],
)
def test_convnet_norms(norm, kind):
    model = build_model("convnet", (3, 32, 32), 10, width=8, norm=norm)
    assert isinstance(model.features[1], kind)
    if norm == "layer":
        assert [tuple(m.normalized_shape) for m in model.modules() if isinstance(m, nn.LayerNorm)] == [
            (8, 32, 32),
            (8, 16, 16),
            (8, 8, 8),
        ]
    if norm == "group":
        assert model.features[1].num_groups == 4
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convnet_without_norm_or_pooling():
    model = build_model("convnet", (3, 16, 16), 4, width=8, depth=2, norm="none", pooling="none")
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) for m in model.modules())
    assert model.classifier.in_features == 8 * 16 * 16
    maxpool = build_model("convnet", (3, 16, 16), 4, width=8, pooling="max", act="leakyrelu")
    assert isinstance(maxpool.features[3], nn.MaxPool2d)
    assert maxpool(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_names_are_case_insensitive_and_aliases_fix_the_norm():
    for name in ("ConvNet_BN", "convnetbn"):
        model = build_model(name, (3, 32, 32), 10, width=8)
        assert model.spec["name"] == "convnet" and model.spec["options"]["norm"] == "batch"
    assert isinstance(build_model("ResNet18BN", (3, 32, 32), 10).bn1, nn.BatchNorm2d)
    assert isinstance(build_model("resnet18", (3, 32, 32), 10).bn1, nn.GroupNorm)
    assert isinstance(build_model("vgg11bn", (3, 32, 32), 10).features[1], nn.BatchNorm2d)
    assert isinstance(build_model("alexnet", (3, 32, 32), 10).features[1], nn.ReLU)
    assert isinstance(build_model("alexnet_bn", (3, 32, 32), 10).features[1], nn.BatchNorm2d)
    assert list_models() == ["alexnet", "convnet", "lenet", "mlp", "resnet18", "vgg11"]
    assert "convnet_bn" in list_models(include_aliases=True)


def test_small_inputs_are_documented_adaptations():
    lenet = LeNet(1, 10, im_size=(8, 8))
    assert lenet.features[0].padding == (4, 4) and lenet.fc_1.in_features == 16
    assert LeNet(1, 10, im_size=(28, 28)).fc_1.in_features == 16 * 5 * 5
    assert LeNet(3, 10).features[0].padding == (0, 0)
    vgg8, vgg32 = build_model("vgg11", (1, 8, 8), 10), build_model("vgg11", (1, 32, 32), 10)
    assert sum(isinstance(m, nn.Identity) for m in vgg8.features) == 2
    assert [n for n, _ in vgg8.named_parameters()] == [n for n, _ in vgg32.named_parameters()]
    assert build_model("vgg11", (1, 28, 28), 10).features[0].padding == (3, 3)


def test_resnet18_structure():
    model = build_model("resnet18", (3, 32, 32), 10)
    names = [n for n, _ in model.named_parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer2.0.shortcut.0.weight" in names and "layer1.0.shortcut.0.weight" not in names
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert model.conv1.bias is None and model.classifier.in_features == 512


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"Did you mean 'convnet'\?.*Valid models: alexnet"):
        build_model("convnett", (3, 32, 32), 10)


def test_unknown_option_and_conflicting_alias():
    with pytest.raises(ValueError, match=r"Unknown option 'widht'.*Did you mean 'width'"):
        build_model("convnet", (3, 32, 32), 10, widht=64)
    with pytest.raises(ValueError, match="fixes norm='batch'"):
        build_model("convnet_bn", (3, 32, 32), 10, norm="instance")
    with pytest.raises(ValueError, match=r"Unknown ConvNet norm 'instancenorm'.*Did you mean 'instance'"):
        build_model("convnet", (3, 32, 32), 10, norm="instancenorm")
    with pytest.raises(ValueError, match="in_shape"):
        build_model("convnet", (32, 32), 10)


def test_convnet_too_deep_for_digits():
    with pytest.raises(ValueError, match=r"depth 4 is too deep for 8x8 inputs.*depth <= 3"):
        build_model("convnet", (1, 8, 8), 10, depth=4)
    build_model("convnet", (1, 8, 8), 10, width=8, depth=3)  # 8 -> 4 -> 2 -> 1 still fits


def test_model_error_is_a_config_error():
    with pytest.raises(ConfigError):
        build_model("nope", (3, 32, 32), 10)
    assert issubclass(ModelError, ValueError)
