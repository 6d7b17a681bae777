"""Seconds and peak memory per outer iteration of the meta-gradient engines (unroll, tesla, adjoint).

One outer iteration is `meta_loss` plus `.backward()`: the meta-gradient of the trajectory-matching loss
into 100 synthetic images (hard labels, or learnable label logits with --labels soft) and the learnable
synthetic lr, after syn_steps plain-SGD inner steps on all images with DSA on every step. Measured for
ConvNet-128-3 on 3x32x32 ("big") and ConvNet-64-3 on 1x28x28 ("small") at syn_steps 10, 20, 40, 80, each
cell in its own subprocess (peak RSS on the CPU, peak allocated memory on CUDA); cells whose extrapolated
memory would not fit are skipped. Compares unroll with the authors' figures measured on the same machine,
and, with the engine "authors" (benchmarks/authors_loop.py, their loop restated standalone), every engine
with the authors' loop measured in the same run.

Writes benchmarks/results/engine.{json,md}. The harness is `benchmarks/engine_bench.py`; this script is
its command line, and with the hidden first argument `_measure` the entry of each measurement's child
process (`python benchmarks/engine.py _measure --spec JSON`, one JSON line on stdout).
Usage: python benchmarks/engine.py [--steps 10,20,40,80] [--engines unroll,tesla,adjoint[,authors]]
                                   [--models big,small] [--iters auto|N] [--out DIR] [--device auto]
                                   [--labels hard|soft] [--allocator library|system] [--resume]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from engine_bench import (
    AUTHORS,
    AUTO_MAX_ITERS,
    AUTO_MIN_SECONDS,
    DEFAULT_STEPS,
    ENGINE_NAMES,
    MODELS,
    measure,
    run_benchmark,
    save,
    write_markdown,
)


def _csv(value: str, choices: Iterable[str] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if choices is not None:
        choices = tuple(choices)
        bad = [v for v in items if v not in choices]
        if bad:
            raise click.BadParameter(f"{', '.join(bad)} not among {', '.join(choices)}.")
    if not items:
        raise click.BadParameter("give at least one value.")
    return items


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--steps", default=",".join(map(str, DEFAULT_STEPS)), show_default=True, help="syn_steps values."
)
@click.option(
    "--engines",
    default=",".join(ENGINE_NAMES),
    show_default=True,
    help=f"among {', '.join((*ENGINE_NAMES, AUTHORS))} ({AUTHORS}: the authors' loop restated standalone).",
)
@click.option(
    "--models",
    default=",".join(MODELS),
    show_default=True,
    help="big: ConvNet-128-3 3x32x32; small: ConvNet-64-3 1x28x28.",
)
@click.option(
    "--iters",
    default="auto",
    show_default=True,
    help=f"timed iterations per cell; auto: until {AUTO_MIN_SECONDS:.0f} s, at most {AUTO_MAX_ITERS}.",
)
@click.option(
    "--labels",
    type=click.Choice(["hard", "soft"]),
    default="hard",
    show_default=True,
    help="hard labels, or learnable label logits (DATM).",
)
@click.option("--out", default="benchmarks/results", show_default=True, type=click.Path(file_okay=False))
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", default=2, show_default=True, help="torch threads on the CPU.")
@click.option("--timeout", default=1800.0, show_default=True, help="seconds per measurement.")
@click.option(
    "--memory-fraction",
    default=0.75,
    show_default=True,
    help="skip a cell whose extrapolated peak exceeds this fraction of the available memory.",
)
@click.option(
    "--quiet-wait",
    default=120.0,
    show_default=True,
    help="CPU: seconds to wait before each cell for other processes to quiet down (0: never).",
)
@click.option("--quiet-budget", default=900.0, show_default=True, help="CPU: most seconds of waiting in all.")
@click.option("--retries", default=1, show_default=True, help="re-runs of a cell spoiled by other load.")
@click.option(
    "--allocator",
    type=click.Choice(["library", "system"]),
    default="library",
    show_default=True,
    help="our engines with the library's malloc setting (reuse freed memory) or glibc's defaults.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="keep the clean cells of OUT/engine.json (same settings) and measure only the others: missing, "
    "failed, timed out or spoiled by other load.",
)
def engine(
    steps: str,
    engines: str,
    models: str,
    iters: str,
    labels: str,
    out: str,
    device: str,
    threads: int,
    timeout: float,
    memory_fraction: float,
    quiet_wait: float,
    quiet_budget: float,
    retries: int,
    allocator: str,
    resume: bool,
) -> None:
    """Seconds and peak memory per outer iteration of the unroll, tesla and adjoint engines."""
    try:
        step_list = [int(s) for s in _csv(steps)]
    except ValueError as e:
        raise click.BadParameter(f"--steps takes integers: {steps!r}") from e
    if iters != "auto" and not iters.isdigit():
        raise click.BadParameter(f"--iters takes auto or a positive integer, got {iters!r}.")
    results = run_benchmark(
        _csv(models, MODELS),
        step_list,
        _csv(engines, (*ENGINE_NAMES, AUTHORS)),
        iters,
        device,
        labels,
        threads,
        timeout,
        memory_fraction,
        quiet_wait=quiet_wait,
        quiet_budget=quiet_budget,
        retries=retries,
        allocator=allocator,
        previous=_load_previous(out) if resume else None,
        on_result=lambda r: save(r, out),
    )
    save(results, out)
    click.echo(write_markdown(results))
    click.echo(f"wrote {Path(out) / 'engine.json'} and {Path(out) / 'engine.md'}")


@click.command("_measure")
@click.option("--spec", required=True, help="the measurement as JSON (see engine_bench.measure).")
def _measure_cmd(spec: str) -> None:
    """One measurement in this process; prints one JSON line."""
    result = measure(json.loads(spec))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def _load_previous(out: str) -> dict[str, Any] | None:
    path = Path(out) / "engine.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise click.UsageError(f"--resume: {path} is not valid JSON ({e}); leave out --resume.") from e


def main(argv: Sequence[str] | None = None) -> None:
    """`python benchmarks/engine.py [OPTIONS]`: the benchmark; `... _measure --spec JSON`: one child."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_measure"]:
        _measure_cmd.main(args=args[1:], prog_name="engine.py _measure")
    else:
        engine.main(args=args, prog_name="engine.py")


if __name__ == "__main__":
    main()
