"""What verifying on read costs: expert shards and artifacts at CIFAR shapes, each read with and without
the checks (integrity.py: the SHA-256 checksum, the dtype and shape against the manifest, NaN and Inf),
side by side in one process.

- Expert shards: ConvNet-128-3 on 32 x 32 x 3 images (P = 320,010 parameters), 50 epochs (51 snapshots),
  stored in fp32 and in bf16. Read whole (`TrajectoryStore.load`), and one snapshot at a time
  (`TrajectoryStore.snapshot`, what the distillation loop reads: two or three per iteration).
- Artifacts: CIFAR-10 at IPC 50 (500 images) and CIFAR-100 at IPC 50 (5,000 images), hard labels.
  Unverified: the manifest and the tensors read as `DistilledSet.load` read them before checksums;
  verified: `DistilledSet.load`.
- Writing an expert shard with and without its checksums (`integrity.save` against safetensors' `save_file`).

Every read is followed by one pass over the tensor (its sum), as a consumer makes: safetensors maps the
file, so an unverified read that touched nothing would time nothing. The two ways alternate, `--repeats`
times each (medians, min-max), on files just written: the page cache is warm, the worst case for the
relative cost (a read from disk is slower; the checks cost the same); one row reads the fp32 shards
from the disk, their pages dropped from the cache before every read. Writes
`benchmarks/results/checksum_cost.{json,md}`.

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/checksum_cost.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from distillset import integrity
from distillset.experts.store import TrajectoryStore
from distillset.provenance import describe, provenance
from distillset.synthetic import DistilledSet
from distillset.synthetic.artifact import DERIVED
from distillset.synthetic.latent_artifact import ARTIFACT_FIX
from distillset.utils import atomic_write, read_json, write_json, write_text

RESULTS = Path(__file__).parent / "results"
PARAMS = 320_010  # ConvNet-128-3 on 32 x 32 x 3, 10 classes
EPOCHS = 50
SNAPSHOTS = [0, 2, 5, 7, 11, 13, 20, 22, 30, 32]  # start and target epochs of five iterations
ARTIFACTS = {"CIFAR-10, IPC 50": (10, 50), "CIFAR-100, IPC 50": (100, 50)}


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call (the CPU time of this process: what other processes on the
    same core do not change)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def side_by_side(
    plain: Callable[[], object],
    checked: Callable[[], object],
    repeats: int,
    before: Callable[[], None] = lambda: None,
) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each way, alternating which goes first, `before` (untimed) ahead of every
    call; one untimed call of each first."""
    plain(), checked()
    times: dict[str, list[tuple[float, float]]] = {"unverified": [], "verified": []}
    for r in range(repeats):
        order = [("unverified", plain), ("verified", checked)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            before()
            times[name].append(timed(fn))
    return times


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache, so that the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def row(what: str, nbytes: int, times: dict[str, list[tuple[float, float]]]) -> dict:
    out: dict = {"what": what, "bytes": nbytes, "repeats": len(times["verified"])}
    for clock, k in (("wall", 0), ("cpu", 1)):
        med = {}
        for way, pairs in times.items():
            v = [p[k] for p in pairs]
            med[way] = statistics.median(v)
            out[f"{way}_{clock}_s"] = {"median": med[way], "min": min(v), "max": max(v)}
            out[f"{way}_{clock}_MBps"] = nbytes / med[way] / 1e6
        out[f"{clock}_ratio"] = med["verified"] / med["unverified"]
        out[f"{clock}_overhead_ms"] = 1e3 * (med["verified"] - med["unverified"])
    return out


def make_store(root: Path, dtype: str, experts: int = 2) -> TrajectoryStore:
    identity = {"experts": {"dtype": dtype}}
    store = TrajectoryStore.open_or_create(root, identity, {"num_params": PARAMS, "train_epochs": EPOCHS})
    gen = torch.Generator().manual_seed(0)
    for i in range(experts):
        store.write_expert(i, torch.randn(EPOCHS + 1, PARAMS, generator=gen), {"val_acc": [0.5]})
    return store


def store_rows(root: Path, repeats: int) -> list[dict]:
    rows = []
    for dtype, size in (("float32", 4), ("bfloat16", 2)):
        store = make_store(root / dtype, dtype)
        shard = (EPOCHS + 1) * PARAMS * size

        def whole(verify: bool, store: TrajectoryStore = store) -> None:
            for i in store.completed:
                float(store.load(i, verify=verify).sum())

        def snapshots(verify: bool, store: TrajectoryStore = store) -> None:
            for e in SNAPSHOTS:
                float(store.snapshot(1, e, verify=verify).sum())

        times = side_by_side(lambda w=whole: w(False), lambda w=whole: w(True), repeats)
        rows.append(row(f"expert shards ({dtype}), read whole, x{len(store)}", shard * len(store), times))
        if dtype == "float32":
            shards = [store.shard_path(i) for i in store.completed]
            times = side_by_side(
                lambda w=whole: w(False), lambda w=whole: w(True), repeats, lambda s=shards: evict(s)
            )
            what = f"expert shards ({dtype}), read whole from the disk (page cache dropped), x{len(store)}"
            rows.append(row(what, shard * len(store), times))
        times = side_by_side(lambda s=snapshots: s(False), lambda s=snapshots: s(True), repeats)
        what = f"expert snapshots ({dtype}), one at a time, x{len(SNAPSHOTS)}"
        rows.append(row(what, PARAMS * size * len(SNAPSHOTS), times))

    traj = {"trajectory": torch.randn(EPOCHS + 1, PARAMS, generator=torch.Generator().manual_seed(1))}
    target = root / "write" / "shard.safetensors"
    times = side_by_side(
        lambda: atomic_write(target, lambda p: save_file(traj, str(p))),
        lambda: integrity.save(target, traj, rows="trajectory"),
        repeats,
    )
    rows.append(row("expert shard (float32), written", (EPOCHS + 1) * PARAMS * 4, times))
    return rows


def load_unverified(directory: Path) -> DistilledSet:
    """An image artifact read as `DistilledSet.load` read it before checksums and value checks."""
    manifest = read_json(directory / "manifest.json")
    t, _ = integrity.read(directory / "synthetic.safetensors", ARTIFACT_FIX, verify=False)
    meta = {k: v for k, v in manifest.items() if k not in DERIVED}
    return DistilledSet(t["images"], float(t["lr"]), labels=t.get("labels"), meta=meta)


def artifact_rows(root: Path, repeats: int) -> list[dict]:
    rows = []
    for what, (classes, ipc) in ARTIFACTS.items():
        n = classes * ipc
        gen = torch.Generator().manual_seed(2)
        art = DistilledSet(
            torch.randn(n, 3, 32, 32, generator=gen),
            0.01,
            labels=torch.arange(classes).repeat_interleave(ipc),
            meta={"ipc": ipc, "num_classes": classes, "class_names": [str(c) for c in range(classes)]},
        )
        directory = art.save(root / what.replace(", ", "-").replace(" ", ""))
        times = side_by_side(
            lambda d=directory: float(load_unverified(d).images.sum()),
            lambda d=directory: float(DistilledSet.load(d).images.sum()),
            repeats,
        )
        rows.append(
            row(f"artifact {what} ({n} images)", (directory / "synthetic.safetensors").stat().st_size, times)
        )
    return rows


def primitives(repeats: int) -> dict:
    """MB/s of the two checks alone, on 64 MB in memory."""
    x = torch.randn(16 * 2**20, generator=torch.Generator().manual_seed(3))
    raw = x.view(torch.uint8).numpy()
    sha = statistics.median(timed(lambda: hashlib.sha256(raw).digest())[1] for _ in range(repeats))
    fin = statistics.median(timed(lambda: integrity.nonfinite(x))[1] for _ in range(repeats))
    return {
        "bytes": raw.nbytes,
        "sha256_MBps": raw.nbytes / sha / 1e6,
        "finite_MBps": raw.nbytes / fin / 1e6,
    }


def spread(s: dict) -> str:
    return f"{1e3 * s['median']:.2f} ({1e3 * s['min']:.2f}-{1e3 * s['max']:.2f})"


def markdown(meta: dict, rows: list[dict], prim: dict) -> str:
    lines = [
        "# What verifying on read costs",
        "",
        "Each file read without and with its checks (the SHA-256 checksum, dtype and shape against the "
        "manifest, NaN and Inf), alternating, each read followed by one pass over the tensor; the page "
        "cache warm (the worst case for the ratio) except in the row read from the disk. Milliseconds: "
        f"median over {rows[0]['repeats']} repeats (min-max), wall-clock and CPU time of this process (the "
        "CPU time is what other processes sharing the core leave unchanged); ratios of the medians; MB/s "
        "of the whole read, verified, by CPU time.",
        "",
        "| file | MB | unverified ms | verified ms | ratio | CPU ms, unverified -> verified | CPU ratio "
        "| CPU overhead ms | verified MB/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["what"],
            f"{r['bytes'] / 1e6:.1f}",
            spread(r["unverified_wall_s"]),
            spread(r["verified_wall_s"]),
            f"{r['wall_ratio']:.2f}x",
            f"{1e3 * r['unverified_cpu_s']['median']:.2f} -> {1e3 * r['verified_cpu_s']['median']:.2f}",
            f"{r['cpu_ratio']:.2f}x",
            f"{r['cpu_overhead_ms']:.2f}",
            f"{r['verified_cpu_MBps']:.0f}",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    lines += [
        "",
        f"The checks alone, on {prim['bytes'] / 1e6:.0f} MB in memory, by CPU time: SHA-256 "
        f"{prim['sha256_MBps']:.0f} MB/s, the NaN/Inf scan {prim['finite_MBps']:.0f} MB/s. The written "
        "row is the checksum's cost at write time (the whole checksum and one per snapshot), against "
        "safetensors' `save_file` alone.",
        "",
        f"Produced by `{meta['command']}` at {describe(meta)}, {meta['threads']} torch thread(s); load "
        f"average {meta['loadavg'][0]:.2f} over the last minute when it ended (other processes shared the "
        "core when it is above 1: the wall-clock times then include their share).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument(
        "--root", type=Path, default=None, help="Where to write the files (default: a temporary one)."
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="checksum-cost-", dir=args.root) as tmp:
        rows = store_rows(Path(tmp), args.repeats) + artifact_rows(Path(tmp), args.repeats)
    prim = primitives(args.repeats)
    for r in rows:
        print(json.dumps({k: r[k] for k in ("what", "wall_ratio", "cpu_ratio", "cpu_overhead_ms")}))
    meta = {**provenance(), "loadavg": [round(v, 2) for v in os.getloadavg()]}
    write_json(args.out / "checksum_cost.json", {"provenance": meta, "rows": rows, "primitives": prim})
    write_text(args.out / "checksum_cost.md", markdown(meta, rows, prim))


if __name__ == "__main__":
    main()
