"""What the accuracy benchmarks share: one cell (experts -> distillation -> evaluation, each stage resumable
and a finished evaluation reused), the grid of cells, the command line, and the way a result is written.

Every dataset's run directory (`ROOT/<dataset>`) records the library code that made it
(`provenance.json`, see `distillset.provenance`), and so does every cell's `evaluation.json`. Work made by
other library code is never tabulated as current: the script stops and asks for `--fresh` (delete and
recompute) or `--cached` (tabulate what is there, each such row marked stale with the commit that made
it). The results file records the command line, commit and date of the invocation that wrote it."""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from distillset.config import Config
from distillset.data.prepared import PreparedData, prepare
from distillset.pipeline import experts_stage, run_pipeline
from distillset.provenance import _git, describe, made_by_other_code, provenance
from distillset.utils import read_json, resolve_device, write_json, write_text


@functools.cache
def current() -> dict:
    """The provenance of this invocation (computed once)."""
    return provenance()


def claim_root(root: Path, cached: bool) -> dict | None:
    """The provenance of the work in `root`, created for this code when `root` is new or empty.

    Work made by other code (or before provenance was recorded) stops the run unless `cached`, where it is
    only tabulated, marked stale."""
    marker = root / "provenance.json"
    recorded = read_json(marker) if marker.exists() else None
    if not made_by_other_code(recorded, current()):
        return recorded
    if not root.exists() or not any(root.iterdir()):
        if cached:
            return None
        write_json(marker, current())
        return current()
    if cached:
        return recorded
    raise SystemExit(
        f"{root} holds work made by {describe(recorded)}, not by this library code ({current()['code']}); "
        "rerun with --fresh to delete and recompute it, or with --cached to tabulate it marked stale."
    )


def run_cell(
    cfg: Config,
    run: Path,
    experts: Path,
    data: PreparedData,
    baseline: bool,
    scores_dir: Path | None = None,
) -> dict:
    """The evaluation report of one (variant, IPC) cell, computed once into `run/evaluation.json`.

    The random-real baseline depends only on the seed, the IPC and the evaluation recipe, so callers ask
    for it (`baseline`) in one cell per (dataset, IPC) and show it beside every variant."""
    report_path = run / "evaluation.json"
    saved = run / "config.yaml"
    if saved.exists() and saved.read_text() != cfg.to_yaml():
        raise SystemExit(f"{run} was made with another config; delete it to measure this one.")
    if report_path.exists():
        return json.loads(report_path.read_text())
    t0 = time.perf_counter()
    store = experts_stage(cfg, data, experts, scores_dir=scores_dir)
    experts_s = round(time.perf_counter() - t0, 1)
    try:
        done = run_pipeline(cfg, run, data, store=store, baseline=baseline)
    except FloatingPointError as e:  # a diverged setting is a result too: recorded, and the grid goes on
        report = {"diverged": str(e), "seconds": {"experts": experts_s}, "provenance": current()}
        write_json(report_path, report)
        return report
    report = done.report
    report["seconds"] = {**done.seconds, "experts": experts_s}
    report["provenance"] = current()
    write_json(report_path, report)
    return report


def run_grid(
    dataset: str,
    root: Path,
    ipcs: list[int],
    variants: list[str],
    config: Callable[[str, int], Config],
    experts_dir: Callable[[Config], str],
    describe: Callable[[Config], dict],
    baseline_variant: str,
    cached: bool = False,
) -> list[dict]:
    """Every (IPC, variant) cell of one dataset, in `root/<variant>-<ipc>`, as table rows.

    `config(variant, ipc)` gives a cell's config, `experts_dir(cfg)` its expert store's name under `root`,
    `describe(cfg)` the columns particular to the benchmark. The random baseline is trained with
    `baseline_variant` and shown beside every variant of the same IPC. With `cached`, only the cells
    already evaluated are read and nothing runs; a row made by other library code says so (`stale`)."""
    root_made_by = claim_root(root, cached)
    rows = []
    data = None
    for ipc in ipcs:
        baseline = None
        for variant in variants:
            cfg = config(variant, ipc)
            run = root / f"{variant}-{ipc}"
            if cached and not (run / "evaluation.json").exists():
                continue
            if data is None:
                data = prepare(cfg.data, resolve_device(cfg.device))
            report = run_cell(
                cfg,
                run,
                root / experts_dir(cfg),
                data,
                baseline=variant == baseline_variant,
                scores_dir=root / "scores",
            )
            baseline = baseline_of(report) or baseline
            made_by = report.get("provenance", root_made_by)
            rows.append(
                {
                    "dataset": dataset,
                    "variant": variant,
                    "ipc": ipc,
                    "iterations": cfg.distill.iterations,
                    **describe(cfg),
                    **cell_summary(run, report),
                    "random": baseline,
                    "made_by": made_by,
                    "stale": made_by_other_code(made_by, current()),
                }
            )
    return rows


