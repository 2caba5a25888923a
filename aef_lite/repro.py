"""Reproducibility: one call that fixes every source of randomness the package uses."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_THREADS = 2


def seed_everything(seed: int = 0, threads: int | None = None) -> None:
    """Seed Python, NumPy and torch, and fix torch's CPU thread count.

    Float reductions can change with the number of threads, so notebooks pin it
    (default ``AEF_LITE_THREADS`` or 2, the size of the CI machine) to print the same digits
    on every run.
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - user code in notebooks may use the legacy global RNG
    torch.manual_seed(seed)
    torch.set_num_threads(threads or int(os.environ.get("AEF_LITE_THREADS", DEFAULT_THREADS)))
