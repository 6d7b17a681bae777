"""Progress that suits where the output goes: a redrawn bar on a terminal, quiet periodic lines in a log.

On a terminal `progress_bar` is tqdm. When stderr is a file or a pipe (a redirected `make demo`, a batch
job's log), tqdm would write one carriage-return record per refresh, which a log shows as one line per
update; there a `LogProgress` writes one full line every `DISTILLSET_PROGRESS_SECONDS` seconds (default
30) and one when the loop ends, so a log gets about two lines a minute per running loop.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

DEFAULT_SECONDS = 30.0
ENV = "DISTILLSET_PROGRESS_SECONDS"


def log_interval() -> float:
    """Seconds between a log's progress lines (`DISTILLSET_PROGRESS_SECONDS`, default 30)."""
    try:
        return max(0.0, float(os.environ.get(ENV, DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class LogProgress:
    """tqdm's interface (update, set_description, set_postfix_str, close, iteration, `with`), printed as
    one line every `interval` seconds and one at the end:

        distill loss 0.81: 40/150 it (27%), 0:31 elapsed, ~1:25 left, val 0.912 (best 0.912 @ 40)
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        interval: float | None = None,
        file: TextIO | None = None,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start_n = self.last_n = initial
        self.postfix = ""
        self.interval = log_interval() if interval is None else interval
        self.file = file
        self.t0 = self.last = time.monotonic()
        self.closed = False

    def _line(self, final: bool) -> str:
        elapsed = time.monotonic() - self.t0
        head = f"{self.desc}: " if self.desc else ""
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if final:
            parts.append(f"done in {_clock(elapsed)}")
        else:
            parts.append(f"{_clock(elapsed)} elapsed")
            done = self.n - self.start_n
            if self.total and done > 0:
                parts.append(f"~{_clock(elapsed / done * (self.total - self.n))} left")
        if self.postfix:
            parts.append(self.postfix)
        return head + ", ".join(parts)

    def _emit(self, final: bool = False) -> None:
        out = self.file or sys.stderr
        print(self._line(final), file=out, flush=True)
        self.last, self.last_n = time.monotonic(), self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and self.n >= self.total:
            self._emit(final=True)
        elif time.monotonic() - self.last >= self.interval:
            self._emit()

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        """A last line, unless the last one written already says where the loop stopped."""
        if not self.closed and self.n != self.last_n:
            self._emit(final=not self.total or self.n >= self.total)
        self.closed = True

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, disable: bool = False, **kwargs: Any) -> Any:
    """tqdm on a terminal, `LogProgress` when stderr is redirected, a silent tqdm when `disable`."""
    if disable or sys.stderr.isatty():
        return tqdm(iterable, disable=disable, **kwargs)
    return LogProgress(iterable, **kwargs)
