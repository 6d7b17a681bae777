"""Benchmark of the meta-gradient engines: seconds and peak memory per outer iteration.

One outer iteration is what a trajectory-matching distiller does per step of its outer optimiser: draw an
inner plan (mini-batches and DSA parameters), run `meta_loss` (the matching loss after `syn_steps` plain
SGD steps of the student on the synthetic set) and call `.backward()` on it, which computes the
meta-gradient into the synthetic images, the label logits (soft labels) and the learnable synthetic lr.

Every (model, syn_steps, engine) is measured in a fresh subprocess (`python benchmarks/engine.py _measure`,
one JSON line on stdout), so peaks do not mix: the child builds everything, runs one short warm-up
iteration (one-time costs: allocator growth, oneDNN primitive caches), resets the peak, then times
`iters` iterations. On the CPU the peak is the child's peak resident set (`ru_maxrss`, whose high-water
mark is reset after the warm-up through /proc/self/clear_refs where the kernel allows it); on CUDA it is
`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`.

A measurement whose peak, extrapolated linearly from the smaller step counts already measured for the
same model and engine, would exceed a fraction (default 75%) of the available memory (MemAvailable, or
the device's free memory as the last child saw it) is skipped and recorded as such, as are timeouts.

The engine "authors" is the authors' DATM/PAD outer iteration restated standalone (`authors_loop.py`, torch
only: their ConvNet on a flat parameter vector, their DSA, the same inner steps and loss, and the SGD steps
of their three optimisers), built and timed by the same child in place of `meta_loss`, so that our engines
can be compared with it in the same run (`--engines adjoint,authors`; the report adds `/ authors` ratios).

On a shared CPU other processes spoil the timings (with 2 OpenMP threads on 2 busy cores a step can take
several times as long): each child records how many cores other processes kept busy while it was timed
(`other_cpu_cores`, from /proc/stat); the parent waits for a quiet machine before each cell, re-runs a
spoiled one, flags what stays spoiled, and `--resume` re-measures only the spoiled or missing cells.
The library tells glibc malloc, when it is imported, to keep and reuse freed memory (no mmap for large
blocks, no trimming; `distillset.allocator`): with glibc's defaults every activation above 32 MB is a
fresh mmap whose pages are faulted in again on every inner step. Our engines run so (`--allocator
library`, the default) or with glibc's defaults (`--allocator system`); the authors' loop always runs
with glibc's defaults, as their scripts do.

    python benchmarks/engine.py [--steps 10,20,40,80] [--engines unroll,tesla,adjoint] [--models big,small]
                                [--iters auto|N] [--out benchmarks/results] [--device auto]
                                [--labels hard|soft] [--allocator library|system] [--resume]

writes `engine.json` (machine, settings, every measurement) and `engine.md` (tables and ratios). This
module is the harness; `benchmarks/engine.py` is its command line (and the measurement child's entry).
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

import distillset
from distillset.provenance import describe, made_by_other_code, provenance

ENGINE_NAMES = ("unroll", "tesla", "adjoint")
# The authors' DATM/PAD outer iteration restated standalone (benchmarks/authors_loop.py), measured by the
# same child as a reference in the same run; not one of our engines, so not run unless asked for.
AUTHORS = "authors"
DEFAULT_STEPS = (10, 20, 40, 80)
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGITS_STRATEGY = "color_crop_cutout_scale_rotate"

# The two settings of the comparison with the authors' code: IPC 10, batch_syn = all 100 images.
MODELS: dict[str, dict[str, Any]] = {
    "big": {
        "label": "ConvNet-128-3, 3x32x32",
        "shape": [3, 32, 32],
        "width": 128,
        "depth": 3,
        "classes": 10,
        "images": 100,
        "strategy": DEFAULT_STRATEGY,
    },
    "small": {
        "label": "ConvNet-64-3, 1x28x28",
        "shape": [1, 28, 28],
        "width": 64,
        "depth": 3,
        "classes": 10,
        "images": 100,
        "strategy": DIGITS_STRATEGY,
    },
}

# The authors' code on the same machine (2 threads, IPC 10, batch_syn 100): syn_steps -> (s/it, peak GB).
REFERENCE: dict[str, dict[int, tuple[float, float]]] = {
    "big": {10: (15.4, 3.9), 20: (38.5, 7.1), 40: (78.3, 13.2)},
    "small": {10: (4.5, 2.8), 20: (7.4, 4.8), 40: (15.7, 8.5)},
}

# A timing during which other processes kept more cores than this busy is flagged (and re-run).
CONTENTION = 0.25

# --allocator system (and the authors' loop): the child leaves glibc malloc as it is (distillset.allocator).
SYSTEM_ALLOCATOR_ENV = {"DISTILLSET_ALLOCATOR": "system"}

# --iters auto: time iterations until this many seconds have been measured, at most AUTO_MAX_ITERS.
AUTO_MIN_SECONDS = 20.0
AUTO_MAX_ITERS = 3

# The command line, whose hidden `_measure` command runs one measurement in the child process: found
# next to this file, so the children start the same way whatever the working directory.
ENTRY_SCRIPT = Path(__file__).resolve().with_name("engine.py")


# ------------------------------------------------------------------------------------------------
# memory and machine information


def _proc_kib(path: str, key: str) -> int | None:
    """A `key: N kB` line of a /proc file, in KiB (None where there is no such file or line)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    m = re.search(rf"^{re.escape(key)}:\s+(\d+)", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def current_rss_mb() -> float | None:
    kib = _proc_kib("/proc/self/status", "VmRSS")
    return kib / 1024 if kib is not None else None


def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (and so ru_maxrss) to the current RSS, where allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_busy_seconds() -> float | None:
    """CPU seconds spent busy by the whole machine since boot (all cores; /proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    jiffies = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(jiffies) - jiffies[3] - jiffies[4]
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """How many cores other processes kept busy while this one ran (contention of the timing)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), cpu_busy_seconds(), own_cpu_seconds()

    def read(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self.t0
        busy, own = cpu_busy_seconds(), own_cpu_seconds() - self.own0
        other = None
        if busy is not None and self.busy0 is not None and wall > 0:
            other = max(0.0, (busy - self.busy0 - own) / wall)
        return {
            "own_cpu_seconds": own,
            "own_cpu_cores": own / wall if wall > 0 else None,
            "other_cpu_cores": other,
        }


def wait_for_quiet(max_seconds: float, threshold: float, window: float = 2.0) -> float:
    """Wait until the machine's busy cores over `window` seconds drop below `threshold` (other processes:
    this one sleeps), at most `max_seconds`. Returns the seconds waited."""
    t0 = time.perf_counter()
    while True:
        b0 = cpu_busy_seconds()
        if b0 is None:
            return 0.0
        time.sleep(window)
        b1 = cpu_busy_seconds()
        if b1 is None or (b1 - b0) / window < threshold or time.perf_counter() - t0 >= max_seconds:
            return time.perf_counter() - t0


def mem_available_mb() -> float | None:
    kib = _proc_kib("/proc/meminfo", "MemAvailable")
    return kib / 1024 if kib is not None else None


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, threads: int) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "mem_total_mb": round((_proc_kib("/proc/meminfo", "MemTotal") or 0) / 1024),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    else:
        info["threads"] = threads
    return info


