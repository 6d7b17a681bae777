"""The `distillset` command: presets, experts, scores, distill, run, baseline, evaluate, verify, demo.

Bad input (an unknown key, a missing data file, a store made for another setting, a run directory that
another process is writing, a full disk) prints one line naming the cause and the fix, and exits with
status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import click

from .config import Config, list_presets, load_config
from .errors import ConfigError, DistillsetError
from .utils import directory_lock, resolve_device, write_json


def _split_items(items: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """Separate the optional preset/YAML (the one item without '=') from the key=value overrides."""
    sources = [i for i in items if "=" not in i]
    if len(sources) > 1:
        raise ConfigError(f"give at most one preset or YAML file, got {', '.join(map(repr, sources))}.")
    return (sources[0] if sources else None), [i for i in items if "=" in i]


def _resolve(items: tuple[str, ...], extra: list[str] = ()) -> tuple[str | None, Config]:
    source, overrides = _split_items(items)
    return source, load_config(source, [*overrides, *extra])


def _run_dir(out: str | None, source: str | None) -> Path:
    name = Path(source).stem if source else "default"
    return Path(out) if out else Path("runs") / name


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="distillset")
def cli() -> None:
    """Dataset distillation: condense a training set into a few synthetic images per class."""


@cli.command()
@click.argument("name", required=False)
def presets(name: str | None) -> None:
    """List the presets, or print one preset's fully resolved config."""
    if name:
        click.echo(load_config(name).to_yaml(), nl=False)
        return
    table = list_presets()
    width = max(map(len, table))
    for preset, desc in table.items():
        click.echo(f"{preset:<{width}}  {desc}")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("items", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<preset>).")
def experts(items: tuple[str, ...], out: str | None) -> None:
    """Train expert trajectories: distillset experts [PRESET_OR_YAML] [key=value ...]."""
    from .experts.train import train_experts
    from .objectives import objective_class
    from .pipeline import write_config

    source, cfg = _resolve(items)
    if objective_class(cfg.distill.objective).subtasks:
        raise DistillsetError(
            f"distill.objective={cfg.distill.objective} trains its experts per class block (sub-task) "
            "inside `distillset run`; run that instead."
        )
    run = _run_dir(out, source)
    with directory_lock(run, "experts"):
        write_config(run, cfg, overwrite=False)
        store = train_experts(cfg, run / "experts")
        write_config(run, cfg, overwrite=True)
    click.echo(f"{store.summary()}.")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("items", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<preset>).")
def scores(items: tuple[str, ...], out: str | None) -> None:
    """Difficulty scores for PAD's data selection: distillset scores [PRESET_OR_YAML] [key=value ...].

    Computed into OUT/scores (one file per setting); an interrupted computation continues.
    """
    from .data.prepared import prepare
    from .experts.scores import compute_scores
    from .pipeline import interruptible, write_config

    source, cfg = _resolve(items)
    run = _run_dir(out, source)
    with directory_lock(run, "scores"):
        data = prepare(cfg.data, resolve_device(cfg.device))
        write_config(run, cfg, overwrite=False)
        result = interruptible(lambda: compute_scores(cfg, data, run / "scores"), run)
        write_config(run, cfg, overwrite=True)
    plural = "s" if result.num_models != 1 else ""
    click.echo(f"difficulty scores of {result.num_models} network{plural} in {result.path}:")
    for line in result.summary_lines():
        click.echo(line)


def _prepare_run(items: tuple[str, ...], out: str | None) -> tuple[Config, Path]:
    from .pipeline import check

    source, cfg = _resolve(items)
    if cfg.method == "random":
        raise ConfigError(
            "this config's method is random: nothing to distil. Name a distillation preset "
            "(e.g. datm-digits) or set method=... with a distill section."
        )
    check(cfg)  # before any experts are trained
    return cfg, _run_dir(out, source)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("items", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<preset>).")
