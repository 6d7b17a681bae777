"""The one orchestration of a run: experts (when the objective needs them) -> distill -> evaluate.

The Python API (`distillset.distill`), the `run`, `distill` and `demo` commands and the benchmarks all
call `run_pipeline`; each stage resumes from what the run directory already holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from .config import Config
from .data.prepared import PreparedData, prepare
from .distill import DistillResult, run_distillation
from .errors import ConfigError, DistillsetError
from .evaluate import evaluate
from .experts.store import TrajectoryStore
from .objectives import objective_class
from .synthetic import DistilledSet, LatentSet
from .utils import directory_lock, resolve_device, write_json, write_text

T = TypeVar("T")


@dataclass
class RunResult:
    distilled: DistillResult
    report: dict | None  # the evaluation (None when not evaluated)
    store: TrajectoryStore | None  # the experts (None for objectives without experts)
    seconds: dict = field(default_factory=dict)  # per stage
    page: Path | None = None  # the run report's index.html (None when not written)


def check(cfg: Config) -> None:
    """Stop on a config that cannot distil, before any work (hours of experts, for instance)."""
    if cfg.method == "random":
        raise ConfigError(
            "method=random has nothing to distil; name a distillation preset (e.g. datm-digits, dc-digits)."
        )
    objective_class(cfg.distill.objective).check(cfg)


def experts_stage(
    cfg: Config,
    data: PreparedData,
    directory: str | Path,
    *,
    train: bool = True,
    scores_dir: str | Path | None = None,
    progress: bool = True,
) -> TrajectoryStore | None:
    """The experts the objective needs, trained (or continued) into `directory`, or only opened and
    checked with `train=False`; None when the objective needs none."""
    if not objective_class(cfg.distill.objective).needs_experts:
        return None
    from .experts.train import train_experts
    from .objectives.trajectory import open_experts

    if not train:
        return open_experts(cfg, data, directory)
    return train_experts(cfg, directory, data, progress=progress, scores_dir=scores_dir)


def write_config(run: Path, cfg: Config, *, overwrite: bool) -> None:
    """config.yaml of the run: before the work only into a new directory (a run refused for another
    setting keeps its own), and after it always."""
    if overwrite or not (run / "config.yaml").exists():
        write_text(run / "config.yaml", cfg.to_yaml())


def interruptible(fn: Callable[[], T], run: Path) -> T:
    """`fn()`, with Ctrl-C turned into one line saying that the run continues where it stopped."""
    try:
        return fn()
    except KeyboardInterrupt:
        raise DistillsetError(
            f"interrupted; progress is kept in {run}: run the same command again to continue."
        ) from None


def run_pipeline(
    cfg: Config,
    out: str | Path,
    data: PreparedData | None = None,
    *,
    store: TrajectoryStore | None = None,
    experts_dir: str | Path | None = None,
    train_experts: bool = True,
    scores_dir: str | Path | None = None,
    evaluate_set: bool = True,
    baseline: bool = True,
    report: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> RunResult:
    """Experts (reused from `store` or `experts_dir`, default `out/experts`) -> distill -> evaluate ->
    the run report (`out/report/index.html`; not with `report=False`), in the run directory `out`.
    `baseline=False` leaves out the random-real baseline (benchmarks compute it once per IPC). `echo`
    receives a line after each stage. A second process started on `out` meanwhile is refused, with the
    stage this one is in."""
    check(cfg)
    out, say = Path(out), echo or (lambda _line: None)
    with directory_lock(out, "run"):  # a second process on `out` meanwhile is refused
        data = data if data is not None else prepare(cfg.data, resolve_device(cfg.device))
        write_config(out, cfg, overwrite=False)
        t0 = time.perf_counter()
        if objective_class(cfg.distill.objective).subtasks:  # D3: experts and distillation per class block
            from .federated import distill_subtasks

            with directory_lock(out, "sub-tasks"):
                result = interruptible(
                    lambda: distill_subtasks(cfg, data, out, progress=progress, echo=say), out
                )
            seconds = {"subtasks": round(time.perf_counter() - t0, 1)}
            return _finish(
                cfg, data, out, result, None, seconds, evaluate_set, baseline, report, progress, say
            )
        if store is None:
            where = Path(experts_dir) if experts_dir is not None else out / "experts"
            stage = partial(
                experts_stage, cfg, data, where, train=train_experts, scores_dir=scores_dir, progress=progress
            )
            with directory_lock(out, "experts"):
                store = interruptible(stage, out)
            if store is not None:
                say(f"{store.summary()}.")
        t1 = time.perf_counter()
        result = interruptible(lambda: run_distillation(cfg, out, data, store, progress=progress), out)
        t2 = time.perf_counter()
        seconds = {"experts": round(t1 - t0, 1), "distill": round(t2 - t1, 1)}
        return _finish(cfg, data, out, result, store, seconds, evaluate_set, baseline, report, progress, say)


def _finish(
    cfg: Config,
    data: PreparedData,
    out: Path,
    result: DistillResult,
    store: TrajectoryStore | None,
    seconds: dict,
    evaluate_set: bool,
    baseline: bool,
    report: bool,
    progress: bool,
    say: Callable[[str], None],
) -> RunResult:
    write_config(out, cfg, overwrite=True)
    say(distilled_line(result))
    evaluation = None
    if evaluate_set:
        t0 = time.perf_counter()
        if not baseline:
            cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"baseline": False})})
        with directory_lock(out, "evaluate"):
            evaluation = evaluate(
                result.artifact, cfg, data, progress=progress, artifact_path=out / "distilled"
            )
            write_json(out / "evaluation.json", evaluation)
        seconds["evaluate"] = round(time.perf_counter() - t0, 1)
    page = None
    if report:
        from .report import write_report

        t0 = time.perf_counter()
        page = write_report(out)
        seconds["report"] = round(time.perf_counter() - t0, 1)
    return RunResult(result, evaluation, store, seconds, page)


def distilled_line(result: DistillResult) -> str:
    where = result.path / "distilled"
    blocks = result.artifact.meta.get("distill", {}).get("subtasks")
    if blocks:
        storage = result.artifact.storage()
        return (
            f"distributional set of {len(blocks)} sub-task{'s' if len(blocks) != 1 else ''} written to "
            f"{where}: {storage['floats']:,} floats stored ({storage['ipc_equivalent']:.2f} IPC-equivalents)"
        )
    if result.best_val is None:
        return f"distilled set (last iteration; no validation split) written to {where}"
    return (
        f"distilled set written to {where}: iteration {result.best_iteration}, "
        f"validation accuracy {100 * result.best_val:.2f}% (the best check)"
    )


def distill(
    cfg: Config, out: str | Path | None = None, data: PreparedData | None = None, progress: bool = True
) -> DistilledSet | LatentSet:
    """Experts (trained or reused from `out/experts`) then distillation; returns the chosen artifact.

    `out` defaults to `runs/<method>-<dataset>-ipc<K>`; calling again continues or reuses that run.
    """
    out = Path(out) if out is not None else Path("runs") / f"{cfg.method}-{cfg.data.name}-ipc{cfg.data.ipc}"
    return run_pipeline(
        cfg, out, data, evaluate_set=False, report=False, progress=progress
    ).distilled.artifact