# ------------------------------------------------------------------------------------------------
# the measurement (runs in the child process)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Time `spec["iters"]` outer iterations of one engine in this process; return times and peaks.

    spec: engine, syn_steps, shape [C, H, W], width, depth, classes, images, strategy, labels ("hard" or
    "soft"), lr, device ("auto", "cpu", "cuda"), threads, seed, warmup_steps, iters (int, or "auto").
    engine "authors": the authors' loop of authors_loop.py on the same setting, in place of `meta_loss`.
    """
    import torch

    from distillset.utils import resolve_device

    engine, steps = str(spec["engine"]), int(spec["syn_steps"])
    if engine not in (*ENGINE_NAMES, AUTHORS):
        valid = ", ".join((*ENGINE_NAMES, AUTHORS))
        raise click.UsageError(f"unknown engine {engine!r}; valid: {valid}.")
    device = resolve_device(str(spec.get("device", "auto")))
    threads = int(spec.get("threads", 2))
    if device.type == "cpu":
        torch.set_num_threads(threads)
    seed = int(spec.get("seed", 0))
    torch.manual_seed(seed)
    shape = tuple(int(s) for s in spec["shape"])
    n, classes = int(spec["images"]), int(spec["classes"])
    strategy = spec.get("strategy") or None
    free_mb = None
    if device.type == "cuda":
        free_mb = torch.cuda.mem_get_info(device)[0] / 2**20

    setup = _authors_iteration if engine == AUTHORS else _our_iteration
    iteration, learned, n_params = setup(spec, engine, device, seed, shape, n, classes, strategy)

    warm_steps = max(1, int(spec.get("warmup_steps", 2)))
    t_warm = time.perf_counter()
    iteration(warm_steps)
    warmup_seconds = time.perf_counter() - t_warm
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device) / 2**20
    rss_before = current_rss_mb()
    reset_ok = reset_peak_rss()
    meter = CpuMeter()

    iters = spec.get("iters", "auto")
    auto = iters in (None, "auto", 0, "0")
    max_iters = AUTO_MAX_ITERS if auto else max(1, int(iters))
    forward, backward, losses = [], [], []
    while len(forward) < max_iters:
        f, b, loss = iteration(steps)
        forward.append(f)
        backward.append(b)
        losses.append(loss)
        if auto and sum(forward) + sum(backward) >= AUTO_MIN_SECONDS:
            break

    totals = [f + b for f, b in zip(forward, backward, strict=True)]
    rss_peak = peak_rss_mb()
    cpu = meter.read()
    # The arithmetic of one full iteration (convolutions and matmuls, as torch's FlopCounterMode counts
    # them), counted on an untimed iteration after the timed ones (so that the peak memory above is the
    # timed iterations' alone); and this process's matmul rate, the peak it is measured against.
    gflop = count_gflop(iteration, steps) if spec.get("flops", True) else None
    peak_gflops = matmul_peak_gflops(device) if spec.get("flops", True) else None
    grads = {name: float(t.grad.norm()) if t.grad is not None else None for name, t in learned.items()}
    out: dict[str, Any] = {
        "engine": engine,
        "syn_steps": steps,
        "device": str(device),
        "threads": threads if device.type == "cpu" else None,
        "params": n_params,
        "iters": len(totals),
        "cpu_seconds_per_iteration": None,
        "seconds_per_iteration": sum(totals) / len(totals),
        "seconds": totals,
        "forward_seconds": sum(forward) / len(forward),
        "backward_seconds": sum(backward) / len(backward),
        "warmup_steps": warm_steps,
        "warmup_seconds": warmup_seconds,
        "loss": losses[0],
        "gflop_per_iteration": gflop,
        "gflop_per_second": gflop / (sum(totals) / len(totals)) if gflop else None,
        "matmul_peak_gflop_per_second": peak_gflops,
        "grad_norms": grads,
        "finite": all(v is None or math.isfinite(v) for v in grads.values()),
        "rss_before_mb": rss_before,
        "peak_rss_mb": rss_peak,
        "peak_rss_increase_mb": rss_peak - rss_before if rss_before is not None else None,
        "peak_reset_after_warmup": reset_ok,
        "allocator": "system" if spec.get("engine") == AUTHORS else spec.get("allocator", "library"),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        **cpu,
        "loadavg": _loadavg(),
    }
    out["cpu_seconds_per_iteration"] = cpu["own_cpu_seconds"] / len(totals)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        out.update(
            memory_kind="cuda max_memory_allocated",
            peak_mb=peak,
            peak_increase_mb=peak - allocated_before,
            device_free_mb=free_mb,
        )
    else:
        out.update(
            memory_kind="rss", peak_mb=out["peak_rss_mb"], peak_increase_mb=out["peak_rss_increase_mb"]
        )
    return out


def count_gflop(iteration: Callable[[int], Any], steps: int) -> float:
    """GFLOP of one iteration of `steps` inner steps: convolutions and matmuls, forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        iteration(steps)
    return counter.get_total_flops() / 1e9


