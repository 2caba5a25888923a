"""Earth Engine helpers, offline: fast failure without credentials, and the queries they build.

The queries are built with the real ``earthengine-api``, initialised offline the way its own
``ee.apitestcase`` does (the shipped ``ee/tests/algorithms.json`` instead of the server's list of
algorithms), and serialised: a wrong method or argument name fails here, as it would on the
server. Only the network calls (``ee.data.computePixels``, ``ee.data.computeValue``) are replaced.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from aef_lite import earthengine as aee
from aef_lite.data import NORM_STATS, validate_series
from aef_lite.geo import lonlat_to_utm, pixel_to_lonlat

LON, LAT = 12.68395, 52.50276  # centre of the s2_brandenburg sample
ENV_VARS = ["GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", aee.PROJECT_ENV, "GOOGLE_CLOUD_PROJECT",
            *aee.GOOGLE_CLOUD_ENV]


@pytest.fixture()
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME, no Google environment variables, not a Google Cloud machine."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(aee, "DMI_PRODUCT_NAME", tmp_path / "product_name")
    return tmp_path


class FakeInit:
    """An ``ee`` with only the attributes initialize() may use; records its calls."""

    def __init__(self, behaviour: Any = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.deadlines: list[int] = []
        self.behaviour = behaviour
        self.data = SimpleNamespace(is_initialized=lambda: False, setDeadline=self.deadlines.append)

    def Initialize(self, credentials: Any = "persistent", project: str | None = None) -> None:  # noqa: N802
        self.calls.append({"credentials": credentials, "project": project})
        if self.behaviour is not None:
            self.behaviour()


def _install(monkeypatch: pytest.MonkeyPatch, fake: FakeInit) -> FakeInit:
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
    assert aee.PROJECT_ENV in message and "quota tier" in message
    assert aee.available() is False


def test_without_a_project_ee_finds_its_own(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = no_credentials / ".config" / "earthengine" / "credentials"
    creds.parent.mkdir(parents=True)
    creds.write_text('{"refresh_token": "x"}')
    fake = _install(monkeypatch, FakeInit())
    assert aee.initialize() is True  # ee.Initialize reads the project of `earthengine set_project` itself
    assert fake.calls == [{"credentials": "persistent", "project": None}]
    assert fake.deadlines == [aee.REQUEST_DEADLINE_MS]


@pytest.mark.parametrize("where", ["cloudsdk_config", "windows_appdata", "google_cloud_env", "gce_bios",
                                   "explicit_credentials"])
def test_credentials_without_an_ee_file_are_accepted(no_credentials: Path, monkeypatch: pytest.MonkeyPatch,
                                                     where: str) -> None:
    adc = no_credentials / "gcloud-config" / "application_default_credentials.json"
    kwargs: dict[str, Any] = {}
    if where == "cloudsdk_config":
        adc.parent.mkdir()
        adc.write_text("{}")
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(adc.parent))
    elif where == "windows_appdata":
        (no_credentials / "AppData" / "gcloud").mkdir(parents=True)
        (no_credentials / "AppData" / "gcloud" / adc.name).write_text("{}")
        monkeypatch.setattr(aee, "_WINDOWS", True)
        monkeypatch.setenv("APPDATA", str(no_credentials / "AppData"))
    elif where == "google_cloud_env":
        monkeypatch.setenv("K_SERVICE", "my-service")  # Cloud Run: the metadata server gives credentials
    elif where == "gce_bios":
        (no_credentials / "product_name").write_text("Google Compute Engine\n")
    else:
        kwargs["credentials"] = object()  # e.g. ee.ServiceAccountCredentials(...): nothing to look for on disk
    fake = _install(monkeypatch, FakeInit())
    assert aee.initialize(project="p", **kwargs) is True
    assert fake.calls[0]["project"] == "p"
    if where == "windows_appdata":
        assert aee._gcloud_config_dir() == no_credentials / "AppData" / "gcloud"


def test_initialize_wraps_failures_and_timeouts(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(no_credentials / "sa.json"))
    (no_credentials / "sa.json").write_text("{}")
    monkeypatch.setenv(aee.PROJECT_ENV, "env-project")

    def refuse() -> None:
        raise OSError("network unreachable")

    fake = _install(monkeypatch, FakeInit(refuse))
    with pytest.raises(aee.EarthEngineUnavailable, match="OSError: network unreachable"):
        aee.initialize()
    assert fake.calls[-1]["project"] == "env-project" and fake.deadlines == []

    fake.behaviour = lambda: time.sleep(0.4)
    start = time.perf_counter()
    with pytest.raises(aee.EarthEngineUnavailable, match="did not finish within 0.05 s"):
        aee.initialize(timeout_s=0.05)
    assert time.perf_counter() - start < 0.3
    time.sleep(0.6)  # the abandoned attempt succeeds later: its requests still get the deadline
    assert fake.deadlines == [aee.REQUEST_DEADLINE_MS]

    fake.behaviour = None
    assert aee.initialize(project="explicit") is True
    assert fake.calls[-1]["project"] == "explicit" and fake.deadlines == [aee.REQUEST_DEADLINE_MS] * 2


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


@pytest.mark.parametrize("size", [1, 5, 7, 33, 64])
def test_grid_lies_on_the_10_m_lattice_for_every_size(size: int) -> None:
    grid = aee.utm_grid(LON, LAT, size)
    t = grid["affineTransform"]
    assert t["translateX"] % 10 == 0 and t["translateY"] % 10 == 0, t
    easting, northing, _, _ = lonlat_to_utm(LON, LAT)
    col, row = (float(easting) - t["translateX"]) / 10.0, (t["translateY"] - float(northing)) / 10.0
    if size % 2:  # the point lies in the central pixel
        assert int(col) == int(row) == size // 2
    else:  # within half a pixel of the centre corner
        assert abs(col - size / 2) <= 0.5 and abs(row - size / 2) <= 0.5


@pytest.fixture()
def real_ee(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The real ``ee``, initialised offline like ``ee.apitestcase.ApiTestCase``; ``computePixels``
    records its requests (with the serialised expression) and answers structured arrays, and
    ``computeValue`` answers ``real_ee.values[<collection id>]``."""
    ee = pytest.importorskip("ee")
    apitestcase = pytest.importorskip("ee.apitestcase")
    monkeypatch.setattr(ee.data, "_install_cloud_api_resource", lambda: None)
    monkeypatch.setattr(ee.data, "getAlgorithms", apitestcase.GetAlgorithms)
    monkeypatch.setattr(ee.deprecation, "_FetchDataCatalogStac", lambda: {})
    ee.Reset()
    ee.Initialize(None, "", project="my-project")
    requests: list[dict[str, Any]] = []
    values: dict[str, Any] = {}

    def compute_pixels(request: dict[str, Any]) -> np.ndarray:
        requests.append({**request, "graph": _graph(request["expression"])})
        d = request["grid"]["dimensions"]
        out = np.zeros((d["height"], d["width"]), dtype=[(b, "<f8") for b in request["bandIds"]])
        for i, band in enumerate(request["bandIds"]):
            out[band] = 0.01 * (i + 1)
        return out

    def compute_value(obj: Any) -> Any:
        constants = _constants(_graph(obj))
        return next(v for k, v in values.items() if k in constants)

    monkeypatch.setattr(ee.data, "computePixels", compute_pixels)
    monkeypatch.setattr(ee.data, "computeValue", compute_value)
    ee.requests, ee.values = requests, values
    yield ee
    ee.Reset()


