"""What gradient and distribution matching share: each class's pool of real images (with PAD's data
selection), the synthetic prototypes they start from, and the siamese augmentation of a class's pair of
batches.

PAD's data selection on DC/DSA/DM ("information extraction", known from the paper's figures only): the
training images of each class are sorted easy -> hard by a difficulty score (§4's scores, computed and
cached as for PAD's experts), and the easiest `int(drop_easy * n_c)` and the hardest
`int(drop_hard * n_c)` are left out of the pool real batches are drawn from (the paper drops the easiest
at large IPC, the hardest at small IPC).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..config import Config, DistillConfig
from ..data.augment import apply_dsa, sample_dsa
from ..data.prepared import PreparedData
from ..errors import ConfigError
from ..identity import settings
from ..networks import seeded_model
from ..synthetic import Prototypes, random_real_indices
from ..synthetic.init import class_indices
from ..utils import generator
from .base import Objective


class RealPool:
    """Per class, the indices into the training set that real batches are drawn from."""

    def __init__(self, data: PreparedData, pools: list[Tensor]):
        self.data, self.pools = data, pools

    @classmethod
    def build(cls, cfg: Config, data: PreparedData, run: Path, progress: bool) -> tuple[RealPool, dict]:
        dcfg = cfg.distill
        y = data.train_y.cpu()
        if not (dcfg.drop_easy or dcfg.drop_hard):
            return cls(data, [class_indices(y, c, 1) for c in range(data.num_classes)]), {}
        from ..experts.scores import compute_scores

        scores = compute_scores(cfg, data, run / "scores", progress=progress)
        pools, kept = [], []
        for order in scores.order(dcfg.difficulty, data.num_classes):
            n = order.numel()
            lo, hi = int(dcfg.drop_easy * n), n - int(dcfg.drop_hard * n)
            pools.append(order[lo:hi])
            kept.append(hi - lo)
        info = {"drop_easy": dcfg.drop_easy, "drop_hard": dcfg.drop_hard, "difficulty": dcfg.difficulty}
        return cls(data, pools), {"real_pool": {**info, "class_sizes": kept}}

    def batch(self, c: int, n: int, gen: torch.Generator) -> Tensor:
        """`n` random images of class `c` (all of its pool when it holds fewer), on the data's device."""
        pool = self.pools[c]
        idx = pool[torch.randperm(pool.numel(), generator=gen)[:n]]
        return self.data.train_x[idx.to(self.data.train_x.device)]


def check_prototype_init(dcfg: DistillConfig, name: str) -> None:
    if dcfg.init not in ("real", "noise"):
        raise ConfigError(
            f"{name} starts from random real images or noise (distill.init=real|noise), not {dcfg.init!r}, "
            "which needs experts."
        )
    if dcfg.soft_label:
        raise ConfigError(f"{name} learns images with hard labels; set distill.soft_label=false.")


def initial_prototypes(cfg: Config, data: PreparedData) -> tuple[Prototypes, dict]:
    """DC: N(0, 1) noise; DSA and DM: random real images; class-major, hard labels, the evaluation's
    default lr (not learned); the images move by SGD(lr_img, momentum_img)."""
    dcfg, device = cfg.distill, data.train_x.device
    ipc, num_classes = cfg.data.ipc, data.num_classes
    gen = generator(cfg.seed, "distill", "init")
    labels = torch.arange(num_classes).repeat_interleave(ipc).to(device)
    info: dict = {"init": dcfg.init}
    if dcfg.init == "noise":
        images = torch.randn((num_classes * ipc, *data.image_shape), generator=gen).to(device)
        indices = None
    else:
        idx = random_real_indices(data.train_y, ipc, num_classes, gen).to(device)
        images, indices = data.train_x[idx].detach().clone().float(), idx.cpu().tolist()
    lr = torch.tensor(cfg.eval.default_lr, dtype=torch.float64, device=device)  # fixed: kept exact
    learn = {"images": (dcfg.lr_img, dcfg.momentum_img)}
    info["indices"] = indices
    return Prototypes(images, lr, learn, labels=labels), info


def siamese(real: Tensor, syn: Tensor, strategy: str | None, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The siamese augmentation of DSA/DM: ONE family and ONE parameter draw applied to every image of
    both batches (the authors' seeded DiffAugment); identity without a strategy."""
    if not strategy or strategy == "none":
        return real, syn
    params = sample_dsa(real.shape[0], tuple(real.shape[2:]), strategy, gen, real.device, batchwise=True)
    return apply_dsa(real, params), apply_dsa(syn, params)


def network_identity(cfg: Config, data: PreparedData) -> dict:
    """What a DC/DM checkpoint depends on besides the distill section: the network and the scores."""
    probe = seeded_model(cfg.model, data.image_shape, data.num_classes, cfg.seed, "distill-net", 0)
    out: dict = {"model": probe.spec}
    if cfg.distill.drop_easy or cfg.distill.drop_hard:
        out["scores"] = settings(cfg.scores)
    return out


class RealMatching(Objective):
    """What DC/DSA and DM share: a matcher of real batches from `RealPool` against prototypes that start
    from noise or random real images, with a fresh network per iteration (seeded by the iteration)."""

    label: str  # for messages, e.g. "gradient matching"

    @classmethod
    def check(cls, cfg: Config) -> None:
        check_prototype_init(cfg.distill, cls.label)

    @classmethod
    def build(cls, cfg: Config, data: PreparedData, run: Path, store: object, progress: bool) -> RealMatching:
        cls.check(cfg)
        pool, info = RealPool.build(cfg, data, run, progress)
        return cls(cfg, data, pool, info)

    def __init__(self, cfg: Config, data: PreparedData, pool: RealPool, pool_info: dict):
        self.cfg, self.dcfg, self.data, self.pool, self.pool_info = cfg, cfg.distill, data, pool, pool_info
        self.strategy = data.dsa_strategy if self.dcfg.dsa else None

    def network(self, it: int) -> torch.nn.Module:
        d, cfg = self.data, self.cfg
        net = seeded_model(cfg.model, d.image_shape, d.num_classes, cfg.seed, "distill-net", it)
        return net.to(d.train_x.device)

    def identity(self) -> dict:
        return network_identity(self.cfg, self.data)

    def filter_info(self) -> dict:
        """What to record about the objective's own filter (PAD's parameter side), if any."""
        return {}

    def initial_set(self) -> tuple[Prototypes, dict]:
        synthetic, info = initial_prototypes(self.cfg, self.data)
        return synthetic, {**info, **self.pool_info, **self.filter_info()}

    def diverged(self, value: float, it: int, synthetic: Prototypes) -> str:
        return f"the {self.label} loss is {value} at iteration {it}; lower distill.lr_img."


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
