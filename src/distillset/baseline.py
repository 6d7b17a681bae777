"""Baseline artifacts: the random-real subset and the coreset baselines of Zhao et al.'s tables (herding
and k-center, chosen in a trained network's feature space), and the manifest fields every artifact shares."""

from __future__ import annotations

import torch
from torch import Tensor

from .config import Config
from .data.prepared import PreparedData
from .errors import ConfigError
from .networks import seeded_model
from .synthetic import DistilledSet, random_real_indices
from .synthetic.init import class_indices
from .training import train_epoch
from .utils import generator

CORESET_METHODS = ("herding", "kcenter")


def artifact_meta(cfg: Config, data: PreparedData, method: str) -> dict:
    """Dataset, split, preprocessing and config: what an evaluator needs to rebuild the same test set."""
    ds = data.dataset
    return {
        "method": method,
        "dataset": {"name": ds.name, "source": ds.source, "fingerprint": ds.fingerprint()},
        "ipc": cfg.data.ipc,
        "num_classes": ds.num_classes,
        "class_names": ds.class_names,
        "preprocessing": data.prep.to_manifest(),
        "split": ds.split,
        "config": cfg.model_dump(mode="json"),
    }


def random_subset(cfg: Config, data: PreparedData) -> DistilledSet:
    """`data.ipc` random real training images per class, hard labels, the evaluation's default lr."""
    idx = random_real_indices(
        data.train_y, cfg.data.ipc, data.num_classes, generator(cfg.seed, "random-subset")
    )
    idx = idx.to(data.train_x.device)
    return DistilledSet(
        images=data.train_x[idx].cpu(),
        labels=data.train_y[idx].cpu(),
        lr=cfg.eval.default_lr,
        meta=artifact_meta(cfg, data, "random"),
    )


def _class_features(features: Tensor, labels: Tensor, c: int, ipc: int) -> tuple[Tensor, Tensor]:
    """Class `c`'s indices (CPU) and their features in float64 on the CPU (the same bits on every device)."""
    idx = class_indices(labels, c, ipc)
    return idx, features.detach().cpu().double()[idx]


def _check_rows(features: Tensor, labels: Tensor) -> None:
    if features.dim() != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"features must be (N, d) with one row per label; got {tuple(features.shape)} "
            f"for {labels.shape[0]} labels."
        )


def herding_indices(features: Tensor, labels: Tensor, ipc: int, num_classes: int) -> Tensor:
    """Greedy herding (Welling 2009, as in the DC authors' utils), per class, class-major (class 0's first).

    For class c with features F_c (n_c x d) and mean mu = (1/n_c) sum_i F_i, start with S empty and for
    k = 1..ipc add the not-yet-selected i that minimises

        || mu - (sum_{j in S} F_j + F_i) / k ||_2,

    i.e. the image that brings the running mean of the selection closest to the class mean. Ties go to
    the lowest index (in the training set's order). Within a class the indices come in selection order.
    Computed in float64 on the CPU; deterministic. Raises DataError if a class has fewer than `ipc` images.
    """
    _check_rows(features, labels)
    out = []
    for c in range(num_classes):
        idx, f = _class_features(features, labels, c, ipc)
        mu = f.mean(dim=0)
        running = torch.zeros_like(mu)
        taken = torch.zeros(f.shape[0], dtype=torch.bool)
        chosen = []
        for k in range(1, ipc + 1):
            dist = torch.linalg.vector_norm(mu - (running + f) / k, dim=1)
            dist[taken] = float("inf")
            i = int(torch.argmin(dist))  # the first minimum: ties go to the lowest index
            taken[i] = True
            running = running + f[i]
            chosen.append(i)
        out.append(idx[torch.tensor(chosen, dtype=torch.long)])
    return torch.cat(out)


