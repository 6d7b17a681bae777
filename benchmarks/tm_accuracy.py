"""MTT and DATM accuracy on the CPU datasets, beside the random-real baseline (the same evaluation recipe).

For each dataset, one expert store is shared by both methods at every IPC (`ROOT/<dataset>/experts`);
each (method, IPC) distils into `ROOT/<dataset>/<method>-<ipc>/` and is evaluated there
(`evaluation.json`). Every stage resumes, and a finished evaluation is reused, so running the script
again only fills in what is missing (work made by other library code is refused: see `ablation.py`). The
random baseline depends only on the seed, the IPC and the evaluation recipe; it is trained with the `mtt`
run and shown beside both methods. Writes `benchmarks/results/tm_accuracy.{json,md}`.

    python benchmarks/tm_accuracy.py --root runs/tm-accuracy            # digits and Fashion-MNIST
    python benchmarks/tm_accuracy.py --root runs/tm-accuracy --datasets digits

Settings: the `mtt-<dataset>` / `datm-<dataset>` presets, with the overrides listed in SETTINGS.
"""

from __future__ import annotations

from pathlib import Path

from ablation import CHOSEN_AT, made_by_lines, main, pct, run_grid, stale_mark

from distillset.config import load_config

METHODS = ["mtt", "datm"]
# dataset -> (overrides for every run, {(method, ipc): iterations})
SETTINGS = {
    "digits": ([], {("mtt", 1): 200, ("datm", 1): 200, ("mtt", 10): 200, ("datm", 10): 200}),
    "fashion-mnist": (
        ["experts.num_experts=3"],
        {("mtt", 1): 300, ("datm", 1): 300, ("mtt", 10): 150, ("datm", 10): 150},
    ),
}
PUBLISHED = {
    "fashion-mnist": "published (ConvNet-128, full data): random 51.4 +- 3.8 / 73.8 +- 0.7, "
    "MTT 75.1 +- 0.9 / 87.2 +- 0.3 at IPC 1 / 10",
    "digits": "the authors' DATM code on digits: IPC 1 78.8 +- 1.7 vs random 69.5 +- 1.8; "
    "IPC 10 93.2 +- 0.4 vs random 96.4 +- 1.1",
}


def run_dataset(
    name: str, root: Path, ipcs: list[int], variants: list[str], cached: bool = False
) -> list[dict]:
    extra, iterations = SETTINGS[name]
    return run_grid(
        name,
        root,
        ipcs,
        variants,
        lambda method, ipc: load_config(
            f"{method}-{name}", [*extra, f"data.ipc={ipc}", f"distill.iterations={iterations[method, ipc]}"]
        ),
        lambda cfg: "experts",  # the two presets' experts are the same
        lambda cfg: {"method": cfg.method},
        baseline_variant="mtt",
        cached=cached,
    )


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
        lr = "n/a" if r["lr"] is None else format(r["lr"], ".4g")
        lines.append(
            f"| {r['dataset']} | {r['method']}{stale_mark(r)} | {r['ipc']} | {r['iterations']} | "
            f"{r['chosen_iteration']} | {pct(r['distilled'])} | {pct(r['random'])} | {lr} |"
        )
    lines += ["", CHOSEN_AT, ""]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        lines.append(f"- {name}: {PUBLISHED[name]}.")
    return "\n".join([*lines, "", *made_by_lines(rows)]) + "\n"


if __name__ == "__main__":
    main(__doc__, "tm_accuracy", METHODS, METHODS, run_dataset, markdown)
