"""`distillset demo`: the embedded end-to-end job on scikit-learn digits (ships with scikit-learn).

Trains a few experts, writes the random-real artifacts at IPC 1 and 10 and evaluates each beside
the baseline (a fresh random subset for every network), and prints where everything was written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .baseline import random_subset
from .config import load_config
from .data.prepared import prepare
from .evaluate import evaluate, format_report
from .experts.train import train_experts
from .utils import resolve_device, write_json, write_text


def run_demo(out: Path, quick: bool = False, echo: Callable[[str], None] = print) -> dict:
    overrides = (
        ["experts.num_experts=2", "experts.train_epochs=3", "eval.runs=2", "eval.epochs=20"] if quick else []
    )
    cfg = load_config("random-digits", overrides)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", cfg.to_yaml())
    data = prepare(cfg.data, resolve_device(cfg.device))
    echo(f"digits: {len(data.train_y)} train / {len(data.val_y)} validation / {len(data.test_y)} test images")

    store = train_experts(cfg, out / "experts", data)
    echo(f"{store.summary()}, {cfg.experts.train_epochs} epochs each")

    reports = {}
    for ipc in (1, 10):
        cfg_ipc = cfg.model_copy(update={"data": cfg.data.model_copy(update={"ipc": ipc})})
        art_dir = out / f"random-ipc{ipc}"
        artifact = random_subset(cfg_ipc, data)
        artifact.save(art_dir)
        report = evaluate(artifact, cfg_ipc, data, artifact_path=art_dir)
        write_json(art_dir / "evaluation.json", report)
        reports[ipc] = report
        echo(f"\nrandom real subset, IPC {ipc} ({art_dir}):\n{format_report(report)}")
    return reports
