"""Interruption anywhere: `distillset run` killed by SIGKILL at random moments, resumed, compared bit for bit.

Two jobs cover every stage that writes to a run directory: PAD on digits (difficulty scores, curriculum
experts, distillation with its validation checks, the evaluation and its baselines, the report) and D3 on
digits (experts and distillation per sub-task, the merge, evaluation and report), both at tiny sizes. Each
job first runs once uninterrupted (the reference, T seconds), watched: its run directory is read every
50 ms, and the moment each stage began is recorded. The kill points are then spread over the stages
the reference went through (the interpreter's start aside): point k goes to stage k mod S, a delay drawn
uniformly over that stage's length in the reference. For each point, a fresh run directory: the same
command, watched the same way and killed with SIGKILL that delay after it reached its stage (timed from
the stage, not from the start, because a run's pace varies), then the same command again, to the end,
without being touched. The stage each kill landed in is read from the run directory as the kill left
it and reported beside the stage aimed at. The resumed run's results must
equal the reference's bit for bit:

- every tensor of every safetensors file (trajectory shards, score files, the artifacts, D3's sub-task
  results; checkpoints are transient and are not compared),
- `evaluation.json` without what measures time (keys with "seconds" in them),
- the file names of the run directory, the report's included (its figures are not compared byte for
  byte: they are drawn again on resume, and matplotlib's output carries no timing, but a rerun of the
  report stage is enough for the harness to check that it completes).

The stage a kill landed in is read from the run directory as the kill left it. Writes
benchmarks/results/interrupt.{json,md}. Slow (about 30 T per job); the fast suite keeps a few fixed kill
points (tests/conftest.py `sigkilled_at`).
Usage: python benchmarks/interrupt.py [--points 10] [--jobs pad,d3] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distillset.provenance import describe, provenance
from distillset.utils import write_json, write_text

RESULTS = Path(__file__).parent / "results"

# Small, but each stage long enough (a second or more) for kill points to land inside it.
COMMON = [
    "model.width=16",
    "distill.iterations=40",
    "distill.eval_every=10",
    "distill.eval_epochs=5",
    "distill.checkpoint_every=5",
    "eval.runs=2",
    "eval.epochs=60",
    "eval.val_every=20",
]
JOBS: dict[str, list[str]] = {
    "pad": [
        "pad-digits",
        *COMMON,
        "experts.num_experts=2",
        "experts.train_epochs=6",
        "experts.add_end_epoch=2",
        "experts.rm_epoch_first=3",
        "experts.rm_epoch_second=4",
        "scores.num_models=4",
        "scores.epochs=6",
        "distill.syn_steps=4",
        "distill.max_start_epoch=3",
        "distill.current_max_start_epoch=2",
    ],
    "d3": [
        "d3-digits",
        *COMMON,
        "experts.num_experts=2",
        "experts.train_epochs=4",
        "distill.syn_steps=3",
        "distill.max_start_epoch=2",
        "d3.label_epoch=3",
    ],
}


def _command(job: str, out: Path) -> list[str]:
    preset, *overrides = JOBS[job]
    return [sys.executable, "-m", "distillset", "run", preset, "--out", str(out), *overrides]


def _env() -> dict[str, str]:
    # The same thread count in every process: CPU kernels sum in thread-dependent orders.
    return {**os.environ, "OMP_NUM_THREADS": "2", "DISTILLSET_PROGRESS_SECONDS": "3600"}


def run_to_end(job: str, out: Path, log: Path) -> float:
    t = time.perf_counter()
    with log.open("a") as f:
        rc = subprocess.run(_command(job, out), stdout=f, stderr=subprocess.STDOUT, env=_env()).returncode
    if rc != 0:
        raise SystemExit(f"{job}: the run in {out} ended with status {rc}; see {log}")
    return time.perf_counter() - t


def run_watched(job: str, out: Path, log: Path) -> tuple[float, list[tuple[str, float]]]:
    """`run_to_end`, reading the run directory every 50 ms: the seconds it took and, in order, each
    stage it went through with the moment that stage began."""
    timeline: list[tuple[str, float]] = []
    t = time.perf_counter()
    with log.open("a") as f:
        proc = subprocess.Popen(_command(job, out), stdout=f, stderr=subprocess.STDOUT, env=_env())
        while proc.poll() is None:
            stage = stage_of(out, job)
            if not timeline or timeline[-1][0] != stage:
                timeline.append((stage, time.perf_counter() - t))
            time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"{job}: the run in {out} ended with status {proc.returncode}; see {log}")
    return time.perf_counter() - t, timeline


def kill_plan(
    timeline: list[tuple[str, float]], total: float, points: int, rng: random.Random
) -> list[tuple[str, float]]:
    """`points` kill points, spread round-robin over the stages after the start: (stage, delay), the
    delay uniform over that stage's length in the reference."""
    ends = [t for _, t in timeline[1:]] + [total]
    windows = [(stage, t1 - t0) for (stage, t0), t1 in zip(timeline, ends, strict=True) if stage != "start"]
    if not windows:  # a run too quick to watch: anywhere after the start
        windows = [("start", total)]
    chosen = [windows[k % len(windows)] for k in range(points)]
    return [(stage, length * rng.random()) for stage, length in chosen]