@click.option(
    "--experts", "experts_dir", type=click.Path(file_okay=False), help="Expert store (default OUT/experts)."
)
def distill(items: tuple[str, ...], out: str | None, experts_dir: str | None) -> None:
    """Distil (from existing experts, for objectives that need them): distillset distill PRESET_OR_YAML
    [key=value ...] [--out DIR]."""
    from .pipeline import run_pipeline

    cfg, run = _prepare_run(items, out)
    run_pipeline(cfg, run, experts_dir=experts_dir, train_experts=False, evaluate_set=False, echo=click.echo)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("items", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (default runs/<preset>).")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as one JSON object.")
def run(items: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Experts -> distill -> evaluate in one run directory: distillset run PRESET_OR_YAML [key=value ...].

    Experts already in the run directory that match the config are reused; an interrupted run continues.
    """
    from .evaluate import format_report
    from .pipeline import run_pipeline

    cfg, run_dir = _prepare_run(items, out)
    progress = not as_json or sys.stderr.isatty()
    result = run_pipeline(cfg, run_dir, progress=progress, echo=None if as_json else click.echo)
    click.echo(json.dumps(result.report) if as_json else format_report(result.report))
    if not as_json:
        click.echo(f"report: {result.page} (open it in a browser)")


@cli.group()
def baseline() -> None:
    """Baseline artifacts in the distilled-set format, for comparisons."""


@baseline.command("random", context_settings={"ignore_unknown_options": True})
@click.argument("items", nargs=-1)
@click.option("--ipc", type=int, required=True, help="Images per class.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Artifact directory to write.")
def baseline_random(items: tuple[str, ...], ipc: int, out: str) -> None:
    """Random real images per class: distillset baseline random --ipc K --out DIR [PRESET] [key=value ...]."""
    from .baseline import random_subset
    from .data.prepared import prepare

    _, cfg = _resolve(items, [f"data.ipc={ipc}"])
    data = prepare(cfg.data, resolve_device(cfg.device))
    path = random_subset(cfg, data).save(out)
    click.echo(f"random-real artifact (IPC {ipc}, {data.dataset.name}) written to {path}")


def _coreset_baseline(method: str, items: tuple[str, ...], ipc: int, out: str) -> None:
    from .baseline import coreset_subset, features_description
    from .data.prepared import prepare

    _, cfg = _resolve(items, [f"data.ipc={ipc}"])
    data = prepare(cfg.data, resolve_device(cfg.device))
    path = coreset_subset(cfg, data, method).save(out)
    click.echo(
        f"{method} artifact (IPC {ipc}, {data.dataset.name}; features: {features_description(cfg)}) "
        f"written to {path}"
    )


@baseline.command("herding", context_settings={"ignore_unknown_options": True})
@click.argument("items", nargs=-1)
@click.option("--ipc", type=int, required=True, help="Images per class.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Artifact directory to write.")
def baseline_herding(items: tuple[str, ...], ipc: int, out: str) -> None:
    """Herding coreset: distillset baseline herding --ipc K --out DIR [PRESET] [key=value ...].

    Per class, greedily add the real image that brings the running mean of the selection closest to the
    class mean; the features are those of one `model` trained `eval.full_data_epochs` epochs on all data.
    """
    _coreset_baseline("herding", items, ipc, out)


@baseline.command("kcenter", context_settings={"ignore_unknown_options": True})
@click.argument("items", nargs=-1)
@click.option("--ipc", type=int, required=True, help="Images per class.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Artifact directory to write.")
def baseline_kcenter(items: tuple[str, ...], ipc: int, out: str) -> None:
    """K-center coreset: distillset baseline kcenter --ipc K --out DIR [PRESET] [key=value ...].

    Per class, start from the image nearest the class mean, then greedily add the image farthest from
    its nearest selected image; the features are those of `baseline herding`.
    """
    _coreset_baseline("kcenter", items, ipc, out)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("artifact", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option(
    "--models", help="Comma-separated architectures, e.g. convnet,resnet18 (default: the config's)."
)
@click.option("--runs", type=int, help="Fresh networks per architecture.")
@click.option("--root", help="Where the dataset lies on this machine, if not where the artifact was made.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the command-line contract).")
@click.option("--save", type=click.Path(dir_okay=False), help="Also write the JSON report to this file.")
def evaluate(
    artifact: str,
    overrides: tuple[str, ...],
    models: str | None,
    runs: int | None,
    root: str | None,
    as_json: bool,
    save: str | None,
) -> None:
    """Train fresh networks on an artifact; report test accuracy beside the random-real baseline."""
    from .config import apply_overrides, validate
    from .evaluate import evaluate as run_eval
    from .evaluate import format_report
    from .synthetic import DistilledSet

    # an artifact inside a run directory (RUN/distilled): not while another process writes that run
    run_dir = Path(artifact).resolve().parent
    in_run = (run_dir / "config.yaml").is_file() and os.access(run_dir, os.W_OK)
    with directory_lock(run_dir, "evaluate") if in_run else contextlib.nullcontext():
        art = DistilledSet.load(artifact)
        extra = list(overrides)
        if models:
            extra.append(f"eval.models={models}")
        if runs:
            extra.append(f"eval.runs={runs}")
        if root:
            extra.append(f"data.root={root}")
        # where the artifact was made (its executor) does not follow it: the default unless overridden
        # (an artifact without a config is refused by the evaluation, which needs its data section)
        made = {k: v for k, v in (art.meta.get("config") or {}).items() if k != "executor"}
        cfg = validate(apply_overrides(made, extra))
        report = run_eval(art, cfg, artifact_path=artifact, progress=not as_json or sys.stderr.isatty())
        if save:
            write_json(save, report)
    click.echo(json.dumps(report) if as_json else format_report(report))


@cli.command()
@click.argument("artifact", type=click.Path())
@click.option("--n", "n", type=int, default=1, show_default=True, help="Fresh samples of every prior.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the samples.")
def sample(artifact: str, n: int, out: str, seed: int) -> None:
    """Materialise a distributional (D3) artifact: every prior's decoded mean and N fresh samples of it,
    as OUT/samples.safetensors (images in the network's input space, labels) and PNGs per class."""
    from .synthetic import DistilledSet
    from .synthetic.samples import write_samples

    if n < 0:
        raise click.UsageError("--n must be at least 0.")
    art = DistilledSet.load(artifact)
    if art.kind != "distributional":
        raise DistillsetError(
            f"{artifact} holds images already (kind {art.kind}); there is nothing to sample."
        )
    count = write_samples(art, n, Path(out), seed)
    click.echo(f"{count} images ({art.num_priors} means and {n} sample(s) of each prior) written to {out}")


@cli.command("import", context_settings={"ignore_unknown_options": True})
@click.argument("src", type=click.Path())
@click.argument("items", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Artifact directory to write.")
@click.option("--method", help="The method that made the set, for the manifest (default: imported).")
@click.option(
    "--space",
    type=click.Choice(["network", "pixel"]),
    default="network",
    show_default=True,
    help="network: the images are already the network's input (the authors' files); pixel: [0, 1] images.",
)
@click.option("--which", default="best", show_default=True, help="best, or an iteration IT (images_IT.pt).")
def import_cmd(
    src: str, items: tuple[str, ...], out: str, method: str | None, space: str, which: str
) -> None:
    """Import another tool's distilled set (MTT, DATM, PAD, DD-Ranking .pt files) as an artifact:
    distillset import SRC --out DIR [PRESET_OR_YAML] [key=value ...].

    SRC is the folder with images_best.pt (labels_best.pt, lr_best.pt), the run folder holding Normal/,
    DD-Ranking's folder (images.pt, labels.pt, lr.pt) or an images file; the config names the dataset.
    """
    from .data.prepared import prepare
    from .interop import describe_import, import_authors

    _, cfg = _resolve(items)
    data = prepare(cfg.data, resolve_device(cfg.device))
    art = import_authors(Path(src), cfg, data, method=method, space=space, which=which)
    path = art.save(out)
    click.echo(f"imported {describe_import(art)} from {src}; artifact written to {path}")


@cli.command("export")
@click.argument("artifact", type=click.Path())
@click.option(
    "--format", "fmt", type=click.Choice(["imagefolder", "npz", "ddranking"]), required=True, help="Format."
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="A new or empty directory.")
@click.option("--samples", type=int, default=0, show_default=True, help="Fresh samples of every prior (D3).")
def export_cmd(artifact: str, fmt: str, out: str, samples: int) -> None:
    """Export an artifact for other tools: PNGs per class (imagefolder), an .npz dataset (npz), or
    DD-Ranking's images.pt, labels.pt and lr.pt (ddranking)."""
    from .interop import describe_export, export_artifact
    from .synthetic import DistilledSet

    art = DistilledSet.load(artifact)
    paths = export_artifact(art, Path(out), fmt, samples=samples)
    click.echo(describe_export(art, fmt, out, paths, samples))


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--root", help="Where the dataset lies on this machine, if not where the run was made (ZCA).")
def report(run_dir: str, root: str | None) -> None:
    """Write RUN/report/index.html: the synthetic set, the distillation's curves, the experts, the
    evaluation beside its baselines and the config, as one page that opens without a server."""
    from .report import write_report

    t0 = time.perf_counter()
    path = write_report(Path(run_dir), root=root)
    click.echo(f"report written to {path} ({time.perf_counter() - t0:.1f} s)")


@cli.command("compare")
@click.argument("entries", metavar="RUN_OR_ARTIFACT...", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out", type=click.Path(file_okay=False), default="compare", show_default=True, help="Where to write."
)
def compare_cmd(entries: tuple[str, ...], out: str) -> None:
    """Compare evaluated runs or artifacts: one row each (accuracy, baselines, storage, compute), written
    as OUT/compare.md, .html, .png (accuracy against storage) and .json."""
    from .compare import compare

    comparison = compare([Path(e) for e in entries])
    click.echo(comparison.to_text())
    paths = comparison.write(Path(out))
    click.echo(f"comparison written to {', '.join(str(p) for p in paths.values())}")


@cli.command()
@click.argument("path", metavar="RUN_OR_ARTIFACT", type=click.Path())
def verify(path: str) -> None:
    """Check every file a stage reads under a run directory, an expert store, an artifact or one file:
    the checksums, and the values and manifests of stores and artifacts. One line per file; exit status
    0 when all are good, 2 otherwise."""
    from .integrity import verify as verify_path

    result = verify_path(Path(path), echo=click.echo)
    click.echo(result.summary())
    if not result.ok:
        first = next(c for c in result.checked if c.status == "bad")
        bad = result.count("bad")
        raise DistillsetError(f"{bad} bad file{'s' if bad > 1 else ''} under {path}, the first {first.path}.")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--quick", is_flag=True, help="A smaller run (seconds), for smoke tests.")
def demo(out: str, quick: bool) -> None:
    """The embedded end-to-end job on scikit-learn digits."""
    from .demo import run_demo

    t0 = time.perf_counter()
    run_demo(Path(out), quick=quick, echo=click.echo)
    click.echo(f"done in {time.perf_counter() - t0:.0f} s; outputs in {Path(out).resolve()}")


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, standalone_mode=False)
    except DistillsetError as e:
        _echo_err(f"error: {e}")
        sys.exit(2)
    except click.exceptions.Abort:
        _echo_err("aborted.")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except FloatingPointError as e:
        _echo_err(f"error: {e}")
        sys.exit(1)
    except OSError as e:  # a full disk, a directory without write permission, ...: one line as well
        where = f" ({e.filename})" if e.filename else ""
        _echo_err(f"error: {e.strerror or e}{where}; check the path, its permissions and the free space.")
        sys.exit(2)
