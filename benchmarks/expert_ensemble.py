"""Experts per hour, one by one against trained together (experts.ensemble off / on), side by side in one
process, with the largest difference between the two ways' trajectories.

`train_experts` itself (DSA, a validation pass and a snapshot every epoch, partial checkpoints), K experts
of E epochs into a fresh store, first one way then the other, `--repeats` times in alternation after an
untimed warm-up of both, timed by the process's CPU time on the CPU (other processes on a shared machine
do not count) and by the wall clock on CUDA; experts per hour from the fastest run each way (and from the
medians), ratio together / one by one; for scale beside the difference, on the CPU, one by one with one
torch thread more. Cells: digits with the presets' ConvNet-128-2 and with ConvNet-32-2, and
Fashion-MNIST with the Fashion presets' ConvNet-32-3 on a `--fashion-images` training subset (random
1x28x28 images where the Fashion-MNIST files are absent). Writes
`benchmarks/results/expert_ensemble.{json,md}`.

    python benchmarks/expert_ensemble.py [--experts 4] [--epochs 2] [--repeats 3] [--threads 1]

`measure` is also what `benchmarks/gpu_bench.py experts` runs on CUDA.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distillset.config import load_config
from distillset.data.prepared import prepare
from distillset.data.sources import FASHION_MNIST_DEFAULT_ROOT
from distillset.ensemble import image_flops, pays
from distillset.experts.train import build_expert_model, train_experts
from distillset.provenance import describe, provenance
from distillset.utils import resolve_device, write_json, write_text

RESULTS = Path(__file__).parent / "results"


def fashion_overrides(images: int, tmp: Path) -> tuple[str, list[str]]:
    """The Fashion-MNIST cell's data: a stratified subset of `images` training images, or random images of
    its shape (1x28x28, 10 classes) where the files are absent."""
    if (FASHION_MNIST_DEFAULT_ROOT / "train-images-idx3-ubyte.gz").exists():
        return "fashion-mnist", [f"data.train_limit={images}"]
    rng = np.random.default_rng(0)
    n = images + 2000  # the presets' 2000 validation images
    x = rng.random((n, 28, 28), dtype=np.float32)
    path = tmp / "fashion-shaped.npz"
    np.savez(path, x_train=x, y_train=np.arange(n) % 10, x_test=x[:500], y_test=np.arange(500) % 10)
    return "random 1x28x28", ["data.name=npz", f"data.root={path}", "data.val_size=2000"]


def cells(fashion_images: int, tmp: Path) -> list[tuple[str, str, str, list[str]]]:
    """(dataset label, model label, preset, overrides) of each cell."""
    fashion, extra = fashion_overrides(fashion_images, tmp)
    return [
        ("digits", "ConvNet-128-2", "random-digits", []),
        ("digits", "ConvNet-32-2", "random-digits", ["model.width=32"]),
        (fashion, "ConvNet-32-3", "random-fashion-mnist", [*extra, "model.width=32", "model.depth=3"]),
    ]


def _train(cfg, data, mode: str) -> tuple[float, list[torch.Tensor]]:  # noqa: ANN001
    run = cfg.model_copy(update={"experts": cfg.experts.model_copy(update={"ensemble": mode})})
    with tempfile.TemporaryDirectory() as tmp:
        if data.train_x.is_cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        store = train_experts(run, Path(tmp) / "experts", data, progress=False)
        if data.train_x.is_cuda:
            torch.cuda.synchronize()
        # On the CPU the process's CPU time: other processes sharing the cores do not count.
        seconds = time.perf_counter() - t0 if data.train_x.is_cuda else time.process_time() - c0
        return seconds, [store.load(i) for i in store.completed]


def measure(preset: str, overrides: list[str], experts: int, epochs: int, repeats: int) -> dict:
    """One cell: `experts` experts of `epochs` epochs one by one and together, `repeats` times each."""
    cfg = load_config(
        preset, [*overrides, f"experts.num_experts={experts}", f"experts.train_epochs={epochs}"]
    )
    device = resolve_device(cfg.device)
    data = prepare(cfg.data, device)
    small = cfg.model_copy(
        update={"experts": cfg.experts.model_copy(update={"num_experts": 2, "train_epochs": 1})}
    )
    for mode in ("off", "on"):  # one-time costs (kernels, allocator) out of the timed runs
        _train(small, data, mode)
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    trajectories: dict[str, list[torch.Tensor]] = {}
    for _ in range(repeats):
        for mode in ("off", "on"):
            s, trajectories[mode] = _train(cfg, data, mode)
            seconds[mode].append(s)

    def largest_difference(key: str) -> float:
        pairs = zip(trajectories[key], trajectories["off"], strict=True)
        return max(float((a - b).abs().max() / b.abs().max()) for a, b in pairs)

    rel, rel_threads = largest_difference("on"), None
    if device.type == "cpu":  # for scale: one by one with a thread more (kernels that sum in another order)
        threads = torch.get_num_threads()
        torch.set_num_threads(threads + 1)
        try:
            _, trajectories["threads"] = _train(cfg, data, "off")
        finally:
            torch.set_num_threads(threads)
        rel_threads = largest_difference("threads")
    probe = build_expert_model(cfg, data, ("expert", 0, "init"))
    per_hour = {m: experts * 3600 / min(s) for m, s in seconds.items()}
    median_per_hour = {m: experts * 3600 / statistics.median(s) for m, s in seconds.items()}
    return {
        "train_images": len(data.train_y),
        "val_images": len(data.val_y),
        "batch": cfg.experts.batch_train,
        # forward and backward of a member's batch: about 3x the forward FLOPs
        "batch_gflop": 3 * cfg.experts.batch_train * image_flops(probe, data.image_shape) / 1e9,
        "experts": experts,
        "epochs": epochs,
        "repeats": repeats,
        "device": str(device),
        "clock": "wall" if device.type == "cuda" else "process CPU time",
        "seconds": seconds,
        "per_hour": per_hour,
        "median_per_hour": median_per_hour,
        "ratio": per_hour["on"] / per_hour["off"],
        "median_ratio": median_per_hour["on"] / median_per_hour["off"],
        "max_rel_difference": rel,
        "max_rel_difference_threads": rel_threads,
        "auto": "together"
        if pays(probe, device, cfg.experts.batch_train, (), stage="experts")
        else "one by one",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fashion-images", type=int, default=2560)
    p.add_argument("--cells", default="all", help="comma-separated cell numbers (0, 1, 2) or all")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    meta = provenance()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        chosen = cells(args.fashion_images, Path(tmp))
        keep = range(len(chosen)) if args.cells == "all" else [int(c) for c in args.cells.split(",")]
        for k in keep:
            dataset, model, preset, overrides = chosen[k]
            row = {
                "dataset": dataset,
                "model": model,
                **measure(
                    preset, [*overrides, f"device={args.device}"], args.experts, args.epochs, args.repeats
                ),
            }
            rows.append(row)
            print(
                f"{dataset} {model}: {row['ratio']:.2f}x together ({row['per_hour']['off']:.0f} -> "
                f"{row['per_hour']['on']:.0f} experts / h), "
                f"largest difference {row['max_rel_difference']:.1e}"
            )
    write_json(args.out / "expert_ensemble.json", {"provenance": meta, "rows": rows})
    write_text(args.out / "expert_ensemble.md", markdown(rows, meta))


def _e(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1e}"


def markdown(rows: list[dict], meta: dict) -> str:
    first = rows[0] if rows else {"experts": "?", "epochs": "?", "repeats": "?", "device": "?"}
    lines = [
        "# Experts per hour: one by one against trained together",
        "",
        f"Made by `{meta['command']}` at {describe(meta)}, {meta['threads']} torch threads, on "
        f"{first['device']}.",
        f"`train_experts` with experts.ensemble off and on: {first['experts']} experts of {first['epochs']} "
        f"epochs (batch 256, DSA, a validation pass and a snapshot every epoch), {first['repeats']} runs "
        f"each way in alternation after an untimed warm-up, timed by {first.get('clock', 'wall')} (on the "
        "CPU the process's own, which other processes sharing the machine do not inflate); experts per "
        "hour from the fastest run each way "
        "(the ratio of the medians beside it); the largest difference of a snapshot between the two ways, "
        "relative to the snapshot's largest entry, and for scale the same between one by one and one by one "
        "with one torch thread more.",
        "",
        "| dataset | model | train images | GFLOP a batch (fwd + bwd) | one by one (experts / h) | "
        "together (experts / h) | ratio | ratio of medians | largest difference | with a thread more | "
        "auto picks |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['train_images']} | {r['batch_gflop']:.2f} | "
            f"{r['per_hour']['off']:.0f} | {r['per_hour']['on']:.0f} | {r['ratio']:.2f}x | "
            f"{r['median_ratio']:.2f}x | {r['max_rel_difference']:.1e} | "
            f"{_e(r['max_rel_difference_threads'])} | {r['auto']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
