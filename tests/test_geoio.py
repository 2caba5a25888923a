"""xarray and Cloud-Optimized GeoTIFF output of embedding fields (aef_lite.geoio), on synthetic fields."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from aef_lite import geoio
from aef_lite.embed import EmbeddingField
from aef_lite.quantization import NODATA, band_names, quantize

rasterio = pytest.importorskip("rasterio")

TRANSFORM = [10.0, 0.0, 400_000.0, 0.0, -10.0, 5_800_000.0]


def make_field(height: int = 300, width: int = 280, seed: int = 0, crs: str = "EPSG:32633",
               transform: list[float] | None = None) -> EmbeddingField:
    """Unit vectors that vary smoothly (8 px cells plus noise), with a 20 x 30 px no-data block."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((64, -(-height // 8), -(-width // 8)))
    emb = np.kron(coarse, np.ones((1, 8, 8)))[:, :height, :width] + 0.3 * rng.standard_normal((64, height, width))
    emb = (emb / np.linalg.norm(emb, axis=0)).astype(np.float32)
    emb[:, 5:25, 40:70] = np.nan
    return EmbeddingField(emb=emb, period=np.array([17532.0, 17897.0]), crs=crs,
                          transform=list(transform or TRANSFORM), pixel_size_m=10.0, name="synthetic")


@pytest.fixture(scope="module")
def field() -> EmbeddingField:
    return make_field()


def test_to_xarray_dims_coords_crs(field: EmbeddingField) -> None:
    pytest.importorskip("rioxarray")
    da = field.to_xarray()
    assert da.dims == ("band", "y", "x") and da.shape == field.emb.shape
    assert list(da.band.values) == band_names(64)
    np.testing.assert_allclose(da.x.values[:2], [400_005.0, 400_015.0])
    np.testing.assert_allclose(da.y.values[:2], [5_799_995.0, 5_799_985.0])
    assert da.rio.crs.to_epsg() == 32633
    assert list(da.rio.transform())[:6] == TRANSFORM
    np.testing.assert_array_equal(np.isnan(da.values), np.isnan(field.emb))
    assert da.attrs["period_days"] == [17532.0, 17897.0]
    # rioxarray selects by map coordinates: the pixel centred at (400105, 5799895) is row 10, col 10
    np.testing.assert_array_equal(da.sel(x=400_105.0, y=5_799_895.0).values, field.emb[:, 10, 10])


def test_save_cog_is_a_tiled_cog_with_overviews(field: EmbeddingField, tmp_path: Path) -> None:
    path = field.save_cog(tmp_path / "field.tif")
    info = geoio.describe_cog(path)
    assert info["dtype"] == "int8" and info["count"] == 64 and info["nodata"] == NODATA
    assert info["crs"] == "EPSG:32633" and info["transform"] == TRANSFORM  # north-up
    assert info["tiled"] and info["block_shape"] == (256, 256)
    assert info["overviews"] == [2]  # 300 px > one 256 px tile: one overview level
    assert info["compress"] == "deflate"
    assert info["descriptions"] == band_names(64)
    assert info["layout"] == "COG"
    assert geoio.cog_problems(path) == []
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(), geoio.field_codes(field))  # bit-exact int8 codes
        assert src.tags()["period_days"].split() == ["17532.000000", "17897.000000"]
    assert [p.name for p in tmp_path.iterdir()] == ["field.tif"]  # no temporary file left


def test_save_cog_without_cog_driver_is_still_a_cog(field: EmbeddingField, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geoio, "has_cog_driver", lambda: False)  # the GDAL < 3.1 path
    path = geoio.save_cog(field, tmp_path / "gtiff.tif")
    assert geoio.cog_problems(path) == []
    info = geoio.describe_cog(path)
    assert info["tiled"] and info["overviews"] == [2] and info["descriptions"] == band_names(64)
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(), geoio.field_codes(field))


