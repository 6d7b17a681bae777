"""Seconds per expert epoch (plain SGD, batch 256, DSA) on digits and MNIST, for two ConvNet sizes.

Writes benchmarks/results/expert_epoch.{json,md}.
Usage: python benchmarks/expert_epoch.py [--datasets digits,mnist]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from distillset.config import load_config
from distillset.data.augment import DSA
from distillset.data.prepared import prepare
from distillset.experts.train import build_expert_model
from distillset.provenance import describe, provenance
from distillset.training import accuracy, train_epoch
from distillset.utils import generator, resolve_device, write_json, write_text

RESULTS = Path(__file__).parent / "results"
SIZES = {
    "ConvNet-128-3": ["model.width=128", "model.depth=3"],
    "ConvNet-32-3": ["model.width=32", "model.depth=3"],
}
DIGITS_SIZES = {
    "ConvNet-128-2": ["model.width=128", "model.depth=2"],
    "ConvNet-32-2": ["model.width=32", "model.depth=2"],
}


def measure(dataset: str, overrides: list[str], epochs: int) -> dict:
    cfg = load_config(f"random-{dataset}", overrides)
    data = prepare(cfg.data, resolve_device(cfg.device))
    model = build_expert_model(cfg, data, ("bench",)).to(data.train_x.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.experts.lr_teacher)
    aug = DSA(data.dsa_strategy)
    og, ag = generator(0, "o"), generator(0, "a")
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train_epoch(model, data.train_x, data.train_y, opt, cfg.experts.batch_train, og, aug, ag)
        times.append(time.perf_counter() - t0)
    return {
        "dataset": dataset,
        "train_images": len(data.train_y),
        "seconds_per_epoch": min(times),
        "epochs_timed": epochs,
        "val_acc_after": accuracy(model, data.val_x, data.val_y),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--datasets", default="digits,mnist")
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    rows = []
    for ds in args.datasets.split(","):
        for name, ov in (DIGITS_SIZES if ds == "digits" else SIZES).items():
            row = {"model": name, **measure(ds, ov, args.epochs if ds == "digits" else 1)}
            print(json.dumps(row))
            rows.append(row)
    meta = {**provenance(), "device": str(resolve_device("auto"))}
    write_json(RESULTS / "expert_epoch.json", {"provenance": meta, "rows": rows})
    lines = [
        "# Seconds per expert epoch",
        "",
        "Plain SGD, batch 256, DSA on every batch; the fastest of the timed epochs.",
        "",
        "| dataset | model | train images | epochs timed | s / epoch |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | {r['model']} | {r['train_images']} | {r['epochs_timed']} | "
        f"{r['seconds_per_epoch']:.2f} |"
        for r in rows
    ]
    lines += ["", f"Produced by `{meta['command']}` at {describe(meta)}, {meta['threads']} torch threads."]
    write_text(RESULTS / "expert_epoch.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
