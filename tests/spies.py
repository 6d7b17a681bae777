"""Instruments that watch the library from outside: which tensors it reads, and what every optimiser step
really did to the parameters. Tests use them to check promises without trusting the code they check."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from distillset.models.registry import DistillModel


def watched(t: Tensor, log: list, name: str) -> Tensor:
    """`t` as a tensor that appends `name` to `log` whenever a torch operation touches it (slicing, a
    forward pass, even its shape): a spy on who reads it, and when."""

    class Watched(Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
            log.append(name)
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))

    return t.as_subclass(Watched)


@dataclass
class Training:
    """One optimiser's life: its parameters at the first step, and per step the effective lr and how far
    the update was from SGD with the expected momentum and weight decay."""

    optimizer: torch.optim.Optimizer  # held, so that no later optimiser is given its id
    init: Tensor
    params: list[Tensor]
    lrs: list[float] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)
    inputs: list[Tensor] = field(default_factory=list)  # the training batches its network saw
    buffers: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)


class Recorder:
    """Global optimiser-step and forward hooks, active inside `record()`.

    Per optimiser it keeps the effective lr of every step, measured from the parameters themselves:
    with d = grad + weight_decay * p and b = momentum * b + d (b = d at the first step), SGD moves p by
    -lr * b; `lrs` holds the least-squares lr of the observed move and `residuals` the relative size of
    what that lr leaves unexplained (0 when the update is exactly SGD with this momentum and decay).
    """

    def __init__(self, momentum: float, weight_decay: float):
        self.momentum, self.weight_decay = momentum, weight_decay
        self.runs: dict[int, Training] = {}
        self.order: list[Training] = []
        self._last_forward: dict[int, Tensor] = {}

    def _pre(self, opt, args, kwargs) -> None:  # noqa: ANN001
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        run = self.runs.get(id(opt))
        if run is None:
            run = Training(opt, torch.cat([p.detach().flatten() for p in params]).clone(), params)
            self.runs[id(opt)] = run
            self.order.append(run)
        run.pending = [(p, p.detach().clone(), p.grad.detach().clone()) for p in params]
        owner = self._last_forward.pop(id(params[0]), None)
        if owner is not None:
            run.inputs.append(owner)

    def _post(self, opt, args, kwargs) -> None:  # noqa: ANN001
        run = self.runs[id(opt)]
        moves, bufs = [], []
        for p, before, grad in run.pending:
            d = grad + self.weight_decay * before
            old = run.buffers.get(id(p))
            b = d.clone() if old is None else self.momentum * old + d
            run.buffers[id(p)] = b
            moves.append((before - p.detach()).flatten())
            bufs.append(b.flatten())
        move, buf = torch.cat(moves).double(), torch.cat(bufs).double()
        lr = float(move @ buf / (buf @ buf))
        run.lrs.append(lr)
        run.residuals.append(float((move - lr * buf).norm() / move.norm().clamp_min(1e-30)))

    def _forward(self, module, args) -> None:  # noqa: ANN001
        if isinstance(module, DistillModel) and module.training:
            self._last_forward[id(next(module.parameters()))] = args[0].detach().clone()

    @contextmanager
    def record(self):  # noqa: ANN201
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        handles = [
            register_optimizer_step_pre_hook(self._pre),
            register_optimizer_step_post_hook(self._post),
            register_module_forward_pre_hook(self._forward),
        ]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


def schedule(lr: float, epochs: int, steps_per_epoch: int, decay_at: float) -> list[float]:
    """The evaluation protocol's lr per step: lr, times 0.1 from epoch int(epochs * decay_at) on."""
    decay = int(epochs * decay_at)
    return [lr * (0.1 if e >= decay > 0 else 1.0) for e in range(epochs) for _ in range(steps_per_epoch)]


def rows_found_in(batch: Tensor, pool: Tensor) -> Tensor:
    """Per row of `batch`, whether it equals some row of `pool` exactly (an un-augmented image)."""
    flat, ref = batch.flatten(1), pool.flatten(1).to(batch.device)
    return torch.stack([(ref == row).all(dim=1).any() for row in flat])


def steps_per_epoch(n: int, batch: int) -> int:
    return math.ceil(n / batch)