def _graph(obj: Any) -> dict[str, Any]:
    """The expression graph Earth Engine would send for ``obj`` (fails on unknown methods), with
    shared values inlined and arrays of constants written as one constant list."""
    import ee

    sent = json.loads(ee.serializer.toJSON(obj))
    shared = sent["values"]

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(v) for v in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"valueReference"}:
            return inline(shared[node["valueReference"]])
        if "body" in node and isinstance(node["body"], str):  # a function definition's body is a value id
            node = {**node, "body": shared[node["body"]]}
        node = {k: inline(v) for k, v in node.items()}
        items = node.get("arrayValue", {}).get("values")
        if items is not None and all(set(v) == {"constantValue"} for v in items):
            return {"constantValue": [v["constantValue"] for v in items]}
        return node

    return inline(shared[sent["result"]])


def _functions(graph: Any) -> list[str]:
    if isinstance(graph, dict):
        own = [graph["functionName"]] if "functionName" in graph else []
        return own + [f for v in graph.values() for f in _functions(v)]
    return [f for v in graph for f in _functions(v)] if isinstance(graph, list) else []


def _constants(graph: Any) -> list[Any]:
    if isinstance(graph, dict):
        own = [graph["constantValue"]] if "constantValue" in graph else []
        return own + [c for k, v in graph.items() if k != "constantValue" for c in _constants(v)]
    return [c for v in graph for c in _constants(v)] if isinstance(graph, list) else []


