"""`distillset demo`: the embedded end-to-end job on scikit-learn digits (ships with scikit-learn).

Trains the experts once, distils with DATM at IPC 1 and 10 (the `datm-digits` preset), evaluates each
distilled set beside the random-real baseline (a fresh random subset for every network, same recipe) and
the random subset with the same kind of soft labels, writes each run's report (`report/index.html`), and
prints the tables and where everything was written. Every stage resumes: running the demo again
on the same directory reuses the experts and continues any interrupted distillation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import load_config
from .data.prepared import prepare
from .evaluate import format_report
from .pipeline import experts_stage, run_pipeline
from .utils import resolve_device, write_text

QUICK = [
    "model.width=16",
    "experts.num_experts=2",
    "experts.train_epochs=4",
    "distill.iterations=4",
    "distill.syn_steps=4",
    "distill.max_start_epoch=2",
    "distill.current_max_start_epoch=1",
    "distill.eval_every=2",
    "distill.eval_epochs=3",
    "distill.checkpoint_every=2",
    "eval.runs=2",
    "eval.epochs=10",
]


# A few minutes on two CPU cores: the preset's 300 iterations cut to 100. At 150 iterations validation
# chose iteration 50's set at both IPCs (checks every 50), and the first 100 iterations are the same
# draws, so 100 iterations end with the same chosen sets in two thirds of the time.
DEMO = ["distill.iterations=100"]


def run_demo(out: Path, quick: bool = False, echo: Callable[[str], None] = print) -> dict:
    cfg = load_config("datm-digits", QUICK if quick else DEMO)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", cfg.to_yaml())
    data = prepare(cfg.data, resolve_device(cfg.device))
    echo(f"digits: {len(data.train_y)} train / {len(data.val_y)} validation / {len(data.test_y)} test images")

    store = experts_stage(cfg, data, out / "experts")
    echo(f"{store.summary()}, {cfg.experts.train_epochs} epochs each")

    reports = {}
    for ipc in (1, 10):
        cfg_ipc = cfg.model_copy(update={"data": cfg.data.model_copy(update={"ipc": ipc})})
        done = run_pipeline(cfg_ipc, out / f"datm-ipc{ipc}", data, store=store)
        result = done.distilled
        echo(
            f"\nDATM, IPC {ipc}: {cfg.distill.iterations} iterations; the set of iteration "
            f"{result.best_iteration} had the best validation accuracy ({100 * (result.best_val or 0):.1f}%)"
        )
        reports[ipc] = done.report
        echo(format_report(done.report))
        echo(f"report: {done.page}")
    return reports
