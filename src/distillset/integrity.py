"""Integrity of the files one stage writes and another reads: the checksum of their tensors, checks of
their values, and `verify`, the walk behind `distillset verify PATH`.

The checksum is SHA-256 (hashlib) over the tensors in the order of their names, each as its name, its
dtype, its shape and its raw bytes as stored (little-endian): `"sha256:" + 64 hex digits`. Every
safetensors file distillset writes (expert shards and their partial checkpoints, score files, the
distillation checkpoint, artifacts, samples) carries it in its header metadata under `checksum`; an
expert shard also carries one per snapshot (`checksum_rows`: the SHA-256 of each row's bytes), so that
reading one snapshot checks the bytes it reads and no others. The rest of the header's metadata (a
checkpoint's state, a score file's identity, the per-snapshot checksums) has its own SHA-256, under
`checksum_metadata`, over the other entries as JSON with sorted keys. A reader verifies before it uses
the tensors and stops with one line naming the file and what to do; a file written before checksums
were (no `checksum` key, or no `checksum_metadata`) is read without that check. SHA-256 hashes about
1.8 GB/s on one core of a CPU with SHA instructions, the NaN/Inf scan about 20 GB/s
(`benchmarks/checksum_cost.py` measures what a read costs with and without the checks).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import Tensor

from .errors import CorruptFileError, DistillsetError, FileError, InvalidValuesError, StoreError
from .utils import atomic_write, read_json

ALGORITHM = "sha256"
CHECKSUM_KEY = "checksum"
ROWS_KEY = "checksum_rows"
METADATA_KEY = "checksum_metadata"
MISMATCH = "corrupt (its tensors do not match the checksum written with them)"
METADATA_MISMATCH = "corrupt (its header's metadata does not match the checksum written with it)"
OLDER = "no checksum (written by an older version)"

# -- checksums -----------------------------------------------------------------------------------


def _raw(t: Tensor) -> memoryview:
    """The tensor's bytes as safetensors stores them (C order; the machine's byte order, little-endian on
    every platform torch supports)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def checksum(tensors: Mapping[str, Tensor]) -> str:
    """`sha256:<hex>` over every tensor in name order: name, dtype, shape, then the raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
        h.update(_raw(t))
    return f"{ALGORITHM}:{h.hexdigest()}"


def metadata_checksum(metadata: Mapping[str, str]) -> str:
    """`sha256:<hex>` over the header metadata other than the two tensor-checksum-free keys: every entry
    but `checksum` (which covers the tensors) and `checksum_metadata` (this one), as sorted-key JSON."""
    rest = {k: v for k, v in metadata.items() if k not in (CHECKSUM_KEY, METADATA_KEY)}
    text = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    return f"{ALGORITHM}:{hashlib.sha256(text.encode('utf-8', errors='surrogatepass')).hexdigest()}"


def row_checksum(row: Tensor) -> str:
    """The SHA-256 of one row's raw bytes (hex)."""
    return hashlib.sha256(_raw(row)).hexdigest()


def save(
    path: str | Path,
    tensors: dict[str, Tensor],
    metadata: dict[str, str] | None = None,
    rows: str | None = None,
) -> None:
    """Write `tensors` atomically as safetensors with their checksum in the metadata (and, with `rows`,
    the checksum of each row of that tensor)."""
    meta = dict(metadata or {})
    meta[CHECKSUM_KEY] = checksum(tensors)
    if rows is not None:
        meta[ROWS_KEY] = json.dumps([row_checksum(r) for r in tensors[rows]])
    meta[METADATA_KEY] = metadata_checksum(meta)
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def check_checksum(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str], fix: str) -> bool:
    """Stop when the tensors do not match the checksum in `metadata`; False when there is none."""
    stored = metadata.get(CHECKSUM_KEY)
    if stored is None:
        return False
    algorithm = stored.partition(":")[0]
    if algorithm != ALGORITHM:
        known = f"its checksum uses {algorithm!r}, which this version of distillset does not know"
        raise CorruptFileError(path, known, "upgrade distillset, or " + fix)
    if checksum(tensors) != stored:
        raise CorruptFileError(path, MISMATCH, fix)
    check_metadata(path, metadata, fix)
    return True


def check_metadata(path: Path, metadata: Mapping[str, str], fix: str) -> None:
    """Stop when the header's metadata does not match its own checksum (no check when it has none)."""
    if METADATA_KEY in metadata and metadata_checksum(metadata) != metadata[METADATA_KEY]:
        raise CorruptFileError(path, METADATA_MISMATCH, fix)


