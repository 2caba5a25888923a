"""Helpers shared by the benchmark scripts: machine description, timing, the matmul reference.

The development machine is a shared 2-core VM whose load changes from minute to minute, so
absolute times are not comparable between runs. Every script therefore reports *ratios* of
quantities measured in the same run (e.g. model FLOP/s over the dense matmul FLOP/s measured
right before and after), each a median over repeats.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date

import numpy as np
import torch


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    """Date, CPU, core count, torch/numpy versions and the torch thread count of this run."""
    return {
        "date": date.today().isoformat(),
        "cpu": cpu_model(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def print_machine(info: dict[str, object]) -> None:
    """One line describing the machine."""
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block. Default 1 everywhere, as in
    ``TrainConfig``: on a shared 2-core machine OpenMP spin-waiting makes 2 threads erratic."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_call(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    return float(statistics.median(values))


def matmul_flops_per_s(n: int = 1024, repeats: int = 5) -> float:
    """The machine's dense float32 matmul rate: ``2 n^3`` FLOPs per ``torch.mm`` of two n x n
    matrices, median over ``repeats`` (current torch thread count). The reference of every
    utilisation ratio: it is what the CPU sustains on the friendliest possible workload."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    return 2.0 * n**3 / median(time_call(lambda: torch.mm(a, b, out=out), repeats))
