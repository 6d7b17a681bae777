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


# Under three minutes on two CPU cores, measured against the preset's own settings at 100 iterations (the
# demo until this change, 261 s: IPC 1 91.03 +- 0.48, IPC 10 94.21 +- 0.41 against random real 96.10):
# - experts at lr 0.03 instead of 0.01: in 30 epochs of 6 SGD steps (1294 images, batch 256) the preset's
#   experts stop near 91% validation accuracy, below a network trained on 10 random images per class
#   (96%); at 0.03 they reach about 96%, and the IPC-10 set distilled from them beats random real
#   (97.8 +- 0.3 against 96.2 +- 0.7 in a 1-thread trial);
# - at IPC 1, 15 inner steps instead of 20: with the faster experts, 20 steps of 10 images overshoot two
#   expert epochs, the normalised loss stays above DATM's threshold and every update is skipped (78%); 15
#   keep the student's path as long as the expert's (92.4 +- 0.3);
# - validation every 20 iterations, and 60 iterations at IPC 1 and 40 at IPC 10, where the checks stop
#   improving (IPC 10 chose iteration 20's set of 60 in the trial; the first 40 iterations are the same
#   draws, so 40 end with the same chosen set).
DEMO = ["experts.lr_teacher=0.03", "distill.eval_every=20"]
DEMO_IPC = {1: ["distill.iterations=60", "distill.syn_steps=15"], 10: ["distill.iterations=40"]}


def run_demo(out: Path, quick: bool = False, echo: Callable[[str], None] = print) -> dict:
    overrides = QUICK if quick else DEMO
    cfg = load_config("datm-digits", overrides)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", cfg.to_yaml())
    data = prepare(cfg.data, resolve_device(cfg.device))
    echo(f"digits: {len(data.train_y)} train / {len(data.val_y)} validation / {len(data.test_y)} test images")

    store = experts_stage(cfg, data, out / "experts")
    echo(f"{store.summary()}, {cfg.experts.train_epochs} epochs each")

    reports = {}
    for ipc in (1, 10):
        per_ipc = [] if quick else DEMO_IPC[ipc]
        cfg_ipc = load_config("datm-digits", [*overrides, *per_ipc, f"data.ipc={ipc}"])
        done = run_pipeline(cfg_ipc, out / f"datm-ipc{ipc}", data, store=store)
        result = done.distilled
        echo(
            f"\nDATM, IPC {ipc}: {cfg_ipc.distill.iterations} iterations; the set of iteration "
            f"{result.best_iteration} had the best validation accuracy ({100 * (result.best_val or 0):.1f}%)"
        )
        reports[ipc] = done.report
        echo(format_report(done.report))
        echo(f"report: {done.page}")
    return reports