def row_checksums(path: Path, metadata: Mapping[str, str], rows: int, fix: str) -> list[str] | None:
    """The per-row checksums in `metadata` (None when there are none); stops when they are not `rows`."""
    text = metadata.get(ROWS_KEY)
    if text is None:
        return None
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        out = None
    if not isinstance(out, list) or len(out) != rows:
        raise CorruptFileError(path, "corrupt (its per-snapshot checksums are damaged)", fix)
    return out


def check_row(path: Path, row: Tensor, expected: str | None, what: str, fix: str) -> None:
    """Stop when `row` does not match its checksum `expected` (no check when None)."""
    if expected is not None and row_checksum(row) != expected:
        raise CorruptFileError(path, f"corrupt ({what} does not match the checksum written with it)", fix)


def read(path: str | Path, fix: str, *, verify: bool = True) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Every tensor of a safetensors file and its metadata, verified against the checksum it carries
    (`verify=False` skips that, for measuring its cost). An unreadable or corrupt file stops with
    `fix`, the one thing to do about it."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise CorruptFileError(path, f"corrupt (safetensors cannot read it: {e})", fix) from e
    except OSError as e:
        raise CorruptFileError(path, f"unreadable ({e})", fix) from e
    if verify:
        check_checksum(path, tensors, metadata, fix)
    return tensors, metadata


# -- values --------------------------------------------------------------------------------------


def nonfinite(t: Tensor, unit: str = "row") -> str | None:
    """None when every value of `t` is finite (or `t` holds no floats), else what is wrong, e.g.
    '3 NaN values (the first in row 7)'."""
    if not t.is_floating_point() or t.numel() == 0:
        return None
    lo, hi = torch.aminmax(t)  # NaN propagates, Inf is an extreme: one pass, 25x faster than isfinite
    if math.isfinite(float(lo)) and math.isfinite(float(hi)):
        return None
    finite = torch.isfinite(t)
    nan = int(torch.isnan(t).sum())
    inf = int((~finite).sum()) - nan
    counts = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "Inf")) if n)
    where = ""
    if t.dim() > 0:
        first = int(torch.nonzero(~finite.reshape(t.shape[0], -1).all(dim=1))[0])
        where = f" (the first in {unit} {first})"
    return f"{counts} value{'s' if nan + inf > 1 else ''}{where}"


PLURAL = {"images", "labels", "label_logits", "soft_labels", "latents"}


def _verb(name: str, singular: str, plural: str) -> str:
    """`name` and the verb that agrees with it: 'the trajectory holds', 'images hold'."""
    return f"{name} {plural if name.rpartition('.')[2] in PLURAL else singular}"


def check_finite(path: Path, name: str, t: Tensor, fix: str, unit: str = "row") -> None:
    """Stop when `t` holds NaN or Inf."""
    bad = nonfinite(t, unit)
    if bad is not None:
        raise InvalidValuesError(path, f"{_verb(name, 'holds', 'hold')} {bad}", fix)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_dtype(
    path: Path, name: str, dtype: torch.dtype, allowed: tuple[torch.dtype, ...], fix: str
) -> None:
    if dtype not in allowed:
        want = " or ".join(map(_dtype_name, allowed))
        raise InvalidValuesError(path, f"{_verb(name, 'is', 'are')} {_dtype_name(dtype)}, not {want}", fix)


def check_shape(path: Path, name: str, shape: Sequence[int], want: Sequence[int | None], fix: str) -> None:
    """`want` with None for any size along that dimension."""
    shape = tuple(shape)
    if len(shape) != len(want) or any(w is not None and w != n for w, n in zip(want, shape, strict=False)):
        text = " x ".join("N" if w is None else str(w) for w in want) or "a scalar"
        raise InvalidValuesError(path, f"{_verb(name, 'has', 'have')} shape {shape}, not {text}", fix)


def check_labels(path: Path, name: str, labels: Tensor, num_classes: int, fix: str) -> None:
    """Integer labels in 0..num_classes - 1."""
    check_dtype(path, name, labels.dtype, (torch.int64,), fix)
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise InvalidValuesError(
                path, f"{name} range over {lo}..{hi} but there are {num_classes} classes", fix
            )


# -- distillset verify ---------------------------------------------------------------------------


