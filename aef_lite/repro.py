"""Reproducibility: one call that fixes every source of randomness the package uses."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_THREADS = 1


def seed_everything(seed: int = 0, threads: int | None = None) -> None:
    """Seed Python, NumPy and torch, and fix torch's CPU thread count.

    Float reductions can change with the number of threads, so notebooks pin it (default
    ``AEF_LITE_THREADS`` or 1) to print the same digits on every machine. One thread is also the
    robust choice on shared CPUs: the small ops of the tiny model gain little from a second
    thread and lose a lot (10x seen here) when another process competes for the cores.
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - user code in notebooks may use the legacy global RNG
    torch.manual_seed(seed)
    torch.set_num_threads(threads or int(os.environ.get("AEF_LITE_THREADS", DEFAULT_THREADS)))
