"""What made a result: the command line, the commit, the date and a hash of the library's own code.

Every benchmark results file records it, and a benchmark that finds earlier work in its run directory
compares the code hash before it reuses anything: a result made by other library code is recomputed or
shown as stale, never tabulated as if it were current. The hash covers the package's source files only
(not the docs, the tests or the benchmark scripts), so a commit that changes nothing the results depend
on keeps earlier work valid.
"""

from __future__ import annotations

import datetime
import hashlib
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parent
SOURCE_SUFFIXES = (".py", ".yaml")


def code_hash(root: Path = PACKAGE) -> str:
    """A digest of every source file of the package (relative path and bytes), 16 hex digits."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(cwd: Path = PACKAGE) -> dict:
    """The checkout's commit and whether the library or the benchmark scripts have uncommitted changes
    (results files, which benchmarks write, do not count); None outside a git checkout, e.g. for an
    installed wheel."""
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"commit": None, "dirty": None}
    top = Path(_git("rev-parse", "--show-toplevel", cwd=cwd) or cwd)
    changed = _git(
        "status", "--porcelain", "--", "src", "benchmarks", ":(exclude)benchmarks/results", cwd=top
    )
    return {"commit": commit, "dirty": bool(changed)}


def provenance(argv: list[str] | None = None) -> dict:
    """This process as the maker of a result: its command line, commit, date, code hash and machine."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(".py"):
        argv[0] = _relative(argv[0])
    return {
        "command": " ".join(shlex.quote(a) for a in ["python", *argv]),
        **git_state(),
        "code": code_hash(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def _relative(script: str) -> str:
    path = Path(script).resolve()
    top = _git("rev-parse", "--show-toplevel", cwd=path.parent)
    try:
        return path.relative_to(top).as_posix() if top else script
    except ValueError:
        return script


def made_by_other_code(recorded: dict | None, current: dict) -> bool:
    """True when `recorded` (a provenance, or None for work that predates provenance) is not `current`'s
    library code."""
    return recorded is None or recorded.get("code") != current["code"]


def describe(recorded: dict | None) -> str:
    """'commit abc1234 (2026-12-01)' for people; what made a piece of work."""
    if recorded is None:
        return "code from before provenance was recorded"
    commit = (recorded.get("commit") or "an unknown commit")[:7]
    dirty = " with uncommitted changes" if recorded.get("dirty") else ""
    return f"commit {commit}{dirty} ({recorded.get('date', '?')[:10]}, code {recorded.get('code')})"
