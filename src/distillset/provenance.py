"""What made a result: the command line, the commit, the date and a hash of the library's own code.

Every benchmark results file records it, and a benchmark that finds earlier work in its run directory
compares the code hash before it reuses anything: a result made by other library code is recomputed or
shown as stale, never tabulated as if it were current. The hash covers what the package's source files
do (not their docstrings, comments or layout, nor the docs, the tests or the benchmark scripts), so a
commit that changes nothing the results depend on keeps earlier work valid.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import io
import json
import platform
import shlex
import subprocess
import sys
import tokenize
from pathlib import Path

import torch
import yaml

PACKAGE = Path(__file__).resolve().parent
SOURCE_SUFFIXES = (".py", ".yaml")


def code_hash(root: Path = PACKAGE) -> str:
    """A digest of what every source file of the package does (relative path and `behaviour`), 16 hex
    digits: editing a docstring, a comment or the layout keeps it, so earlier results stay valid."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(behaviour(path) + b"\0")
    return h.hexdigest()[:16]


def behaviour(path: Path) -> bytes:
    """A source file without what only documents it: a Python file's lines without its docstrings,
    comments, blank lines and trailing spaces; a YAML file's parsed content. A file that does not parse
    counts as its bytes. The same on every Python version (it uses line and column positions only)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
        if path.suffix == ".yaml":
            return json.dumps(yaml.safe_load(text), sort_keys=True, default=str).encode()
        return _without_docs(text).encode()
    except (UnicodeDecodeError, SyntaxError, tokenize.TokenError, yaml.YAMLError, IndentationError):
        return raw


def _without_docs(source: str) -> str:
    lines = source.splitlines()
    encoded = [line.encode() for line in lines]  # ast's columns count UTF-8 bytes
    scopes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    drop: set[int] = set()  # 0-based lines wholly taken by a docstring
    for node in ast.walk(ast.parse(source)):
        first = node.body[0] if isinstance(node, scopes) and node.body else None
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)):
            continue
        if not isinstance(first.value.value, str) or first.end_lineno is None:
            continue
        start, end = first.lineno - 1, first.end_lineno - 1
        before, after = encoded[start][: first.col_offset], encoded[end][first.end_col_offset or 0 :]
        if not before.strip() and not after.strip():
            drop.update(range(start, end + 1))
    cut: dict[int, int] = {}  # 0-based line -> the column its comment starts at
    inside: set[int] = set()  # the lines a multi-line string continues on: kept as they are
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            cut[tok.start[0] - 1] = tok.start[1]
        elif tok.end[0] > tok.start[0]:
            inside.update(range(tok.start[0], tok.end[0]))
    kept = []
    for n, line in enumerate(lines):
        if n in inside and n not in drop:
            kept.append(line)
        elif n not in drop and line[: cut.get(n, len(line))].strip():
            kept.append(line[: cut.get(n, len(line))].rstrip())
    return "\n".join(kept)


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