def run_and_kill(job: str, out: Path, stage: str, delay: float, order: list[str], log: Path) -> float | None:
    """Start the run, and SIGKILL it `delay` seconds after it reached `stage` (or a stage after it, in
    the reference's `order`), reading its directory every 20 ms: the seconds it had run when killed,
    None when it ended first. Timing the kill from the stage, not from the start, keeps the point
    inside its stage although a run's pace varies."""
    target = order.index(stage)
    t0 = time.perf_counter()
    with log.open("a") as f:
        proc = subprocess.Popen(_command(job, out), stdout=f, stderr=subprocess.STDOUT, env=_env())
        reached = None
        while proc.poll() is None:
            now = time.perf_counter()
            if reached is None:
                current = stage_of(out, job)
                if current in order and order.index(current) >= target:
                    reached = now
            if reached is not None and now - reached >= delay:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return now - t0
            time.sleep(0.02)
    return None


def stage_of(out: Path, job: str) -> str:
    """Where a killed run was, from what it left: the last stage that had started writing."""
    if (out / "report").exists():
        return "report"
    if (out / "evaluation.json").exists() or (out / "distilled").exists():
        return "evaluation"
    if job == "d3":
        # D3's sub-tasks are run directories of their own under subtasks/<k>/; the merged set is
        # distilled/ at the top (caught above).
        subs = sorted((out / "subtasks").glob("*"))
        return f"sub-tasks ({', '.join(stage_of(s, 'pad') for s in subs)})" if subs else "start"
    if (out / "checkpoints").exists():
        return "distillation"
    experts = out / "experts"
    if experts.exists() and any(p.suffix == ".safetensors" for p in experts.iterdir()):
        return "experts"  # (its manifest is written first, before PAD's scores)
    if (out / "scores").exists():
        return "scores"
    return "start"


