"""glibc malloc told to keep and reuse freed memory, set in-process when the package is imported.

With glibc's defaults every block above the mmap threshold (at most 32 MB) is a fresh mmap, returned to
the kernel when freed, so a loop that allocates the same large activations on every inner step faults
their pages in again each time, and the heap is trimmed back after every peak. Told never to map large
blocks separately and not to trim, malloc reuses the freed memory instead: the adjoint engine's
iteration on ConvNet-64-3 (1x28x28, IPC 10, 2 threads) took 2.68 s instead of 3.64 s at 10 inner steps
and 5.77 s instead of 6.41 s at 20 (`benchmarks/results/engine_vs_authors_small.md` against
`engine_system_allocator_small.md`); the digits demo's DATM iteration at IPC 10, 0.90 s instead of
1.0-1.1 s. The cost: memory freed after a peak stays with the process (it is reused, not returned).

`DISTILLSET_ALLOCATOR=system` before the import leaves the allocator as it is; anything but glibc is
left alone. Settings already made through the `MALLOC_*_` environment variables are kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ENV = "DISTILLSET_ALLOCATOR"
# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1, M_TOP_PAD: 2**28}
_ENV_NAMES = {
    M_MMAP_MAX: "MALLOC_MMAP_MAX_",
    M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_",
    M_TOP_PAD: "MALLOC_TOP_PAD_",
}

state = {"applied": False, "why": "not tried"}


def reuse_freed_memory() -> bool:
    """Apply `SETTINGS` with mallopt on glibc (once); returns whether they are in force."""
    if state["applied"]:
        return True
    if os.environ.get(ENV, "reuse") == "system":
        state["why"] = f"{ENV}=system"
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        state["why"] = "not glibc"
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        state["why"] = f"no mallopt ({e})"
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for param, value in SETTINGS.items():
        if _ENV_NAMES[param] not in os.environ:  # the user's own setting wins
            mallopt(param, value)
    state.update(applied=True, why="mallopt")
    return True
