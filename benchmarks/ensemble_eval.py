"""Evaluation networks per hour, one by one against trained together (eval.ensemble off / on), side by side
in one process, with the accuracies each way.

For digits (the demo's ConvNet-128-2) and Fashion-MNIST (the presets' ConvNet-32, a 10,000-image training
subset) at IPC 1 and 10: a random real subset evaluated by `eval.runs` networks plus its random baseline's
(2 x runs networks of one size and label kind), `epochs` epochs, first one way then the other, twice, in
alternation; networks per hour from the faster of each pair, and the largest difference of a network's
test accuracy between the two ways. Writes `benchmarks/results/ensemble_eval.{json,md}`.

    python benchmarks/ensemble_eval.py [--epochs 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from distillset.baseline import random_subset
from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.ensemble import image_flops
from distillset.evaluate import evaluate
from distillset.networks import seeded_model
from distillset.provenance import provenance
from distillset.utils import write_json, write_text

RESULTS = Path(__file__).parent / "results"
CELLS = [("digits", "datm-digits", []), ("fashion-mnist", "datm-fashion-mnist", ["data.train_limit=10000"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--ipcs", default="1,10")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(2)
    meta = provenance()
    rows = []
    for dataset, preset, extra in CELLS:
        for ipc in map(int, args.ipcs.split(",")):
            cfg = load_config(preset, [*extra, f"data.ipc={ipc}", f"eval.runs={args.runs}", "device=cpu"])
            cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"epochs": args.epochs})})
            data = prepare(cfg.data, torch.device("cpu"))
            art = random_subset(cfg, data)
            model = seeded_model(cfg.model, data.image_shape, data.num_classes, 0)
            flops = image_flops(model, data.image_shape) * min(cfg.eval.batch, 10 * ipc)
            seconds: dict[str, list[float]] = {"off": [], "on": []}
            tests: dict[str, list[float]] = {}
            for _ in range(2):
                for mode in ("off", "on"):
                    run = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"ensemble": mode})})
                    t0 = time.perf_counter()
                    report = evaluate(art, run, data, progress=False)
                    seconds[mode].append(time.perf_counter() - t0)
                    tests[mode] = [
                        d["test"]
                        for k in ("results", "random_baseline")
                        for d in report[k]["convnet"]["details"]
                    ]
            nets = 2 * args.runs
            per_hour = {m: nets * 3600 / min(s) for m, s in seconds.items()}
            rows.append(
                {
                    "dataset": dataset,
                    "ipc": ipc,
                    "networks": nets,
                    "epochs": args.epochs,
                    "batch_mflops": flops / 1e6,
                    "seconds": seconds,
                    "per_hour": per_hour,
                    "ratio": per_hour["on"] / per_hour["off"],
                    "max_test_difference": max(
                        abs(a - b) for a, b in zip(tests["on"], tests["off"], strict=True)
                    ),
                    "auto": "together" if flops <= 100e6 else "one by one",
                }
            )
            r = rows[-1]
            print(
                f"{dataset} IPC {ipc}: {r['ratio']:.2f}x together "
                f"({per_hour['off']:.0f} -> {per_hour['on']:.0f} networks / h)"
            )
    write_json(args.out / "ensemble_eval.json", {"provenance": meta, "rows": rows})
    lines = [
        "# Evaluation networks per hour: one by one against trained together",
        "",
        f"Made by `{meta['command']}` at commit {meta.get('commit')} on {meta['date']} "
        f"(code {meta['code']}).",
        f"{args.runs} networks on a random real subset plus its random baseline's {args.runs}, {args.epochs} "
        "epochs each with DSA, 2 threads; the faster of two alternating measurements each way.",
        "",
        "| dataset | IPC | MFLOP a batch | one by one (networks / h) | together (networks / h) | ratio | "
        "largest test difference | auto picks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['ipc']} | {r['batch_mflops']:.0f} | {r['per_hour']['off']:.0f} | "
            f"{r['per_hour']['on']:.0f} | {r['ratio']:.2f}x | {100 * r['max_test_difference']:.2f} points | "
            f"{r['auto']} |"
        )
    write_text(args.out / "ensemble_eval.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
