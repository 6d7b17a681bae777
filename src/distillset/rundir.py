"""The run directory's files that the distillation loop keeps: its resumable checkpoint and the metrics log.

checkpoints/distill.safetensors   the synthetic set, its optimisers' state and the best set so far,
                                  with the run's identity, position and checksum in the metadata
                                  (atomic writes; a corrupt checkpoint is refused, never resumed from)
metrics.jsonl                     one JSON object per iteration, and one per validation check
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from . import integrity
from .errors import CorruptFileError, StoreError
from .utils import write_text

CHECKPOINT = "distill.safetensors"
CHECKPOINT_FORMAT = "distillset.distill-checkpoint/1"
CHECKPOINT_FIX = (
    "delete it to start the distillation afresh (the experts are kept), or put back a good copy to resume"
)


def write_checkpoint(path: Path, tensors: dict[str, Tensor], state: dict) -> None:
    integrity.save(path, tensors, {"format": CHECKPOINT_FORMAT, "state": json.dumps(state)})


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict] | None:
    """The checkpoint's tensors and state (None when there is none); a corrupt one stops the run: resuming
    from it would continue from damaged state, and starting afresh would discard it unasked."""
    if not path.exists():
        return None
    tensors, meta = integrity.read(path, CHECKPOINT_FIX)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(
            f"{path} is not a distillset distillation checkpoint; delete it or use another --out."
        )
    try:
        state = json.loads(meta["state"])
    except (KeyError, json.JSONDecodeError):
        state = None
    if not isinstance(state, dict):
        raise CorruptFileError(path, "corrupt (its header holds no readable state)", CHECKPOINT_FIX)
    return tensors, state


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics log, in order; a line cut short by an interruption is left out."""
    records = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
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
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the interruption
        # An eval record carries the number of iterations done, an iteration record its index.
        if rec.get("it", 0) < next_it + (rec.get("event") == "eval"):
            keep.append(line)
    write_text(path, "".join(f"{line}\n" for line in keep))
