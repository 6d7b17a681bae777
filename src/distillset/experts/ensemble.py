"""Experts trained together: K experts' parameters stacked, one vmapped forward and backward per step.

`experts.ensemble` (auto|on|off) trains the experts still to do in groups of up to `MAX_MEMBERS` with one
`distillset.ensemble.Stacked` model, each member exactly as `expert_task` trains it alone: its own
initialisation (seed, "expert", i, "init"), data order and DSA draws (its own generators), batches and
DSA parameters; the epoch's lr (`lr_at`), loss scale (AST's `clip_factor`) and curriculum subset (PAD)
are shared, as they are the same for every expert. SGD with the configured momentum and weight decay is
`torch.optim.SGD`'s update applied to the stacked parameters. Each member records the same snapshots
(initialisation and every epoch) and history as alone, its validation accuracy in its own model; its
`seconds` are its share of the group's epoch (the epoch's time over the members). Every member writes
its own partial checkpoint, in the format `expert_task` writes and reads, and each finished member is
committed to the store on its own.

The trajectories equal those trained one by one up to the float rounding of batched against separate
kernels (the vmapped convolution is a grouped convolution that sums in another order): on digits after 3
epochs, within 2.2e-16 of a snapshot's largest entry in float64 (`tests/experts/test_expert_ensemble.py`
pins 1e-12), in float32 usually about 6e-8 but up to 1e-5 where a rounding-sized difference crosses a
ReLU's kink and sends one gradient another way (the test allows 3e-5), and after 2 epochs of larger
networks as far as one by one with one torch thread more (up to 3e-5 of a snapshot's largest entry on
Fashion-MNIST, `benchmarks/results/expert_ensemble.md`); the same store
identity and manifest. Where it pays: on CUDA only (`auto`; see `distillset.ensemble.pays`): on the CPU
an expert's batch already keeps the cores busy, and together measured fewer experts per hour than one
by one there (the same results file).

Not trained together (one by one, with a warning when `on` asked for it): GSAM (its second, perturbed
pass per batch), AST's input-gradient penalty (double back-propagation through the input), and models
with buffers (BatchNorm's running statistics). A group whose members were interrupted at different
epochs (between two members' checkpoints) resumes each set of members with the same epoch together,
and a member alone one by one.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..config import Config, ExpertsConfig
from ..data.augment import DSA
from ..data.prepared import PreparedData
from ..ensemble import MAX_MEMBERS, Stacked, pays, train_epoch_together
from ..models import flat_params, load_flat_
from ..training import accuracy
from ..utils import generator
from . import train as train_mod
from .curriculum import Curriculum
from .smooth import clip_factor, lr_at
from .store import TrajectoryStore


def unsupported(ecfg: ExpertsConfig, model: torch.nn.Module) -> str | None:
    """Why experts of this recipe and model cannot train together (None: they can)."""
    if ecfg.optimizer != "sgd":
        return f"experts.optimizer={ecfg.optimizer} takes a second, perturbed pass per batch"
    if ecfg.grad_penalty > 0:
        return "experts.grad_penalty back-propagates through each expert's input gradient"
    if any(True for _ in model.buffers()):
        return "the model keeps running statistics (BatchNorm)"
    return None


def plan(cfg: Config, todo: list[int], probe: torch.nn.Module, device: torch.device) -> list[tuple[int, ...]]:
    """The experts still to do as groups: one expert each (`experts.ensemble` off, auto off CUDA, or a
    recipe that cannot train together), else balanced groups of at most `MAX_MEMBERS`."""
    mode = cfg.experts.ensemble
    alone = [(i,) for i in todo]
    if mode == "off" or len(todo) < 2:
        return alone
    why = unsupported(cfg.experts, probe)
    if why is not None:
        if mode == "on":
            warnings.warn(f"experts.ensemble=on: the experts train one by one ({why}).", stacklevel=3)
        return alone
    if mode == "auto" and not pays(probe, device, cfg.experts.batch_train, (), stage="experts"):
        return alone
    count = -(-len(todo) // MAX_MEMBERS)
    size, extra = divmod(len(todo), count)
    groups, start = [], 0
    for g in range(count):
        end = start + size + (g < extra)
        groups.append(tuple(todo[start:end]))
        start = end
    return groups


class _Member:
    """One expert of a group: its model, generators, snapshots and history, from its partial checkpoint
    when there is one (as `expert_task` resumes)."""

    def __init__(self, cfg: Config, data: PreparedData, store: TrajectoryStore | None, i: int):
        device = data.train_x.device
        self.i = i
        self.model = train_mod.build_expert_model(cfg, data, ("expert", i, "init")).to(device)
        self.order_gen = generator(cfg.seed, "expert", i, "order")
        self.aug_gen = generator(cfg.seed, "expert", i, "dsa")
        self.snapshots: list[Tensor] = [flat_params(self.model).cpu()]
        self.history = train_mod.new_history()
        self.epoch = 0
        self.momentum: Tensor | None = None
        resumed = store.read_partial(i) if store is not None else None
        if resumed is not None:
            tensors, meta = resumed
            self.snapshots = list(tensors["snapshots"].unbind(0))
            load_flat_(self.model, self.snapshots[-1].to(device))
            self.momentum = tensors.get("momentum")
            self.order_gen.set_state(tensors["order_gen"])
            self.aug_gen.set_state(tensors["aug_gen"])
            self.history = meta["history"]
            self.epoch = meta["epoch"]
            self.history.setdefault("lr", [lr_at(e, cfg.experts) for e in range(self.epoch)])


def group_task(
    cfg: Config,
    data: PreparedData,
    store_root: Path | None,
    curriculum: Curriculum | None,
    indices: tuple[int, ...],
) -> dict[int, tuple[Tensor, dict]]:
    """Train the experts `indices` together; one executor task: {i: (trajectory, history)}, each as
    `expert_task` returns it. With `store_root`, each member resumes from its own partial checkpoint and
    writes one every `checkpoint_every` epochs; members whose checkpoints stopped at different epochs
    train together with those of the same epoch (a member alone: `expert_task`)."""
    store = TrajectoryStore(store_root) if store_root is not None else None
    by_epoch: dict[int, list[_Member]] = {}
    for i in indices:
        member = _Member(cfg, data, store, i)
        by_epoch.setdefault(member.epoch, []).append(member)
    out: dict[int, tuple[Tensor, dict]] = {}
    for members in by_epoch.values():
        if len(members) == 1:
            i = members[0].i
            out[i] = train_mod.expert_task(cfg, data, store_root, curriculum, i)
        else:
            out.update(_train_together(cfg, data, store, curriculum, members))
    return {i: out[i] for i in indices}


def _train_together(
    cfg: Config,
    data: PreparedData,
    store: TrajectoryStore | None,
    curriculum: Curriculum | None,
    members: list[_Member],
) -> dict[int, tuple[Tensor, dict]]:
    ecfg = cfg.experts
    stacked = Stacked(
        [m.model for m in members], [ecfg.lr_teacher] * len(members), ecfg.momentum, ecfg.weight_decay
    )
    if members[0].momentum is not None:
        stacked.set_momentum(torch.stack([m.momentum for m in members]))
    aug = DSA(data.dsa_strategy) if ecfg.dsa else None
    for epoch in range(members[0].epoch, ecfg.train_epochs):
        t0 = time.perf_counter()
        lr = lr_at(epoch, ecfg)
        stacked.set_lr(lr)
        x, y = data.train_x, data.train_y
        if curriculum is not None:
            subset = curriculum.indices(epoch).to(x.device)
            x, y = x[subset], y[subset]
        rows = train_epoch_together(
            stacked,
            [(x, y)] * len(members),
            [m.order_gen for m in members],
            [aug] * len(members),
            [m.aug_gen for m in members],
            ecfg.batch_train,
            clip_factor(epoch, ecfg),
        )
        flat = stacked.flat().cpu()
        share = (time.perf_counter() - t0) / len(members)
        for r, (m, (loss, train_acc)) in enumerate(zip(members, rows, strict=True)):
            m.snapshots.append(flat[r].clone())
            load_flat_(m.model, flat[r].to(x.device))
            m.history["train_loss"].append(loss)
            m.history["train_acc"].append(train_acc)
            m.history["val_acc"].append(accuracy(m.model, data.val_x, data.val_y))
            m.history["seconds"].append(share)
            m.history["lr"].append(lr)
            if loss != loss:
                raise FloatingPointError(
                    f"expert {m.i} diverged (NaN loss at epoch {epoch + 1}); lower experts.lr_teacher."
                )
        done = epoch + 1
        if store is not None and done < ecfg.train_epochs and done % ecfg.checkpoint_every == 0:
            momentum = stacked.momentum_flat()
            for r, m in enumerate(members):
                mom = momentum[r].cpu() if momentum is not None else None
                tensors = train_mod.partial_tensors(m.snapshots, m.order_gen, m.aug_gen, mom)
                store.write_partial(m.i, tensors, {"epoch": done, "history": m.history})
    return {m.i: (torch.stack(m.snapshots), m.history) for m in members}
