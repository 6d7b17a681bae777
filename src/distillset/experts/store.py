"""The trajectory store: expert parameter snapshots in sharded safetensors files plus `manifest.json`.

Layout of `experts/`:
  manifest.json             identity (model, data, preprocessing, hyper-parameters), layout, records
  shard-00000.safetensors   expert 0: `trajectory`, (train_epochs + 1) x P flat parameters (fp32 or bf16)
  partial-00003.safetensors the expert in training: snapshots so far + optimiser and generator state

One expert per shard: a finished expert is never rewritten, and resuming is a matter of listing shards.

Every shard carries the checksum of its trajectory and one per snapshot (integrity.py); a read verifies
the bytes it reads and refuses a trajectory with NaN or Inf, or whose dtype, width (`num_params`) or
number of snapshots (`train_epochs + 1`) is not the manifest's. A shard written before checksums were is
read without the checksum check.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open
from torch import Tensor

from .. import integrity
from ..errors import CorruptFileError, InvalidValuesError, StoreError
from ..errors import short_repr as _short
from ..identity import mismatch
from ..utils import read_json, write_json

FORMAT = "distillset.experts/1"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
RETRAIN = (
    "run the same `distillset experts` (or `distillset run`) command again, which trains that expert afresh"
)
SHARD_FIX = f"delete it and {RETRAIN}"
PARTIAL_FIX = "delete it: the expert in training then starts again from its first epoch"
MANIFEST_FIX = "delete the experts directory and train again"
HISTORY = ("train_loss", "train_acc", "val_acc", "seconds", "lr")  # per-epoch lists in each record


def _count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _numbers(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )


class TrajectoryStore:
    """Read and append expert trajectories in one directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        if not self.manifest_path.exists():
            raise StoreError(
                f"{self.root} holds no expert trajectories (no manifest.json); train them with "
                "`distillset experts CONFIG --out DIR`."
            )
        try:
            self.manifest = read_json(self.manifest_path)
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(
                f"{self.manifest_path} is unreadable ({e}); delete the experts directory and train again."
            ) from e
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise StoreError(f"{self.manifest_path} is not a distillset trajectory store ({FORMAT}).")
        self._check_manifest()

    def _check_manifest(self) -> None:
        """Stop at the first field the readers use that has the wrong type or an impossible value (a hand
        edit, a file of another program): one line naming the field."""
        m, fix = self.manifest, MANIFEST_FIX

        def bad(what: str) -> InvalidValuesError:
            return InvalidValuesError(self.manifest_path, what, fix)

        identity, experts = m.get("identity"), m.get("experts")
        if not isinstance(identity, dict) or not isinstance(identity.get("experts"), dict):
            raise bad("its identity is not a mapping with the experts' settings")
        if identity["experts"].get("dtype") not in DTYPES:
            dtype = _short(identity["experts"].get("dtype"))
            raise bad(f"its experts' dtype is {dtype}, not one of {sorted(DTYPES)}")
        if not _count(m.get("num_params"), 1):
            raise bad(f"its num_params is {_short(m.get('num_params'))}, not a positive count")
        if "train_epochs" in m and not _count(m["train_epochs"], 0):
            raise bad(f"its train_epochs is {_short(m['train_epochs'])}, not a count of epochs")
        if not isinstance(experts, dict):
            raise bad(f"its experts are {_short(experts)}, not a mapping of expert records")
        for key, record in experts.items():
            if not (key.isdecimal() and key.isascii()) or not isinstance(record, dict):
                raise bad(f"its expert {_short(key)} is not a numbered expert record")
            for name in HISTORY:
                if name in record and not _numbers(record[name]):
                    raise bad(f"expert {key}'s {name} is {_short(record[name])}, not a list of numbers")

    @classmethod
    def open_or_create(cls, root: str | Path, identity: dict, info: dict) -> TrajectoryStore:
        """Open the store at `root` if it was made with the same identity, else create it.

        A store made with another model, dataset, preprocessing or recipe stops with the first difference.
        """
        existing = cls.check_compatible(root, identity)
        if existing is not None:
            return existing
        root = Path(root)
        identity = json.loads(json.dumps(identity))  # stored as JSON: tuples become lists
        root.mkdir(parents=True, exist_ok=True)
        write_json(root / "manifest.json", {"format": FORMAT, "identity": identity, **info, "experts": {}})
        return cls(root)

    @classmethod
    def check_compatible(cls, root: str | Path, identity: dict) -> TrajectoryStore | None:
        """The store at `root` if one exists (None if not); stops if it was made with another identity."""
        root = Path(root)
        if not (root / "manifest.json").exists():
            return None
        store = cls(root)
        diff = mismatch(store.manifest["identity"], identity)
        if diff:
            raise StoreError(
                f"the experts in {root} were made with another setting: {diff}; use "
                "another output directory or delete that one."
            )
        return store

    # -- manifest --------------------------------------------------------------------------------

    @property
    def identity(self) -> dict:
        return self.manifest["identity"]

    @property
    def num_params(self) -> int:
        return int(self.manifest["num_params"])

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype of the snapshots."""
        return DTYPES[self.identity["experts"]["dtype"]]

    @property
    def completed(self) -> list[int]:
        return sorted(int(i) for i in self.manifest["experts"])

    def __len__(self) -> int:
        return len(self.manifest["experts"])

    def summary(self) -> str:
        """One line for people: how many experts, where, and their final validation accuracy."""
        last = [self.record(i)["val_acc"][-1] for i in self.completed if self.record(i).get("val_acc")]
        if not last:
            return f"no experts in {self.root}"
        span = f"{100 * last[0]:.1f}%" if len(last) == 1 else f"{100 * min(last):.1f}-{100 * max(last):.1f}%"
        plural = "s" if len(last) != 1 else ""
        return f"{len(last)} expert{plural} in {self.root} (final validation accuracy {span})"

    def record(self, i: int) -> dict:
        return self.manifest["experts"][str(i)]

    def shard_path(self, i: int) -> Path:
        return self.root / f"shard-{i:05d}.safetensors"

    def partial_path(self, i: int) -> Path:
        return self.root / f"partial-{i:05d}.safetensors"

    # -- writing ---------------------------------------------------------------------------------

    def write_expert(self, i: int, trajectory: Tensor, record: dict) -> None:
        """Store a finished expert: the shard first, then the manifest entry (the commit point)."""
        traj = trajectory.detach().to("cpu", self.dtype).contiguous()
        integrity.save(self.shard_path(i), {"trajectory": traj}, rows="trajectory")
        self.manifest["experts"][str(i)] = {"shard": self.shard_path(i).name, **record}
        write_json(self.manifest_path, self.manifest)
        self.partial_path(i).unlink(missing_ok=True)

    def write_partial(self, i: int, tensors: dict[str, Tensor], meta: dict) -> None:
        cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        integrity.save(self.partial_path(i), cpu, {"meta": json.dumps(meta)})

    def read_partial(self, i: int) -> tuple[dict[str, Tensor], dict] | None:
        """Expert i's partial checkpoint, or None. It is only a shortcut: an unreadable or corrupt one is
        deleted (with a warning) and the expert starts again from its first epoch."""
        path = self.partial_path(i)
        if not path.exists():
            return None
        try:
            tensors, metadata = integrity.read(path, PARTIAL_FIX)
            return tensors, json.loads(metadata["meta"])
        except (CorruptFileError, KeyError, json.JSONDecodeError) as e:
            warnings.warn(
                f"training expert {i} from its first epoch: {path} is unusable ({e}).", stacklevel=2
            )
            path.unlink(missing_ok=True)
            return None

    # -- reading ---------------------------------------------------------------------------------

    def _check(self, i: int) -> Path:
        if str(i) not in self.manifest["experts"]:
            raise StoreError(f"expert {i} is not in {self.root} (it holds {self.completed}).")
        path = self.shard_path(i)
        if not path.exists():
            raise StoreError(f"{path} is missing; {RETRAIN}.")
        return path

    def _check_layout(self, path: Path, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
        """The stored trajectory's dtype and shape against the manifest: (train_epochs + 1) x num_params."""
        integrity.check_dtype(path, "the trajectory", dtype, (self.dtype,), SHARD_FIX)
        epochs = self.manifest.get("train_epochs")
        snapshots = None if epochs is None else int(epochs) + 1
        integrity.check_shape(path, "the trajectory", shape, (snapshots, self.num_params), SHARD_FIX)

    def _read(self, i: int, verify: bool = True) -> tuple[Tensor, dict[str, str], bool]:
        """Expert i's stored trajectory and the shard's metadata, verified: its checksum (True when it had
        one), layout and values."""
        path = self._check(i)
        tensors, metadata = integrity.read(path, SHARD_FIX, verify=False)
        traj = tensors.get("trajectory")
        if traj is None:
            raise CorruptFileError(path, "corrupt (it holds no trajectory)", SHARD_FIX)
        checked = verify and integrity.check_checksum(path, tensors, metadata, SHARD_FIX)
        if verify:
            self._check_layout(path, traj.dtype, tuple(traj.shape))
            integrity.check_finite(path, "the trajectory", traj, SHARD_FIX, unit="snapshot")
        return traj, metadata, checked

    def verify_expert(self, i: int) -> bool:
        """Check expert i's shard whole: its checksum, its per-snapshot checksums, its layout and values;
        True when it carries checksums (False: written by an older version, checked for the rest)."""
        traj, metadata, checked = self._read(i)
        path = self.shard_path(i)
        rows = integrity.row_checksums(path, metadata, traj.shape[0], SHARD_FIX)
        for epoch, row in enumerate(traj):
            integrity.check_row(path, row, rows[epoch] if rows else None, f"snapshot {epoch}", SHARD_FIX)
        return checked

    def load(self, i: int, device: str | torch.device = "cpu", verify: bool = True) -> Tensor:
        """Expert i's whole trajectory, (epochs + 1) x P, as float32 (`verify=False` skips the checks,
        for measuring their cost)."""
        return self._read(i, verify)[0].to(device, torch.float32)

    def snapshot(self, i: int, epoch: int, device: str | torch.device = "cpu", verify: bool = True) -> Tensor:
        """One snapshot without reading the whole shard; its bytes are checked against its own checksum."""
        path = self._check(i)
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                piece = f.get_slice("trajectory")
                shape = tuple(piece.get_shape())
                if len(shape) == 2 and not 0 <= epoch < shape[0]:
                    raise IndexError(f"expert {i} has snapshots 0..{shape[0] - 1}, not {epoch}")
                row = piece[epoch]
        except (SafetensorError, OSError) as e:
            raise CorruptFileError(path, f"unreadable ({e})", SHARD_FIX) from e
        if verify:
            self._check_layout(path, row.dtype, shape)
            integrity.check_metadata(path, metadata, SHARD_FIX)
            rows = integrity.row_checksums(path, metadata, shape[0], SHARD_FIX)
            integrity.check_row(path, row, rows[epoch] if rows else None, f"snapshot {epoch}", SHARD_FIX)
            integrity.check_finite(path, f"snapshot {epoch}", row, SHARD_FIX, unit="parameter")
        return row.to(device, torch.float32)