def cell_summary(run: Path, report: dict) -> dict:
    """The numbers every ablation row shows: accuracy, the chosen iteration, skipped updates, lr, time
    (accuracy, iteration and lr are None for a run whose loss diverged)."""
    logs = (
        [run / "metrics.jsonl"]
        if (run / "metrics.jsonl").exists()
        else sorted(run.glob("subtasks/*/metrics.jsonl"))
    )
    log = [json.loads(line) for path in logs for line in path.read_text().splitlines()]
    if "diverged" in report:
        return {
            "chosen_iteration": None,
            "skipped": sum(1 for r in log if r.get("skipped")),
            "distilled": None,
            "runs": [],
            "lr": None,
            "seconds": report.get("seconds"),
            "diverged": report["diverged"],
        }
    res = report["results"]["convnet"]
    meta = json.loads((run / "distilled" / "manifest.json").read_text())["distill"]
    return {
        "chosen_iteration": chosen_iteration(meta),
        "skipped": sum(1 for r in log if r.get("skipped")),
        "distilled": [res["mean"], res["std"]],
        "runs": res["runs"],
        "lr": report["lr"]["distilled"],
        "seconds": report.get("seconds"),
    }


def chosen_iteration(meta: dict) -> int | str:
    """The iteration validation chose; a D3 set distilled in sub-tasks has one per sub-task."""
    if "best_iteration" in meta:
        return meta["best_iteration"]
    chosen = [t["best_iteration"] for t in meta["subtasks"]]
    return chosen[0] if len(set(chosen)) == 1 else "/".join(map(str, chosen))


def baseline_of(report: dict) -> list[float] | None:
    base = report.get("random_baseline", {}).get("convnet")
    return [base["mean"], base["std"]] if base else None


ACCURACY = [
    "Test accuracy (%) of fresh ConvNets trained on the distilled set, mean +- std over 5 networks,",
    "checkpoints chosen on validation, beside the random-real subset of the same IPC (a fresh subset per",
    "network) with the same recipe.",
]
CHOSEN_AT = "`chosen at`: the iteration whose set had the best validation accuracy (0 = the initialisation)."


def deltas(rows: list[dict], reference: str) -> list[str]:
    """Each row's difference of the mean from the `reference` variant's, in points ('' for the reference).
    A row is compared only with a reference as fresh or as stale as itself: a stale row beside a
    recomputed reference would difference the work of two versions of the code."""

    def key(r: dict) -> tuple:
        return r["dataset"], r["ipc"], bool(r.get("stale"))

    ref = {key(r): r["distilled"][0] for r in rows if r["variant"] == reference and r["distilled"]}
    out = []
    for r in rows:
        base = ref.get(key(r))
        mine = r["distilled"]
        skip = base is None or mine is None or r["variant"] == reference
        out.append("" if skip else f"{100 * (mine[0] - base):+.2f}")
    return out


def footer(notes: list[str], setup: list[str], paper: str, rows: list[dict]) -> list[str]:
    return ["", *notes, "", *[f"- {line}" for line in setup], "", paper, "", *made_by_lines(rows)]


def made_by_lines(rows: list[dict]) -> list[str]:
    """Which command, commit and date produced the table and each of its rows, and which rows are stale."""
    me = current()
    lines = [f"Produced by `{me['command']}` at {describe(me)}."]
    others = Counter(
        (m["command"], describe(m))
        for m in (r.get("made_by") for r in rows if not r.get("stale"))
        if m and m["command"] != me["command"]
    )
    for (command, made), n in sorted(others.items()):
        lines.append(f"{n} of the rows were computed by `{command}` at {made}.")
    stale = [r for r in rows if r.get("stale")]
    if stale:
        makers = sorted({_maker(r.get("made_by")) for r in stale})
        lines.append(
            f"**Stale**: the {len(stale)} rows marked `stale` were made by other library code "
            f"({'; '.join(makers)}) and were not recomputed."
        )
    return lines


