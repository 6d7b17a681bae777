"""Expert trajectories (MTT): train networks from independent seeded starts and record every epoch.

Each expert stores its flat parameters at initialisation and after each epoch (`train_epochs + 1`
snapshots). Plain SGD by default (lr 0.01, no momentum, no weight decay, batch 256, DSA on every batch):
a deliberately simple optimiser whose trajectory a student can imitate. An interrupted run resumes
from the last checkpoint of each expert in training and keeps every finished expert. The experts are
independent tasks of the configured executor (parallel.py): in this process, or in parallel on Ray;
with `experts.ensemble` (on CUDA by default) groups of them train together, one task a group
(experts/ensemble.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config, ExpertsConfig
from ..data.augment import DSA
from ..data.prepared import PreparedData, prepare
from ..identity import settings
from ..models import ParamLayout, flat_params, load_flat_
from ..networks import seeded_model
from ..parallel import Task, executor_for
from ..training import accuracy, train_epoch
from ..utils import generator, locks, resolve_device
from .curriculum import Curriculum
from .optim import base_optimizer, expert_optimizer
from .smooth import clip_factor, input_gradient_penalty, lr_at
from .store import TrajectoryStore


def build_expert_model(cfg: Config, data: PreparedData, seed_tags: tuple) -> torch.nn.Module:
    """A fresh network of the configured architecture whose initialisation depends only on the seed."""
    return seeded_model(cfg.model, data.image_shape, data.num_classes, cfg.seed, *seed_tags)


def store_identity(cfg: Config, data: PreparedData, model: torch.nn.Module) -> dict:
    """Everything that changes a trajectory: the experts section (see identity.py), the difficulty
    scores' recipe when the curriculum follows them, the network, the data and the seed."""
    extra = {"scores": settings(cfg.scores)} if cfg.experts.curriculum else {}
    return {
        **extra,
        "model": model.spec,
        "layout": ParamLayout.from_model(model).fingerprint(),
        "data": data.fingerprint(),
        "dsa_strategy": data.dsa_strategy if cfg.experts.dsa else None,
        "experts": settings(cfg.experts),
        "seed": cfg.seed,
    }


def build_curriculum(
    cfg: Config, data: PreparedData, scores_dir: str | Path, progress: bool = True
) -> Curriculum | None:
    """PAD's curriculum from the difficulty scores in `scores_dir` (computed there first if missing)."""
    if not cfg.experts.curriculum:
        return None
    from .scores import compute_scores

    scores = compute_scores(cfg, data, scores_dir, progress=progress)
    return Curriculum(scores.order(cfg.experts.difficulty, data.num_classes), cfg.experts)


def _optimizer(model: torch.nn.Module, cfg: ExpertsConfig) -> torch.optim.Optimizer:
    return expert_optimizer(model.parameters(), cfg)


def _momentum_flat(opt: torch.optim.Optimizer, model: torch.nn.Module) -> torch.Tensor | None:
    opt = base_optimizer(opt)
    bufs = {n: opt.state.get(p, {}).get("momentum_buffer") for n, p in model.named_parameters()}
    if any(b is None for b in bufs.values()):
        return None
    return ParamLayout.from_model(model).flatten(bufs)


def _set_momentum(opt: torch.optim.Optimizer, model: torch.nn.Module, flat: torch.Tensor) -> None:
    opt = base_optimizer(opt)
    views = ParamLayout.from_model(model).unflatten(flat)
    for n, p in model.named_parameters():
        opt.state[p]["momentum_buffer"] = views[n].to(p.device).clone()


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in base_optimizer(opt).param_groups:  # GSAM's base SGD shares its groups
        group["lr"] = lr


def _penalty(ecfg: ExpertsConfig) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None:
    """AST's input-gradient penalty times lambda, on the clean batch; None when lambda is 0."""
    if ecfg.grad_penalty <= 0:
        return None
    return lambda m, xb: ecfg.grad_penalty * input_gradient_penalty(m, xb, ecfg.grad_penalty_norm)


def new_history() -> dict[str, list[float]]:
    """An expert's history before its first epoch: one list per recorded quantity."""
    return {"train_loss": [], "train_acc": [], "val_acc": [], "seconds": [], "lr": []}


