"""Earth Engine helpers, offline: fast failure without credentials, and the queries they build
(checked against a fake ``ee`` module that records every call)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from aef_lite import earthengine as aee
from aef_lite.data import NORM_STATS, validate_series
from aef_lite.geo import pixel_to_lonlat

LON, LAT = 12.68395, 52.50276  # centre of the s2_brandenburg sample
ENV_VARS = ["GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", aee.PROJECT_ENV, "GOOGLE_CLOUD_PROJECT"]


class FakeEE:
    """Stands in for ``ee``: every object records the chain of calls that built it."""

    def __init__(self, calls: tuple[tuple[str, tuple, dict], ...] = ()) -> None:
        self.calls = calls

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def args_of(self, name: str) -> list[tuple]:
        return [c[1] for c in self.calls if c[0] == name]


class _Method:
    def __init__(self, owner: FakeEE, name: str) -> None:
        self.owner, self.name = owner, name

    def __getattr__(self, name: str) -> _Method:  # ee.Geometry.Rectangle, ee.Filter.eq, ...
        return _Method(self.owner, f"{self.name}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> FakeEE:
        return FakeEE((*self.owner.calls, (self.name, args, kwargs)))


@pytest.fixture()
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and no Google environment variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture()
def fake_ee(monkeypatch: pytest.MonkeyPatch) -> FakeEE:
    """A fake ``ee`` in sys.modules, initialised; computePixels answers structured arrays."""
    fake = FakeEE()
    requests: list[dict[str, Any]] = []

    def compute_pixels(request: dict[str, Any]) -> np.ndarray:
        requests.append(request)
        d = request["grid"]["dimensions"]
        dtype = [(b, "<f8") for b in request["bandIds"]]
        out = np.zeros((d["height"], d["width"]), dtype=dtype)
        for i, band in enumerate(request["bandIds"]):
            out[band] = 0.01 * (i + 1)
        return out

    fake.data = SimpleNamespace(is_initialized=lambda: True, computePixels=compute_pixels,  # type: ignore[attr-defined]
                                requests=requests)
    monkeypatch.setitem(sys.modules, "ee", fake)
    return fake


def test_initialize_without_credentials_fails_fast(no_credentials: Path) -> None:
    pytest.importorskip("ee")
    start = time.perf_counter()
    with pytest.raises(aee.EarthEngineUnavailable) as info:
        aee.initialize(project="some-project")
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "no Earth Engine credentials" in message
    assert "earthengine authenticate" in message and "ee.Authenticate()" in message
    assert aee.PROJECT_ENV in message
    assert aee.available() is False


def test_initialize_without_project(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = no_credentials / ".config" / "earthengine" / "credentials"
    creds.parent.mkdir(parents=True)
    creds.write_text('{"refresh_token": "x"}')
    fake = FakeEE()
    fake.data = SimpleNamespace(is_initialized=lambda: False)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ee", fake)
    with pytest.raises(aee.EarthEngineUnavailable, match="no Google Cloud project"):
        aee.initialize()


def test_initialize_wraps_failures_and_timeouts(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(no_credentials / "sa.json"))
    (no_credentials / "sa.json").write_text("{}")
    monkeypatch.setenv(aee.PROJECT_ENV, "env-project")
    seen: dict[str, Any] = {}

    def refuse(project: str) -> None:
        seen["project"] = project
        raise OSError("network unreachable")

    fake = SimpleNamespace(Initialize=refuse, data=SimpleNamespace(is_initialized=lambda: False))
    monkeypatch.setitem(sys.modules, "ee", fake)
    with pytest.raises(aee.EarthEngineUnavailable, match="OSError: network unreachable"):
        aee.initialize()
    assert seen["project"] == "env-project"

    fake.Initialize = lambda project: time.sleep(5)
    start = time.perf_counter()
    with pytest.raises(aee.EarthEngineUnavailable, match="did not finish within 0.2 s"):
        aee.initialize(timeout_s=0.2)
    assert time.perf_counter() - start < 1.0

    deadlines: list[float] = []
    fake.Initialize = lambda project: seen.update(project=project)
    fake.data.setDeadline = deadlines.append
    assert aee.initialize(project="explicit") is True
    assert seen["project"] == "explicit" and deadlines == [aee.REQUEST_DEADLINE_MS]


def test_fallback_message_is_fixed_and_helpful() -> None:
    text = aee.fallback_message()
    assert text == aee.fallback_message()
    assert aee.EMBEDDING_COLLECTION in text and aee.ATTRIBUTION in text and "CC-BY-4.0" in text
    assert "earthengine authenticate" in text


def test_year_range_and_grid() -> None:
    assert aee.year_range(2020) == ("2020-01-01", "2021-01-01")
    grid = aee.utm_grid(LON, LAT, 128)
    assert grid["crsCode"] == "EPSG:32633"
    t = grid["affineTransform"]
    assert t["scaleX"] == 10.0 and t["scaleY"] == -10.0 and t["shearX"] == t["shearY"] == 0.0
    assert t["translateX"] % 10 == 0 and t["translateY"] % 10 == 0
    lon, lat = pixel_to_lonlat(aee.grid_transform(grid), grid["crsCode"], 64, 64)
    assert abs(lon - LON) < 1e-4 and abs(lat - LAT) < 1e-4  # centred within a pixel
    assert aee.utm_grid(-70.0, -33.4, 16)["crsCode"] == "EPSG:32719"


def test_embedding_request(fake_ee: FakeEE) -> None:
    grid = aee.utm_grid(LON, LAT, 64)
    request = aee.pixels_request(aee.embedding_image(2020, grid), grid, aee.EMBEDDING_BANDS)
    assert request["fileFormat"] == "NUMPY_NDARRAY" and request["grid"] is grid
    assert request["bandIds"] == [f"A{i:02d}" for i in range(64)]
    expr = request["expression"]
    assert expr.names() == ["ImageCollection", "filterDate", "filterBounds", "mosaic", "select",
                            "toFloat", "unmask"]
    assert expr.args_of("ImageCollection") == [("GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL",)]
    assert expr.args_of("filterDate") == [("2020-01-01", "2021-01-01")]
    assert expr.args_of("select") == [(request["bandIds"],)]
    assert expr.args_of("unmask") == [(aee.NODATA_FILL, False)]
    rect = expr.args_of("filterBounds")[0][0]
    assert rect.names() == ["Geometry.Rectangle"] and rect.calls[0][2]["proj"] == "EPSG:32633"
    with pytest.raises(ValueError, match="start in 2017"):
        aee.embedding_image(2016, grid)
    with pytest.raises(ValueError, match="computePixels limit"):
        aee.pixels_request(None, aee.utm_grid(LON, LAT, 512), aee.EMBEDDING_BANDS)


def test_official_embeddings_marks_nodata(fake_ee: FakeEE) -> None:
    emb = aee.official_embeddings(LON, LAT, 2021, size_px=8)
    assert emb.shape == (64, 8, 8) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[:, 0, 0], 0.01 * np.arange(1, 65), rtol=1e-6)
    (request,) = fake_ee.data.requests
    assert request["grid"]["affineTransform"]["scaleX"] == 10.0

    def with_hole(req: dict[str, Any]) -> np.ndarray:
        out = np.zeros((8, 8), dtype=[(b, "<f4") for b in req["bandIds"]])
        out["A00"][2, 3] = aee.NODATA_FILL
        return out

    fake_ee.data.computePixels = with_hole
    emb = aee.official_embeddings(LON, LAT, 2021, size_px=8)
    assert np.isnan(emb[:, 2, 3]).all() and np.isfinite(np.delete(emb.reshape(64, -1), 19, axis=1)).all()


def test_source_collections(fake_ee: FakeEE) -> None:
    grid = aee.utm_grid(LON, LAT, 32)
    s2 = aee.s2_collection(grid, "2020-01-01", "2021-01-01")
    assert s2.args_of("ImageCollection") == [("COPERNICUS/S2_HARMONIZED",)]
    (link,) = s2.args_of("linkCollection")
    assert link[0].args_of("ImageCollection") == [("GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED",)]
    assert link[1] == ["cs_cdf"]
    s1 = aee.s1_collection(grid, "2020-01-01", "2021-01-01")
    filters = [f[0].calls[0] for f in s1.args_of("filter")]
    assert ("Filter.eq", ("instrumentMode", "IW"), {}) in filters
    assert {f[1][1] for f in filters if f[0] == "Filter.listContains"} == {"VV", "VH"}
    landsat = aee.landsat_collection(grid, "2020-01-01", "2021-01-01")
    merged = landsat.args_of("merge")[0][0]
    assert landsat.args_of("ImageCollection") == [("LANDSAT/LC08/C02/T1_TOA",)]
    assert merged.args_of("ImageCollection") == [("LANDSAT/LC09/C02/T1_TOA",)]
    frame = aee.frame_image(s2, 86_400_000 * 18_300, aee.SOURCES["s2"])
    day_filter = frame.args_of("filterDate")[-1]
    assert day_filter == (86_400_000 * 18_300, 86_400_000 * 18_301)
    assert frame.args_of("select")[-1][0][-1] == "cs_cdf" and len(frame.args_of("select")[-1][0]) == 14


def test_s2_bands_follow_norm_stats_order() -> None:
    spec = aee.SOURCES["s2"]
    assert len(spec.bands) == len(NORM_STATS["s2"][0]) == 13
    assert spec.bands[8] == "B8A" and spec.ee_bands[8] == "B8A" and spec.ee_bands[0] == "B1"


def test_day_groups_merge_one_overpass() -> None:
    day = 86_400_000
    times = [day * 10 + 5, day * 3 + 100, day * 10 + 1, day * 11]
    assert aee.day_groups(times) == [(day * 3, day * 3 + 100), (day * 10, day * 10 + 1), (day * 11, day * 11)]


def test_frame_masks() -> None:
    fill = aee.NODATA_FILL
    s1 = np.array([[[-12.0, -31.0, fill]], [[-20.0, -20.0, -20.0]]], dtype=np.float32)  # (2, 1, 3)
    values, mask = aee.frame_arrays(s1, aee.SOURCES["s1"])
    assert mask.tolist() == [[True, False, False]] and values[:, 0, 1:].tolist() == [[0, 0], [0, 0]]
    s2 = np.full((14, 1, 3), 1500.0, dtype=np.float32)
    s2[-1] = [0.9, 0.3, 0.9]  # cs_cdf: clear, cloudy, clear
    s2[4, 0, 2] = 0.0  # L1C no data in one band
    values, mask = aee.frame_arrays(s2, aee.SOURCES["s2"])
    assert mask.tolist() == [[True, False, False]] and values[0, 0, 0] == pytest.approx(0.15)
    landsat = np.full((8, 1, 3), 0.2, dtype=np.float32)
    landsat[-1] = [21824, 21824 | 0b1000, 21824 | 0b1]  # clear, cloud bit, fill bit
    _, mask = aee.frame_arrays(landsat, aee.SOURCES["landsat"])
    assert mask.tolist() == [[True, False, False]]


def test_fetch_stack_builds_a_valid_sample(fake_ee: FakeEE, monkeypatch: pytest.MonkeyPatch) -> None:
    day = 86_400_000
    monkeypatch.setattr(aee, "_frame_times", lambda collection: [day * 18_400 + 36_000_000, day * 18_300])

    def answer(request: dict[str, Any]) -> np.ndarray:
        d = request["grid"]["dimensions"]
        out = np.zeros((d["height"], d["width"]), dtype=[(b, "<f4") for b in request["bandIds"]])
        for band in request["bandIds"]:
            out[band] = {"cs_cdf": 0.9, "VV": -10.0, "VH": -18.0, "QA_PIXEL": 21824}.get(band, 1200.0)
        return out

    fake_ee.data.computePixels = answer
    sample = aee.fetch_stack(LON, LAT, "2020-01-01", "2021-01-01", size_px=16, sources=("s2", "s1"))
    assert list(sample.sources) == ["s2", "s1"]
    assert sample.crs == "EPSG:32633" and sample.pixel_size_m == 10.0 and sample.height == 16
    s2 = sample.sources["s2"]
    validate_series(s2)
    assert s2.values.shape == (2, 13, 16, 16) and s2.days.tolist() == pytest.approx([18_300.0, 18_400 + 10 / 24])
    assert np.allclose(s2.values, 0.12) and s2.mask.all()
    assert sample.sources["s1"].values[0, 1, 0, 0] == -18.0
    assert sample.meta["collections"]["s2"] == ["COPERNICUS/S2_HARMONIZED", "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"]


def test_compare_with_official() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 12, 10))
    a /= np.linalg.norm(a, axis=0)
    same = aee.compare_with_official(a, a.astype(np.float32))
    assert same["mean_dot"] == pytest.approx(1.0, abs=1e-6) and same["structure_r"] == pytest.approx(1.0)
    assert same["n_pixels"] == 120 and same["ours_norm"] == pytest.approx(1.0)
    rotation, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    rotated = np.einsum("ij,jhw->ihw", rotation, a)  # another space, same pixel relations
    rot = aee.compare_with_official(rotated, a)
    assert abs(rot["mean_dot"]) < 0.3 and rot["structure_r"] == pytest.approx(1.0)
    b = a.copy()
    b[:, 0, 0] = np.nan
    assert aee.compare_with_official(a, b)["n_pixels"] == 119