def _without_seconds(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_seconds(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_without_seconds(v) for v in obj]
    return obj


def _tensor_files(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in sorted(root.rglob("*.safetensors"))
        if "checkpoints" not in p.relative_to(root).parts
    }


def compare(ref: Path, got: Path) -> list[str]:
    """The differences between two finished run directories (empty: identical results)."""
    from safetensors.torch import load_file

    diffs: list[str] = []
    a, b = _tensor_files(ref), _tensor_files(got)
    if set(a) != set(b):
        diffs.append(f"tensor files differ: {sorted(set(a) ^ set(b))}")
    for name in sorted(set(a) & set(b)):
        ta, tb = load_file(str(a[name])), load_file(str(b[name]))
        if set(ta) != set(tb):
            diffs.append(f"{name}: tensor names differ")
            continue
        for key in ta:
            x, y = ta[key], tb[key]
            if x.dtype != y.dtype or x.shape != y.shape or not bool((x.view(-1) == y.view(-1)).all()):
                same_nan = x.is_floating_point() and bool(((x == y) | (x.isnan() & y.isnan())).all())
                if not same_nan:
                    diffs.append(f"{name}: {key} differs")
    for name in ("evaluation.json",):
        ea, eb = ref / name, got / name
        if ea.exists() != eb.exists():
            diffs.append(f"{name}: present in one run only")
        elif ea.exists():
            # Paths inside name each run's own directory.
            ja = _without_seconds(json.loads(ea.read_text().replace(str(ref), "RUN")))
            jb = _without_seconds(json.loads(eb.read_text().replace(str(got), "RUN")))
            if ja != jb:
                diffs.append(f"{name} differs")
    files_a = {str(p.relative_to(ref)) for p in ref.rglob("*") if "checkpoints" not in p.parts}
    files_b = {str(p.relative_to(got)) for p in got.rglob("*") if "checkpoints" not in p.parts}
    if files_a != files_b:
        diffs.append(f"files differ: {sorted(files_a ^ files_b)[:10]}")
    return diffs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--points", type=int, default=10, help="kill points per job")
    p.add_argument("--jobs", default="pad,d3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--work", type=Path, default=None, help="where the run directories go (default: a temp dir)"
    )
    args = p.parse_args()
    meta = provenance()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="distillset-interrupt-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for job in args.jobs.split(","):
        ref = work / f"{job}-reference"
        shutil.rmtree(ref, ignore_errors=True)
        log = work / f"{job}.log"
        total, timeline = run_watched(job, ref, log)
        stages = ", ".join(f"{stage} at {t:.1f} s" for stage, t in timeline)
        print(f"{job}: reference in {total:.1f} s ({stages})", flush=True)
        order = [stage for stage, _ in timeline]
        for k, (aim, delay) in enumerate(kill_plan(timeline, total, args.points, rng)):
            out = work / f"{job}-{k:02d}"
            shutil.rmtree(out, ignore_errors=True)
            after = run_and_kill(job, out, aim, delay, order, log)
            killed = after is not None
            stage = stage_of(out, job) if killed else "finished before the kill"
            resume_seconds = run_to_end(job, out, log)
            diffs = compare(ref, out)
            rows.append(
                {
                    "job": job,
                    "point": k,
                    "aimed_at": aim,
                    "delay_seconds": delay,
                    "kill_after_seconds": after,
                    "killed": killed,
                    "stage": stage,
                    "resume_seconds": resume_seconds,
                    "identical": not diffs,
                    "differences": diffs,
                }
            )
            verdict = "identical" if not diffs else "DIFFERENT: " + "; ".join(diffs)
            print(
                f"  aimed at {aim} + {delay:.2f} s, killed at {after or 0:5.1f} s ({stage}): resumed in "
                f"{resume_seconds:.1f} s, {verdict}",
                flush=True,
            )
            if not diffs:  # a differing run directory is kept for a look
                shutil.rmtree(out, ignore_errors=True)
        rows.append({"job": job, "reference_seconds": total, "timeline": timeline})
    points = [r for r in rows if "point" in r]
    summary = {
        "points": len(points),
        "killed": sum(r["killed"] for r in points),
        "identical": sum(r["identical"] for r in points),
        "stages": sorted({r["stage"] for r in points}),
        "wall_seconds": time.perf_counter() - t_all,
    }
    write_json(args.out / "interrupt.json", {"provenance": meta, "summary": summary, "rows": rows})
    lines = [
        "# Interruption anywhere: SIGKILL at random moments, resumed, compared bit for bit",
        "",
        f"Produced by `{meta['command']}` at {describe(meta)}.",
        "",
        f"**{summary['identical']} of {summary['points']} resumed runs identical** to the uninterrupted "
        f"one ({summary['killed']} of them killed; the others had finished before their kill time). "
        f"Stages hit: {', '.join(summary['stages'])}. Wall time {summary['wall_seconds'] / 60:.1f} min.",
        "",
        "Compared: every tensor of every safetensors file outside `checkpoints/`, `evaluation.json` without "
        "its seconds, and the run directory's file names.",
        "",
        "| job | point | aimed at (stage + s) | killed after s | stage it left | resumed in s | identical |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    for r in rows:
        if "point" in r:
            same = "yes" if r["identical"] else "**no**: " + "; ".join(r["differences"])
            lines.append(
                f"| {r['job']} | {r['point']} | {r['aimed_at']} + {r['delay_seconds']:.2f} | "
                f"{r['kill_after_seconds'] or 0:.1f} | {r['stage']} | "
                f"{r['resume_seconds']:.1f} | {same} |"
            )
        else:
            began = "; ".join(f"{stage} {t:.1f}" for stage, t in r["timeline"])
            lines.append(
                f"| {r['job']} | reference | | stages began (s): {began} | {r['reference_seconds']:.1f} | |"
            )
    write_text(args.out / "interrupt.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out / 'interrupt.md'}")
    if summary["identical"] != summary["points"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