@dataclass
class Checked:
    """One checked file: `status` is ok, old (no checksum) or bad (then `problem` and `fix` say why)."""

    path: Path
    status: str
    problem: str = ""
    fix: str = ""

    def line(self) -> str:
        if self.status == "ok":
            return f"{self.path}: ok"
        if self.status == "old":
            return f"{self.path}: {OLDER}"
        return f"{self.path}: {self.problem}; {self.fix}" if self.fix else self.problem


@dataclass
class Verification:
    checked: list[Checked] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checked)

    @property
    def ok(self) -> bool:
        return self.count("bad") == 0

    def summary(self) -> str:
        n = len(self.checked)
        parts = [f"{self.count('ok')} ok"]
        if self.count("old"):
            parts.append(f"{self.count('old')} without a checksum (written by an older version)")
        parts.append(f"{self.count('bad')} bad")
        return f"{n} file{'s' if n != 1 else ''} checked: {', '.join(parts)}"


def _check(path: Path, run: Callable[[], bool]) -> Checked:
    """Run one file's check: True when its checksum was verified, False when it has none."""
    try:
        return Checked(path, "ok" if run() else "old")
    except FileError as e:
        return Checked(Path(e.path), "bad", e.problem, e.fix)
    except DistillsetError as e:  # a sentence of its own, naming the file
        return Checked(path, "bad", str(e))


def _format(directory: Path) -> str | None:
    """The format of `directory/manifest.json` (None when it has none); stops on an unreadable one."""
    path = directory / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptFileError(path, f"unreadable ({e})", "delete the directory and make it again") from e
    return manifest.get("format") if isinstance(manifest, dict) else None


def _file_fix(path: Path) -> str:
    """What to do about a bad safetensors file found by the walk, by the place it has in a run."""
    from .experts.scores import SCORES_FIX
    from .experts.store import PARTIAL_FIX, SHARD_FIX
    from .rundir import CHECKPOINT_FIX
    from .synthetic.latent_artifact import ARTIFACT_FIX

    if path.parent.name == "checkpoints":
        return CHECKPOINT_FIX
    if path.name.startswith("scores-"):
        return SCORES_FIX
    if path.name.startswith("partial-"):
        return PARTIAL_FIX
    if path.name.startswith("shard-"):
        return SHARD_FIX
    return ARTIFACT_FIX if path.name == "synthetic.safetensors" else "delete it and make it again"


def _walk(path: Path) -> Iterator[Checked]:
    from .experts.store import FORMAT as EXPERTS
    from .experts.store import RETRAIN, TrajectoryStore
    from .synthetic.artifact import FORMAT as DISTILLED
    from .synthetic.artifact import load_artifact

    if path.is_file():
        yield _check(path, lambda: CHECKSUM_KEY in read(path, _file_fix(path))[1])
        return
    try:
        kind = _format(path)
    except FileError as e:
        yield Checked(Path(e.path), "bad", e.problem, e.fix)
        return
    if kind == EXPERTS:
        try:
            store = TrajectoryStore(path)
        except StoreError as e:
            yield Checked(path / "manifest.json", "bad", str(e))
            return
        recorded = set()
        for i in store.completed:
            shard = store.shard_path(i)
            recorded.add(shard.name)
            if not shard.exists():
                yield Checked(shard, "bad", "missing (the manifest records it)", RETRAIN)
                continue
            yield _check(shard, lambda i=i: store.verify_expert(i))
        for child in sorted(path.glob("*.safetensors")):
            if child.name not in recorded:  # partial checkpoints, a shard whose record was not written
                yield from _walk(child)
        return
    if kind == DISTILLED:
        yield _check(path / "synthetic.safetensors", lambda: load_artifact(path)[1])
        return
    for child in sorted(path.iterdir()):
        if child.name.startswith(".") or child.name == "report":  # locks, temporary files; figures
            continue
        if child.is_dir() or child.suffix == ".safetensors":
            yield from _walk(child)


def verify(path: str | Path, echo: Callable[[str], None] | None = None) -> Verification:
    """Check every file a stage reads under `path` (a run directory, an expert store, an artifact, a
    D3 sub-task or one safetensors file): each checksum, and the values and manifests of expert stores
    and artifacts. `echo` receives one line per file as it is checked."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path} does not exist; name a run directory, an expert store or an artifact.")
    result = Verification()
    for checked in _walk(path):
        result.checked.append(checked)
        if echo is not None:
            echo(checked.line())
    if not result.checked:
        raise StoreError(
            f"{path} holds nothing to verify (no expert store, artifact, checkpoint or score file); "
            "name a run directory, an expert store or an artifact."
        )
    return result
