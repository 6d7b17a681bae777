"""Compare evaluated runs: one table row per run (accuracy beside its baselines, storage, compute) and one
plot of accuracy against storage.

Each entry is a run directory (its `evaluation.json`, and `distilled/manifest.json` for the dataset and the
label kind) or an artifact directory (`manifest.json` + `synthetic.safetensors`) whose evaluation lies in
`evaluation.json` beside the manifest or in its parent (the run directory of `RUN/distilled`). Every number
is read from those files; an entry that was never evaluated is refused.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .baseline import CORESET_METHODS
from .errors import StoreError
from .utils import atomic_write, read_json, write_json, write_text

CORESET_NAMES = {"herding": "herding", "kcenter": "k-center"}


def cell(summary: Any, plus: str = "±") -> str:
    """An accuracy summary {"mean", "std"} (fractions) as 'mean ± std' in percent, 2 decimals; blank when
    absent."""
    if not isinstance(summary, dict) or "mean" not in summary:
        return ""
    return f"{100 * float(summary['mean']):.2f} {plus} {100 * float(summary.get('std', 0.0)):.2f}"


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB' (binary units; whole bytes below 1 KiB); blank when unknown."""
    if n is None:
        return ""
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{int(v)} B" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return ""  # unreachable


@dataclass
class Entry:
    """One compared run: where it is, its evaluation and the manifest of its artifact."""

    name: str
    path: Path
    evaluation: dict
    manifest: dict

    @property
    def kind(self) -> str:
        return str(self.evaluation.get("kind") or self.manifest.get("kind") or "images")

    @property
    def method(self) -> str:
        return str(self.evaluation.get("method") or self.manifest.get("method") or "")

    @property
    def dataset(self) -> str:
        return str((self.manifest.get("dataset") or {}).get("name") or "")

    @property
    def storage(self) -> dict:
        return self.evaluation.get("storage") or self.manifest.get("storage") or {}

    @property
    def ipc_equivalent(self) -> float | None:
        v = self.storage.get("ipc_equivalent")
        return float(v) if isinstance(v, int | float) else None

    @property
    def ipc_text(self) -> str:
        """The IPC, or for a distributional set its IPC-equivalents."""
        if self.kind == "distributional" and self.ipc_equivalent is not None:
            return f"{self.ipc_equivalent:.2f} IPC-eq."
        return str(self.evaluation.get("ipc", self.manifest.get("ipc", "")))

    @property
    def label_kind(self) -> str:
        return str(self.evaluation.get("label_kind") or self.manifest.get("label_kind") or "")

    @property
    def total_bytes(self) -> int | None:
        v = (self.storage.get("bytes") or {}).get("total")
        return int(v) if isinstance(v, int | float) else None

    @property
    def distill_seconds(self) -> float | None:
        compute = self.evaluation.get("compute") or self.manifest.get("compute") or {}
        v = compute.get("distill_seconds")
        return float(v) if isinstance(v, int | float) else None

    def results(self, what: str) -> dict:
        """{model: summary} of the distilled set ("results"), a baseline ("random_baseline",
        "soft_random_baseline") or a coreset ("herding", "kcenter"); empty when absent."""
        ev = self.evaluation
        found = (ev.get("baselines") or {}).get(what) if what in CORESET_METHODS else ev.get(what)
        return found if isinstance(found, dict) else {}


def _read_json(path: Path, what: str) -> dict:
    try:
        data = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"{path} is unreadable ({e}); make the {what} again.") from e
    if not isinstance(data, dict):
        raise StoreError(f"{path} is not a distillset {what}; make it again.")
    return data


def _not_evaluated(path: Path, artifact: bool, other: Path | None = None) -> StoreError:
    """The error for an entry without its evaluation, with the command that makes one."""
    why = (
        f" ({other} is the evaluation of another artifact)" if other is not None else " (no evaluation.json)"
    )
    fix = (
        f"`distillset evaluate {path} --save {path / 'evaluation.json'}`"
        if artifact
        else f"`distillset evaluate {path / 'distilled'} --save {path / 'evaluation.json'}`"
    )
    return StoreError(
        f"{path} has no evaluation{why}; evaluate it with {fix}, or make an evaluated run with "
        "`distillset run PRESET --out DIR`."
    )


