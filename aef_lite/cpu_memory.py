"""Reuse of freed CPU memory while training: glibc's malloc told to keep what the step frees.

A training step of the tiny model allocates and frees thousands of temporaries, hundreds of them
between 0.1 and 10 MB (activations of ``(B*T, D, 16, 16)`` frames, their gradients, layout
copies). glibc serves large requests with fresh ``mmap`` pages and gives them back to the kernel
when they are freed, so every step pays again for the page faults that zero them: about 6,000
minor faults per tiny step, 5 % of its time in the kernel, and more in cache misses (AMD EPYC,
torch 2.13, 1 thread). With the two thresholds raised, freed blocks stay in the heap and the
next step reuses them: 0-20 faults per step, and steps 1.13x (tiny) and 1.11x (small) faster than
with glibc's default thresholds, alternating in one process (``benchmarks/README.md``, training
speed). Peak memory is unchanged; freed memory is returned to the system when the block ends.

This is a process-wide setting of the C library, so :func:`reuse_freed_memory` sets it for the
duration of a ``with`` block only (:func:`aef_lite.train.train` wraps its loop in one on CPU).
Where ``mallopt`` is not glibc's (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's ``mallopt`` parameter numbers (``<malloc.h>``)."""

KEEP_BYTES = 1 << 30
"""Both thresholds inside the block: requests up to 1 GiB come from the heap, and up to 1 GiB of
freed memory at its top is kept for reuse."""

GLIBC_DEFAULT_BYTES = 128 * 1024
"""Both thresholds after the block: glibc's documented defaults."""


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it has ``gnu_get_libc_version``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def _set_thresholds(libc: ctypes.CDLL, nbytes: int) -> bool:
    """Set the mmap and trim thresholds to ``nbytes``; True if glibc accepted both."""
    return bool(libc.mallopt(M_MMAP_THRESHOLD, nbytes)) & bool(libc.mallopt(M_TRIM_THRESHOLD, nbytes))


@contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside the block, freed heap memory is kept for reuse (module docstring); yields whether
    the setting is active (False off glibc or with ``enabled=False``). On exit the thresholds go
    back to glibc's defaults (fixed ones: glibc's automatic adjustment of the mmap threshold
    stays off, as after any ``mallopt`` call) and the kept memory is released (``malloc_trim``)."""
    libc = _glibc() if enabled else None
    active = libc is not None and _set_thresholds(libc, KEEP_BYTES)
    try:
        yield active
    finally:
        if libc is not None:
            _set_thresholds(libc, GLIBC_DEFAULT_BYTES)
            libc.malloc_trim(0)
