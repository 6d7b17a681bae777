"""Distribution matching (DM, Zhao & Bilen 2023) as an objective of the loop.

One iteration: a fresh randomly initialised network with frozen weights; per class c a batch of
`batch_real` real images and the class's synthetic images, both under one shared augmentation draw
(siamese DSA); the embedding is the flattened trunk output (the classifier's input, `forward_features`);
  L = sum_c || mean_i emb(real_c)_i - mean_j emb(S_c)_j ||^2,
one step of the images on L. BatchNorm networks embed all classes in one batch (their statistics then
come from every class, as in the authors' code).

PAD's parameter-side filter on DM (the paper's figures only; the variant is not public, so this one is
our own definition, documented as such): with `depth_ratio > 0` the embedding is taken after every block
from block `int(depth_ratio * depth)` on, and L sums the mean distances of those blocks' flattened
outputs ("deep features": the shallow blocks contribute nothing, the deep ones beside the trunk output
do). `depth_ratio = 0` is the authors' DM.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..config import Config
from ..data.prepared import PreparedData
from ..errors import ConfigError
from ..synthetic import Prototypes
from .base import Term, register_objective
from .real import RealMatching, RealPool, has_batchnorm, siamese

POOLS = (nn.AvgPool2d, nn.MaxPool2d)
ACTS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid)


def block_outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    """A ConvNet's flattened output after each block (after its pooling, or its activation without)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ConfigError("DM's deep-feature variant (distill.depth_ratio > 0) needs a ConvNet.")
    layers = list(features)
    ends = [i for i, m in enumerate(layers) if isinstance(m, POOLS)]
    if not ends:  # pooling="none": a block ends at its activation
        ends = [i for i, m in enumerate(layers) if isinstance(m, ACTS)]
    out = []
    for i, m in enumerate(layers):
        x = m(x)
        if i in ends:
            out.append(x.flatten(1))
    return out


def mean_embedding_distance(real: list[Tensor], syn: list[Tensor]) -> Tensor:
    """sum over embeddings of || mean(real) - mean(syn) ||^2 (the real side detached)."""
    return sum(((r.detach().mean(0) - s.mean(0)) ** 2).sum() for r, s in zip(real, syn, strict=True))


@register_objective
class DistributionMatching(RealMatching):
    name = "distribution"
    label = "distribution matching"

    def __init__(self, cfg: Config, data: PreparedData, pool: RealPool, pool_info: dict):
        super().__init__(cfg, data, pool, pool_info)
        self.first_block = None
        if self.dcfg.depth_ratio > 0:
            x = torch.zeros(1, *data.image_shape, device=data.train_x.device)
            self.first_block = int(self.dcfg.depth_ratio * len(block_outputs(self.network(0), x)))
        self._loss = float("nan")

    def filter_info(self) -> dict:
        if self.first_block is None:
            return {}
        return {"matched_features": {"from_block": self.first_block, "definition": "distillset's own"}}

    def embed(self, net: nn.Module, x: Tensor) -> list[Tensor]:
        if self.first_block is None:
            return [net.forward_features(x)]
        return block_outputs(net, x)[self.first_block :]

    def terms(self, it: int, gen: torch.Generator, synthetic: Prototypes) -> Iterator[Term]:
        ipc, num_classes = self.cfg.data.ipc, self.data.num_classes
        net = self.network(it)
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        images, _ = synthetic.decode()
        pairs = []
        for c in range(num_classes):
            real = self.pool.batch(c, self.dcfg.batch_real, gen)
            pairs.append(siamese(real, images[c * ipc : (c + 1) * ipc], self.strategy, gen))
        if has_batchnorm(net):  # one batch of every class, split back by class
            emb_real = self.embed(net, torch.cat([r for r, _ in pairs]))
            emb_syn = self.embed(net, torch.cat([s for _, s in pairs]))
            sizes_r, sizes_s = [r.shape[0] for r, _ in pairs], [s.shape[0] for _, s in pairs]
            per_real = list(zip(*[e.split(sizes_r) for e in emb_real], strict=True))
            per_syn = list(zip(*[e.split(sizes_s) for e in emb_syn], strict=True))
        else:
            per_real = [self.embed(net, r) for r, _ in pairs]
            per_syn = [self.embed(net, s) for _, s in pairs]
        loss = sum(mean_embedding_distance(list(r), list(s)) for r, s in zip(per_real, per_syn, strict=True))
        self._loss = float(loss.detach()) / num_classes
        yield Term(loss, ("images",))

    def record(self, synthetic: Prototypes) -> dict:
        return {"loss": self._loss}

    def describe(self) -> str:
        return f"loss {self._loss:.4f}"
