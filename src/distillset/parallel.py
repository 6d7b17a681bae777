"""Executors: where the embarrassingly parallel stages run (experts, difficulty-score networks,
evaluation networks, D3's sub-tasks).

A stage is a list of tasks, each a key and the arguments of one module-level function; the executor
runs the function on every task and hands each result to the stage as it arrives (`on_result`), on the
driver, where the stage commits it to the run directory (atomically, one result per key). So a task
that is retried, or run twice, changes nothing, and an interrupted stage keeps what was committed.

- `local` (the default): the tasks one after another in this process.
- `ray`: one Ray task per task, on a local Ray runtime started on demand or on an existing cluster
  (`executor.address`), each with `cpus_per_task` CPUs (and `torch_threads` torch threads) and
  `gpus_per_task` GPUs (fractions share one GPU between small networks). A task whose worker dies is
  retried up to `max_retries` times; a task that raises is not retried, and its error reaches the user
  as it was raised (a user error: one line, exit 2).

Each task derives its randomness from (seed, task) alone, so both executors give the same results bit
for bit at the same torch thread count (CPU kernels sum in thread-dependent orders).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import ExecutorConfig
from .errors import ConfigError, DistillsetError
from .progress import progress_bar

ResultHook = Callable[[str, Any], None]


@dataclass(frozen=True)
class Task:
    """One unit of a stage: `fn(*shared, *args)`; `key` names it (unique within the stage)."""

    key: str
    args: tuple = ()


class Executor:
    """Runs the tasks of one stage: `map(fn, tasks, shared=...)` returns {key: result} in task order."""

    kind = "local"

    def map(
        self,
        fn: Callable[..., Any],
        tasks: Sequence[Task],
        *,
        shared: tuple = (),
        desc: str = "tasks",
        progress: bool = True,
        device: str | None = None,
        on_result: ResultHook | None = None,
    ) -> dict[str, Any]:
        """Run `fn(*shared, *task.args)` for every task. `device` (a config's `device`) is where a task
        that runs in another process puts its tensor inputs; in this process they stay where they are."""
        raise NotImplementedError


class LocalExecutor(Executor):
    """The tasks in this process, in order (today's behaviour, and the reference for every other)."""

    def map(self, fn, tasks, *, shared=(), desc="tasks", progress=True, device=None, on_result=None):  # noqa: ANN001
        _check_keys(tasks)
        results: dict[str, Any] = {}
        with progress_bar(total=len(tasks), desc=desc, unit="task", disable=not progress or not tasks) as bar:
            for task in tasks:
                results[task.key] = out = fn(*shared, *task.args)
                if on_result is not None:
                    on_result(task.key, out)
                bar.update(1)
        return results


class RayExecutor(Executor):
    """The tasks as Ray tasks; Ray is imported (and a local runtime started) on first use."""

    kind = "ray"

    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg

    def map(self, fn, tasks, *, shared=(), desc="tasks", progress=True, device=None, on_result=None):  # noqa: ANN001
        _check_keys(tasks)
        if not tasks:
            return {}
        ray = _ray_runtime(self.cfg)
        cfg = self.cfg
        _check_feasible(ray, cfg)
        threads = cfg.torch_threads or max(1, int(cfg.cpus_per_task))
        remote = ray.remote(_run_task).options(
            num_cpus=cfg.cpus_per_task,
            num_gpus=cfg.gpus_per_task,
            max_retries=cfg.max_retries,
            retry_exceptions=False,
        )
        # Large inputs (the data, the synthetic set) go into the object store once, on the CPU.
        shared_refs = [ray.put(_to_cpu(s)) for s in shared]
        pending = {remote.remote(fn, threads, device, *shared_refs, *task.args): task.key for task in tasks}
        results: dict[str, Any] = {}
        try:
            with progress_bar(total=len(tasks), desc=desc, unit="task", disable=not progress) as bar:
                while pending:
                    (ref,), _ = ray.wait(list(pending), num_returns=1)
                    key = pending.pop(ref)
                    results[key] = out = _get(ray, ref, key, cfg)
                    if on_result is not None:
                        on_result(key, out)
                    bar.update(1)
        finally:
            for ref in pending:  # an error or an interruption: stop what is still running
                ray.cancel(ref, force=True)
        return {task.key: results[task.key] for task in tasks}


def executor_for(cfg: ExecutorConfig | None) -> Executor:
    """The executor a config section asks for (the local one when there is none)."""
    if cfg is None or cfg.kind == "local":
        return LocalExecutor()
    return RayExecutor(cfg)


def on_device(value: Any, device: torch.device) -> Any:
    """`value` with its tensors on `device` (a task's inputs arrive on the CPU from another process)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if hasattr(value, "to_device"):
        return value.to_device(device)
    return value


# -- Ray -----------------------------------------------------------------------------------------

_RUNTIME: dict[str, Any] = {}


def _import_ray():  # noqa: ANN202
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "executor.kind=ray needs Ray, which is not installed; install it with "
            "`pip install 'distillset[ray]'` (or `pip install ray`)."
        ) from None
    return ray


def _ray_runtime(cfg: ExecutorConfig):  # noqa: ANN202
    """Ray, connected to `cfg.address` or to a local runtime started here (once per process)."""
    ray = _import_ray()
    want = (cfg.address, cfg.local_cpus, cfg.local_gpus)
    if ray.is_initialized() and _RUNTIME.get("key") == want:
        return ray
    if ray.is_initialized():
        ray.shutdown()
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # a task's error comes back through its result, once
        "logging_level": logging.ERROR,
        "configure_logging": True,
    }
    if cfg.address is None:
        kwargs["num_cpus"] = cfg.local_cpus or os.cpu_count()
        if cfg.local_gpus is not None:
            kwargs["num_gpus"] = cfg.local_gpus
    try:
        ray.init(address=cfg.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = cfg.address or "a local Ray runtime"
        raise ConfigError(
            f"could not start or reach {where} ({str(e).splitlines()[0]}); check executor.address."
        ) from None
    _RUNTIME["key"] = want
    return ray


def _check_feasible(ray, cfg: ExecutorConfig) -> None:  # noqa: ANN001
    """Stop before submitting tasks that no node can run (Ray would wait for them forever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for key, want in (("CPU", cfg.cpus_per_task), ("GPU", cfg.gpus_per_task)):
        most = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if want > most:
            raise ConfigError(
                f"executor.{key.lower()}s_per_task={want:g} but the largest node of the Ray cluster has "
                f"{most:g} {key}s; lower it (or add a node that has them)."
            )


def shutdown() -> None:
    """Stop the Ray runtime this process started or joined (a no-op when there is none)."""
    if "key" in _RUNTIME:
        import ray

        ray.shutdown()
        _RUNTIME.clear()


def _run_task(fn: Callable[..., Any], threads: int, device: str | None, *args: Any) -> Any:
    """The body of every Ray task: this worker's torch threads, the inputs on this worker's device,
    then the task."""
    torch.set_num_threads(threads)
    if device is not None:
        from .utils import resolve_device

        where = resolve_device(device)
        args = tuple(on_device(a, where) for a in args)
    return fn(*args)


def _get(ray, ref, key: str, cfg: ExecutorConfig) -> Any:  # noqa: ANN001
    """A task's result; its own error re-raised as it was raised, a lost worker as one line."""
    from ray import exceptions as rex

    try:
        return ray.get(ref)
    except rex.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, rex.OutOfMemoryError) as e:
        raise DistillsetError(
            f"task {key} failed: its worker died {cfg.max_retries + 1} times "
            f"({type(e).__name__}); the results committed so far are kept: run again to continue."
        ) from None


def _to_cpu(value: Any) -> Any:
    return on_device(value, torch.device("cpu"))


def _check_keys(tasks: Sequence[Task]) -> None:
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError(f"task keys must be unique within a stage: {keys}")
