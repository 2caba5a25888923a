"""aef_lite.cpu_memory: freed memory is reused inside the block, and the setting ends with it.

Each check runs in a fresh interpreter, so the heap holds no free block left by other tests."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aef_lite.cpu_memory import _glibc, reuse_freed_memory

glibc = pytest.mark.skipif(_glibc() is None, reason="the setting exists on glibc only")

CHURN = """
import resource, sys, torch
from aef_lite.cpu_memory import reuse_freed_memory

def faults(mb, rounds):
    '''Minor page faults while a tensor of mb MB is allocated, written and freed rounds times.'''
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        x = torch.empty(mb << 18)
        x.fill_(1.0)  # touch every page
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with reuse_freed_memory():
    faults(64, 2)  # the heap grows once
    inside = faults(64, 10)
after = faults(256, 5)  # larger than the whole heap grew: fresh mmap pages every round again
print(inside, after, 64 * 2**20 // resource.getpagesize())
"""


@glibc
def test_freed_memory_is_reused_inside_the_block_only() -> None:
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True).stdout
    inside, after, pages_64mb = map(int, out.split())
    assert inside < 3 * pages_64mb  # of 10 rounds of 64 MB, at most two fault their pages in
    assert after > 0.9 * 5 * 4 * pages_64mb  # 5 rounds of 256 MB, each one faulted in again


def test_disabled_or_unsupported_is_a_no_op() -> None:
    with reuse_freed_memory(enabled=False) as active:
        assert active is False
    with reuse_freed_memory() as active:
        assert active is (_glibc() is not None)
