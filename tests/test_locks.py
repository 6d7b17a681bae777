"""Two processes on one run directory: the second is refused with one line naming the first, never
interleaved. The other processes here are real (forked), holding the lock the way a stage does."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from distillset.cli import main
from distillset.errors import StoreError
from distillset.experts.scores import compute_scores
from distillset.experts.train import train_experts
from distillset.utils import LOCK, atomic_write, atomic_write_dir, directory_lock

FORK = mp.get_context("fork")  # the child inherits the imports: no second start of torch


def _hold(directory: str, stage: str, ready, release) -> None:  # noqa: ANN001
    with directory_lock(directory, stage):
        ready.set()
        release.wait(60)


@contextmanager
def held_elsewhere(directory: Path, stage: str = "distill"):  # noqa: ANN201
    """Another process holds `directory` as `stage` while the block runs; yields that process."""
    ready, release = FORK.Event(), FORK.Event()
    proc = FORK.Process(target=_hold, args=(str(directory), stage, ready, release))
    proc.start()
    try:
        assert ready.wait(30), "the holder did not take the lock"
        yield proc
    finally:
        release.set()
        proc.join(30)


def refusal(directory: Path, pid: int, stage: str) -> str:
    return (
        f"{directory} is being written by process {pid} ({stage}); wait for it or remove "
        f"{directory / LOCK} if that process is gone."
    )


def test_a_second_process_is_refused_then_serialised(tmp_path):
    with held_elsewhere(tmp_path, "distill") as holder:
        with pytest.raises(StoreError) as info:
            with directory_lock(tmp_path, "report"):
                pass
        assert str(info.value) == refusal(tmp_path, holder.pid, "distill")
    # once the holder is done, the lock is free and its file gone
    assert not (tmp_path / LOCK).exists()
    with directory_lock(tmp_path, "report"):
        assert json.loads((tmp_path / LOCK).read_text())["stage"] == "report"
    assert not (tmp_path / LOCK).exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    ready, release = FORK.Event(), FORK.Event()
    proc = FORK.Process(target=_hold, args=(str(tmp_path), "experts", ready, release))
    proc.start()
    assert ready.wait(30)
    proc.kill()  # SIGKILL: no clean-up of ours runs
    proc.join(30)
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == proc.pid
    with directory_lock(tmp_path, "experts"):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists()


def _write_forever(directory: str, ready) -> None:  # noqa: ANN001
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        ready.set()
        time.sleep(60)

    def write_dir(tmp: Path) -> None:
        (tmp / "part").write_bytes(b"half")
        atomic_write(Path(directory) / "sub" / "shard.safetensors", write)

    with directory_lock(directory, "experts"):
        atomic_write_dir(Path(directory) / "distilled", write_dir)


def test_temporaries_of_a_writer_killed_mid_write_are_removed_by_the_next_holder(tmp_path):
    ready = FORK.Event()
    proc = FORK.Process(target=_write_forever, args=(str(tmp_path), ready))
    proc.start()
    assert ready.wait(30)
    proc.kill()  # SIGKILL inside both atomic writes: their temporaries stay
    proc.join(30)
    left = sorted(p.name for p in tmp_path.rglob("*.tmp"))
    assert len(left) == 2 and all(name.startswith((".distilled.", ".shard.safetensors.")) for name in left)
    # another owner's directory (a lock of its own) and a lock's own temporary are not this holder's
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / LOCK).write_text(json.dumps({"pid": 0}))
    (tmp_path / "store" / ".shard.safetensors.abcdefgh.tmp").write_bytes(b"theirs")
    (tmp_path / f"{LOCK}.abcdefgh.tmp").write_bytes(b"{}")
    (tmp_path / "sub" / "kept.tmp").write_bytes(b"not a temporary: no leading dot")
    with directory_lock(tmp_path, "experts"):
        left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.tmp"))
    assert left == [f"{LOCK}.abcdefgh.tmp", "store/.shard.safetensors.abcdefgh.tmp", "sub/kept.tmp"]


def test_a_pid_reused_by_another_process_is_not_the_owner(tmp_path):
    """A lock whose pid now belongs to another live process (one started at another time), or whose
    owner ran on another machine, is taken over."""
    (tmp_path / LOCK).write_text(json.dumps({"pid": os.getppid(), "started": "0", "stage": "distill"}))
    with directory_lock(tmp_path, "distill"):
        pass
    # a process of another machine sharing the storage cannot be asked: as a retried task, take it over
    (tmp_path / LOCK).write_text(json.dumps({"pid": os.getppid(), "host": "elsewhere", "stage": "distill"}))
    with directory_lock(tmp_path, "distill"):
        pass
    # the same live process, started when it did: its lock holds
    (tmp_path / LOCK).write_text(json.dumps({"pid": os.getppid(), "stage": "distill"}))
    with pytest.raises(StoreError, match=f"process {os.getppid()} \\(distill\\)"):
        with directory_lock(tmp_path, "distill"):
            pass


def test_reentrant_within_a_process_and_names_the_stage_running_now(tmp_path):
    def stage() -> str:
        return json.loads((tmp_path / LOCK).read_text())["stage"]

    with directory_lock(tmp_path, "run"):
        assert stage() == "run"
        with directory_lock(tmp_path, "distill"):
            assert stage() == "distill"
            with directory_lock(tmp_path / ".." / tmp_path.name, "evaluate"):  # the same directory
                assert stage() == "evaluate"
            assert stage() == "distill"
        assert stage() == "run"
    assert not (tmp_path / LOCK).exists()


def test_a_stage_that_writes_nothing_leaves_no_directory(tmp_path):
    with directory_lock(tmp_path / "run", "scores"):
        assert (tmp_path / "run" / LOCK).exists()
    assert not (tmp_path / "run").exists()


def _contend(directory: str, start, results) -> None:  # noqa: ANN001
    start.wait(30)
    try:
        with directory_lock(directory, "distill"):
            results.put(("won", os.getpid()))
            time.sleep(1.0)  # every other process tries while this one holds it
    except StoreError:
        results.put(("refused", os.getpid()))


@pytest.mark.parametrize("stale", [False, True])
def test_of_processes_started_at_once_exactly_one_holds_the_lock(tmp_path, stale):
    if stale:  # all of them find the lock of a process that is gone, and race to take it over
        (tmp_path / LOCK).write_text(json.dumps({"pid": 999_999_999, "stage": "distill"}))
    start, results = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_contend, args=(str(tmp_path), start, results)) for _ in range(6)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=60)[0] for _ in procs]
    for p in procs:
        p.join(30)
    assert outcomes.count("won") == 1 and outcomes.count("refused") == 5
    assert not (tmp_path / LOCK).exists()


def test_expert_store_and_scores_directory_are_locked(tmp_path):
    with held_elsewhere(tmp_path / "experts", "experts") as holder:
        with pytest.raises(StoreError, match=f"process {holder.pid} \\(experts\\)"):
            train_experts(None, tmp_path / "experts")  # refused before the config is looked at
    with held_elsewhere(tmp_path / "scores", "scores") as holder:
        with pytest.raises(StoreError, match=f"process {holder.pid} \\(scores\\)"):
            compute_scores(None, None, tmp_path / "scores")


@pytest.mark.parametrize(
    "command",
    [
        ["experts", "datm-digits", "--out", "{run}"],
        ["scores", "pad-digits", "--out", "{run}"],
        ["distill", "datm-digits", "--out", "{run}"],
        ["run", "datm-digits", "--out", "{run}"],
        ["evaluate", "{run}/distilled"],
        ["report", "{run}"],
    ],
    ids=lambda c: c[0],
)
def test_every_stage_refuses_a_run_directory_that_another_process_writes(tmp_path, capsys, command):
    run = tmp_path / "run"
    (run / "distilled").mkdir(parents=True)
    (run / "config.yaml").write_text("method: datm\n")
    before = sorted(p.name for p in run.rglob("*"))
    with held_elsewhere(run, "distill") as holder:
        with pytest.raises(SystemExit) as exc:
            main([part.format(run=run) for part in command])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err == f"error: {refusal(run, holder.pid, 'distill')}\n"
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written
