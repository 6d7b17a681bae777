"""How close one network's training step already runs to the machine's arithmetic peak, and so how much
training several networks at once (ensemble.py, experts.ensemble, eval.ensemble) can buy at most.

For each step the library trains many times (an expert's batch of 256, an evaluation network's batch of the
whole synthetic set at IPC 1 and 10), on the presets' networks for digits and Fashion-MNIST-shaped inputs:
the step's arithmetic (convolutions and matmuls, forward and backward, torch's FlopCounterMode), its seconds
(forward, backward and SGD step; the fastest of several timed rounds), the achieved GFLOP/s and its share
of a 2048^3 float32 matmul timed in the same process. Batching R networks cannot make a step cheaper than
its arithmetic at the peak, so `peak / achieved` bounds the speed-up of any ensemble on this machine:
where a step already runs at the peak, K networks at once take K times as long.

Writes benchmarks/results/roofline.{json,md}.
Usage: python benchmarks/roofline.py [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from engine_bench import matmul_peak_gflops
from torch.utils.flop_counter import FlopCounterMode

from distillset.models import build_model
from distillset.provenance import describe, provenance
from distillset.utils import write_json, write_text

RESULTS = Path(__file__).parent / "results"

# (what, image shape, width, depth, batch): the presets' networks (datm-digits: ConvNet-128-2 on 8x8;
# datm-fashion-mnist: ConvNet-32-3 on 28x28) at the batch sizes they train with.
STEPS = (
    ("digits expert", (1, 8, 8), 128, 2, 256),
    ("digits evaluation, IPC 10", (1, 8, 8), 128, 2, 100),
    ("digits evaluation, IPC 1", (1, 8, 8), 128, 2, 10),
    ("Fashion-MNIST expert", (1, 28, 28), 32, 3, 256),
    ("Fashion-MNIST evaluation, IPC 10", (1, 28, 28), 32, 3, 100),
    ("Fashion-MNIST evaluation, IPC 1", (1, 28, 28), 32, 3, 10),
)


def measure(shape: tuple[int, ...], width: int, depth: int, batch: int, rounds: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    model = build_model("convnet", shape, 10, width=width, depth=depth)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn((batch, *shape), generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flop = counter.get_total_flops()
    per_round = max(5, int(1e9 / max(flop, 1)))  # about a second of arithmetic per round
    seconds = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(per_round):
            step()
        seconds.append((time.perf_counter() - t) / per_round)
    return {"mflop": flop / 1e6, "seconds": seconds, "steps_per_round": per_round}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    meta = provenance()
    peaks = [matmul_peak_gflops(torch.device("cpu"))]
    rows = []
    for what, shape, width, depth, batch in STEPS:
        m = measure(shape, width, depth, batch, args.rounds)
        best = min(m["seconds"])
        rows.append(
            {
                "step": what,
                "model": f"ConvNet-{width}-{depth}, {'x'.join(map(str, shape))}",
                "batch": batch,
                **m,
                "best_seconds": best,
                "spread": (max(m["seconds"]) - best) / best,
                "gflop_per_second": m["mflop"] / 1e3 / best,
            }
        )
        peaks.append(matmul_peak_gflops(torch.device("cpu")))
        print(
            f"{what}: {m['mflop']:.0f} MFLOP, {1e3 * best:.2f} ms, {rows[-1]['gflop_per_second']:.1f} GFLOP/s"
        )
    peak = statistics.median(peaks)
    for r in rows:
        r["share_of_peak"] = r["gflop_per_second"] / peak
        r["ensemble_ceiling"] = peak / r["gflop_per_second"]
    write_json(args.out / "roofline.json", {"provenance": meta, "matmul_peak": peaks, "rows": rows})
    lines = [
        "# Training steps against the machine's arithmetic peak: what ensembles can buy",
        "",
        f"Produced by `{meta['command']}` at {describe(meta)}, {args.threads} torch threads.",
        "",
        f"Matmul peak (2048^3 float32, the median of {len(peaks)} timings between the steps, "
        f"{min(peaks):.0f}-{max(peaks):.0f}): **{peak:.0f} GFLOP/s**. Each step: forward, backward and an "
        f"SGD step of one network on random inputs; the fastest of {args.rounds} rounds of about a second "
        "(`spread`: the slowest round over the fastest, minus one). `ceiling`: peak / achieved, the most "
        "that training several such networks at once can speed each one up on this machine. The FLOPs "
        "are those of direct convolution; a share above 100% means the convolution library did fewer "
        "multiplications than that (e.g. Winograd's), and so no arithmetic is left to win.",
        "",
        "| step | network | batch | MFLOP | ms | spread | GFLOP/s | % of peak | ensemble ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['step']} | {r['model']} | {r['batch']} | {r['mflop']:.0f} | {1e3 * r['best_seconds']:.2f} | "
        f"{100 * r['spread']:.0f}% | {r['gflop_per_second']:.1f} | {100 * r['share_of_peak']:.0f}% | "
        f"{r['ensemble_ceiling']:.1f}x |"
        for r in rows
    ]
    write_text(args.out / "roofline.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out / 'roofline.md'}")


if __name__ == "__main__":
    main()
