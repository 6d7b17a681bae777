"""Executors: the local one is the reference; Ray's experts, scores and evaluation equal it bit for bit, a
killed worker's task is retried, and a user error inside a task reaches the user once, as one line."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distillset import parallel
from distillset.baseline import random_subset
from distillset.config import ExecutorConfig, load_config
from distillset.errors import ConfigError
from distillset.evaluate import evaluate
from distillset.experts.scores import compute_scores
from distillset.experts.train import train_experts
from distillset.parallel import LocalExecutor, Task, executor_for
from tests.conftest import TINY

scores_mod = importlib.import_module("distillset.experts.scores")

# Ray's workers use 2 torch threads, as the tests do (`conftest._threads`): CPU kernels sum in
# thread-dependent orders, and bit-identity holds at the same thread count.
RAY = ["executor.kind=ray", "executor.local_cpus=2", "executor.cpus_per_task=1", "executor.torch_threads=2"]


def _add(a, b):  # noqa: ANN001, ANN202
    return a + b


def test_local_executor_runs_in_order_and_commits_each_result():
    seen = []
    out = LocalExecutor().map(
        _add,
        [Task("x", (1,)), Task("y", (2,))],
        shared=(10,),
        progress=False,
        on_result=lambda k, v: seen.append((k, v)),
    )
    assert out == {"x": 11, "y": 12} and list(out) == ["x", "y"]
    assert seen == [("x", 11), ("y", 12)]
    with pytest.raises(ValueError, match="unique"):
        LocalExecutor().map(_add, [Task("x", (1,)), Task("x", (2,))], shared=(0,), progress=False)


def test_the_default_is_local_and_no_key_changes_a_result():
    from distillset.identity import settings

    cfg = load_config("mtt-digits")
    assert isinstance(executor_for(cfg.executor), LocalExecutor)
    assert settings(ExecutorConfig(kind="ray", cpus_per_task=0.5, gpus_per_task=0.25)) == {}


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    ex = executor_for(ExecutorConfig(kind="ray"))
    with pytest.raises(ConfigError, match=r"pip install 'distillset\[ray\]'"):
        ex.map(_add, [Task("x", (1,))], shared=(0,), progress=False)


def test_an_artifact_is_evaluated_here_whatever_executor_made_it(tmp_path, monkeypatch, capsys):
    """Where an artifact was made does not follow it: `distillset evaluate` uses the default executor
    (here without Ray) unless told otherwise."""
    import json

    from distillset.cli import main

    out = tmp_path / "random"
    main(["baseline", "random", "--ipc", "1", "--out", str(out), "random-digits", *TINY, "executor.kind=ray"])
    assert json.loads((out / "manifest.json").read_text())["config"]["executor"]["kind"] == "ray"
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray cannot be imported: a Ray evaluation would stop
    capsys.readouterr()
    main(["evaluate", str(out), "--json", "eval.epochs=2", "eval.runs=1"])
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["results"]["convnet"]["mean"] <= 1


def test_scores_arriving_out_of_order_are_committed_as_a_prefix(digits_data, tmp_path, monkeypatch):
    """The score file holds the first `finished` networks: a result that arrives before the ones ahead of
    it waits for them; an interruption keeps exactly the prefix that arrived."""
    cfg = load_config("pad-digits", [*TINY, "scores.num_models=3", "scores.epochs=1"])
    reference = compute_scores(cfg, digits_data, tmp_path / "ref", progress=False)

    class Reversed(LocalExecutor):
        def map(self, fn, tasks, *, shared=(), on_result=None, **kw):  # noqa: ANN001
            for t in reversed(tasks):
                if t.key == "scores-0":
                    raise KeyboardInterrupt  # 2 and 1 arrived, 0 never did
                on_result(t.key, fn(*shared, *t.args))

    monkeypatch.setattr(scores_mod, "executor_for", lambda _cfg: Reversed())
    with pytest.raises(KeyboardInterrupt):
        compute_scores(cfg, digits_data, tmp_path / "s", progress=False)
    assert not list((tmp_path / "s").glob("scores-*.safetensors"))  # nothing before network 0

    class Shuffled(LocalExecutor):
        def map(self, fn, tasks, *, shared=(), on_result=None, **kw):  # noqa: ANN001
            for t in [tasks[1], tasks[2], tasks[0]]:
                on_result(t.key, fn(*shared, *t.args))

    monkeypatch.setattr(scores_mod, "executor_for", lambda _cfg: Shuffled())
    got = compute_scores(cfg, digits_data, tmp_path / "s", progress=False)
    for kind, v in reference.scores.items():
        assert torch.equal(got.scores[kind], v), kind


# -- Ray ---------------------------------------------------------------------------------------------

ray = pytest.importorskip(
    "ray", reason="the Ray executor needs the `ray` extra (the test command installs it)"
)


@pytest.fixture(scope="module")
def ray_runtime():
    yield
    parallel.shutdown()


def _experts_cfg(extra=()):  # noqa: ANN001, ANN202
    return load_config(
        "mtt-digits",
        [*TINY, "experts.num_experts=3", "experts.train_epochs=4", "experts.checkpoint_every=1", *extra],
    )


def _shards(root: Path) -> dict[str, torch.Tensor]:
    return {p.name: load_file(str(p))["trajectory"] for p in sorted(root.glob("shard-*.safetensors"))}


def _same_store(a: Path, b: Path) -> None:
    sa, sb = _shards(a), _shards(b)
    assert sorted(sa) == sorted(sb) and len(sa) == 3
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.fixture(scope="module")
def local_experts(digits_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("local") / "experts"
    train_experts(_experts_cfg(), root, digits_data, progress=False)
    return root


def test_ray_experts_scores_and_evaluation_equal_the_local_executor(
    ray_runtime, local_experts, digits_data, tmp_path
):
    torch.set_num_threads(2)
    _same_store(
        train_experts(_experts_cfg(RAY), tmp_path / "experts", digits_data, progress=False).root,
        local_experts,
    )

    cfg = load_config("pad-digits", [*TINY, "scores.num_models=2", "scores.epochs=1"])
    local = compute_scores(cfg, digits_data, tmp_path / "local-scores", progress=False)
    remote = compute_scores(
        cfg.model_copy(update={"executor": _experts_cfg(RAY).executor}),
        digits_data,
        tmp_path / "ray-scores",
        progress=False,
    )
    for kind in local.scores:
        assert torch.equal(local.scores[kind], remote.scores[kind]), kind

    ecfg = load_config(
        "random-digits", [*TINY, "eval.baselines=[herding]", "eval.full_data=true", "eval.full_data_epochs=1"]
    )
    art = random_subset(ecfg, digits_data)
    want = evaluate(art, ecfg, digits_data, progress=False)
    got = evaluate(
        art, ecfg.model_copy(update={"executor": _experts_cfg(RAY).executor}), digits_data, progress=False
    )
    assert got == want


def _ray_workers_running_a_task() -> list[int]:
    """The pids of Ray worker processes that are running a task (their title is `ray::_run_task`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::_run_task"):
                pids.append(int(entry.name))
    return pids


def test_a_killed_worker_is_retried_and_the_experts_equal_the_local_run(
    ray_runtime, local_experts, digits_data, tmp_path
):
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = _ray_workers_running_a_task()
            partial = list((tmp_path / "experts").glob("partial-*.safetensors"))
            if busy and partial:  # a task is running and has checkpointed: kill it mid-expert
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one)
    killer.start()
    store = train_experts(_experts_cfg(RAY), tmp_path / "experts", digits_data, progress=False)
    killer.join()
    assert killed, "no worker was killed"
    assert store.completed == [0, 1, 2]
    _same_store(store.root, local_experts)


