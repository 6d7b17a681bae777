"""The run report: `RUN/report/index.html`, one page that opens from the file system, with its figures.

The page shows what a run made and how: the chosen synthetic set as a grid per class in viewing space
(beside the set before any step), the matching loss, the synthetic lr, the validation accuracy with the
chosen checkpoint, the start-epoch window, the experts' accuracy curves, the evaluation beside every
baseline present, storage and compute, and the resolved config. Every number comes from the run's files;
a piece that is missing (no evaluation yet, an older run without its initial set) gives a sentence
instead of its figure.

The page needs no server and no network: the CSS is inline and every image is a PNG written beside it,
referenced by its file name. Image grids are written pixel for pixel with PIL (tile geometry in
`GridLayout`), so a grid can be cut back into the artifact's images exactly; the plots use matplotlib's
Agg canvas through `matplotlib.figure.Figure`, which leaves pyplot and the user's backend untouched.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import __version__
from .compare import cell, human_bytes
from .errors import StoreError
from .rundir import read_metrics
from .utils import atomic_write, directory_lock, generator, read_json, write_text

GRID_PAD = 2  # white pixels between tiles and around the grid
GRID_MAX_CLASSES = 10
GRID_MAX_PER_CLASS = 10
SAMPLE_DRAWS = 3  # fresh samples of every prior shown for a distributional set
FIGURES = (
    "grid-distilled.png",
    "grid-initial.png",
    "grid-final.png",
    "grid-samples.png",
    "loss.png",
    "validation.png",
    "window.png",
    "experts.png",
)


# -- image grids ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridLayout:
    """Where every tile of an `image_grid` lies.

    Row r shows class `rows[r]`; its tiles, left to right, are the images `cells[r]` (indices into the
    grid's input, in input order). Every image is upscaled by `scale` (each pixel an s x s block) to a
    `tile_height` x `tile_width` tile; `pad` white pixels separate the tiles and surround the grid, so tile
    (r, c) covers rows pad + r (tile_height + pad) ... and columns pad + c (tile_width + pad) ... (`box`).
    A row with fewer images than `columns` is white at its end.
    """

    rows: tuple[int, ...]
    cells: tuple[tuple[int, ...], ...]
    columns: int
    tile_height: int
    tile_width: int
    scale: int
    pad: int
    classes_shown: int
    classes_total: int
    most_per_class: int  # the most images any shown class has (more than `columns` when capped)

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of tile (row, col), bottom and right exclusive."""
        top = self.pad + row * (self.tile_height + self.pad)
        left = self.pad + col * (self.tile_width + self.pad)
        return top, left, top + self.tile_height, left + self.tile_width

    @property
    def height(self) -> int:
        return self.pad + len(self.rows) * (self.tile_height + self.pad)

    @property
    def width(self) -> int:
        return self.pad + self.columns * (self.tile_width + self.pad)

    @property
    def capped(self) -> bool:
        return self.classes_shown < self.classes_total or self.most_per_class > self.columns


def grid_cells(
    labels: Sequence[int], num_classes: int, max_classes: int, max_per_class: int
) -> tuple[list[int], list[list[int]], int]:
    """The classes shown (the first `max_classes`, in label order), the indices of each one's images (in
    input order, at most `max_per_class`) and the most images any shown class has."""
    rows = list(range(min(num_classes, max_classes)))
    members: dict[int, list[int]] = {c: [] for c in rows}
    for i, y in enumerate(labels):
        if int(y) in members:
            members[int(y)].append(i)
    most = max((len(m) for m in members.values()), default=0)
    return rows, [members[c][:max_per_class] for c in rows], most


def image_grid(
    pixels: Any,
    labels: Sequence[int],
    num_classes: int,
    scale: int | None = None,
    pad: int = GRID_PAD,
    max_classes: int = GRID_MAX_CLASSES,
    max_per_class: int = GRID_MAX_PER_CLASS,
) -> tuple[np.ndarray, GridLayout]:
    """A grid of uint8 images (N x C x H x W, numpy or torch) as an H' x W' x C uint8 array: one row per
    class, one column per image of the class, `pad` white pixels between tiles (see `GridLayout`).

    `scale` defaults to max(1, 64 // H), so that 8 x 8 digits are visible; images are upscaled with
    np.repeat (no resampling). Images with neither 1 nor 3 channels are shown as their channel mean.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or pixels.dtype != np.uint8:
        raise ValueError(f"image_grid wants uint8 N x C x H x W pixels, got {pixels.dtype} {pixels.shape}.")
    if pixels.shape[1] not in (1, 3):
        pixels = pixels.mean(axis=1, keepdims=True).round().astype(np.uint8)
    n, c, h, w = pixels.shape
    labels = [int(y) for y in labels]
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels.")
    scale = scale or max(1, 64 // h)
    rows, cells, most = grid_cells(labels, num_classes, max_classes, max_per_class)
    layout = GridLayout(
        rows=tuple(rows),
        cells=tuple(tuple(r) for r in cells),
        columns=max(1, min(most, max_per_class)),
        tile_height=h * scale,
        tile_width=w * scale,
        scale=scale,
        pad=pad,
        classes_shown=len(rows),
        classes_total=num_classes,
        most_per_class=most,
    )
    grid = np.full((layout.height, layout.width, c), 255, dtype=np.uint8)
    for r, row in enumerate(layout.cells):
        for col, i in enumerate(row):
            top, left, bottom, right = layout.box(r, col)
            tile = pixels[i].transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
            grid[top:bottom, left:right] = tile
    return grid, layout


def grid_image(grid: np.ndarray):  # noqa: ANN201 (a PIL image)
    """The PIL image of an `image_grid` array: grey ("L") for one channel, else RGB."""
    from .synthetic.viewing import pil_image

    return pil_image(grid)


# -- reading a run ---------------------------------------------------------------------------------------
@dataclass
class Series:
    """One distillation log: its iteration and validation records, and the chosen iteration."""

    label: str
    steps: list[dict]
    evals: list[dict]
    best: int | None = None


@dataclass
class Shown:
    """Images to draw as a grid: network-input images, their labels and the viewer's words."""

    images: Any  # N x C x H x W tensor, network-input space
    labels: list[int]
    num_classes: int
    meta: dict
    note: str = ""
    soft: bool = False  # the labels are soft labels' most likely classes


@dataclass
class Run:
    """What the report reads from a run directory; absent pieces are None, with `problems` saying why."""

    path: Path
    config: dict | None = None
    config_text: str | None = None
    chosen: Any = None
    initial: Any = None
    final: Any = None
    evaluation: dict | None = None
    series: list[Series] = field(default_factory=list)
    stores: list[tuple[str, Path, dict]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)


def _load_artifact(path: Path) -> tuple[Any, str | None]:
    from .synthetic import DistilledSet

    if not (path / "manifest.json").exists():
        return None, f"there is no {path.name}/ in the run directory"
    try:
        return DistilledSet.load(path), None
    except StoreError as e:
        return None, str(e)


def _read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    steps, evals = [], []
    for rec in read_metrics(path):
        if "it" not in rec:
            continue
        if rec.get("event") == "eval":
            evals.append(rec)
        elif "event" not in rec:
            steps.append(rec)
    return steps, evals


def _manifest(path: Path) -> dict:
    try:
        return read_json(path / "manifest.json")
    except (OSError, json.JSONDecodeError):
        return {}


def _best_of(manifest: dict) -> int | None:
    best = (manifest.get("distill") or {}).get("best_iteration")
    return int(best) if isinstance(best, int | float) else None


def _series(run: Path) -> list[Series]:
    """The run's log, or for a run of sub-tasks (D3) one log per sub-task, each with its chosen iteration."""
    if (run / "metrics.jsonl").exists():
        steps, evals = _read_metrics(run / "metrics.jsonl")
        return [Series("run", steps, evals, _best_of(_manifest(run / "distilled")))]
    out = []
    subs = sorted(
        (p for p in (run / "subtasks").glob("*") if p.name.isdigit() and (p / "metrics.jsonl").exists()),
        key=lambda p: int(p.name),
    )
    infos = {
        int(s.get("block", k)): s
        for k, s in enumerate((_manifest(run / "distilled").get("distill") or {}).get("subtasks") or [])
        if isinstance(s, dict)
    }
    for p in subs:
        steps, evals = _read_metrics(p / "metrics.jsonl")
        info = infos.get(int(p.name), {})
        classes = info.get("classes")
        label = f"sub-task {p.name}" + (f" (classes {classes[0]}-{classes[1] - 1})" if classes else "")
        best = info.get("best_iteration", _best_of(_manifest(p / "distilled")))
        out.append(Series(label, steps, evals, int(best) if best is not None else None))
    return out


def _stores(run: Path) -> list[tuple[str, Path, dict]]:
    """The expert stores a run used: RUN/experts (or the demo's shared RUN/../experts), each sub-task's
    RUN/subtasks/K/experts and D3's labelling expert RUN/label-expert."""
    found = []
    for cand in (run / "experts", run.parent / "experts"):
        if (cand / "manifest.json").exists():
            found.append(("experts", cand))
            break
    for p in sorted((run / "subtasks").glob("*/experts"), key=lambda p: p.parent.name):
        if (p / "manifest.json").exists():
            found.append((f"sub-task {p.parent.name}", p))
    if (run / "label-expert" / "manifest.json").exists():
        found.append(("labelling expert", run / "label-expert"))
    out = []
    for name, path in found:
        records = _manifest(path).get("experts")
        if isinstance(records, str):
            try:
                records = json.loads(records)
            except json.JSONDecodeError:
                records = None
        if isinstance(records, dict) and records:
            out.append((name, path, records))
    return out


def read_run(run: Path) -> Run:
    """Read everything the report shows; raises StoreError when `run` is not a run directory."""
    run = Path(run).resolve()
    if not run.is_dir():
        raise StoreError(
            f"{run} is not a run directory; give the directory of `distillset run PRESET --out DIR`."
        )
    if (
        not (run / "distilled").is_dir()
        and not (run / "metrics.jsonl").exists()
        and not (run / "subtasks").is_dir()
    ):
        raise StoreError(
            f"{run} holds neither a distilled set (distilled/) nor a distillation log (metrics.jsonl); "
            "give the directory of `distillset run PRESET --out DIR` once its distillation has started."
        )
    out = Run(run)
    if (run / "config.yaml").exists():
        out.config_text = (run / "config.yaml").read_text(errors="replace")
        try:
            loaded = yaml.safe_load(out.config_text)
            out.config = loaded if isinstance(loaded, dict) else None
        except yaml.YAMLError as e:
            out.problems["config"] = f"config.yaml is unreadable ({e})"
    else:
        out.problems["config"] = "there is no config.yaml in the run directory"
    for name, attr in (
        ("distilled", "chosen"),
        ("distilled-initial", "initial"),
        ("distilled-final", "final"),
    ):
        art, why = _load_artifact(run / name)
        setattr(out, attr, art)
        if why:
            out.problems[attr] = why
    if (run / "evaluation.json").exists():
        try:
            out.evaluation = read_json(run / "evaluation.json")
        except (OSError, json.JSONDecodeError) as e:
            out.problems["evaluation"] = f"evaluation.json is unreadable ({e})"
    else:
        out.problems["evaluation"] = "the run has no evaluation.json (it was not evaluated)"
    out.series = _series(run)
    out.stores = _stores(run)
    return out


# -- what to show ----------------------------------------------------------------------------------------
def _viewable(art: Any) -> Shown:
    """An artifact's images to show: its images, or a distributional set's decoded means."""
    if art.kind == "distributional":
        # a prior's class is its place (lpc per class), whatever its soft label says
        return Shown(art.means(), art.hard_labels.tolist(), art.num_classes, art.meta, "decoded means")
    n, ipc = int(art.images.shape[0]), int(art.meta.get("ipc") or 0)
    if art.label_kind == "soft" and ipc and n == ipc * art.num_classes:
        # a soft-label set is class-major (ipc images per class): a row is the class an image was made for
        return Shown(art.images, [i // ipc for i in range(n)], art.num_classes, art.meta, "", True)
    return Shown(art.images, art.hard_labels.tolist(), art.num_classes, art.meta, "", False)


def _subtask_initial(run: Path) -> Shown | None:
    """A run of sub-tasks keeps each block's initial set in RUN/subtasks/K/distilled-initial: their
    images with the blocks' class offsets, when every sub-task has one."""
    import torch

    from .synthetic import DistilledSet

    manifest = _manifest(run / "distilled")
    infos = (manifest.get("distill") or {}).get("subtasks") or []
    if not infos:
        return None
    images, labels = [], []
    for k, info in enumerate(infos):
        path = run / "subtasks" / str(info.get("block", k)) / "distilled-initial"
        try:
            art = DistilledSet.load(path)
        except StoreError:
            return None
        shown = _viewable(art)
        images.append(shown.images)
        labels += [info["classes"][0] + y for y in shown.labels]
    meta = {k: v for k, v in manifest.items() if k in ("preprocessing", "config", "dataset", "class_names")}
    num_classes = int(manifest.get("num_classes", max(labels) + 1))
    return Shown(torch.cat(images), labels, num_classes, meta, "each sub-task's initial set, merged")


@dataclass
class ReportFigure:
    """A PNG of the report, with its caption, or a sentence when it could not be made."""

    file: str | None
    caption: str
    width: int | None = None
    height: int | None = None
    row_labels: list[str] | None = None
    pad: int = 0
    tile_height: int = 0


class Writer:
    """Writes the report's PNGs into one directory, atomically, and remembers what it wrote."""

    def __init__(self, out: Path):
        self.out = out
        self.written: set[str] = set()

    def save_png(self, name: str, save) -> None:  # noqa: ANN001 (a callable that writes PNG to a file)
        atomic_write(self.out / name, save)
        self.written.add(name)

    def grid(self, name: str, shown: Shown, root: str | None, what: str) -> ReportFigure:
        from .synthetic.viewing import viewer_for

        viewer = viewer_for(shown.meta, root)
        # view only the images shown (the same selection `image_grid` makes on all of them)
        rows, cells, most = grid_cells(shown.labels, shown.num_classes, GRID_MAX_CLASSES, GRID_MAX_PER_CLASS)
        idx = [i for row in cells for i in row]
        pix = viewer.pixels(shown.images[idx]).numpy()
        grid, layout = image_grid(pix, [shown.labels[i] for i in idx], shown.num_classes)
        self.save_png(name, lambda p: grid_image(grid).save(p, format="PNG"))
        names = list(shown.meta.get("class_names") or [])
        row_labels = [str(names[c]) if c < len(names) else str(c) for c in rows]
        by = (
            " (the class an image was distilled for; its soft label may favour another)" if shown.soft else ""
        )
        caption = (
            f"{what}: one row per class{by}, the images of a class in the artifact's order; pixels "
            f"{viewer.how}, each drawn {layout.scale} x {layout.scale}."
        )
        if layout.classes_shown < layout.classes_total or most > GRID_MAX_PER_CLASS:
            caption += (
                f" Showing the first {layout.classes_shown} of {layout.classes_total} classes and at most "
                f"{GRID_MAX_PER_CLASS} images of each (the largest class has {most})."
            )
        if not viewer.exact:
            caption += " These are not the exact pixels: they are scaled per image for viewing."
        return ReportFigure(
            name, caption, layout.width, layout.height, row_labels, layout.pad, layout.tile_height
        )


def _figure(width: float, height: float):  # noqa: ANN202 (a matplotlib Figure)
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height), dpi=100, layout="constrained")


def _panels(n: int, width: float, height: float, per_row: int = 3):  # noqa: ANN202
    """A figure of n panels, at most `per_row` a row; the axes in reading order, the unused ones hidden."""
    cols, rows = min(n, per_row), math.ceil(n / per_row)
    fig = _figure(width * cols, height * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _axes_style(ax, ylabel: str | None = None, xlabel: str = "iteration") -> None:  # noqa: ANN001
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _save_plot(writer: Writer, name: str, fig) -> tuple[int, int]:  # noqa: ANN001
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    data = buf.getvalue()
    writer.save_png(name, lambda p: p.write_bytes(data))
    w, h = fig.get_size_inches() * fig.dpi
    return int(round(w)), int(round(h))


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _loss_figure(writer: Writer, series: list[Series]) -> ReportFigure:
    keys = [k for k in ("loss", "syn_lr") if any(k in r for s in series for r in s.steps)]
    if not keys:
        return ReportFigure(None, "The distillation log records no matching loss or synthetic lr.")
    fig = _figure(5.0 * len(keys), 3.2)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    titles = {"loss": "matching loss", "syn_lr": "synthetic lr"}
    for ax, key in zip(axes, keys, strict=True):
        for s in series:
            recs = [r for r in s.steps if key in r]
            ax.plot([r["it"] for r in recs], [_num(r[key]) for r in recs], marker=".", label=s.label)
            if key == "loss" and any(r.get("skipped") for r in recs):
                skip = [r for r in recs if r.get("skipped")]
                ax.plot(
                    [r["it"] for r in skip],
                    [_num(r[key]) for r in skip],
                    "x",
                    color="red",
                    label="skipped (above the threshold)" if s is series[0] else None,
                )
        ax.set_title(titles[key])
        _axes_style(ax)
        if len(series) > 1 or (key == "loss" and any(r.get("skipped") for s in series for r in s.steps)):
            ax.legend(fontsize="small")
    skipped = sum(bool(r.get("skipped")) for s in series for r in s.steps)
    size = _save_plot(writer, "loss.png", fig)
    caption = " and ".join(titles[k] for k in keys).capitalize() + " at every distillation iteration"
    caption += (
        f" (from metrics.jsonl; the {skipped} iteration(s) whose loss was above the threshold, and so not "
        "applied, are crossed)."
        if skipped
        else " (from metrics.jsonl)."
    )
    return ReportFigure("loss.png", caption, *size)


def _validation_figure(writer: Writer, series: list[Series]) -> ReportFigure:
    if not any(s.evals for s in series):
        return ReportFigure(None, "The distillation log records no validation check.")
    fig = _figure(6.0, 3.4)
    ax = fig.subplots()
    notes = []
    for s in series:
        recs = [r for r in s.evals if "val_acc" in r]
        (line,) = ax.plot(
            [r["it"] for r in recs], [100 * _num(r["val_acc"]) for r in recs], marker="o", label=s.label
        )
        chosen = [r for r in recs if r["it"] == s.best]
        if chosen:
            y = 100 * _num(chosen[0]["val_acc"])
            ax.plot([s.best], [y], marker="*", markersize=16, color=line.get_color(), markeredgecolor="black")
            ax.annotate(f"chosen: {s.best}", (s.best, y), textcoords="offset points", xytext=(6, 6))
            notes.append(f"{s.label}: " * (len(series) > 1) + f"iteration {s.best}, {y:.2f}%")
        elif s.best is not None:
            ax.axvline(s.best, color=line.get_color(), linestyle=":")
            notes.append(f"{s.label}: " * (len(series) > 1) + f"iteration {s.best}")
    _axes_style(ax, "validation accuracy (%)")
    if len(series) > 1:
        ax.legend(fontsize="small")
    size = _save_plot(writer, "validation.png", fig)
    caption = "Validation accuracy of the synthetic set at each check (after that many iterations)"
    caption += (
        "; the star marks the chosen checkpoint (" + "; ".join(notes) + ")."
        if notes
        else "; the manifest names no chosen checkpoint."
    )
    return ReportFigure("validation.png", caption, *size)


def _window_figure(writer: Writer, series: list[Series]) -> ReportFigure | None:
    if not any("window" in r or "start_epoch" in r for s in series for r in s.steps):
        return None  # objectives without expert trajectories have no start epochs
    fig, axes = _panels(len(series), 6.0, 3.4)
    for ax, s in zip(axes, series, strict=False):
        win = [r for r in s.steps if isinstance(r.get("window"), list) and len(r["window"]) == 2]
        if win:
            ax.fill_between(
                [r["it"] for r in win],
                [_num(r["window"][0]) for r in win],
                [_num(r["window"][1]) for r in win],
                alpha=0.25,
                label="window [lo, hi)",
            )
        starts = [r for r in s.steps if "start_epoch" in r]
        ax.plot(
            [r["it"] for r in starts],
            [_num(r["start_epoch"]) for r in starts],
            linestyle="none",
            marker=".",
            color="C0",
            label="start epoch",
        )
        if len(series) > 1:
            ax.set_title(s.label)
        _axes_style(ax, "expert epoch")
        ax.legend(fontsize="small")
    size = _save_plot(writer, "window.png", fig)
    return ReportFigure(
        "window.png",
        "The start-epoch window at each iteration (shaded: the expert epochs [lo, hi) that matching may "
        "start from, from the log) and the start epoch drawn (dots).",
        *size,
    )


def _experts_figure(writer: Writer, stores: list[tuple[str, Path, dict]]) -> ReportFigure | None:
    if not stores:
        return None
    fig, axes = _panels(len(stores), 5.0, 3.4)
    counts = []
    for ax, (name, _path, records) in zip(axes, stores, strict=False):
        keys = sorted(records, key=lambda k: int(k) if str(k).isdigit() else 0)
        for i, k in enumerate(keys):
            rec = records[k] if isinstance(records[k], dict) else {}
            color = f"C{i % 10}"
            label = f"expert {k}" if len(keys) <= 10 else None
            for key, style in (("val_acc", "-"), ("train_acc", "--")):
                ys = [100 * _num(v) for v in rec.get(key) or []]
                if ys:
                    ax.plot(
                        range(1, len(ys) + 1),
                        ys,
                        style,
                        color=color,
                        label=label if key == "val_acc" else None,
                    )
        ax.set_title(name)
        _axes_style(ax, "accuracy (%)", "epoch")
        if len(keys) <= 10:
            ax.legend(fontsize="x-small")
        counts.append(f"{len(keys)} in {name}")
    size = _save_plot(writer, "experts.png", fig)
    where = ", ".join(str(p) for _n, p, _r in stores)
    return ReportFigure(
        "experts.png",
        "The experts' accuracy after each training epoch: validation solid, training dashed, one colour "
        f"per expert (experts: {', '.join(counts)}; from {where}).",
        *size,
    )


# -- the evaluation ----------------------------------------------------------------------------------------
def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    e = html.escape
    out = [f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [f"<th>{e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _evaluation_html(ev: dict) -> str:
    from .evaluate import result_columns

    try:
        cols = result_columns(ev)
    except (KeyError, TypeError, AttributeError) as e:
        return (
            f"<p class='missing'>evaluation.json is incomplete ({html.escape(repr(e))}); evaluate again.</p>"
        )
    models = list(dict.fromkeys(m for _h, res in cols for m in res))
    rows = [[m, *(cell(res.get(m)) for _h, res in cols)] for m in models]
    runs = [len((ev.get("results") or {}).get(m, {}).get("runs") or []) for m in models]
    parts = [_table(["architecture", *(h for h, _r in cols)], rows, "num")]
    nets = f"{max(runs)} fresh network(s)" if runs and max(runs) else "fresh networks"
    selection = (ev.get("protocol") or {}).get("checkpoint_selection", "validation")
    parts.append(
        f"<p class='note'>Test accuracy (%), mean ± std over {html.escape(nets)} per architecture; "
        f"each network's checkpoint chosen on {html.escape(str(selection))}.</p>"
    )
    dd = ev.get("ddranking")
    if isinstance(dd, dict) and isinstance(dd.get("models"), dict):
        dd_rows = []
        for m, s in dd["models"].items():

            def score(key: str, points: bool, s: dict = s) -> str:
                v = s.get(key) if isinstance(s, dict) else None
                if not isinstance(v, dict) or "mean" not in v:
                    return ""
                f = 100 if points else 1
                return f"{f * _num(v['mean']):.2f} ± {f * _num(v.get('std', 0.0)):.2f}"

            dd_rows.append(
                [m, score("hlr", True), score("ior", True), score("lrs", False), score("ars", False)]
            )
        parts.append("<h3>DD-Ranking scores</h3>")
        parts.append(_table(["architecture", "HLR (points)", "IOR (points)", "LRS", "ARS"], dd_rows, "num"))
        parts.append(
            f"<p class='note'>HLR and IOR are accuracy differences in points; LRS and ARS lie in [0, 100] "
            f"(w = {html.escape(str(dd.get('w')))}, gamma = {html.escape(str(dd.get('gamma')))}).</p>"
        )
    notes = ev.get("notes")
    if isinstance(notes, list) and notes:
        parts.append(
            "<ul class='note'>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>"
        )
    return "".join(parts)


def _storage_html(storage: dict, baseline: dict | None, baseline_ipc: Any) -> str:
    cols = [("distilled set", storage)]
    if isinstance(baseline, dict):
        cols.append((f"random real (IPC {baseline_ipc})", baseline))
    parts = list(dict.fromkeys(p for _h, s in cols for p in (s.get("bytes") or {}) if p != "total"))
    rows = []
    for p in [*parts, "total"]:
        rows.append([f"{p} (bytes)", *(str((s.get("bytes") or {}).get(p, "")) for _h, s in cols)])
    rows.append(["total", *(human_bytes((s.get("bytes") or {}).get("total")) for _h, s in cols)])
    rows.append(["floats", *(str(s.get("floats", "")) for _h, s in cols)])
    rows.append(
        [
            "IPC-equivalents",
            *(f"{_num(s['ipc_equivalent']):.4g}" if "ipc_equivalent" in s else "" for _h, s in cols),
        ]
    )
    return _table(["storage", *(h for h, _s in cols)], rows, "num")


def _compute_html(compute: dict, lr: Any) -> str:
    rows = [[k.replace("_", " "), f"{_num(v):.2f}"] for k, v in compute.items() if isinstance(v, int | float)]
    if isinstance(lr, dict):
        rows += [
            [f"evaluation lr ({k.replace('_', ' ')})", f"{_num(v):.6g}"]
            for k, v in lr.items()
            if v is not None
        ]
    elif lr is not None:
        rows.append(["lr", f"{_num(lr):.6g}"])
    if not rows:
        return "<p>The run records no compute.</p>"
    return _table(["compute", "value"], rows, "num")


# -- the page -----------------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.header dt { font-weight: 600; }
dl.header dd { margin: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; }
table.num td { text-align: right; font-variant-numeric: tabular-nums; }
table.num td:first-child { text-align: left; }
figure { margin: 1em 0; }
figure > img { max-width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 0.92em; max-width: 60em; }
.side { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
.gridbox { display: flex; align-items: flex-start; overflow-x: auto; }
.gridbox img { image-rendering: pixelated; }
.rowlabels { font-size: 0.8em; width: 7.5em; flex: none; padding-right: 0.4em; }
.rowlabels div { display: flex; align-items: center; justify-content: flex-end; overflow: hidden;
                 white-space: nowrap; }
.missing { color: #8a5a00; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _figure_html(fig: ReportFigure) -> str:
    e = html.escape
    if fig.file is None:
        return f"<p class='missing'>{e(fig.caption)}</p>"
    size = f' width="{fig.width}" height="{fig.height}"' if fig.width and fig.height else ""
    img = f'<img src="{e(fig.file)}"{size} alt="{e(fig.caption)}">'
    if fig.row_labels is not None:
        labels = "".join(
            f'<div style="height: {fig.tile_height}px; margin-top: {fig.pad}px">{e(name)}</div>'
            for name in fig.row_labels
        )
        img = f'<div class="gridbox"><div class="rowlabels">{labels}</div>{img}</div>'
        # as wide as the grid and its labels (captions wrap below it, so grids can stand side by side)
        return (
            f'<figure style="width: max(calc({fig.width}px + 6.5em), 22em)">{img}'
            f"<figcaption>{e(fig.caption)}</figcaption></figure>"
        )
    return f"<figure>{img}<figcaption>{e(fig.caption)}</figcaption></figure>"


def _header_html(run: Run) -> str:
    art = run.chosen
    meta = art.meta if art is not None else {}
    cfg = run.config or {}
    ev = run.evaluation or {}
    method = meta.get("method") or cfg.get("method") or ev.get("method") or "unknown"
    dataset = (meta.get("dataset") or {}).get("name") or (cfg.get("data") or {}).get("name") or "unknown"
    ipc = meta.get("ipc", (cfg.get("data") or {}).get("ipc", ev.get("ipc", "unknown")))
    rows = [("method", str(method)), ("dataset", str(dataset)), ("IPC", str(ipc))]
    if art is not None and art.kind == "distributional":
        rows.append(("priors", f"{art.num_priors} ({art.lpc} per class)"))
        rows.append(("IPC-equivalents (storage)", f"{art.storage()['ipc_equivalent']:.2f}"))
    if art is not None:
        rows.append(("label kind", art.label_kind))
        rows.append(("kind", art.kind))
    rows.append(("run directory", str(run.path)))
    rows.append(("report made", datetime.now().astimezone().isoformat(timespec="seconds")))
    rows.append(("distillset version", __version__))
    e = html.escape
    items = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows)
    return f"<h1>{e(str(method))} on {e(str(dataset))}</h1><dl class='header'>{items}</dl>"


def _sets_html(run: Run, writer: Writer, root: str | None) -> str:
    """The chosen set as a grid, beside the initial (and the last, when it differs) set; a distributional
    set's fresh samples as a second grid."""
    e = html.escape
    if run.chosen is None:
        return f"<p class='missing'>No synthetic set to show: {e(run.problems.get('chosen', ''))}.</p>"
    chosen = _viewable(run.chosen)
    best = _best_of(_manifest(run.path / "distilled"))
    what = "The chosen set" + (f" (iteration {best})" if best is not None else "")
    if chosen.note:
        what += f", {chosen.note}"
    panels = []
    initial = _viewable(run.initial) if run.initial is not None else _subtask_initial(run.path)
    if initial is not None:
        panels.append(
            writer.grid(
                "grid-initial.png",
                initial,
                root,
                "The set before any step" + (f", {initial.note}" if initial.note else ""),
            )
        )
    panels.append(writer.grid("grid-distilled.png", chosen, root, what))
    if run.final is not None and not _same(run.final, run.chosen):
        final = _viewable(run.final)
        panels.append(
            writer.grid(
                "grid-final.png", final, root, "The last set" + (f", {final.note}" if final.note else "")
            )
        )
    parts = ["<div class='side'>", *(_figure_html(f) for f in panels), "</div>"]
    if initial is None:
        parts.append(
            "<p class='missing'>The run keeps no set from before the first step (distilled-initial/ is "
            "missing: older runs did not write it), so the chosen set is shown alone.</p>"
        )
    elif best == 0:
        parts.append("<p class='note'>The chosen set is the one of iteration 0: the set before any step.</p>")
    if run.chosen.kind == "distributional":
        draws = run.chosen.samples(generator(0, "report"), SAMPLE_DRAWS)  # draws x N x C x H x W
        n = draws.shape[1]
        flat = draws.transpose(0, 1).reshape(n * SAMPLE_DRAWS, *draws.shape[2:])  # prior-major
        labels = [y for y in chosen.labels for _ in range(SAMPLE_DRAWS)]
        shown = Shown(flat, labels, chosen.num_classes, chosen.meta, "", chosen.soft)
        fig = writer.grid(
            "grid-samples.png",
            shown,
            root,
            f"Fresh samples of the chosen set, {SAMPLE_DRAWS} of every prior (prior by prior, seed fixed)",
        )
        parts.append(_figure_html(fig))
    return "".join(parts)


def _same(a: Any, b: Any) -> bool:
    import torch

    if a.kind != b.kind:
        return False
    if a.kind == "distributional":
        ta, tb = a.tensors(), b.tensors()
        return set(ta) == set(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    return a.images.shape == b.images.shape and torch.equal(a.images, b.images)


def _evaluation_section(run: Run) -> str:
    e = html.escape
    ev = run.evaluation
    parts = ["<h2>Evaluation</h2>"]
    if ev is None:
        fix = f"distillset evaluate {run.path / 'distilled'} --save {run.path / 'evaluation.json'}"
        parts.append(
            f"<p class='missing'>No evaluation: {e(run.problems.get('evaluation', ''))}. "
            f"Make one with <code>{e(fix)}</code>.</p>"
        )
    else:
        parts.append(_evaluation_html(ev))
    parts.append("<h3>Storage</h3>")
    storage = (ev or {}).get("storage") or (run.chosen.storage() if run.chosen is not None else None)
    if isinstance(storage, dict):
        parts.append(
            _storage_html(
                storage, (ev or {}).get("random_baseline_storage"), (ev or {}).get("random_baseline_ipc")
            )
        )
        parts.append(
            "<p class='note'>Bytes of each stored part; IPC-equivalents are the stored floats over those of "
            "one real image per class.</p>"
        )
    else:
        parts.append("<p class='missing'>No storage to show: there is no distilled set.</p>")
    parts.append("<h3>Compute and lr</h3>")
    compute = (
        (ev or {}).get("compute") or (run.chosen.meta.get("compute") if run.chosen is not None else {}) or {}
    )
    lr = (ev or {}).get("lr")
    if lr is None and run.chosen is not None:
        lr = run.chosen.lr
    parts.append(_compute_html(compute, lr))
    protocol = (ev or {}).get("protocol")
    if isinstance(protocol, dict):
        rows = [[k, json.dumps(v)] for k, v in protocol.items()]
        parts.append(
            f"<details><summary>Evaluation protocol</summary>{_table(['setting', 'value'], rows)}</details>"
        )
    return "".join(parts)


def write_report(run: Path, *, root: str | None = None) -> Path:
    """Write `RUN/report/index.html` and its PNG figures; return the page's path.

    `root` is where the dataset lies on this machine, if not where the run was made (used only to
    invert ZCA for viewing). Raises StoreError when `run` is not a run directory, or while another
    process writes it (the report would mix its old and new files).
    """
    if not Path(run).is_dir():
        read_run(Path(run))  # stops: not a run directory (and none is made)
    with directory_lock(run, "report"):
        return _write_report(run, root)


def _write_report(run: Path, root: str | None) -> Path:
    state = read_run(Path(run))
    run = state.path
    out = run / "report"
    out.mkdir(parents=True, exist_ok=True)
    writer = Writer(out)
    e = html.escape
    body = [_header_html(state)]

    body.append("<h2>The synthetic set</h2>")
    body.append(_sets_html(state, writer, root))

    body.append("<h2>Distillation</h2>")
    if state.series:
        figs = [_loss_figure(writer, state.series), _validation_figure(writer, state.series)]
        window = _window_figure(writer, state.series)
        if window is not None:
            figs.append(window)
        body += [_figure_html(f) for f in figs]
    else:
        body.append("<p class='missing'>The run has no distillation log (metrics.jsonl).</p>")

    body.append("<h2>Experts</h2>")
    experts = _experts_figure(writer, state.stores)
    if experts is not None:
        body.append(_figure_html(experts))
    else:
        body.append(
            "<p class='missing'>No expert trajectories found (looked in RUN/experts, RUN/../experts, "
            "RUN/subtasks/*/experts and RUN/label-expert); objectives without experts have none.</p>"
        )

    body.append(_evaluation_section(state))

    body.append("<h2>Resolved config</h2>")
    if state.config_text is not None:
        body.append(f"<pre>{e(state.config_text)}</pre>")
    else:
        body.append(f"<p class='missing'>No config to show: {e(state.problems.get('config', ''))}.</p>")

    title = f"distillset report: {run.name}"
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    for name in FIGURES:  # figures of an earlier report that this one did not make
        if name not in writer.written:
            (out / name).unlink(missing_ok=True)
    index = out / "index.html"
    write_text(index, page)
    return index