def partial_tensors(
    snapshots: list[torch.Tensor],
    order_gen: torch.Generator,
    aug_gen: torch.Generator,
    momentum: torch.Tensor | None,
    buffers: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The tensors of an expert's partial checkpoint (store.write_partial): its snapshots so far, its
    generators' states, its momentum buffer (when the optimiser has one) and its model's buffers."""
    tensors = {
        "snapshots": torch.stack(snapshots),
        "order_gen": order_gen.get_state(),
        "aug_gen": aug_gen.get_state(),
        **(buffers or {}),
    }
    if momentum is not None:
        tensors["momentum"] = momentum
    return tensors


def expert_task(
    cfg: Config,
    data: PreparedData,
    store_root: Path | None,
    curriculum: Curriculum | None,
    i: int,
) -> tuple[torch.Tensor, dict]:
    """Train expert i and return its trajectory ((epochs + 1) x P, on the CPU) and its history; one
    executor task. With `store_root` (the store is on storage this process sees), resume from the
    expert's partial checkpoint there and write one every `checkpoint_every` epochs.

    With a curriculum (PAD), epoch e trains on `curriculum.indices(e)` only. AST's smooth experts
    (experts/smooth): epoch e scales the cross-entropy by `clip_factor(e)`, adds the weighted
    input-gradient penalty, and trains with the learning rate `lr_at(e)`, set afresh every epoch (so a
    resumed run matches an uninterrupted one)."""
    device = data.train_x.device
    ecfg = cfg.experts
    store = TrajectoryStore(store_root) if store_root is not None else None
    model = build_expert_model(cfg, data, ("expert", i, "init")).to(device)
    opt = _optimizer(model, ecfg)
    order_gen = generator(cfg.seed, "expert", i, "order")
    aug_gen = generator(cfg.seed, "expert", i, "dsa")
    aug = DSA(data.dsa_strategy) if ecfg.dsa else None

    snapshots = [flat_params(model).cpu()]
    history = new_history()
    start_epoch = 0
    resumed = store.read_partial(i) if store is not None else None
    if resumed is not None:
        tensors, meta = resumed
        snapshots = list(tensors["snapshots"].unbind(0))
        load_flat_(model, snapshots[-1].to(device))
        for name, buf in model.named_buffers():
            buf.copy_(tensors[f"buffer.{name}"].to(device))
        if "momentum" in tensors:
            _set_momentum(opt, model, tensors["momentum"])
        order_gen.set_state(tensors["order_gen"])
        aug_gen.set_state(tensors["aug_gen"])
        history = meta["history"]
        start_epoch = meta["epoch"]
        # a checkpoint written before the lr was recorded: its store has no decay, so lr_at is exact
        history.setdefault("lr", [lr_at(e, ecfg) for e in range(start_epoch)])

    penalty = _penalty(ecfg)
    for epoch in range(start_epoch, ecfg.train_epochs):
        t0 = time.perf_counter()
        lr = lr_at(epoch, ecfg)
        _set_lr(opt, lr)
        x, y = data.train_x, data.train_y
        if curriculum is not None:
            subset = curriculum.indices(epoch).to(x.device)
            x, y = x[subset], y[subset]
        loss, train_acc = train_epoch(
            model,
            x,
            y,
            opt,
            ecfg.batch_train,
            order_gen,
            aug,
            aug_gen,
            loss_scale=clip_factor(epoch, ecfg),
            penalty=penalty,
        )
        # An explicit copy: on the CPU a detached view would alias the live weights.
        snapshots.append(flat_params(model).cpu())
        val_acc = accuracy(model, data.val_x, data.val_y)
        history["train_loss"].append(loss)
        history["train_acc"].append(train_acc)
        history["val_acc"].append(val_acc)
        history["seconds"].append(time.perf_counter() - t0)
        history["lr"].append(lr)
        if loss != loss:
            raise FloatingPointError(
                f"expert {i} diverged (NaN loss at epoch {epoch + 1}); lower experts.lr_teacher."
            )
        done = epoch + 1
        if store is not None and done < ecfg.train_epochs and done % ecfg.checkpoint_every == 0:
            buffers = {f"buffer.{n}": b for n, b in model.named_buffers()}
            tensors = partial_tensors(snapshots, order_gen, aug_gen, _momentum_flat(opt, model), buffers)
            store.write_partial(i, tensors, {"epoch": done, "history": history})

    return torch.stack(snapshots), history


@locks("out", "experts")
def train_experts(
    cfg: Config,
    out: str | Path,
    data: PreparedData | None = None,
    progress: bool = True,
    scores_dir: str | Path | None = None,
) -> TrajectoryStore:
    """Train `experts.num_experts` experts into `out` (a trajectory store), continuing where it stopped.

    With `experts.curriculum` the difficulty scores are read from (or first computed into) `scores_dir`,
    by default the `scores/` directory beside `out` in the run directory. A second process training into
    the same store meanwhile is refused.
    """
    from . import ensemble  # imports this module

    device = resolve_device(cfg.device)
    data = data if data is not None else prepare(cfg.data, device)
    probe = build_expert_model(cfg, data, ("expert", 0, "init"))
    layout = ParamLayout.from_model(probe)
    info = {
        "num_params": layout.numel,
        "train_epochs": cfg.experts.train_epochs,
        "layer_boundaries": [list(b) for b in layout.layer_boundaries()],
        "class_names": data.dataset.class_names,
        "image_shape": list(data.image_shape),
        "num_classes": data.num_classes,
    }
    identity = store_identity(cfg, data, probe)
    existing = TrajectoryStore.check_compatible(out, identity)  # before scoring for a store we would refuse
    # an expert whose shard was deleted (a corrupt one, say) is trained again
    done = (
        set() if existing is None else {str(i) for i in existing.completed if existing.shard_path(i).exists()}
    )
    todo = [i for i in range(cfg.experts.num_experts) if str(i) not in done]
    curriculum = None
    if todo and cfg.experts.curriculum:
        scores_dir = Path(scores_dir) if scores_dir is not None else Path(out).parent / "scores"
        curriculum = build_curriculum(cfg, data, scores_dir, progress)
        info["curriculum"] = curriculum.summary(cfg.experts.train_epochs)
    store = TrajectoryStore.open_or_create(out, identity, info)
    shared = (cfg, data, store.root if cfg.executor.shared_storage else None, curriculum)
    groups = ensemble.plan(cfg, todo, probe, data.train_x.device)
    if any(len(g) > 1 for g in groups):  # groups trained together (experts/ensemble.py), one task each
        fn, tasks = ensemble.group_task, [Task(f"experts-{'-'.join(map(str, g))}", (g,)) for g in groups]

        def commit(key: str, out: dict) -> None:  # each member on its own, as a single expert
            for i, result in out.items():
                store.write_expert(i, *result)

    else:  # one task per expert
        fn, tasks = expert_task, [Task(f"expert-{i}", (i,)) for i in todo]

        def commit(key: str, out: tuple) -> None:
            store.write_expert(int(key.rpartition("-")[2]), *out)

    # Each finished expert is committed (shard, then manifest) as it arrives.
    executor_for(cfg.executor).map(
        fn, tasks, shared=shared, desc="experts", progress=progress, device=cfg.device, on_result=commit
    )
    return store