def test_experts_trained_together_on_ray_equal_the_local_group(ray_runtime, digits_data, tmp_path):
    """A group of experts trained together (experts.ensemble=on) is one Ray task, and its experts equal
    the local executor's group bit for bit."""
    torch.set_num_threads(2)
    together = ["experts.ensemble=on"]
    local = train_experts(_experts_cfg(together), tmp_path / "local", digits_data, progress=False)
    remote = train_experts(_experts_cfg([*together, *RAY]), tmp_path / "ray", digits_data, progress=False)
    assert remote.completed == [0, 1, 2]
    _same_store(remote.root, local.root)


_USER_ERROR = r"""
import sys
from pathlib import Path
import distillset.experts.train as train
from distillset.cli import main
from distillset.errors import DataError

calls = Path(sys.argv[1])

def failing(cfg, data, store_root, curriculum, i):
    with calls.open("a") as f:
        f.write(f"{i}\n")
    raise DataError(f"expert {i} cannot read its shard of the data; check data.root.")

train.expert_task = failing  # pickled by value: the worker runs this function
main(["experts", "mtt-digits", *sys.argv[3:], "--out", sys.argv[2]])
"""


def test_a_user_error_inside_a_task_is_reported_once_as_one_line_with_exit_2(ray_runtime, tmp_path):
    calls = tmp_path / "calls"
    args = [*TINY, "experts.num_experts=1", *RAY]
    proc = subprocess.run(
        [sys.executable, "-c", _USER_ERROR, str(calls), str(tmp_path / "run"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    # the stage's progress bar, then the error, once; no traceback, nothing of Ray's
    assert lines[-1] == "error: expert 0 cannot read its shard of the data; check data.root.", proc.stderr
    assert all(line.startswith("experts: ") for line in lines[:-1]), proc.stderr
    assert calls.read_text().split() == ["0"]  # not retried