def test_embedding_request_serialises(real_ee: Any) -> None:
    grid = aee.utm_grid(LON, LAT, 64)
    request = aee.pixels_request(aee.embedding_image(2020, grid), grid, aee.EMBEDDING_BANDS)
    assert request["fileFormat"] == "NUMPY_NDARRAY" and request["grid"] is grid
    assert request["bandIds"] == [f"A{i:02d}" for i in range(64)]
    graph = _graph(request["expression"])
    names, constants = _functions(graph), _constants(graph)
    assert names[:4] == ["Image.unmask", "Image.toFloat", "Image.select", "ImageCollection.mosaic"]
    assert {"ImageCollection.load", "Filter.dateRangeContains", "Filter.intersects",
            "GeometryConstructors.Rectangle"} <= set(names)
    assert "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL" in constants and request["bandIds"] in constants
    scalars = {c for c in constants if not isinstance(c, list)}
    assert {"2020-01-01", "2021-01-01", "EPSG:32633", aee.NODATA_FILL} <= scalars
    t = grid["affineTransform"]
    assert [t["translateX"], t["translateY"] - 640.0, t["translateX"] + 640.0, t["translateY"]] in constants
    with pytest.raises(ValueError, match="start in 2017"):
        aee.embedding_image(2016, grid)
    with pytest.raises(ValueError, match="computePixels limit"):
        aee.pixels_request(None, aee.utm_grid(LON, LAT, 512), aee.EMBEDDING_BANDS)


def test_official_embeddings_marks_nodata(real_ee: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    emb = aee.official_embeddings(LON, LAT, 2021, size_px=8)
    assert emb.shape == (64, 8, 8) and emb.dtype == np.float32
    np.testing.assert_allclose(emb[:, 0, 0], 0.01 * np.arange(1, 65), rtol=1e-6)
    (request,) = real_ee.requests
    assert request["grid"]["affineTransform"]["scaleX"] == 10.0
    assert "2021-01-01" in _constants(request["graph"])

    def with_hole(req: dict[str, Any]) -> np.ndarray:
        out = np.zeros((8, 8), dtype=[(b, "<f4") for b in req["bandIds"]])
        out["A00"][2, 3] = aee.NODATA_FILL
        return out

    monkeypatch.setattr(real_ee.data, "computePixels", with_hole)
    emb = aee.official_embeddings(LON, LAT, 2021, size_px=8)
    assert np.isnan(emb[:, 2, 3]).all() and np.isfinite(np.delete(emb.reshape(64, -1), 19, axis=1)).all()


@pytest.mark.parametrize("name", sorted(aee.SOURCES))
def test_source_queries_serialise(real_ee: Any, name: str) -> None:
    spec = aee.SOURCES[name]
    grid = aee.utm_grid(LON, LAT, 32)
    collection = spec.collection(grid, "2020-01-01", "2021-01-01")
    graph = _graph(collection)
    names, constants = _functions(graph), _constants(graph)
    strings = {c for c in constants if isinstance(c, str)}
    assert set(spec.collection_ids) <= strings and names.count("ImageCollection.load") == len(spec.collection_ids)
    assert {"2020-01-01", "2021-01-01"} <= strings
    expected = {"s2": {"Image.linkCollection", "Collection.map"}, "s1": {"Filter.equals", "Filter.listContains"},
                "landsat": {"ImageCollection.merge"}}[name]
    assert expected <= set(names)
    if name == "s2":
        assert [aee.CLOUD_SCORE_BAND] in constants
    if name == "s1":
        assert {"instrumentMode", "IW", "VV", "VH", "transmitterReceiverPolarisation"} <= strings
    frame = _graph(aee.frame_image(collection, 86_400_000 * 18_300, spec))
    assert _functions(frame)[:4] == ["Image.unmask", "Image.toFloat", "Image.select", "ImageCollection.mosaic"]
    assert list(spec.request_bands) in _constants(frame)
    assert {86_400_000 * 18_300, 86_400_000 * 18_301} <= {c for c in _constants(frame) if isinstance(c, int)}
    times = _graph(collection.aggregate_array("system:time_start"))
    assert _functions(times)[0] == "AggregateFeatureCollection.array" and "system:time_start" in _constants(times)


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


def test_fetch_stack_builds_a_valid_sample(real_ee: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    day = 86_400_000
    real_ee.values.update({aee.S2_COLLECTION: [day * 18_400 + 36_000_000, day * 18_300],
                           aee.S1_COLLECTION: [day * 18_350]})

    def answer(request: dict[str, Any]) -> np.ndarray:
        real_ee.requests.append(_graph(request["expression"]))
        d = request["grid"]["dimensions"]
        out = np.zeros((d["height"], d["width"]), dtype=[(b, "<f4") for b in request["bandIds"]])
        for band in request["bandIds"]:
            out[band] = {"cs_cdf": 0.9, "VV": -10.0, "VH": -18.0, "QA_PIXEL": 21824}.get(band, 1200.0)
        return out

    monkeypatch.setattr(real_ee.data, "computePixels", answer)
    sample = aee.fetch_stack(LON, LAT, "2020-01-01", "2021-01-01", size_px=16, sources=("s2", "s1"))
    assert len(real_ee.requests) == 3  # one per source and day
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