def kcenter_indices(features: Tensor, labels: Tensor, ipc: int, num_classes: int) -> Tensor:
    """Greedy k-center (farthest-point selection, Sener & Savarese 2018), per class, class-major.

    For class c with features F_c: the first image is the one nearest the class mean,
    argmin_i ||F_i - mu||_2 (a deterministic start; the greedy algorithm itself leaves the first centre
    free, and the authors draw it at random). Then, for k = 2..ipc, add

        argmax_{i not in S} min_{j in S} ||F_i - F_j||_2,

    the image farthest from its nearest selected image. Ties (of the start and of every step) go to the
    lowest index. Within a class the indices come in selection order. Computed in float64 on the CPU;
    deterministic. Raises DataError if a class has fewer than `ipc` images.
    """
    _check_rows(features, labels)
    out = []
    for c in range(num_classes):
        idx, f = _class_features(features, labels, c, ipc)
        mu = f.mean(dim=0)
        i = int(torch.argmin(torch.linalg.vector_norm(f - mu, dim=1)))
        chosen = [i]
        nearest = torch.linalg.vector_norm(f - f[i], dim=1)  # distance to the nearest selected image
        taken = torch.zeros(f.shape[0], dtype=torch.bool)
        taken[i] = True
        for _ in range(1, ipc):
            score = nearest.masked_fill(taken, float("-inf"))
            i = int(torch.argmax(score))  # the first maximum: ties go to the lowest index
            taken[i] = True
            chosen.append(i)
            nearest = torch.minimum(nearest, torch.linalg.vector_norm(f - f[i], dim=1))
        out.append(idx[torch.tensor(chosen, dtype=torch.long)])
    return torch.cat(out)


def coreset_indices(method: str, features: Tensor, labels: Tensor, ipc: int, num_classes: int) -> Tensor:
    """`herding_indices` or `kcenter_indices` by name ("herding" | "kcenter")."""
    if method == "herding":
        return herding_indices(features, labels, ipc, num_classes)
    if method == "kcenter":
        return kcenter_indices(features, labels, ipc, num_classes)
    raise ConfigError(f"unknown coreset method {method!r}; valid methods: {', '.join(CORESET_METHODS)}.")


def features_description(cfg: Config) -> str:
    """How the coreset features were made, for an artifact's manifest."""
    return f"{cfg.model.name} trained {cfg.eval.full_data_epochs} epochs on the full training set"


def coreset_features(cfg: Config, data: PreparedData, batch_size: int = 1024) -> Tensor:
    """The feature space of the coreset baselines: `model.forward_features(train_x)` of one network.

    The network is `cfg.model`, initialised from (seed, "coreset"), trained on all of (train_x, train_y)
    for `eval.full_data_epochs` epochs with SGD (lr `eval.default_lr`, `eval.momentum`,
    `eval.weight_decay`, batch `eval.batch`, constant lr), no augmentation, in the order drawn from
    (seed, "coreset", "order"). Features are computed in eval mode without gradients, in batches of
    `batch_size`; returns an (N, d) tensor on the CPU. Deterministic.
    """
    ecfg = cfg.eval
    model = seeded_model(cfg.model, data.image_shape, data.num_classes, cfg.seed, "coreset")
    model = model.to(data.train_x.device)
    opt = torch.optim.SGD(
        model.parameters(), lr=ecfg.default_lr, momentum=ecfg.momentum, weight_decay=ecfg.weight_decay
    )
    order_gen = generator(cfg.seed, "coreset", "order")
    for _ in range(ecfg.full_data_epochs):
        train_epoch(model, data.train_x, data.train_y, opt, ecfg.batch, order_gen)
    model.eval()
    with torch.no_grad():
        x = data.train_x
        feats = [
            model.forward_features(x[s : s + batch_size]).cpu() for s in range(0, x.shape[0], batch_size)
        ]
    return torch.cat(feats)


def coreset_subset(
    cfg: Config, data: PreparedData, method: str, features: Tensor | None = None
) -> DistilledSet:
    """`data.ipc` real training images per class chosen by herding or k-center ("herding" | "kcenter") in
    the feature space of `coreset_features` (or the given `features`, one row per training image); hard
    labels, class-major, the evaluation's default lr."""
    if method not in CORESET_METHODS:
        raise ConfigError(f"unknown coreset method {method!r}; valid methods: {', '.join(CORESET_METHODS)}.")
    if features is None:
        features = coreset_features(cfg, data)
    idx = coreset_indices(method, features, data.train_y, cfg.data.ipc, data.num_classes)
    idx = idx.to(data.train_x.device)
    meta = artifact_meta(cfg, data, method)
    meta["selection"] = {"method": method, "features": features_description(cfg)}
    return DistilledSet(
        images=data.train_x[idx].cpu(),
        labels=data.train_y[idx].cpu(),
        lr=cfg.eval.default_lr,
        meta=meta,
    )
