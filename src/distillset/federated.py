"""D3's sub-tasks ("federated distillation"): split the classes, distil each block alone, merge.

The C classes are cut into K contiguous blocks; when K does not divide C the first C mod K blocks get
one class more (the authors drop the remainder). Block k is a dataset of its own: its classes' images
with local labels 0..C_k - 1 (the preprocessing stays the one fitted on all the training data). Each
block trains its own experts (a C_k-way head, the experts section's recipe) and distils its own latent
priors and decoder, in `out/subtasks/<k>/` (a run directory of its own: it resumes like any run); the
blocks are independent tasks of the configured executor, in parallel on Ray.

The merged artifact keeps the K decoders and latent sets; a prior's global label is its block's offset
plus its local label. Soft labels come last (unless `d3.label_epoch` is None): one all-class expert,
trained into `out/label-expert/` with the experts recipe for `label_epoch` epochs, labels each prior by
the softmax (T = 1) of its logits at snapshot `label_epoch` on the prior's decoded mean; a prior's
samples inherit its label.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .baseline import artifact_meta
from .config import Config, ExecutorConfig
from .data.base import Dataset, Split
from .data.prepared import PreparedData
from .distill import DistillResult, run_distillation
from .experts.store import TrajectoryStore
from .experts.train import build_expert_model, train_experts
from .models.params import ParamLayout, functional_forward
from .parallel import Task, executor_for
from .synthetic import LatentSet


def class_blocks(num_classes: int, k: int) -> list[tuple[int, int]]:
    """K contiguous [lo, hi) class ranges covering every class; the first C mod K one class larger."""
    if not 1 <= k <= num_classes:
        from .errors import ConfigError

        raise ConfigError(f"d3.subtasks must be between 1 and the {num_classes} classes (got {k}).")
    base, extra = divmod(num_classes, k)
    out, lo = [], 0
    for i in range(k):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def _classes(x: torch.Tensor, y: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of classes [lo, hi) and their labels shifted to start at 0."""
    keep = (y >= lo) & (y < hi)
    return x[keep], y[keep] - lo


def restrict(data: PreparedData, lo: int, hi: int) -> PreparedData:
    """The classes [lo, hi) of `data` as a dataset of their own, labels shifted to start at 0."""
    ds = data.dataset
    sub = Dataset(
        name=f"{ds.name}[{lo}:{hi}]",
        train=Split(*_classes(ds.train.x, ds.train.y, lo, hi)),
        val=Split(*_classes(ds.val.x, ds.val.y, lo, hi)),
        test=Split(*_classes(ds.test.x, ds.test.y, lo, hi)),
        num_classes=hi - lo,
        class_names=ds.class_names[lo:hi],
        mean=ds.mean,
        std=ds.std,
        split={**ds.split, "classes": [lo, hi]},
        source=ds.source,
    )
    splits = {}
    for name in ("train", "val", "test"):
        x, y = _classes(getattr(data, f"{name}_x"), getattr(data, f"{name}_y"), lo, hi)
        splits[f"{name}_x"], splits[f"{name}_y"] = x, y
    return dataclasses.replace(data, dataset=sub, **splits)


def _local(cfg: Config) -> Config:
    """The config a sub-task runs with: its inner stages in its own process."""
    return cfg.model_copy(update={"executor": ExecutorConfig()})


def _expert_seconds(store: TrajectoryStore) -> float:
    return sum(sum(store.record(i).get("seconds", [])) for i in store.completed)


def subtask_task(
    cfg: Config, data: PreparedData, root: Path | None, k: int, lo: int, hi: int, progress: bool
) -> tuple[LatentSet, LatentSet, dict]:
    """Sub-task k, an executor task: experts and distillation of classes [lo, hi) in `root/subtasks/k`
    (a temporary directory when the workers share no storage with the driver). Returns the best and the
    last set, each one block at offset `lo`, and what to record (best iteration, validation, seconds)."""
    sub, sub_cfg = restrict(data, lo, hi), _local(cfg)
    with tempfile.TemporaryDirectory(prefix="distillset-subtask-") as tmp:
        run = (root if root is not None else Path(tmp)) / "subtasks" / str(k)
        t0 = time.perf_counter()
        store = train_experts(sub_cfg, run / "experts", sub, progress=progress)
        t1 = time.perf_counter()
        result = run_distillation(sub_cfg, run, sub, store, progress=progress)
        info = {
            "block": k,
            "classes": [lo, hi],
            "best_iteration": result.best_iteration,
            "best_val": result.best_val,
            "experts_seconds": round(_expert_seconds(store), 2),
            "distill_seconds": result.artifact.meta.get("compute", {}).get("distill_seconds"),
            "wall_seconds": {"experts": round(t1 - t0, 2), "distill": round(time.perf_counter() - t1, 2)},
        }
    best, final = result.artifact, result.final
    for art in (best, final):
        art.blocks[0]["offset"] = lo
    return best, final, info


