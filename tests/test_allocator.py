"""Importing the package tells glibc malloc to reuse freed memory: a large tensor is then carved from the
heap, not mapped on its own (glibc's mallinfo2 counts the separately mapped blocks); DISTILLSET_ALLOCATOR=
system leaves glibc's defaults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, ctypes.util, json
import distillset, distillset.allocator as a
import torch

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblks
x = torch.empty(64 * 2**20 // 4)  # 64 MB, above glibc's largest mmap threshold
during = libc.mallinfo2().hblks
print(json.dumps({"applied": a.state["applied"], "why": a.state["why"], "mapped": during - before}))
"""

glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _child(**env: str) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        check=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not glibc, reason="glibc only")
def test_import_sets_reuse_and_large_blocks_come_from_the_heap():
    got = _child(DISTILLSET_ALLOCATOR="reuse")
    assert got["applied"] and got["why"] == "mallopt"
    assert got["mapped"] == 0  # no block mapped on its own

    system = _child(DISTILLSET_ALLOCATOR="system")
    assert not system["applied"] and system["why"] == "DISTILLSET_ALLOCATOR=system"
    assert system["mapped"] >= 1  # glibc's default: the 64 MB tensor is its own mapping