def matmul_peak_gflops(device: Any, n: int = 2048, repeats: int = 3) -> float:
    """The rate of an n x n x n float32 matmul on `device` with this process's threads: the machine's peak
    that the engines' GFLOP/s are set against (154 GFLOP/s on this machine's 2 threads at n = 2048)."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return repeats * 2 * n**3 / (time.perf_counter() - t) / 1e9


def _our_iteration(
    spec: Mapping[str, Any],
    engine: str,
    device: Any,
    seed: int,
    shape: tuple[int, ...],
    n: int,
    classes: int,
    strategy: str | None,
) -> tuple[Callable[[int], tuple[float, float, float]], dict[str, Any], int]:
    """One of our engines: an iteration (syn_steps -> forward s, backward s, loss), the learned tensors
    by name (images, labels when soft, lr) and the student's parameter count."""
    import torch

    from distillset.inner import Student, meta_loss, sample_plan
    from distillset.models import build_model
    from distillset.models.params import flat_params
    from distillset.objectives.trajectory import ParameterMatch

    model = build_model("convnet", shape, classes, width=int(spec["width"]), depth=int(spec["depth"]))
    model = model.to(device)
    student = Student.of(model, momentum=0.0)
    gen = torch.Generator().manual_seed(seed)
    theta0 = flat_params(model)
    # An expert segment without a dataset: the start and a perturbed copy as the target.
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=gen).to(device)
    match = ParameterMatch(theta0, target)
    images = torch.randn((n, *shape), generator=gen).to(device).requires_grad_(True)
    hard = torch.arange(n) % classes
    if spec.get("labels", "hard") == "soft":
        # DATM's learnable label logits (initialised here from the one-hot labels, scaled).
        targets = (5.0 * torch.nn.functional.one_hot(hard, classes).float()).to(device).requires_grad_(True)
    else:
        targets = hard.to(device)
    lr = torch.tensor(float(spec.get("lr", 0.01)), device=device, requires_grad=True)
    learned = [t for t in (images, targets, lr) if t.requires_grad]

    def iteration(syn_steps: int) -> tuple[float, float, float]:
        for t in learned:
            t.grad = None
        _sync(device)
        t0 = time.perf_counter()
        plan = sample_plan(n, syn_steps, n, shape[1:], strategy, gen, device)
        loss = meta_loss(engine, student, theta0, images, targets, lr, plan, {syn_steps: match})
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, float(loss.detach())

    names = {"images": images, "labels": targets, "lr": lr}
    return iteration, {k: t for k, t in names.items() if t.requires_grad}, int(theta0.numel())


