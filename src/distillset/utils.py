"""Small shared helpers: derived seeds, device choice, atomic file writes, JSON I/O."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

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
    file intact and no temporary file behind.
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
    return json.loads(Path(path).read_text())


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def directory_lock(directory: str | Path, what: str) -> Iterator[None]:
    """Hold `directory/.lock` (the owner's pid) while `what` runs, so that two processes never write one
    run directory at once. A lock left by a process that no longer exists is taken over."""
    path = Path(directory) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if _alive(pid):
                raise StoreError(
                    f"another process (pid {pid}) is {what} in {path.parent.parent}; wait for it or stop it "
                    f"(if no such process exists, delete {path})."
                ) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
