"""The random-real-subset baseline as an artifact, and the manifest fields every artifact shares."""

from __future__ import annotations

from .config import Config
from .data.prepared import PreparedData
from .synthetic import DistilledSet, random_real_indices
from .utils import generator


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
