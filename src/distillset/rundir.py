"""The run directory's files that the distillation loop keeps: its resumable checkpoint and the metrics log.

checkpoints/distill.safetensors   the synthetic set, its optimisers' state and the best set so far,
                                  with the run's identity and position in the metadata (atomic writes)
metrics.jsonl                     one JSON object per iteration, and one per validation check
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import Tensor

from .errors import StoreError
from .utils import atomic_write, write_text

CHECKPOINT = "distill.safetensors"
CHECKPOINT_FORMAT = "distillset.distill-checkpoint/1"


def write_checkpoint(path: Path, tensors: dict[str, Tensor], state: dict) -> None:
    meta = {"format": CHECKPOINT_FORMAT, "state": json.dumps(state)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict] | None:
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise StoreError(f"{path} is unreadable ({e}); delete it to start distillation afresh.") from e
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(
            f"{path} is not a distillset distillation checkpoint; delete it or use another --out."
        )
    return tensors, json.loads(meta["state"])


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics log, in order; a line cut short by an interruption is left out."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def trim_metrics(path: Path, next_it: int) -> None:
    """Drop records logged after the checkpoint, so a resumed run's log equals an uninterrupted one's."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the interruption
        # An eval record carries the number of iterations done, an iteration record its index.
        if rec.get("it", 0) < next_it + (rec.get("event") == "eval"):
            keep.append(line)
    write_text(path, "".join(f"{line}\n" for line in keep))
