"""`distillset demo`: the embedded end-to-end job on scikit-learn digits (ships with scikit-learn).

Trains the experts once, distils with DATM at IPC 1 and 10 (the `datm-digits` preset), evaluates each
distilled set beside the random-real baseline (a fresh random subset for every network, same recipe),
and prints the tables and where everything was written. Every stage resumes: running the demo again
on the same directory reuses the experts and continues any interrupted distillation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import load_config
from .data.prepared import prepare
from .distill import run_distillation
from .evaluate import evaluate, format_report
from .experts.train import train_experts
from .utils import resolve_device, write_json, write_text

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


# A few minutes on two CPU cores: the preset's 300 iterations halved (the validation checks show the
# gains arrive early on digits).
DEMO = ["distill.iterations=150"]


def run_demo(out: Path, quick: bool = False, echo: Callable[[str], None] = print) -> dict:
    cfg = load_config("datm-digits", QUICK if quick else DEMO)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", cfg.to_yaml())
    data = prepare(cfg.data, resolve_device(cfg.device))
    echo(f"digits: {len(data.train_y)} train / {len(data.val_y)} validation / {len(data.test_y)} test images")

    store = train_experts(cfg, out / "experts", data)
    echo(f"{store.summary()}, {cfg.experts.train_epochs} epochs each")

    reports = {}
    for ipc in (1, 10):
        cfg_ipc = cfg.model_copy(update={"data": cfg.data.model_copy(update={"ipc": ipc})})
        run = out / f"datm-ipc{ipc}"
        write_text(run / "config.yaml", cfg_ipc.to_yaml())
        result = run_distillation(cfg_ipc, run, data, store)
        echo(
            f"\nDATM, IPC {ipc}: {cfg.distill.iterations} iterations; the set of iteration "
            f"{result.best_iteration} had the best validation accuracy ({100 * (result.best_val or 0):.1f}%)"
        )
        report = evaluate(result.artifact, cfg_ipc, data, artifact_path=run / "distilled")
        write_json(run / "evaluation.json", report)
        reports[ipc] = report
        echo(format_report(report))
    return reports
