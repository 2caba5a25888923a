"""aef_lite.repro: seeding, the thread count, and the demo's choice of threads from the load."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from aef_lite import cli, repro


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _machine(monkeypatch: pytest.MonkeyPatch, cores: int, busy: float | None) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(repro, "busy_cores", lambda: busy)


@pytest.mark.parametrize(("cores", "busy", "expected"), [
    (2, 0.0, 2),    # idle 2-core machine: both cores
    (2, 0.3, 2),    # a little background work rounds away
    (2, 0.8, 1),    # one core mostly busy
    (2, 2.1, 1),    # both busy: never fewer than 1
    (16, 0.0, 2),   # capped at the limit
    (1, 0.0, 1),    # one core
    (4, None, 1),   # load unknown (e.g. Windows): the safe single thread
])
def test_idle_threads_follows_the_load(monkeypatch: pytest.MonkeyPatch, cores: int, busy: float | None,
                                       expected: int) -> None:
    _machine(monkeypatch, cores, busy)
    assert repro.idle_threads() == expected


def test_idle_threads_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, 16, 4.0)
    assert repro.idle_threads(limit=8) == 8
    assert repro.idle_threads(limit=32) == 12


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux /proc/stat")
def test_busy_cores_reads_this_machine() -> None:
    busy = repro.busy_cores(window_s=0.05)
    assert busy is not None and 0.0 <= busy <= os.cpu_count() + 1e-6


def test_busy_cores_falls_back_to_the_load_average_then_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repro, "_cpu_times", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 0.5), raising=False)
    assert repro.busy_cores() == 1.5

    def no_load() -> tuple[float, float, float]:
        raise OSError("load average not available")

    monkeypatch.setattr(os, "getloadavg", no_load, raising=False)
    assert repro.busy_cores() is None


def test_demo_threads_prefers_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch, 2, 0.0)
    monkeypatch.delenv("AEF_LITE_THREADS", raising=False)
    assert cli._demo_threads(None) == 2
    assert cli._demo_threads(1) == 1
    monkeypatch.setenv("AEF_LITE_THREADS", "1")
    assert cli._demo_threads(None) == 1
    assert cli._demo_threads(3) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("AEF_LITE_THREADS", bad)
        with pytest.raises(ValueError, match=f"AEF_LITE_THREADS must be a whole number >= 1, got '{bad}'"):
            cli._demo_threads(None)


def test_seed_everything_repeats_draws_and_sets_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AEF_LITE_THREADS", raising=False)
    repro.seed_everything(3, threads=2)
    first = (np.random.rand(), torch.rand(2))  # noqa: NPY002 - the legacy global RNG is what it seeds
    assert torch.get_num_threads() == 2
    repro.seed_everything(3)
    again = (np.random.rand(), torch.rand(2))  # noqa: NPY002
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    assert torch.get_num_threads() == repro.DEFAULT_THREADS


def test_seed_everything_rejects_a_bad_thread_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEF_LITE_THREADS", "0")
    with pytest.raises(ValueError, match="AEF_LITE_THREADS must be a whole number >= 1, got '0'"):
        repro.seed_everything(0)
    before = torch.get_num_threads()
    monkeypatch.setenv("AEF_LITE_THREADS", "2")
    try:
        repro.seed_everything(0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)  # the thread count is process-wide: later tests keep theirs