def load_entry(path: Path) -> tuple[Path, dict, dict]:
    """(the entry's directory, its evaluation, its artifact's manifest) for a run or artifact directory."""
    path = Path(path)
    if not path.is_dir():
        raise StoreError(
            f"{path} is not a directory; give run directories (`distillset run`) or artifact directories."
        )
    if (path / "manifest.json").exists() and (path / "synthetic.safetensors").exists():  # an artifact
        manifest = _read_json(path / "manifest.json", "artifact")
        other = None
        for cand in (path / "evaluation.json", path.parent / "evaluation.json"):
            if not cand.exists():
                continue
            ev = _read_json(cand, "evaluation")
            made_for = ev.get("artifact")
            # the run directory's evaluation is that of RUN/distilled, not of RUN/distilled-final
            if cand.parent == path or made_for is None or Path(str(made_for)).name == path.name:
                return path, ev, manifest
            other = cand
        raise _not_evaluated(path, True, other)
    if not (path / "evaluation.json").exists():
        if (path / "distilled").is_dir() or (path / "config.yaml").exists():
            raise _not_evaluated(path, False)
        raise StoreError(
            f"{path} is neither a run directory nor an artifact directory (manifest.json + "
            "synthetic.safetensors); give the directory of `distillset run PRESET --out DIR`."
        )
    ev = _read_json(path / "evaluation.json", "evaluation")
    manifest = {}
    if (path / "distilled" / "manifest.json").exists():
        manifest = _read_json(path / "distilled" / "manifest.json", "artifact")
    elif (path / "config.yaml").exists():  # no artifact at hand: the dataset from the config
        try:
            cfg = yaml.safe_load((path / "config.yaml").read_text(errors="replace")) or {}
            manifest = {"dataset": {"name": (cfg.get("data") or {}).get("name")}}
        except (yaml.YAMLError, AttributeError):
            manifest = {}
    return path, ev, manifest


def unique_names(paths: list[Path]) -> list[str]:
    """Each directory's name, with as many parent directories as make it unique ('a/distilled' beside
    'b/distilled'); the same directory given twice gets ' (2)'."""
    parts = [Path(p).resolve().parts for p in paths]
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        sources: dict[str, set] = {}
        for n, p in zip(names, parts, strict=True):
            sources.setdefault(n, set()).add(p)
        # lengthen the names that different directories share (never up to the file system's root)
        grow = [i for i, n in enumerate(names) if len(sources[n]) > 1 and depth[i] < len(parts[i]) - 1]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


