"""Reproducibility: one call that fixes every source of randomness the package uses."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import torch

DEFAULT_THREADS = 1


def seed_everything(seed: int = 0, threads: int | None = None) -> None:
    """Seed Python, NumPy and torch, and fix torch's CPU thread count.

    Float reductions can change with the number of threads, so notebooks pin it (default
    ``AEF_LITE_THREADS`` or 1) to print the same digits on every machine. One thread is also the
    robust choice on shared CPUs, where a second thread can make a run slower
    (:func:`idle_threads` picks the count from the load instead).
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - user code in notebooks may use the legacy global RNG
    torch.manual_seed(seed)
    torch.set_num_threads(threads or env_threads() or DEFAULT_THREADS)


def env_threads() -> int | None:
    """``$AEF_LITE_THREADS`` as a thread count, None if unset.

    Raises:
        ValueError: it is set but not a whole number >= 1.
    """
    env = os.environ.get("AEF_LITE_THREADS")
    if not env:
        return None
    if not env.strip().isdigit() or int(env) < 1:
        raise ValueError(f"AEF_LITE_THREADS must be a whole number >= 1, got {env!r}")
    return int(env)


def _cpu_times() -> tuple[int, int, int] | None:
    """(idle, total, cpus) jiffies since boot from Linux's ``/proc/stat``; None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            lines = fh.read().splitlines()
        fields = [int(v) for v in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError, IndexError):
        return None
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return fields[3] + fields[4], sum(fields), max(cpus, 1)


def busy_cores(window_s: float = 0.25) -> float | None:
    """How many cores other processes keep busy now: the busy share of all CPUs' time over
    ``window_s`` seconds (Linux ``/proc/stat``; this process sleeps meanwhile), else the 1-minute
    load average, else None. The load average lags (right after a two-minute job on one core it
    still reads about 0.9), hence the direct sample where there is one."""
    before = _cpu_times()
    if before is not None:
        time.sleep(window_s)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            return (1 - (after[0] - before[0]) / (after[1] - before[1])) * after[2]
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def idle_threads(limit: int = 2) -> int:
    """CPU threads a run can use without competing with other processes: the cores this process
    may run on minus :func:`busy_cores`, rounded, clamped to ``[1, limit]`` (1 where the load is
    unknown, e.g. on Windows).

    Measured on a 2-core machine, 400 steps of the tiny model's training: 2 threads took 0.74x
    the time of 1 when the machine was otherwise idle, 2.2x when another process kept both cores
    busy (load average 2). More than 2 threads were not measured, hence the default ``limit``.
    """
    busy = busy_cores()
    if busy is None:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(limit, cores, round(cores - busy)))
