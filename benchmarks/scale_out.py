"""Scale-out on Ray: experts per hour and evaluation networks per hour, the local executor against Ray
with one and two workers on this machine, and Ray's scheduling overhead per task.

Setups (the machine's cores shared without oversubscription: workers x torch threads = cores):
  local    the local executor, in this process, `cores` torch threads (the baseline)
  ray-1    a local Ray runtime, one worker of `cores` CPUs and torch threads
  ray-2    two workers of `cores / 2` CPUs and torch threads each
Workloads (digits, the `mtt-digits` preset's experts and evaluation recipe): `--experts` experts of
`--epochs` epochs; the evaluation of a random real IPC-10 subset, `--runs` networks beside as many
random-baseline networks, `--eval-epochs` epochs each. Each setup runs each workload `--repeats` times
(after one untimed warm-up of Ray's workers); the table gives the median rate, its spread (min-max) and
the ratio of the medians against local. The overhead per task is the median wall time of a no-op task
(submitted 200 at a time to warm workers) on each Ray setup. Whether each setup's experts equal the local
ones bit for bit is checked and printed (they do at the same torch thread count).

Writes `benchmarks/results/scale_out.{json,md}`.

    python benchmarks/scale_out.py --experts 4 --epochs 10 --runs 4 --eval-epochs 100 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distillset import parallel
from distillset.baseline import random_subset
from distillset.config import ExecutorConfig, load_config
from distillset.data.prepared import prepare
from distillset.evaluate import evaluate
from distillset.experts.train import train_experts
from distillset.parallel import Task, executor_for
from distillset.provenance import describe, provenance
from distillset.utils import write_json, write_text

RESULTS = Path(__file__).parent / "results"


def _noop(x: int) -> int:
    return x


def setups(cores: int) -> dict[str, ExecutorConfig]:
    half = max(1, cores // 2)
    return {
        "local": ExecutorConfig(),
        "ray-1": ExecutorConfig(kind="ray", local_cpus=cores, cpus_per_task=cores, torch_threads=cores),
        "ray-2": ExecutorConfig(kind="ray", local_cpus=2 * half, cpus_per_task=half, torch_threads=half),
    }


def overhead_per_task(ex: ExecutorConfig, n: int = 200) -> float:
    """Median seconds per no-op task over 3 batches of n (warm workers): scheduling, transfer, result."""
    run = executor_for(ex)
    run.map(_noop, [Task(str(i), (i,)) for i in range(n)], progress=False)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        run.map(_noop, [Task(str(i), (i,)) for i in range(n)], progress=False)
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--eval-epochs", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cores", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()

    base = [
        f"experts.num_experts={args.experts}",
        f"experts.train_epochs={args.epochs}",
        f"eval.runs={args.runs}",
        f"eval.epochs={args.eval_epochs}",
        "data.ipc=10",
        "device=cpu",
    ]
    cfg0 = load_config("mtt-digits", base)
    data = prepare(cfg0.data, torch.device("cpu"))
    art = random_subset(cfg0, data)
    rows, reference = [], None
    for name, ex in setups(args.cores).items():
        cfg = cfg0.model_copy(update={"executor": ex})
        torch.set_num_threads(args.cores)  # the driver's (and the local executor's) threads
        if ex.kind == "ray":  # start the runtime and its workers before timing
            overhead = overhead_per_task(ex)
        expert_s, eval_s, same = [], [], True
        for rep in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                store = train_experts(cfg, Path(tmp) / "experts", data, progress=False)
                expert_s.append(time.perf_counter() - t0)
                trajectories = [store.load(i) for i in store.completed]
            if reference is None:
                reference = trajectories
            same = same and all(torch.equal(a, b) for a, b in zip(trajectories, reference, strict=True))
            diff = max((a - b).abs().max().item() for a, b in zip(trajectories, reference, strict=True))
            t0 = time.perf_counter()
            report = evaluate(art, cfg, data, progress=False)
            eval_s.append(time.perf_counter() - t0)
            print(
                f"{name} repeat {rep}: experts {expert_s[-1]:.1f} s, evaluation {eval_s[-1]:.1f} s",
                flush=True,
            )
        networks = 2 * args.runs  # the distilled set's and the random baseline's
        rows.append(
            {
                "setup": name,
                "workers": 1 if ex.kind == "local" else ex.local_cpus // int(ex.cpus_per_task),
                "torch_threads": args.cores if ex.kind == "local" else ex.torch_threads,
                "experts_per_hour": [3600 * args.experts / s for s in expert_s],
                "eval_networks_per_hour": [3600 * networks / s for s in eval_s],
                "overhead_ms_per_task": None if ex.kind == "local" else round(1000 * overhead, 2),
                "experts_bit_identical_to_local": same,
                "experts_max_abs_diff_vs_local": diff,
                "eval_accuracy": report["results"]["convnet"]["mean"],
            }
        )
        if ex.kind == "ray":
            parallel.shutdown()
    meta = {**provenance(), "settings": vars(args) | {"out": str(args.out)}}
    write_json(args.out / "scale_out.json", {"provenance": meta, "rows": rows})
    write_text(args.out / "scale_out.md", markdown(rows, meta))
    print(markdown(rows, meta))


def _rate(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def markdown(rows: list[dict], meta: dict) -> str:
    s = meta["settings"]
    local = rows[0]
    lines = [
        "# Scale-out: the local executor against Ray on this machine",
        "",
        f"Digits (`mtt-digits`): {s['experts']} experts of {s['epochs']} epochs; the evaluation of a random",
        f"real IPC-10 subset, {s['runs']} networks and {s['runs']} random-baseline networks of "
        f"{s['eval_epochs']} epochs.",
        f"Median over {s['repeats']} repeats (min-max); ratios of the medians against local. Workers x torch",
        "threads = the cores. Produced by `benchmarks/scale_out.py`.",
        "",
        "| setup | workers | torch threads | experts / hour | vs local | eval networks / hour | vs local | "
        "overhead / task | experts identical to local |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        er = statistics.median(r["experts_per_hour"]) / statistics.median(local["experts_per_hour"])
        ev = statistics.median(r["eval_networks_per_hour"]) / statistics.median(
            local["eval_networks_per_hour"]
        )
        ident = (
            "yes"
            if r["experts_bit_identical_to_local"]
            else f"no (max diff {r['experts_max_abs_diff_vs_local']:.1e})"
        )
        over = "n/a" if r["overhead_ms_per_task"] is None else f"{r['overhead_ms_per_task']:.2f} ms"
        lines.append(
            f"| {r['setup']} | {r['workers']} | {r['torch_threads']} | {_rate(r['experts_per_hour'])} | "
            f"{er:.2f}x | {_rate(r['eval_networks_per_hour'])} | {ev:.2f}x | {over} | {ident} |"
        )
    made = f"Produced by `{meta['command']}` at {describe(meta)}, {meta.get('cpu', 'this machine')}."
    return "\n".join([*lines, "", made]) + "\n"


if __name__ == "__main__":
    main()
