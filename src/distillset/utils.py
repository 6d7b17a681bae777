"""Small shared helpers: derived seeds, device choice, atomic file writes, JSON I/O."""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

try:
    import fcntl
except ImportError:  # Windows: a stale lock's takeover is not guarded against a simultaneous one
    fcntl = None

from .errors import ConfigError, StoreError

T = TypeVar("T")


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed derived from the run's seed and a path of tags, e.g. (seed, "expert", 3).

    One config seed drives every generator; each consumer gets its own stream so that adding a
    consumer never shifts another's randomness.
    """
    h = hashlib.blake2b(repr((int(seed), *tags)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def generator(seed: int, *tags: object) -> torch.Generator:
    """A CPU generator seeded from `derive_seed`; draw on the CPU and move, so CPU and CUDA agree."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *tags))
    return g


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device={name!r} is not a device name; use auto, cpu or cuda[:N].") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but CUDA is not available; use device=auto or cpu.")
    return device


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, sync it to disk, then rename it over `path`.

    A reader never sees a half-written file, and an interrupted write (or a full disk) leaves the old
    file intact and no temporary file behind; one killed outright (SIGKILL, power loss) may leave its
    temporary file, which the next `directory_lock` of the directory removes (`sweep_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync(tmp)  # the data is on disk before the name points at it
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; keep the user's usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        _raise_if_full(e, path)
        raise
    _fsync(path.parent)


def atomic_write_dir(path: str | Path, write: Callable[[Path], T]) -> T:
    """Call `write(tmp)` on a temporary directory beside `path`, sync it to disk, then rename it to `path`
    (which may be an empty directory); returns what `write` returned. A reader never sees a half-written
    directory, and an interrupted write (or a full disk) leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    emptied = False
    try:
        result = write(tmp)
        for folder, _, files in os.walk(tmp):
            for name in files:
                _fsync(os.path.join(folder, name))
            _fsync(folder)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; keep the user's usual permissions
        if path.is_dir():
            path.rmdir()  # only an empty one: a directory with files refuses
            emptied = True
        os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if emptied:  # the empty directory that was to be filled stays
            path.mkdir(exist_ok=True)
        _raise_if_full(e, path)
        raise
    _fsync(path.parent)
    return result


def _fsync(path: str | Path) -> None:
    """Flush a file's (or a directory's entries') data to the disk; a no-op where a directory cannot be
    opened (Windows) or synced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):
        return
    try:
        os.fsync(fd)
    except OSError:
        if not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def _raise_if_full(e: BaseException, path: Path) -> None:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space is left on the device" if e.errno == errno.ENOSPC else "the disk quota is exceeded"
        raise StoreError(
            f"{path} could not be written: {what}; free some space and run the command again (it keeps "
            "what was written before)."
        ) from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def read_json(path: str | Path) -> Any:
    """The JSON in `path`. Bytes that are not UTF-8 raise json.JSONDecodeError like any other bad text,
    so a caller that catches one catches both (OSError when the file cannot be read)."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise json.JSONDecodeError(
            f"not UTF-8 text (byte {e.start} is {raw[e.start]:#04x})", "", e.start
        ) from e
    return json.loads(text)


LOCK = ".lock"
# The directories this process holds, with the stages running under each (outermost first): `run` holds
# the run directory while its stages take it again.
_HELD: dict[tuple[int, str], list[str]] = {}


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux), to tell a live owner from a process
    that took a dead owner's pid; None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict) -> bool:
    """Whether the lock's owner still runs. One on another machine (a worker of a cluster sharing the
    storage) cannot be asked: its lock is taken over, as by a task retried after its worker died."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    if owner.get("host", socket.gethostname()) != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = owner.get("started")
    return started is None or _started(pid) in (None, started)


def _read_owner(path: Path, fd: int | None = None) -> dict | None:
    """The owner recorded in a lock file (None when it is gone); a bare pid is the format of older runs."""
    try:
        raw = os.read(fd, 4096) if fd is not None else path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(raw.decode(errors="replace"))
    except json.JSONDecodeError:
        owner = None
    if isinstance(owner, int):
        owner = {"pid": owner}
    return owner if isinstance(owner, dict) else {"pid": 0}


def _write_lock_file(directory: Path, owner: dict) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f"{LOCK}.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    os.chmod(tmp, 0o644)
    return Path(tmp)


def _take_over(path: Path, stale: dict) -> None:
    """Remove the lock of a process that is gone, unless another process took it over meanwhile: whoever
    removes it holds an flock on that very file and checks that the name still points at it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same and _read_owner(path, fd) == stale:
            path.unlink()
    finally:
        os.close(fd)


def _acquire(path: Path, owner: dict) -> None:
    while True:
        # The lock appears with its content in one step (a hard link to a complete file), so a reader never
        # sees it empty; where hard links are not supported, it is created exclusively, then written.
        tmp = _write_lock_file(path.parent, owner)
        try:
            os.link(tmp, path)
            return
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    json.dump(owner, f)
                return
        finally:
            tmp.unlink()
        held = _read_owner(path)
        if held is None:
            continue  # released meanwhile
        if _alive(held):
            stage = f" ({held['stage']})" if isinstance(held.get("stage"), str) else ""
            raise StoreError(
                f"{path.parent} is being written by process {held['pid']}{stage}; wait for it or remove "
                f"{path} if that process is gone."
            )
        _take_over(path, held)


@contextmanager
def directory_lock(directory: str | Path, stage: str) -> Iterator[None]:
    """Hold `directory/.lock` while `stage` (experts, scores, distill, evaluate, report, ...) writes
    `directory`, so that two processes never write one run directory, expert store or scores directory
    at once: the second is refused with one line naming the first.

    The lock file records the owner's pid, machine, start time and stage; a lock whose process is gone
    (killed, the machine restarted, its pid now another process's) is taken over. Within one process
    the lock is re-entrant: `run` holds the run directory while its stages take it again, and the file
    names the stage running now.
    """
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    key = (os.getpid(), os.path.realpath(path))
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _started(os.getpid()),
        "stage": stage,
    }
    stages = _HELD.get(key)
    if stages is None:
        _acquire(path, owner)
        _HELD[key] = stages = []
        sweep_temporaries(directory)
    else:
        os.replace(_write_lock_file(directory, owner), path)
    stages.append(stage)
    try:
        yield
    finally:
        stages.pop()
        if stages:  # back to the enclosing stage
            os.replace(_write_lock_file(directory, {**owner, "stage": stages[-1]}), path)
        else:
            del _HELD[key]
            held = _read_owner(path)
            if held is not None and held.get("pid") == os.getpid():
                path.unlink(missing_ok=True)
            if created and not any(directory.iterdir()):
                directory.rmdir()  # a stage that stopped before writing anything leaves no directory


def _temporary(name: str) -> bool:
    """Whether `name` is one of `atomic_write`'s or `atomic_write_dir`'s temporaries (`.NAME.XXXXXXXX.tmp`);
    a lock's own temporaries (`.lock.XXXXXXXX.tmp`) belong to whoever is taking the lock and are left."""
    return name.startswith(".") and name.endswith(".tmp") and not name.startswith(f"{LOCK}.")


def sweep_temporaries(directory: str | Path) -> list[Path]:
    """Remove the temporaries that writers killed mid-write left under `directory` (which the caller
    holds locked, so no writer of its own is alive); returns what was removed. A subdirectory with a
    lock of its own is another owner's and is left to that lock's next holder."""
    removed: list[Path] = []
    for folder, dirs, files in os.walk(directory):
        here = Path(folder)
        for name in [d for d in dirs if _temporary(d)]:
            shutil.rmtree(here / name, ignore_errors=True)
            removed.append(here / name)
        dirs[:] = [d for d in dirs if not _temporary(d) and not (here / d / LOCK).exists()]
        for name in files:
            if _temporary(name):
                (here / name).unlink(missing_ok=True)
                removed.append(here / name)
    return removed


def locks(argument: str, stage: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: the function runs under `directory_lock` of the directory given as its `argument`."""

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> T:
            with directory_lock(signature.bind(*args, **kwargs).arguments[argument], stage):
                return fn(*args, **kwargs)

        return locked

    return decorate