def _authors_iteration(
    spec: Mapping[str, Any],
    engine: str,
    device: Any,
    seed: int,
    shape: tuple[int, ...],
    n: int,
    classes: int,
    strategy: str | None,
) -> tuple[Callable[[int], tuple[float, float, float]], dict[str, Any], int]:
    """The authors' loop (authors_loop.py, next to this file) on the same setting; as `_our_iteration`.

    Its iteration also takes the three SGD steps of their outer optimisers, as their loop does."""
    import authors_loop

    if n % classes:
        raise click.UsageError(f"engine authors: {n} images are not a whole number per class of {classes}.")
    state = authors_loop.build(
        None,
        ipc=n // classes,
        classes=classes,
        syn_steps=int(spec["syn_steps"]),
        labels=str(spec.get("labels", "hard")),
        device=device,
        seed=seed,
        width=int(spec["width"]),
        depth=int(spec["depth"]),
        shape=shape,
        strategy=strategy or "none",
        lr=float(spec.get("lr", 0.01)),
    )

    def iteration(syn_steps: int) -> tuple[float, float, float]:
        loss = authors_loop.iteration(state, syn_steps)
        return state.forward_seconds, state.backward_seconds, loss

    learned = {"images": state.images, "labels": state.label_syn, "lr": state.syn_lr}
    return iteration, {k: t for k, t in learned.items() if t.requires_grad}, state.num_params


# ------------------------------------------------------------------------------------------------
# the parent: one subprocess per measurement, skips, timeouts


