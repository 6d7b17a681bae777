import torch

from distillset.config import ModelConfig
from distillset.models import flat_params
from distillset.networks import model_options, seeded_model


def test_seeded_model_depends_only_on_seed_and_tags():
    cfg = ModelConfig(width=8, depth=2)
    torch.manual_seed(123)  # the global RNG must not matter, and must not be consumed
    state = torch.random.get_rng_state()
    a = flat_params(seeded_model(cfg, (1, 8, 8), 10, 0, "expert", 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(456)
    b = flat_params(seeded_model(cfg, (1, 8, 8), 10, 0, "expert", 1))
    c = flat_params(seeded_model(cfg, (1, 8, 8), 10, 0, "expert", 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_model_options_per_architecture():
    cfg = ModelConfig(width=16, depth=2, norm="none")
    assert model_options(cfg) == {"width": 16, "pooling": "avg", "norm": "none", "depth": 2}
    assert model_options(cfg, "convnet_bn") == {"width": 16, "pooling": "avg", "depth": 2}
    assert model_options(cfg, "resnet18") == {}
    net = seeded_model(cfg, (1, 8, 8), 10, 0, name="convnet_bn")
    assert isinstance(net.features[1], torch.nn.BatchNorm2d) and net.features[0].out_channels == 16