def merge(parts: list[LatentSet], meta: dict) -> LatentSet:
    """One artifact of the blocks, in class order."""
    blocks = [b for art in parts for b in art.blocks]
    return LatentSet(parts[0].spec, blocks, parts[0].lpc, None, meta)


def label_store(cfg: Config, data: PreparedData, out: Path, progress: bool) -> TrajectoryStore:
    """The all-class labelling expert: one expert, `label_epoch` epochs, the experts recipe."""
    ecfg = cfg.experts.model_copy(update={"num_experts": 1, "train_epochs": max(1, cfg.d3.label_epoch)})
    return train_experts(_local(cfg).model_copy(update={"experts": ecfg}), out, data, progress=progress)


@torch.no_grad()
def label_expert_logits(
    cfg: Config, data: PreparedData, store: TrajectoryStore, x: torch.Tensor
) -> torch.Tensor:
    """The labelling expert's logits at snapshot `label_epoch` on the images `x` (network input space)."""
    device = data.train_x.device
    model = build_expert_model(cfg, data, ("expert", 0, "init")).to(device).eval()
    flat = store.snapshot(store.completed[0], cfg.d3.label_epoch, device=device)
    return functional_forward(model, flat, x.to(device), layout=ParamLayout.from_model(model))


def soft_labels(art: LatentSet, cfg: Config, data: PreparedData, store: TrajectoryStore) -> torch.Tensor:
    """softmax (T = 1) of the labelling expert's logits at snapshot `label_epoch` on every decoded mean."""
    return torch.softmax(label_expert_logits(cfg, data, store, art.means(data.train_x.device)), dim=1).cpu()


def distill_subtasks(
    cfg: Config,
    data: PreparedData,
    out: Path,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> DistillResult:
    """Every block's experts and distillation through the executor, then the merge and the soft labels;
    writes `out/distilled/` (the merge of each block's best set by validation) and
    `out/distilled-final/` (of the last sets)."""
    say = echo or (lambda _line: None)
    blocks = class_blocks(data.num_classes, cfg.d3.subtasks)
    ex = cfg.executor
    root = out if ex.shared_storage or ex.kind == "local" else None
    inner_progress = progress and ex.kind == "local"  # a worker's bars would not reach this terminal
    rows = executor_for(ex).map(
        subtask_task,
        [Task(f"subtask-{k}", (k, lo, hi, inner_progress)) for k, (lo, hi) in enumerate(blocks)],
        shared=(cfg, data, root),
        desc="sub-tasks",
        progress=progress,
        device=cfg.device,
    )
    parts = [rows[f"subtask-{k}"] for k in range(len(blocks))]
    infos = [p[2] for p in parts]
    for info in infos:
        lo, hi = info["classes"]
        at = f"iteration {info['best_iteration']}"
        if info["best_val"] is not None:
            at = f"validation {100 * info['best_val']:.1f}% (within its classes) at {at}"
        say(f"sub-task {info['block']} (classes {lo}..{hi - 1}): {at}")

    compute = {
        "experts_seconds": round(sum(i["experts_seconds"] for i in infos), 2),
        "distill_seconds": round(sum(i["distill_seconds"] or 0 for i in infos), 2),
    }
    store = None
    if cfg.d3.label_epoch is not None:
        store = label_store(cfg, data, out / "label-expert", progress)
        compute["label_expert_seconds"] = round(_expert_seconds(store), 2)
    meta = {**artifact_meta(cfg, data, cfg.method), "compute": compute}
    sets = []
    for idx, selection, where in (
        (0, "validation, per sub-task", "distilled"),
        (1, "last iteration", "distilled-final"),
    ):
        distill = {
            "selection": selection,
            "iterations": cfg.distill.iterations,
            "subtasks": infos,
            "label_epoch": cfg.d3.label_epoch,
        }
        merged = merge([p[idx] for p in parts], {**meta, "distill": distill})
        if store is not None:
            merged.soft_labels = soft_labels(merged, cfg, data, store)
        merged.save(out / where)
        sets.append(merged)
    vals = [i["best_val"] for i in infos if i["best_val"] is not None]
    best_val = sum(vals) / len(vals) if vals else None
    return DistillResult(sets[0], sets[1], max(i["best_iteration"] for i in infos), best_val, out)
