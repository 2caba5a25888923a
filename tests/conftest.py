"""Shared data fixtures: the shipped real samples (loaded once) and small synthetic series."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from aef_lite.data import Sample, SourceSeries, list_samples, load_sample

SAMPLE_NAMES = ["landsat_colorado", "s2_brandenburg", "s2_virginia"]


@pytest.fixture(scope="session")
def samples() -> dict[str, Sample]:
    """Every shipped sample, by name."""
    assert list_samples() == SAMPLE_NAMES
    return {name: load_sample(name) for name in SAMPLE_NAMES}


@pytest.fixture()
def make_series() -> Callable[..., SourceSeries]:
    """Factory of a valid synthetic ``landsat7`` series (T, 3, H, W); override any field."""

    def _make(t: int = 4, h: int = 16, w: int = 16, **overrides: object) -> SourceSeries:
        rng = np.random.default_rng(0)
        fields: dict[str, object] = {
            "values": rng.uniform(0.01, 0.5, (t, 3, h, w)).astype(np.float32),
            "days": 15000.0 + 16.0 * np.arange(t),
            "mask": np.ones((t, h, w), dtype=bool),
            "bands": ["red", "nir", "swir1"],
            "wavelengths_nm": [660.0, 835.0, 1650.0],
            "sensor": "landsat7",
        }
        fields.update(overrides)
        return SourceSeries(**fields)  # type: ignore[arg-type]

    return _make
