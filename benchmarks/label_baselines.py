"""What the images add and what the labels add: the demo's DATM sets (digits, IPC 1 and 10, learned soft
labels) beside random real images with hard labels and with the same kind of soft labels, and
DD-Ranking's scores computed with our evaluator (eval.baselines=[soft_random,ddranking], 5 networks).

    python benchmarks/label_baselines.py --root runs/demo

Reads the demo's run directories (`distillset demo --out ROOT` makes them; a missing one is distilled
here with the demo's settings) and writes `benchmarks/results/label_baselines.{json,md}`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.demo import DEMO
from distillset.evaluate import evaluate
from distillset.pipeline import experts_stage, run_pipeline
from distillset.provenance import provenance
from distillset.synthetic import DistilledSet
from distillset.utils import resolve_device, write_json, write_text

RESULTS = Path(__file__).parent / "results"


def pct(s: dict) -> str:
    return f"{100 * s['mean']:.2f} +- {100 * s['std']:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("runs/demo"))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(2)
    meta = provenance()
    cfg = load_config("datm-digits", DEMO)
    data = prepare(cfg.data, resolve_device(cfg.device))
    rows = []
    for ipc in (1, 10):
        run = args.root / f"datm-ipc{ipc}"
        cfg_ipc = cfg.model_copy(update={"data": cfg.data.model_copy(update={"ipc": ipc})})
        if not (run / "distilled" / "manifest.json").exists():
            store = experts_stage(cfg_ipc, data, args.root / "experts")
            run_pipeline(cfg_ipc, run, data, store=store, evaluate_set=False, report=False)
        art = DistilledSet.load(run / "distilled")
        ecfg = cfg_ipc.eval.model_copy(update={"baselines": ["soft_random", "ddranking"]})
        t0 = time.perf_counter()
        report = evaluate(
            art, cfg_ipc.model_copy(update={"eval": ecfg}), data, artifact_path=run / "distilled"
        )
        seconds = time.perf_counter() - t0
        write_json(run / "evaluation-labels.json", report)
        m = "convnet"
        dd = report["ddranking"]["models"][m]
        images_gain = report["results"][m]["mean"] - report["soft_random_baseline"][m]["mean"]
        labels_gain = report["soft_random_baseline"][m]["mean"] - report["random_baseline"][m]["mean"]
        rows.append(
            {
                "ipc": ipc,
                "distilled": report["results"][m],
                "random_hard": report["random_baseline"][m],
                "random_soft": report["soft_random_baseline"][m],
                "distilled_hard_labels": report["label_hard"][m],
                "distilled_no_dsa": report["no_aug"]["distilled"][m],
                "random_soft_no_dsa": report["no_aug"]["random"][m],
                "full_data": report["full_data"][m]["mean"],
                "images_gain": images_gain,
                "labels_gain": labels_gain,
                "ddranking": dd,
                "labeller": report["soft_random_labels"]["labeller"],
                "seconds": round(seconds, 1),
            }
        )
        print(f"IPC {ipc}: {pct(report['results'][m])}, LRS {dd['lrs']['mean']:.2f} ({seconds:.0f} s)")

    write_json(args.out / "label_baselines.json", {"provenance": meta, "rows": rows})
    lines = [
        "# Images against labels: the demo's DATM sets (digits) beside random real images",
        "",
        f"Made by `{meta['command']}` at commit {meta.get('commit')} on {meta['date']} "
        f"(code {meta['code']}).",
        "ConvNet (the demo's), 5 fresh networks, 300 epochs with DSA, checkpoints chosen on validation; the",
        "random subsets of run r are the same images with hard labels and with the labeller's soft labels",
        f"({rows[0]['labeller']}).",
        "",
        "| IPC | DATM | random, hard | random, same soft labels | images' gain | labels' gain | "
        "DATM, hard labels | DATM, no DSA | random soft, no DSA | full data | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ipc']} | {pct(r['distilled'])} | {pct(r['random_hard'])} | {pct(r['random_soft'])} | "
            f"{100 * r['images_gain']:+.2f} | {100 * r['labels_gain']:+.2f} | "
            f"{pct(r['distilled_hard_labels'])} | "
            f"{pct(r['distilled_no_dsa'])} | {pct(r['random_soft_no_dsa'])} | {100 * r['full_data']:.2f} | "
            f"{r['seconds']} |"
        )
    lines += [
        "",
        "DD-Ranking's scores (our evaluator; HLR and IOR in points, LRS and ARS in [0, 100], "
        "w = gamma = 0.5):",
        "",
        "| IPC | HLR | IOR | LRS | ARS |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["ddranking"]
        lines.append(
            f"| {r['ipc']} | {100 * d['hlr']['mean']:.2f} +- {100 * d['hlr']['std']:.2f} | "
            f"{100 * d['ior']['mean']:.2f} +- {100 * d['ior']['std']:.2f} | "
            f"{d['lrs']['mean']:.2f} +- {d['lrs']['std']:.2f} | "
            f"{d['ars']['mean']:.2f} +- {d['ars']['std']:.2f} |"
        )
    write_text(args.out / "label_baselines.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