@dataclass
class Comparison:
    """The rows of a comparison, one per entry, and their renderings (text, Markdown, HTML, a plot)."""

    entries: list[Entry]

    @property
    def models(self) -> list[str]:
        """The architectures of any entry, in the order they first appear."""
        return list(dict.fromkeys(m for e in self.entries for m in e.results("results")))

    def _baselines(self) -> list[tuple[str, str]]:
        """The baseline columns some entry has: (key, words)."""
        present = [("random_baseline", "random real")]
        present += [("soft_random_baseline", "random real, soft labels")]
        present += [(m, CORESET_NAMES[m]) for m in CORESET_METHODS]
        return [(k, words) for k, words in present if any(e.results(k) for e in self.entries)]

    def columns(self) -> list[str]:
        cols = ["name", "method", "dataset", "IPC", "labels"]
        cols += [f"{m} (%)" for m in self.models]
        for _k, words in self._baselines():
            cols += [f"{words} {m} (%)" for m in self.models]
        return [*cols, "storage", "IPC-equivalents", "distill (s)"]

    def rows(self, plus: str = "±") -> list[list[str]]:
        """The table's cells, as strings, one list per entry (in the order of `columns`)."""
        out = []
        for e in self.entries:
            row = [e.name, e.method, e.dataset, e.ipc_text, e.label_kind]
            row += [cell(e.results("results").get(m), plus) for m in self.models]
            for k, _words in self._baselines():
                row += [cell(e.results(k).get(m), plus) for m in self.models]
            ipc_eq = e.ipc_equivalent
            seconds = e.distill_seconds
            row += [
                human_bytes(e.total_bytes),
                f"{ipc_eq:.2f}" if ipc_eq is not None else "",
                f"{seconds:.2f}" if seconds is not None else "",
            ]
            out.append(row)
        return out

    def to_text(self) -> str:
        """A plain table for the terminal (' | ' separated, like the evaluation's)."""
        cols = self.columns()
        lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
        lines += [" | ".join(r) for r in self.rows(plus="+-")]
        lines.append(
            "test accuracy (%), mean +- std over fresh networks; storage in bytes and IPC-equivalents."
        )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        cols = self.columns()
        lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in self.rows()]
        lines += [
            "",
            "Test accuracy (%), mean ± std over fresh networks; storage in bytes and IPC-equivalents.",
        ]
        return "\n".join(lines) + "\n"

    def records(self) -> list[dict]:
        """The rows as numbers (for compare.json): every value as read from the entries' files."""
        return [
            {
                "name": e.name,
                "path": str(e.path),
                "method": e.method,
                "dataset": e.dataset,
                "kind": e.kind,
                "ipc": e.evaluation.get("ipc", e.manifest.get("ipc")),
                "ipc_equivalent": e.ipc_equivalent,
                "label_kind": e.label_kind,
                "results": {m: _mean_std(s) for m, s in e.results("results").items()},
                **{k: {m: _mean_std(s) for m, s in e.results(k).items()} for k, _w in self._baselines()},
                "random_baseline_ipc": e.evaluation.get("random_baseline_ipc"),
                "random_baseline_ipc_equivalent": _baseline_ipc_eq(e),
                "storage_bytes": e.total_bytes,
                "distill_seconds": e.distill_seconds,
            }
            for e in self.entries
        ]

    def figure(self):  # noqa: ANN201 (a matplotlib Figure)
        """Accuracy on the first architecture (± std) against storage in IPC-equivalents (log x), one
        filled point per entry, the baselines as hollow markers."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.0, 4.5), dpi=100, layout="constrained")
        ax = fig.subplots()
        model = self.models[0] if self.models else None
        markers = {"random_baseline": "s", "soft_random_baseline": "^", "herding": "D", "kcenter": "v"}
        shown: set[str] = set()
        for i, e in enumerate(self.entries):
            color = f"C{i % 10}"
            s = e.results("results").get(model)
            x = e.ipc_equivalent
            if s is None or x is None or x <= 0:
                continue
            ax.errorbar(
                [x],
                [100 * s["mean"]],
                yerr=[100 * s.get("std", 0.0)],
                fmt="o",
                color=color,
                capsize=3,
            )
            shown.add("distilled")
            ax.annotate(e.name, (x, 100 * s["mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
            for key, _words in self._baselines():
                b = e.results(key).get(model)
                # the soft-label baseline stores what the distilled set stores; the others, real images
                bx = x if key == "soft_random_baseline" else _baseline_ipc_eq(e)
                if b is None or bx is None or bx <= 0:
                    continue
                ax.errorbar(
                    [bx],
                    [100 * b["mean"]],
                    yerr=[100 * b.get("std", 0.0)],
                    fmt=markers.get(key, "s"),
                    mfc="none",
                    color=color,
                    capsize=3,
                )
                shown.add(key)
        ax.set_xscale("log")
        ax.set_xlabel("storage (IPC-equivalents, log scale)")
        ax.set_ylabel(f"test accuracy on {model} (%)" if model else "test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
        if shown:  # one legend entry per marker, in black: the colours tell the entries apart
            from matplotlib.lines import Line2D

            words = dict(self._baselines())
            handles = [Line2D([], [], marker="o", color="black", linestyle="none", label="distilled")] * (
                "distilled" in shown
            )
            handles += [
                Line2D([], [], marker=markers[k], color="black", mfc="none", linestyle="none", label=words[k])
                for k in markers
                if k in shown
            ]
            ax.legend(handles=handles, fontsize="small")
        return fig

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()

    def plot(self, path: str | Path) -> Path:
        """Write the accuracy-against-storage plot as a PNG."""
        data = self.png()
        atomic_write(path, lambda p: p.write_bytes(data))
        return Path(path)

    def to_html(self, png: bytes | None = None) -> str:
        """A page that needs nothing else: the table and the plot (embedded as a data URI)."""
        e = html.escape
        png = self.png() if png is None else png
        head = "".join(f"<th>{e(c)}</th>" for c in self.columns())
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in self.rows())
        img = base64.b64encode(png).decode("ascii")
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>distillset comparison"
            f"</title><style>{CSS}</style></head><body>\n<h1>Comparison</h1>\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
            "<p class='note'>Test accuracy (%), mean ± std over fresh networks; storage in bytes and "
            "IPC-equivalents (stored floats over those of one real image per class).</p>\n"
            f"<figure><img src='data:image/png;base64,{img}' alt='accuracy against storage'>"
            "<figcaption>Accuracy on the first architecture against storage: filled points are the "
            "distilled sets, hollow markers their baselines.</figcaption></figure>\n</body></html>\n"
        )

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write compare.md, compare.html, compare.png and compare.json into `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        png = self.png()
        paths = {
            "markdown": out / "compare.md",
            "html": out / "compare.html",
            "png": out / "compare.png",
            "json": out / "compare.json",
        }
        write_text(paths["markdown"], self.to_markdown())
        atomic_write(paths["png"], lambda p: p.write_bytes(png))
        write_text(paths["html"], self.to_html(png))
        write_json(paths["json"], {"columns": self.columns(), "rows": self.records()})
        return paths


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; }
td { text-align: right; font-variant-numeric: tabular-nums; }
td:nth-child(-n+5) { text-align: left; }
p.note, figcaption { color: #555; font-size: 0.92em; }
"""


def _mean_std(s: Any) -> dict | None:
    if not isinstance(s, dict) or "mean" not in s:
        return None
    return {"mean": s["mean"], "std": s.get("std", 0.0)}


def _baseline_ipc_eq(e: Entry) -> float | None:
    """The random-real baseline's storage in IPC-equivalents (its own record, else its IPC)."""
    st = e.evaluation.get("random_baseline_storage") or {}
    v = st.get("ipc_equivalent", e.evaluation.get("random_baseline_ipc"))
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def compare(paths: list[Path]) -> Comparison:
    """A comparison of evaluated runs or artifacts (see the module's docstring); raises StoreError for
    an entry that is missing or was never evaluated."""
    if not paths:
        raise StoreError("give at least one run or artifact directory to compare.")
    loaded = [load_entry(Path(p)) for p in paths]
    names = unique_names([p for p, _e, _m in loaded])
    return Comparison([Entry(n, p, ev, m) for n, (p, ev, m) in zip(names, loaded, strict=True)])