def _maker(made_by: dict | None) -> str:
    if made_by and made_by.get("carried_from"):
        commit, date = (made_by.get("commit") or "?")[:7], (made_by.get("date") or "?")[:10]
        return (
            f"code from before provenance was recorded: carried from `{made_by['carried_from']}` as of "
            f"commit {commit} ({date})"
        )
    return describe(made_by)


def carried_rows(path: Path, computed: list[dict], old: dict | list) -> list[dict]:
    """The rows of an earlier results file that this run did not compute, each with the provenance it
    recorded or, for a file from before provenance was recorded, the commit that last wrote the file;
    marked stale when made by other library code."""
    rows = old["rows"] if isinstance(old, dict) else old
    done = {(r["dataset"], r["variant"], r["ipc"]) for r in computed}
    log = (
        _git("log", "-1", "--format=%H %cI", "--", path.resolve().as_posix(), cwd=path.resolve().parent) or ""
    ).split()
    committed = {"commit": log[0], "date": log[1], "code": None} if log else {"commit": None, "code": None}
    out = []
    for r in rows:
        if (r["dataset"], r["variant"], r["ipc"]) in done:
            continue
        made_by = r.get("made_by") or {**committed, "carried_from": path.as_posix()}
        out.append({**r, "made_by": made_by, "stale": made_by_other_code(made_by, current())})
    return out


def table_order(rows: list[dict], variants: list[str]) -> list[dict]:
    """Rows by dataset (the CPU datasets first, smallest first, then in order of appearance), IPC, variant."""
    datasets = [*DATASET_ORDER, *dict.fromkeys(r["dataset"] for r in rows)]
    rank = {v: i for i, v in enumerate(variants)}
    return sorted(rows, key=lambda r: (datasets.index(r["dataset"]), r["ipc"], rank.get(r["variant"], 99)))


DATASET_ORDER = ["digits", "mnist", "fashion-mnist"]


def stale_mark(row: dict) -> str:
    return " (stale)" if row.get("stale") else ""


def pct(pair: list[float] | None, missing: str = "n/a") -> str:
    return missing if pair is None else f"{100 * pair[0]:.2f} +- {100 * pair[1]:.2f}"


def main(
    doc: str,
    name: str,
    variants: list[str],
    default_variants: list[str],
    run_dataset: Callable[[str, Path, list[int], list[str], bool], list[dict]],
    markdown: Callable[[list[dict]], str],
    datasets: str = "digits,fashion-mnist",
) -> None:
    """The command line of an ablation benchmark: run (or, with --cached, tabulate) the grid and write
    `benchmarks/results/<name>.{json,md}`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs") / name.replace("_", "-"))
    parser.add_argument("--datasets", default=datasets)
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--variants", default=",".join(default_variants), help=f"of {', '.join(variants)}")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--cached", action="store_true", help="tabulate the finished cells only; run nothing")
    parser.add_argument(
        "--fresh", action="store_true", help="delete the work of each dataset under ROOT first and recompute"
    )
    parser.add_argument(
        "--stale-rows",
        type=Path,
        help="an earlier results file whose rows this run does not compute are kept, each with the "
        "provenance it recorded (or the commit that wrote the file), marked stale if made by other code",
    )
    args = parser.parse_args()
    chosen = args.variants.split(",")
    unknown = set(chosen) - set(variants)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; valid: {', '.join(variants)}")
    if args.fresh and args.cached:
        parser.error("--fresh recomputes and --cached runs nothing: give one of them")
    earlier = read_json(args.stale_rows) if args.stale_rows else None  # read before it is overwritten
    rows = []
    for dataset in args.datasets.split(","):
        if args.fresh:
            shutil.rmtree(args.root / dataset, ignore_errors=True)
        rows += run_dataset(
            dataset, args.root / dataset, [int(i) for i in args.ipcs.split(",")], chosen, args.cached
        )
    if earlier is not None:
        rows = table_order([*rows, *carried_rows(args.stale_rows, rows, earlier)], variants)
    write_json(args.out / f"{name}.json", {"provenance": current(), "rows": rows})
    write_text(args.out / f"{name}.md", markdown(rows))
    print(markdown(rows))
