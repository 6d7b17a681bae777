"""Progress that suits a log file: when stderr is not a terminal, a full line every few seconds (and one
at the end) instead of a carriage-return redraw per step."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest

from distillset import progress
from distillset.progress import LogProgress, progress_bar


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_log_progress_writes_one_line_per_interval_and_one_at_the_end(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    with LogProgress(total=960, desc="distill", unit="it", interval=30.0, file=out) as bar:
        for i in range(960):  # 0.125 s per step: two minutes of steps
            clock.t += 0.125
            bar.set_postfix_str(f"val {i}")
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [  # one line per 30 s, and the last when the loop ends
        "distill: 240/960 it (25%), 30 s elapsed, ~1:30 left, val 239",
        "distill: 480/960 it (50%), 1:00 elapsed, ~1:00 left, val 479",
        "distill: 720/960 it (75%), 1:30 elapsed, ~30 s left, val 719",
        "distill: 960/960 it (100%), done in 2:00, val 959",
    ]


def test_log_progress_resumed_counts_from_the_initial_position(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    bar = LogProgress(total=100, desc="distill", initial=50, interval=10.0, file=out)
    clock.t += 10.0
    bar.update(10)  # 10 steps in 10 s: 40 left at the same pace
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert lines[0] == "distill: 60/100 it (60%), 10 s elapsed, ~40 s left"
    assert len(lines) == 1  # nothing new since the last line: close adds none


def test_an_untouched_bar_writes_nothing_and_iteration_works(monkeypatch):
    out = io.StringIO()
    with LogProgress(total=5, desc="idle", file=out):
        pass
    assert out.getvalue() == ""
    items = list(LogProgress(range(4), desc="files", unit="img", interval=1e9, file=out))
    assert items == [0, 1, 2, 3]
    assert out.getvalue().splitlines() == ["files: 4/4 img (100%), done in 0 s"]


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(progress.ENV, "5")
    assert progress.log_interval() == 5.0
    monkeypatch.setenv(progress.ENV, "not-a-number")
    assert progress.log_interval() == progress.DEFAULT_SECONDS


def test_a_terminal_gets_tqdm_and_a_log_gets_lines(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress_bar(total=3, desc="x")
    assert not isinstance(bar, LogProgress)
    bar.close()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress_bar(total=3, desc="x"), LogProgress)
    assert not isinstance(progress_bar(total=3, desc="x", disable=True), LogProgress)


@pytest.mark.parametrize("interval", [None, "1"])
def test_a_redirected_run_logs_a_few_progress_lines_per_minute(tmp_path, interval):
    env = {k: v for k, v in os.environ.items() if k != progress.ENV}
    if interval:
        env[progress.ENV] = interval
    log = tmp_path / "log.txt"
    t0 = time.monotonic()
    with log.open("w") as f:
        subprocess.run(
            [sys.executable, "-m", "distillset", "demo", "--quick", "--out", str(tmp_path / "demo")],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            check=True,
        )
    minutes = (time.monotonic() - t0) / 60
    text = log.read_text()
    assert "\r" not in text
    lines = [ln for ln in text.splitlines() if re.search(r": \d+/\d+ \w+ \(\d+%\)", ln)]
    bars = {ln.split(":")[0].split(" loss ")[0] for ln in lines}
    assert bars >= {"experts", "distill", "evaluate"}
    # each of the 5 loops (experts, two distillations, two evaluations) writes its last line, plus at
    # most one line per interval while it runs (one loop runs at a time)
    per_minute = 60 / float(interval or progress.DEFAULT_SECONDS)
    assert len(lines) <= 5 + per_minute * minutes + 1
