"""The trajectory store: expert parameter snapshots in sharded safetensors files plus `manifest.json`.

Layout of `experts/`:
  manifest.json             identity (model, data, preprocessing, hyper-parameters), layout, records
  shard-00000.safetensors   expert 0: `trajectory`, (train_epochs + 1) x P flat parameters (fp32 or bf16)
  partial-00003.safetensors the expert in training: snapshots so far + optimiser and generator state

One expert per shard: a finished expert is never rewritten, and resuming is a matter of listing shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from ..errors import StoreError
from ..identity import mismatch
from ..utils import atomic_write, read_json, write_json

FORMAT = "distillset.experts/1"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


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
        if self.manifest.get("format") != FORMAT:
            raise StoreError(f"{self.manifest_path} is not a distillset trajectory store ({FORMAT}).")

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
    def completed(self) -> list[int]:
        return sorted(int(i) for i in self.manifest["experts"])

    def __len__(self) -> int:
        return len(self.manifest["experts"])

    def summary(self) -> str:
        """One line for people: how many experts, where, and their final validation accuracy."""
        last = [self.record(i)["val_acc"][-1] for i in self.completed]
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
        dtype = DTYPES[self.identity["experts"]["dtype"]]
        traj = trajectory.detach().to("cpu", dtype).contiguous()
        atomic_write(self.shard_path(i), lambda p: save_file({"trajectory": traj}, str(p)))
        self.manifest["experts"][str(i)] = {"shard": self.shard_path(i).name, **record}
        write_json(self.manifest_path, self.manifest)
        self.partial_path(i).unlink(missing_ok=True)

    def write_partial(self, i: int, tensors: dict[str, Tensor], meta: dict) -> None:
        cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        atomic_write(
            self.partial_path(i), lambda p: save_file(cpu, str(p), metadata={"meta": json.dumps(meta)})
        )

    def read_partial(self, i: int) -> tuple[dict[str, Tensor], dict] | None:
        path = self.partial_path(i)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["meta"])
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError):
            # A partial checkpoint is only a shortcut: an unreadable one means starting this expert again.
            path.unlink(missing_ok=True)
            return None

    # -- reading ---------------------------------------------------------------------------------

    def _check(self, i: int) -> Path:
        if str(i) not in self.manifest["experts"]:
            raise StoreError(f"expert {i} is not in {self.root} (it holds {self.completed}).")
        path = self.shard_path(i)
        if not path.exists():
            raise StoreError(f"{path} is missing; delete {self.manifest_path} and train the experts again.")
        return path

    def load(self, i: int, device: str | torch.device = "cpu") -> Tensor:
        """Expert i's whole trajectory, (epochs + 1) x P, as float32."""
        try:
            return load_file(str(self._check(i)))["trajectory"].to(device, torch.float32)
        except SafetensorError as e:
            raise StoreError(
                f"{self.shard_path(i)} is corrupt ({e}); delete it and its manifest entry."
            ) from e

    def snapshot(self, i: int, epoch: int, device: str | torch.device = "cpu") -> Tensor:
        """One snapshot without reading the whole shard."""
        try:
            with safe_open(str(self._check(i)), framework="pt") as f:
                return f.get_slice("trajectory")[epoch].to(device, torch.float32)
        except SafetensorError as e:
            raise StoreError(
                f"{self.shard_path(i)} is corrupt ({e}); delete it and its manifest entry."
            ) from e
