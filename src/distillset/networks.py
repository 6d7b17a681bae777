"""Networks built from the config: the options each architecture takes, and seeded initialisation."""

from __future__ import annotations

import torch

from .config import ModelConfig
from .models import build_model
from .models.registry import DistillModel
from .utils import derive_seed


def model_options(cfg: ModelConfig, name: str | None = None) -> dict:
    """The options `build_model` takes for an architecture: ConvNets keep the configured width/depth/norm,
    the other architectures use their own defaults."""
    name = (name or cfg.name).lower()
    if not name.startswith("convnet"):
        return {}
    opts = {"width": cfg.width, "pooling": cfg.pooling}
    if name == "convnet":
        opts["norm"] = cfg.norm  # an alias such as convnet_bn fixes its own norm
    if cfg.depth is not None:
        opts["depth"] = cfg.depth
    return opts


def seeded_model(
    cfg: ModelConfig,
    in_shape: tuple[int, int, int],
    num_classes: int,
    seed: int,
    *tags: object,
    name: str | None = None,
) -> DistillModel:
    """A fresh network whose initialisation depends only on (seed, tags): built on the CPU under a forked
    global RNG (module constructors draw from it), so CPU and CUDA runs start from the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *tags))
        return build_model(name or cfg.name, in_shape, num_classes, **model_options(cfg, name))
