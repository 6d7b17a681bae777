"""MTT and DATM accuracy on the CPU datasets, beside the random-real baseline (the same evaluation recipe).

For each dataset, one expert store is shared by both methods at every IPC (`ROOT/<dataset>/experts`);
each (method, IPC) distils into `ROOT/<dataset>/<method>-<ipc>/` and is evaluated there
(`evaluation.json`). Every stage resumes, and a finished evaluation is reused, so running the script
again only fills in what is missing. Writes `benchmarks/results/tm_accuracy.{json,md}`.

    python benchmarks/tm_accuracy.py --root runs/tm-accuracy            # digits and Fashion-MNIST
    python benchmarks/tm_accuracy.py --root runs/tm-accuracy --datasets digits

Settings: the `mtt-<dataset>` / `datm-<dataset>` presets, with the overrides listed in SETTINGS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.distill import open_experts, run_distillation
from distillset.evaluate import evaluate
from distillset.experts.train import train_experts
from distillset.utils import resolve_device, write_json, write_text

# dataset -> (expert overrides, {(method, ipc): iterations})
SETTINGS = {
    "digits": ([], {("datm", 1): 200, ("mtt", 1): 200, ("datm", 10): 200, ("mtt", 10): 200}),
    "fashion-mnist": (
        ["experts.num_experts=3"],
        {("datm", 1): 300, ("mtt", 1): 300, ("datm", 10): 150, ("mtt", 10): 150},
    ),
}
PUBLISHED = {
    "fashion-mnist": "published (ConvNet-128, full data): random 51.4 +- 3.8 / 73.8 +- 0.7, "
    "MTT 75.1 +- 0.9 / 87.2 +- 0.3 at IPC 1 / 10",
    "digits": "the authors' DATM code on digits: IPC 1 78.8 +- 1.7 vs random 69.5 +- 1.8; "
    "IPC 10 93.2 +- 0.4 vs random 96.4 +- 1.1",
}


def run_dataset(name: str, root: Path) -> list[dict]:
    expert_overrides, runs = SETTINGS[name]
    base = load_config(f"mtt-{name}", expert_overrides)
    data = prepare(base.data, resolve_device(base.device))
    train_experts(base, root / "experts", data)
    rows = []
    for (method, ipc), iterations in runs.items():
        cfg = load_config(f"{method}-{name}", [f"data.ipc={ipc}", f"distill.iterations={iterations}"])
        run = root / f"{method}-{ipc}"
        report_path = run / "evaluation.json"
        if not report_path.exists():
            write_text(run / "config.yaml", cfg.to_yaml())
            result = run_distillation(cfg, run, data, open_experts(cfg, data, root / "experts"))
            write_json(report_path, evaluate(result.artifact, cfg, data, artifact_path=run / "distilled"))
        report = json.loads(report_path.read_text())
        res, rnd = report["results"]["convnet"], report["random_baseline"]["convnet"]
        chosen = json.loads((run / "distilled" / "manifest.json").read_text())["distill"]["best_iteration"]
        rows.append(
            {
                "dataset": name,
                "method": method,
                "ipc": ipc,
                "iterations": iterations,
                "chosen_iteration": chosen,
                "distilled": [res["mean"], res["std"]],
                "random": [rnd["mean"], rnd["std"]],
                "runs": len(res["runs"]),
                "lr": report["lr"]["distilled"],
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "# MTT and DATM on the CPU datasets",
        "",
        "Test accuracy (%) of fresh ConvNets trained on the distilled set, mean +- std over 5 networks,",
        "checkpoints chosen on validation; beside it the random-real subset of the same IPC (a fresh subset",
        "per network) with the same recipe. Produced by `benchmarks/tm_accuracy.py`.",
        "",
        "| dataset | method | IPC | iterations | chosen at | distilled | random real | learned lr |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, b = r["distilled"], r["random"]
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['ipc']} | {r['iterations']} | {r['chosen_iteration']} | "
            f"{100 * d[0]:.2f} +- {100 * d[1]:.2f} | {100 * b[0]:.2f} +- {100 * b[1]:.2f} | {r['lr']:.4g} |"
        )
    lines.append("")
    lines.append("`chosen at`: the iteration whose set had the best validation accuracy (0 = the")
    lines.append("initialisation itself, i.e. distillation did not improve on it).")
    lines.append("")
    for name in dict.fromkeys(r["dataset"] for r in rows):
        lines.append(f"- {name}: {PUBLISHED[name]}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/tm-accuracy"))
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rows = []
    for name in args.datasets.split(","):
        rows += run_dataset(name, args.root / name)
    write_json(args.out / "tm_accuracy.json", rows)
    write_text(args.out / "tm_accuracy.md", markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
