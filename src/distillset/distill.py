"""The distillation loop, one for every objective: terms -> optimiser steps -> log -> validate -> checkpoint.

Per iteration the objective gives its terms (each a loss and the synthetic tensors it moves); the loop
steps the set on every term the objective does not skip, logs what the objective records, checks the set
on the validation split every `eval_every` iterations (keeping the best set: never the test split) and
writes a checkpoint every `checkpoint_every`. Every random choice of iteration `it` comes from generators
derived from (seed, it), and the checkpoint holds the set, its optimisers' state and the best set so far:
a run killed at any point and started again continues from its last checkpoint and ends with the same
artifact as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from .baseline import artifact_meta
from .config import Config
from .data.prepared import PreparedData, prepare
from .errors import StoreError
from .evaluate import validation_accuracy
from .identity import mismatch, settings
from .networks import seeded_model
from .objectives import Objective, Term, objective_class
from .progress import progress_bar
from .rundir import CHECKPOINT, read_checkpoint, read_metrics, trim_metrics, write_checkpoint
from .synthetic import DistilledSet, LatentSet, SyntheticSet
from .utils import directory_lock, generator, resolve_device

__all__ = ["CHECKPOINT", "DistillResult", "read_checkpoint", "run_distillation", "write_checkpoint"]


@dataclass
class DistillResult:
    artifact: DistilledSet | LatentSet  # the set with the best validation accuracy
    final: DistilledSet | LatentSet  # the set after the last iteration
    best_iteration: int
    best_val: float | None
    path: Path


def run_identity(cfg: Config, data: PreparedData, objective: Objective) -> dict:
    """What a checkpoint must match to be resumed (see identity.py; iterations may grow: a run extends)."""
    return {
        "seed": cfg.seed,
        "ipc": cfg.data.ipc,
        "data": data.fingerprint(),
        **objective.identity(),
        "distill": settings(cfg.distill),
        "eval": settings(cfg.eval),
    }


def validate_set(cfg: Config, data: PreparedData, view: DistilledSet | LatentSet) -> float | None:
    """Mean validation accuracy of `eval_runs` fresh networks trained on the set (same seeds every check,
    so checks compare sets, not initialisations). None without a validation split."""
    if data.val_x.shape[0] == 0:
        return None
    device, accs = data.train_x.device, []
    source = view.epoch_data(cfg.seed, ("distill-val",), cfg.d3.eval_samples).to_device(device)
    for r in range(cfg.distill.eval_runs):
        model = seeded_model(cfg.model, data.image_shape, data.num_classes, cfg.seed, "distill-val", r)
        args = (data, cfg.eval, view.lr, cfg.distill.eval_epochs, ("distill-val", r), cfg.seed)
        accs.append(validation_accuracy(model.to(device), source.for_network(r), None, *args))
    return sum(accs) / len(accs)


def run_distillation(
    cfg: Config,
    out: str | Path,
    data: PreparedData | None = None,
    store: object = None,
    progress: bool = True,
) -> DistillResult:
    """Distil into the run directory `out` (experts, for objectives that need them, in `out/experts` or
    passed as `store`). Writes `out/checkpoints/distill.safetensors` (resumable), `out/metrics.jsonl` and,
    at the end, `out/distilled/` (the best set by validation accuracy) and `out/distilled-final/` (the last
    set). A second process started on the same directory while one runs is refused."""
    with directory_lock(out, "distill"):
        return _loop(cfg, Path(out), data, store, progress)


def _loop(cfg: Config, out: Path, data: PreparedData | None, store: object, progress: bool) -> DistillResult:
    dcfg = cfg.distill
    data = data if data is not None else prepare(cfg.data, resolve_device(cfg.device))
    objective = objective_class(dcfg.objective).build(cfg, data, out, store, progress)
    synthetic, init_info = objective.initial_set()
    identity = run_identity(cfg, data, objective)
    ckpt_path, metrics_path = out / "checkpoints" / CHECKPOINT, out / "metrics.jsonl"

    start_it, best, best_it, best_val = 0, synthetic.snapshot(), 0, None
    start = {k: v for k, v in init_info.items() if k != "indices"}  # how the set began, for the records
    resumed = read_checkpoint(ckpt_path)
    if resumed is not None:
        tensors, saved = resumed
        diff = mismatch(saved["identity"], identity)
        if diff:
            raise StoreError(
                f"{ckpt_path} belongs to a run with another setting: {diff}; use another --out or delete "
                "the checkpoints directory."
            )
        synthetic.load_(tensors)
        device = data.train_x.device
        best = {k[len("best.") :]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        start_it, best_it, best_val = saved["next_it"], saved["best_it"], saved["best_val"]
        trim_metrics(metrics_path, start_it)
    else:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("")
        # the set before any step, for the run report's before/after figure
        meta = {**artifact_meta(cfg, data, cfg.method), "distill": {"selection": "initial", **start}}
        synthetic.artifact(synthetic.snapshot(), meta).save(out / "distilled-initial")

    def checkpoint(next_it: int) -> None:
        tensors = {**synthetic.tensors(), **{f"best.{k}": v.detach().cpu() for k, v in best.items()}}
        state = {
            "identity": identity,
            "next_it": next_it,
            "best_it": best_it,
            "best_val": best_val,
            "init": start,
        }
        write_checkpoint(ckpt_path, tensors, state)

    with (
        metrics_path.open("a") as log,
        progress_bar(
            total=dcfg.iterations, initial=start_it, desc="distill", unit="it", disable=not progress
        ) as bar,
    ):

        def record(rec: dict) -> None:
            log.write(json.dumps(rec) + "\n")
            log.flush()

        def check(it: int) -> None:
            nonlocal best, best_it, best_val
            snap = synthetic.snapshot()
            val = validate_set(cfg, data, synthetic.artifact(snap, {}))
            if val is None or best_val is None or val > best_val:
                best, best_it, best_val = snap, it, val
            record({"event": "eval", "it": it, "val_acc": val, "best_it": best_it, "best_val": best_val})
            bar.set_postfix_str(f"val {val:.3f} (best {best_val:.3f} @ {best_it})" if val is not None else "")

        if start_it == 0 and resumed is None:
            check(0)
        for it in range(start_it, dcfg.iterations):
            t0 = time.perf_counter()
            for term in objective.terms(it, generator(cfg.seed, "distill", it), synthetic):
                step(synthetic, term, objective, it)
            record({"it": it, **objective.record(synthetic), "seconds": round(time.perf_counter() - t0, 4)})
            bar.update(1)
            bar.set_description(f"distill {objective.describe()}".rstrip())
            done = it + 1
            if done % dcfg.eval_every == 0 or done == dcfg.iterations:
                check(done)
            if done % dcfg.checkpoint_every == 0 or done == dcfg.iterations:
                checkpoint(done)
    if resumed is None and dcfg.iterations == 0:
        checkpoint(0)
    return _write_artifacts(cfg, data, out, synthetic, objective, init_info, best, best_it, best_val)


def logged_seconds(metrics: Path) -> float:
    """The seconds of every iteration in the metrics log (a resumed run's earlier ones included)."""
    return sum(float(rec.get("seconds", 0.0)) for rec in read_metrics(metrics))


def step(synthetic: SyntheticSet, term: Term, objective: Objective, it: int) -> None:
    """Stop on a loss that is not finite; else step the set on the term unless the objective skips it."""
    value = float(term.loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(objective.diverged(value, it, synthetic))
    if not term.skip:
        synthetic.step(term.moves, term.loss)


def _write_artifacts(
    cfg: Config,
    data: PreparedData,
    out: Path,
    synthetic: SyntheticSet,
    objective: Objective,
    init_info: dict,
    best: dict[str, Tensor],
    best_it: int,
    best_val: float | None,
) -> DistillResult:
    meta = artifact_meta(cfg, data, cfg.method)
    meta["compute"] = {"distill_seconds": round(logged_seconds(out / "metrics.jsonl"), 2)}
    meta["distill"] = {
        "best_iteration": best_it,
        "best_val": best_val,
        "iterations": cfg.distill.iterations,
        "selection": "validation" if best_val is not None else "final",
        **{k: v for k, v in init_info.items() if k != "indices"},
        "init_indices": init_info.get("indices"),
        **objective.summary(),
    }
    final_set = synthetic.snapshot()
    artifact = synthetic.artifact(best if best_val is not None else final_set, meta)
    artifact.save(out / "distilled")
    final_meta = {**meta, "distill": {**meta["distill"], "selection": "last iteration"}}
    final = synthetic.artifact(final_set, final_meta)
    final.save(out / "distilled-final")
    return DistillResult(artifact, final, best_it, best_val, out)