def test_cog_problems_flags_a_plain_striped_geotiff(field: EmbeddingField, tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    codes = quantize(field.emb, dim=0, valid=field.valid)
    with rasterio.open(path, "w", driver="GTiff", width=codes.shape[2], height=codes.shape[1], count=64,
                       dtype="int8", tiled=False) as dst:
        dst.write(codes)
    problems = geoio.cog_problems(path)
    assert any("not tiled" in p for p in problems)
    assert any("ghost header" in p for p in problems)


def test_small_field_has_no_overviews_but_is_valid(tmp_path: Path) -> None:
    small = make_field(48, 40)
    path = small.save_cog(tmp_path / "small.tif")
    assert geoio.describe_cog(path)["overviews"] == []
    assert geoio.cog_problems(path) == []


def test_save_cog_is_atomic(field: EmbeddingField, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.tif"
    target.write_bytes(b"old contents")

    def broken(*args: object, **kwargs: object) -> None:
        Path(args[4]).write_bytes(b"half written")
        raise OSError("disk full")

    monkeypatch.setattr(geoio, "_write_int8", broken)
    with pytest.raises(OSError, match="disk full"):
        field.save_cog(target)
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tif"]


def test_release_layout_is_bottom_up(field: EmbeddingField, tmp_path: Path) -> None:
    path = geoio.save_release_layout(field, tmp_path / "release.tiff")
    with rasterio.open(path) as src:
        a, _, c, _, e, f = list(src.transform)[:6]
        assert e == 10.0 and f == 5_800_000.0 - 300 * 10.0  # origin at the south-west corner
        raw = src.read()
        assert src.descriptions == tuple(band_names(64)) and src.nodata == NODATA
        assert src.profile["tiled"] and src.overviews(1) == [2] and "period_days" not in src.tags()
    codes = geoio.field_codes(field)
    np.testing.assert_array_equal(raw, codes[:, ::-1])  # file row 0 = the field's southern row
    assert not np.array_equal(raw, codes)


def test_north_up_flips_only_bottom_up() -> None:
    codes = np.arange(2 * 3 * 2).reshape(2, 3, 2)
    same, t = geoio.north_up(codes, TRANSFORM)
    assert same is codes and t == TRANSFORM
    flipped, t = geoio.north_up(codes, [10.0, 0.0, 0.0, 0.0, 10.0, 100.0])
    np.testing.assert_array_equal(flipped, codes[:, ::-1])
    assert t == [10.0, 0.0, 0.0, 0.0, -10.0, 130.0]
    with pytest.raises(ValueError, match="axis-aligned"):
        geoio.north_up(codes, [10.0, 1.0, 0.0, 0.0, -10.0, 0.0])


def test_bad_arguments(field: EmbeddingField, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        geoio.save_cog(field, tmp_path / "x.tif", blocksize=100)
    rotated = EmbeddingField(field.emb, field.period, field.crs, [10.0, 0.5, 0.0, 0.5, -10.0, 0.0], 10.0, "r")
    with pytest.raises(ValueError, match="axis-aligned"):
        rotated.save_cog(tmp_path / "r.tif")
    with pytest.raises(ValueError, match="not a TIFF"):
        (tmp_path / "fake.tif").write_bytes(b"hello world, not a tiff")
        geoio.cog_problems(tmp_path / "fake.tif")


def test_missing_extra_names_the_geo_extra(field: EmbeddingField, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray now raises ImportError
    with pytest.raises(ModuleNotFoundError, match=r'pip install "aef-lite\[geo\]"'):
        field.to_xarray()


def test_codes_round_trip_every_value(tmp_path: Path) -> None:
    """All 255 valid codes and the no-data code survive save_cog -> read_cog bit-exactly."""
    from aef_lite.official import read_cog

    codes = np.broadcast_to(np.arange(-128, 128, dtype=np.int8).reshape(16, 16), (64, 16, 16)).copy()
    emb = np.where(codes == NODATA, np.nan, np.sign(codes) * (codes / 127.5) ** 2).astype(np.float32)
    f = EmbeddingField(emb, np.array([0.0, 1.0]), "EPSG:32633", TRANSFORM, 10.0, "codes")
    back = read_cog(f.save_cog(tmp_path / "codes.tif"))
    valid = ~np.isnan(back.emb).any(axis=0)
    np.testing.assert_array_equal(valid, ~(codes == NODATA).any(axis=0))
    np.testing.assert_array_equal(quantize(np.nan_to_num(back.emb), dim=0, valid=valid), codes)


def test_cog_problems_flags_overviews_appended_after_the_data(field: EmbeddingField, tmp_path: Path) -> None:
    """A tiled GTiff whose overviews were built afterwards has IFDs behind the data: not a COG."""
    from rasterio.enums import Resampling

    path = tmp_path / "late.tif"
    with rasterio.open(path, "w", driver="GTiff", dtype="int8", count=64, height=300, width=280, tiled=True,
                       blockxsize=256, blockysize=256, crs="EPSG:32633", nodata=NODATA) as dst:
        dst.write(geoio.field_codes(field))
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2], Resampling.nearest)
    problems = geoio.cog_problems(path)
    assert any("IFD lies after image data" in p for p in problems), problems


def test_torchgeo_google_satellite_embedding_reads_both_layouts(field: EmbeddingField, tmp_path: Path) -> None:
    """torchgeo's dataset class for the release (torchgeo >= 0.9) reads our COG and the bottom-up layout
    the same, north-up. Runs only where torchgeo imports; it reads the int8 codes as float32."""
    datasets = pytest.importorskip("torchgeo.datasets")
    dataset_class = getattr(datasets, "GoogleSatelliteEmbedding", None)
    if dataset_class is None:
        pytest.skip("this torchgeo has no GoogleSatelliteEmbedding (added in torchgeo 0.9)")
    expected = geoio.field_codes(field)[:, 100:164, 130:194].astype(np.float32)  # rows 100..163, cols 130..193
    x0, x1 = 400_000.0 + 1300.0, 400_000.0 + 1940.0
    y0, y1 = 5_800_000.0 - 1640.0, 5_800_000.0 - 1000.0
    for name, writer in (("ours", geoio.save_cog), ("release", geoio.save_release_layout)):
        writer(field, tmp_path / name / "2020" / "33N" / "tile.tiff")  # the bucket's year / zone folders
        dataset = dataset_class(paths=str(tmp_path / name), res=10.0)
        image = dataset[x0:x1, y0:y1]["image"].numpy()
        np.testing.assert_array_equal(image, expected, err_msg=name)
