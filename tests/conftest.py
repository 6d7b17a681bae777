"""Shared fixtures: tiny configs on scikit-learn digits so that every test runs in seconds."""

from __future__ import annotations

import pytest
import torch

from distillset.config import load_config
from distillset.data.prepared import prepare

TINY = [
    "model.width=8",
    "experts.num_experts=2",
    "experts.train_epochs=3",
    "experts.batch_train=128",
    "eval.runs=2",
    "eval.epochs=6",
    "eval.val_every=2",
    "device=cpu",
]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def tiny_cfg():
    return load_config("random-digits", TINY)


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    """The quick demo, once per session: OUT/experts (shared), OUT/datm-ipc1 and OUT/datm-ipc10, each
    evaluated and reported. Tests copy a run before changing it."""
    from distillset.demo import run_demo

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, quick=True, echo=lambda s: None)
    return out


@pytest.fixture(scope="session")
def digits_data():
    return prepare(load_config("random-digits", TINY).data, torch.device("cpu"))


def dies_on_call(n: int, real):  # noqa: ANN001, ANN201
    """`real`, except that its n-th call raises KeyboardInterrupt (a run killed at a chosen point)."""
    calls = {"n": 0}

    def dying(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return dying


_BLOCKING_CHILD = """
import importlib, pathlib, sys, time
import torch
torch.set_num_threads(2)
module, name, call, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), pathlib.Path(sys.argv[4])
mod = importlib.import_module(module)
real, calls = getattr(mod, name), [0]
def blocking(*args, **kwargs):
    calls[0] += 1
    if calls[0] == call:
        marker.touch()
        time.sleep(3600)
    return real(*args, **kwargs)
setattr(mod, name, blocking)
exec(sys.argv[5])
"""


def sigkilled_at(target: str, call: int, body: str, tmp_path) -> None:  # noqa: ANN001
    """Run the Python source `body` in a fresh interpreter in which `target` ("module:function") blocks at
    its `call`-th call; once it blocks, kill the process with SIGKILL, so that no clean-up code of ours
    (finally blocks, handlers, lock release) runs: a real kill at a chosen point."""
    import signal
    import subprocess
    import sys
    import time
    import uuid

    module, name = target.split(":")
    marker = tmp_path / f".blocked-{uuid.uuid4().hex}"
    err = tmp_path / f".child-{uuid.uuid4().hex}.err"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", _BLOCKING_CHILD, module, name, str(call), str(marker), body],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + 300
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the child ended before the kill point:\n{err.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("the child did not reach the kill point within 300 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    marker.unlink()
    err.unlink()
    assert proc.returncode == -signal.SIGKILL


def counting(real, calls: list):  # noqa: ANN001, ANN201
    """`real`, appending one entry to `calls` per call (how much work a resumed run does)."""

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real(*args, **kwargs)

    return counted