def run_measurement(spec: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run `measure(spec)` in a fresh `python benchmarks/engine.py _measure` process.

    Returns its JSON, or {"timeout": seconds} / {"error": message} when the child ran too long or failed.
    """
    cmd = [sys.executable, str(ENTRY_SCRIPT), "_measure", "--spec", json.dumps(dict(spec))]
    env = dict(os.environ)
    # The child imports the same distillset as this process (the checkout's src/ even when not installed).
    src = str(Path(distillset.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if spec.get("allocator", "library") == "system" or spec.get("engine") == AUTHORS:
        env.update(SYSTEM_ALLOCATOR_ENV)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout, "wall_seconds": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        why = f"exit status {proc.returncode}" + (" (killed: out of memory?)" if proc.returncode < 0 else "")
        return {"error": f"{why}: {' | '.join(tail)}", "wall_seconds": wall}
    result = json.loads(lines[-1])
    result["wall_seconds"] = wall
    return result


def predict_peak_mb(points: Sequence[tuple[int, float]], steps: int) -> float | None:
    """The peak at `steps` extrapolated linearly from measured (syn_steps, peak MB) points.

    Two or more points: the line through the two largest step counts (never decreasing). One point: the
    proportional line through the origin, an upper bound for a peak that is an offset plus a per-step cost.
    """
    pts = sorted(points)
    if not pts:
        return None
    if len(pts) == 1:
        s, p = pts[0]
        return p * max(steps, s) / s
    (s0, p0), (s1, p1) = pts[-2], pts[-1]
    slope = max(0.0, (p1 - p0) / (s1 - s0)) if s1 != s0 else 0.0
    return p1 + slope * (steps - s1)


def _is_ok(m: Mapping[str, Any]) -> bool:
    return "seconds_per_iteration" in m


def spare_cores(threads: int) -> float:
    """Cores the benchmark leaves to other processes (on the CPU, with `threads` torch threads)."""
    return max(0, (os.cpu_count() or 1) - threads)


def _contended(m: Mapping[str, Any], threshold: float | None = None) -> bool:
    """Did other processes take more than `threshold` cores beyond the spare ones during the timing?"""
    other = m.get("other_cpu_cores")
    if other is None:
        return False
    spare = spare_cores(m["threads"]) if m.get("threads") else 0.0
    return other > spare + (CONTENTION if threshold is None else threshold)


def run_benchmark(
    models: Sequence[str],
    steps: Sequence[int],
    engines: Sequence[str],
    iters: str,
    device: str,
    labels: str = "hard",
    threads: int = 2,
    timeout: float | None = 1800.0,
    memory_fraction: float = 0.75,
    warmup_steps: int = 2,
    seed: int = 0,
    quiet_wait: float = 120.0,
    quiet_budget: float = 900.0,
    retries: int = 1,
    contention: float = CONTENTION,
    allocator: str = "library",
    previous: Mapping[str, Any] | None = None,
    on_result: Any = None,
) -> dict[str, Any]:
    """Measure every (model, syn_steps, engine) in its own subprocess; see the module docstring.

    On the CPU, other processes' load spoils the timings: before each cell wait up to `quiet_wait`
    seconds (at most `quiet_budget` in all) for the machine to fall quiet, and re-run a cell during which
    other processes kept more than `contention` cores busy, up to `retries` times (the least contended
    attempt is kept; `other_cpu_cores` records it).

    `previous`: the results of an interrupted or partly spoiled run of the same settings; its clean
    measurements (and memory skips) are kept as they are and only the rest is measured again.
    """
    from tqdm.auto import tqdm

    from distillset.utils import resolve_device

    dev = str(resolve_device(device))
    results: dict[str, Any] = {
        "provenance": provenance(),
        "machine": machine_info(dev, threads),
        "settings": {
            "models": {m: MODELS[m] for m in models},
            "steps": list(steps),
            "engines": list(engines),
            "iters": iters,
            "labels": labels,
            "allocator": allocator,
            "batch_syn": "all images",
            "inner": "plain SGD (momentum 0)",
            "synthetic_lr": 0.01,
            "warmup_steps": warmup_steps,
            "timeout_s": timeout,
            "memory_fraction": memory_fraction,
            "seed": seed,
            "quiet_wait_s": quiet_wait,
            "quiet_budget_s": quiet_budget,
            "retries": retries,
            "contention_threshold_cores": contention,
        },
        "reference": {
            m: {str(k): {"seconds": v[0], "peak_gb": v[1]} for k, v in r.items()}
            for m, r in REFERENCE.items()
        },
        "measurements": [],
    }
    tasks = [(m, s, e) for m in models for s in sorted(steps) for e in engines]
    base_wall, base_wait = 0.0, 0.0
    if previous is not None:
        _check_resumable(previous, results)
        base_wall = float(previous.get("wall_seconds") or 0.0)
        base_wait = float(previous.get("quiet_wait_seconds") or 0.0)
        results["resumed"] = int(previous.get("resumed", 0)) + 1
        results["earlier_runs"] = [*previous.get("earlier_runs", []), previous.get("provenance")]
    t_start = time.perf_counter()
    device_free: float | None = None
    total_wait = 0.0
    bar = tqdm(tasks, desc="engine bench", unit="run", dynamic_ncols=True)
    for model, s, engine in bar:
        bar.set_postfix_str(f"{model} {engine} {s} steps")
        old = _find(previous, model, engine, s) if previous is not None else None
        if old is not None and _reusable(old):
            results["measurements"].append(dict(old))
            continue
        done = [
            m
            for m in results["measurements"]
            if m["model"] == model and m["engine"] == engine and m["syn_steps"] < s
        ]
        row: dict[str, Any] = {"model": model, "engine": engine, "syn_steps": s}
        failed = [m for m in done if "timeout" in m or "error" in m]
        points = [(m["syn_steps"], m["peak_mb"]) for m in done if _is_ok(m)]
        predicted = predict_peak_mb(points, s)
        available = device_free if dev.startswith("cuda") else mem_available_mb()
        if failed:
            why = "timed out" if "timeout" in failed[0] else "failed"
            row["skipped"] = f"{why} at {failed[0]['syn_steps']} steps"
        elif predicted is not None and available is not None and predicted > memory_fraction * available:
            row["skipped"] = (
                f"would need about {predicted / 1024:.1f} GB "
                f"(> {memory_fraction:.0%} of {available / 1024:.1f} GB available)"
            )
            row["predicted_peak_mb"] = predicted
        else:
            spec = {
                **{k: v for k, v in MODELS[model].items() if k != "label"},
                "engine": engine,
                "syn_steps": s,
                "labels": labels,
                "lr": 0.01,
                "device": dev,
                "threads": threads,
                "seed": seed,
                "warmup_steps": warmup_steps,
                "iters": iters,
                "allocator": allocator,
            }
            attempts: list[dict[str, Any]] = []
            waited = 0.0
            for _ in range(max(0, retries) + 1):
                if not dev.startswith("cuda") and quiet_wait > 0 and quiet_budget - total_wait > 0:
                    bar.set_postfix_str(f"{model} {engine} {s} steps (waiting for a quiet machine)")
                    w = wait_for_quiet(
                        min(quiet_wait, quiet_budget - total_wait), spare_cores(threads) + contention
                    )
                    waited += w
                    total_wait += w
                    bar.set_postfix_str(f"{model} {engine} {s} steps")
                attempts.append(run_measurement(spec, timeout))
                if not _contended(attempts[-1], contention):
                    break
            ok = [a for a in attempts if _is_ok(a)]
            best = min(ok, key=lambda a: a.get("other_cpu_cores") or 0.0) if ok else attempts[-1]
            row.update(best)
            row["contended"] = _contended(best, contention)
            row["quiet_wait_s"] = waited
            if len(attempts) > 1:
                row["other_attempts"] = [
                    {k: a.get(k) for k in ("seconds_per_iteration", "peak_mb", "other_cpu_cores", "error")}
                    for a in attempts
                    if a is not best
                ]
            if predicted is not None:
                row["predicted_peak_mb"] = predicted
            if row.get("device_free_mb") is not None:
                device_free = row["device_free_mb"]
        results["measurements"].append(row)
        results["wall_seconds"] = base_wall + time.perf_counter() - t_start
        results["quiet_wait_seconds"] = base_wait + total_wait
        if on_result is not None:
            on_result(results)
    bar.close()
    results["wall_seconds"] = base_wall + time.perf_counter() - t_start
    results["quiet_wait_seconds"] = base_wait + total_wait
    return results


_RESUME_KEYS = ("steps", "engines", "iters", "labels", "warmup_steps", "seed")


def _check_resumable(previous: Mapping[str, Any], results: Mapping[str, Any]) -> None:
    old_s, new_s = previous.get("settings", {}), results["settings"]
    diff = [k for k in _RESUME_KEYS if old_s.get(k) != new_s.get(k)]
    diff += [
        k for k in ("device", "threads") if previous.get("machine", {}).get(k) != results["machine"].get(k)
    ]
    if old_s.get("allocator", "default") != new_s.get("allocator", "library"):
        diff.append("allocator")
    if set(old_s.get("models", {})) != set(new_s.get("models", {})):
        diff.append("models")
    if made_by_other_code(previous.get("provenance"), results["provenance"]):
        diff.append(f"library code: {describe(previous.get('provenance'))}")
    if diff:
        raise click.UsageError(
            f"--resume: the earlier results were measured with other settings ({', '.join(diff)}); "
            "give the same options, or leave out --resume to start afresh."
        )


def _reusable(m: Mapping[str, Any]) -> bool:
    """A clean measurement, or a cell skipped for memory: kept by --resume."""
    if _is_ok(m):
        return not _contended(m)
    return str(m.get("skipped", "")).startswith("would need")


# ------------------------------------------------------------------------------------------------
# the report


def _find(results: Mapping[str, Any], model: str, engine: str, steps: int) -> Mapping[str, Any] | None:
    for m in results.get("measurements", []):
        if m["model"] == model and m["engine"] == engine and m["syn_steps"] == steps:
            return m
    return None


def _status(m: Mapping[str, Any] | None) -> str:
    if m is None:
        return "not run"
    if "skipped" in m:
        return f"skipped: {m['skipped']}"
    if "timeout" in m:
        return f"timeout after {m['timeout']:.0f} s"
    if "error" in m:
        return f"failed: {m['error'][:80]}"
    return ""


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def _flop_cells(m: Mapping[str, Any]) -> str:
    gf, rate, peak = (
        m.get("gflop_per_iteration"),
        m.get("gflop_per_second"),
        m.get("matmul_peak_gflop_per_second"),
    )
    if not gf or not rate:
        return " n/a | n/a | n/a |"
    share = f"{100 * rate / peak:.0f}%" if peak else "n/a"
    return f" {gf:.0f} | {rate:.1f} | {share} |"


def write_markdown(results: Mapping[str, Any]) -> str:
    """The report: per model, syn_steps x engine with s/it, peak MB and ratios against unroll (and against
    the authors' loop when it was measured); the adjoint's peak growth from 10 to 80 steps; the comparison
    with the authors' figures."""
    settings = results.get("settings", {})
    machine = results.get("machine", {})
    models = settings.get("models", MODELS)
    steps = sorted(settings.get("steps", DEFAULT_STEPS))
    engines = settings.get("engines", list(ENGINE_NAMES))
    with_authors = AUTHORS in engines
    device = machine.get("device", "cpu")
    mem = "peak RSS" if not str(device).startswith("cuda") else "peak allocated"
    n_images = "/".join(sorted({str(m.get("images", 100)) for m in models.values()}))
    made = results.get("provenance")
    made_line = (
        f"Produced by `{made['command']}` at {describe(made)}"
        + "".join(f"; resumed from a run at {describe(e)}" for e in results.get("earlier_runs", []))
        + "."
        if made
        else "Made before the benchmark recorded its provenance."
    )
    lines = [
        "# Meta-gradient engines: seconds and peak memory per outer iteration",
        "",
        made_line,
        "",
        f"Machine: {machine.get('cpu_model', '?')}, device {device}"
        + (f", {machine['threads']} torch thread(s)" if machine.get("threads") else "")
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
        + f", torch {machine.get('torch', '?')}"
        + (
            ", our engines with the library's allocator setting (glibc malloc reusing freed memory), the "
            "authors' loop with glibc's defaults."
            if settings.get("allocator", "library") == "library"
            else ", glibc's default allocator."
        ),
        "",
        "One outer iteration = `meta_loss` + `.backward()`: the meta-gradient into "
        f"{n_images} synthetic images ({settings.get('labels', 'hard')} labels) and the learnable lr; "
        "batch_syn = all images, DSA on every inner step, plain SGD, synthetic lr 0.01. "
        "Each cell is a fresh process: one short warm-up "
        f"iteration, then the mean of the timed iterations (`iters` column). `{mem}` is the process peak "
        "during the timed iterations; `+MB` the increase over the memory right before them. Ratios are "
        "against `unroll` at the same setting in the same run. `other load`: cores kept busy by other "
        "processes during the timed iterations (0 on a quiet machine). `GFLOP / it`: the convolutions' "
        "and matmuls' arithmetic of one iteration, forward and backward (torch's FlopCounterMode, on an "
        "untimed iteration); `GFLOP/s` that over the seconds per iteration; `% of matmul peak` against a "
        "2048^3 float32 matmul timed in the same process.",
        "",
    ]
    if with_authors:
        lines += [
            "`authors`: the authors' DATM/PAD outer iteration restated standalone "
            "(`benchmarks/authors_loop.py`: their ConvNet on one flat parameter vector, their DSA, the same "
            "inner steps and normalised loss, then the SGD steps of their three optimisers), measured by the "
            "same child in the same way. `time / authors` and `peak / authors` are against it at the same "
            "setting in the same run.",
            "",
        ]
    extra_head = " time / authors | peak / authors |" if with_authors else ""
    extra_rule = "---:|---:|" if with_authors else ""
    extra_blank = " | |" if with_authors else ""
    flagged = False
    for model, spec in models.items():
        lines += [
            f"## {model}: {spec.get('label', model)}, {spec.get('images', '?')} images",
            "",
            f"| syn_steps | engine | s / it | iters | {mem} MB | +MB | time / unroll | peak / unroll "
            f"| other load |{extra_head} GFLOP / it | GFLOP/s | % of matmul peak |",
            f"|---:|---|---:|---:|---:|---:|---:|---:|---:|{extra_rule}---:|---:|---:|",
        ]
        for s in steps:
            ref = _find(results, model, "unroll", s)
            ref_ok = ref is not None and _is_ok(ref)
            auth = _find(results, model, AUTHORS, s) if with_authors else None
            auth_ok = auth is not None and _is_ok(auth)
            for e in engines:
                m = _find(results, model, e, s)
                status = _status(m)
                if status:
                    lines.append(f"| {s} | {e} | {status} | | | | | | |{extra_blank} | | |")
                    continue
                t, p, inc = m["seconds_per_iteration"], m["peak_mb"], m.get("peak_increase_mb")
                rt = _ratio(t, ref["seconds_per_iteration"]) if ref_ok else "n/a"
                rp = _ratio(p, ref["peak_mb"]) if ref_ok else "n/a"
                inc_s = f"{inc:.0f}" if inc is not None else "n/a"
                other = m.get("other_cpu_cores")
                load = "" if other is None else f"{other:.2f}" + (" (!)" if _contended(m) else "")
                flagged |= _contended(m)
                row = f"| {s} | {e} | {t:.2f} | {m['iters']} | {p:.0f} | {inc_s} | {rt} | {rp} | {load} |"
                if with_authors:
                    at = _ratio(t, auth["seconds_per_iteration"]) if auth_ok else "n/a"
                    ap = _ratio(p, auth["peak_mb"]) if auth_ok else "n/a"
                    row += f" {at} | {ap} |"
                row += _flop_cells(m)
                lines.append(row)
        lines.append("")
        lo, hi = min(steps), max(steps)
        for e in ("adjoint", "tesla"):
            a, b = _find(results, model, e, lo), _find(results, model, e, hi)
            if a is not None and b is not None and _is_ok(a) and _is_ok(b) and lo != hi:
                inc = ""
                if a.get("peak_increase_mb") and b.get("peak_increase_mb") is not None:
                    r = _ratio(b["peak_increase_mb"], a["peak_increase_mb"])
                    inc = f" (increase over the baseline: {r})"
                lines.append(
                    f"{e}: peak at {hi} steps / peak at {lo} steps = {_ratio(b['peak_mb'], a['peak_mb'])}"
                    f" ({b['peak_mb']:.0f} / {a['peak_mb']:.0f} MB){inc}."
                )
        lines.append("")

    if flagged:
        lines += [
            f"(!) other processes took more than {CONTENTION} cores beyond the spare ones (CPU count minus "
            "torch threads) on average during this cell's timed iterations (`other load`, in cores), even "
            "after waiting for a quiet machine and a re-run: its seconds are inflated.",
            "",
        ]
    reference = results.get("reference") or {
        m: {str(k): {"seconds": v[0], "peak_gb": v[1]} for k, v in r.items()} for m, r in REFERENCE.items()
    }
    rows = []
    for model, ref in reference.items():
        if model not in models:
            continue
        for s_key, r in sorted(ref.items(), key=lambda kv: int(kv[0])):
            m = _find(results, model, "unroll", int(s_key))
            if m is None or not _is_ok(m):
                rows.append(f"| {model} | {s_key} | {r['seconds']} | {r['peak_gb']} | {_status(m)} | | | |")
                continue
            t, gb = m["seconds_per_iteration"], m["peak_mb"] / 1024
            rows.append(
                f"| {model} | {s_key} | {r['seconds']} | {r['peak_gb']} | {t:.2f} | {gb:.2f} | "
                f"{r['seconds'] / t:.2f}x | {r['peak_gb'] / gb:.2f}x |"
            )
    if rows:
        lines += [
            "## Against the authors' code (same machine, 2 threads, IPC 10, batch_syn 100)",
            "",
            "| model | syn_steps | authors s / it | authors GB | our unroll s / it | our unroll GB "
            "| speedup | memory saving |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    if results.get("wall_seconds") is not None:
        waited = results.get("quiet_wait_seconds") or 0.0
        note = (
            f" (of which {waited / 60:.1f} min waiting for other processes to quiet down)" if waited else ""
        )
        lines.append(f"Total benchmark wall time: {results['wall_seconds'] / 60:.1f} min{note}.")
        if results.get("resumed"):
            lines.append(
                f"Resumed {results['resumed']} time(s) with `--resume`: the cells spoiled by other load "
                "(or missing) were measured again, the clean ones kept; the wall time adds up all runs."
            )
        lines.append("")
    return "\n".join(lines)


def save(results: Mapping[str, Any], out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "engine.json.tmp"
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out / "engine.json")
    (out / "engine.md").write_text(write_markdown(results))
