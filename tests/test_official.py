"""Reading the released GeoTIFFs (aef_lite.official) offline, from files written in their layout.

The released files are bottom-up (positive y pixel size); ``geoio.save_release_layout`` writes our
synthetic fields that way, so orientation, values, no data, windows, the index and mosaics across
UTM zones are all checked without network. One test reads the real Source Cooperative bucket; it is
marked ``network`` and skipped offline.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from aef_lite import geoio, official
from aef_lite.embed import EmbeddingField
from aef_lite.geo import lonlat_to_utm, utm_to_lonlat
from aef_lite.quantization import NODATA, dequantize

rasterio = pytest.importorskip("rasterio")
from rasterio.warp import transform_bounds  # noqa: E402
from test_geoio import TRANSFORM, make_field  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.fixture(scope="module")
def field() -> EmbeddingField:
    return make_field()


def _tile_record(path: Path, year: int) -> dict:
    with rasterio.open(path) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        crs = src.crs.to_string()
    return {"path": str(path), "year": year, "crs": crs, "wgs84_west": west, "wgs84_south": south,
            "wgs84_east": east, "wgs84_north": north}


def _sub(field: EmbeddingField, rows: slice, cols: slice) -> EmbeddingField:
    a, b, c, d, e, f = field.transform
    r0, c0 = rows.start or 0, cols.start or 0
    return EmbeddingField(field.emb[:, rows, cols], field.period, field.crs,
                          [a, b, c + a * c0, d, e, f + e * r0], field.pixel_size_m, field.name)


# ----------------------------------------------------------------------------------------------
# read_cog
# ----------------------------------------------------------------------------------------------


def test_read_cog_flips_a_bottom_up_release_file(field: EmbeddingField, tmp_path: Path) -> None:
    path = geoio.save_release_layout(field, tmp_path / "2020" / "33N" / "tile.tiff")
    with rasterio.open(path) as src:
        assert src.transform.e > 0  # really bottom-up on disk
    back = official.read_cog(path)
    assert back.transform == TRANSFORM and back.crs == "EPSG:32633" and back.pixel_size_m == 10.0
    codes = geoio.field_codes(field)
    np.testing.assert_array_equal(back.emb, dequantize(codes))  # exact dequantisation, north-up
    np.testing.assert_array_equal(back.valid, field.valid)  # the no-data block, in place
    assert np.isnan(back.emb[:, 10, 50]).all() and np.isfinite(back.emb[:, 200, 200]).all()
    np.testing.assert_array_equal(back.period, official.year_period(2020))  # from the year folder
    assert back.name == "tile"


def test_read_cog_of_our_cog_is_bit_exact(field: EmbeddingField, tmp_path: Path) -> None:
    back = official.read_cog(field.save_cog(tmp_path / "ours.tif"))
    np.testing.assert_array_equal(geoio.field_codes(back), geoio.field_codes(field))
    np.testing.assert_array_equal(back.period, field.period)  # from the period_days tag
    assert back.transform == field.transform


def test_one_band_no_data_masks_the_pixel(tmp_path: Path) -> None:
    path = tmp_path / "partial.tif"
    codes = np.full((64, 4, 4), 10, dtype=np.int8)
    codes[7, 1, 2] = NODATA
    with rasterio.open(path, "w", driver="GTiff", dtype="int8", count=64, height=4, width=4, crs="EPSG:32633",
                       transform=rasterio.transform.Affine(*TRANSFORM), nodata=NODATA) as dst:
        dst.write(codes)
    back = official.read_cog(path)
    assert np.isnan(back.emb[:, 1, 2]).all() and back.valid.sum() == 15
    assert np.isnan(back.period).all()  # no tag, no year folder


@pytest.mark.parametrize("layout", ["release", "cog"])
def test_windowed_read(field: EmbeddingField, tmp_path: Path, layout: str) -> None:
    writer = geoio.save_release_layout if layout == "release" else geoio.save_cog
    path = writer(field, tmp_path / "w.tif")
    # a box from 3.5 px to 50.2 px east and 20.5 px to 71 px south of the top-left corner
    left, right = 400_000 + 35.0, 400_000 + 502.0
    top, bottom = 5_800_000 - 205.0, 5_800_000 - 710.0
    part = official.read_cog(path, bounds=(left, bottom, right, top))
    expected = _sub(field, slice(20, 71), slice(3, 51))  # every touched pixel
    assert part.emb.shape == expected.emb.shape
    np.testing.assert_array_equal(geoio.field_codes(part), geoio.field_codes(expected))
    assert part.transform == expected.transform


def test_read_cog_errors(field: EmbeddingField, tmp_path: Path) -> None:
    path = field.save_cog(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="do not overlap"):
        official.read_cog(path, bounds=(0.0, 0.0, 10.0, 10.0))
    with pytest.raises(ValueError, match="left < right"):
        official.read_cog(path, bounds=(400_100.0, 5_799_000.0, 400_000.0, 5_799_500.0))
    with pytest.raises(FileNotFoundError, match="no such file"):
        official.read_cog(tmp_path / "missing.tif")
    floats = tmp_path / "float.tif"
    with rasterio.open(floats, "w", driver="GTiff", dtype="float32", count=64, height=4, width=4) as dst:
        dst.write(np.zeros((64, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="expected int8 codes"):
        official.read_cog(floats)


def test_gdal_paths() -> None:
    assert official.gdal_path("https://data.source.coop/a/b.tiff") == "/vsicurl/https://data.source.coop/a/b.tiff"
    assert official.gdal_path("gs://alphaearth_foundations/x.tiff") == "/vsigs/alphaearth_foundations/x.tiff"
    assert official.gdal_path("s3://bucket/x.tiff") == "/vsis3/bucket/x.tiff"
    assert official.gdal_path("/vsimem/x.tif") == "/vsimem/x.tif"


# ----------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------


def _records() -> list[dict]:
    return [
        {"path": "s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/2020/33N/a.tiff", "year": 2020,
         "crs": "EPSG:32633", "wgs84_west": 12.0, "wgs84_south": 52.0, "wgs84_east": 13.5, "wgs84_north": 53.5},
        {"path": "2021/33N/b.tiff", "year": 2021, "crs": "", "wgs84_west": 12.0, "wgs84_south": 52.0,
         "wgs84_east": 13.5, "wgs84_north": 53.5},
        {"path": "2020/32N/c.tiff", "year": 2020, "crs": "EPSG:32632", "wgs84_west": 10.5, "wgs84_south": 52.0,
         "wgs84_east": 12.0, "wgs84_north": 53.5},
    ]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_index_files_and_queries(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"index{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"tiles": _records()}))
    else:
        lines = [",".join(official.INDEX_COLUMNS)] + [",".join(str(r[c]) for c in official.INDEX_COLUMNS)
                                                      for r in _records()]
        path.write_text("\n".join(lines) + "\n")
    index = official.TileIndex.load(path)
    assert len(index) == 3
    paths = [t.path for t in index.tiles]
    assert paths[0] == "https://data.source.coop/tge-labs/aef/v1/annual/2020/33N/a.tiff"  # public HTTPS
    assert paths[1] == str(tmp_path / "2021/33N/b.tiff")  # relative to the index file
    assert index.tiles[1].crs is None
    names = lambda box: sorted(t.path.rsplit("/", 1)[-1] for t in index.query(box, 2020))
    assert names((11.9, 52.5, 12.1, 52.6)) == ["a.tiff", "c.tiff"]
    assert names((13.0, 52.5, 13.1, 52.6)) == ["a.tiff"]
    assert index.query((0.0, 0.0, 1.0, 1.0), 2020) == []
    assert len(official.TileIndex.load(path, year=2021)) == 1
    gcs = index.on_gcs().tiles[0].path
    assert gcs == "gs://alphaearth_foundations/satellite_embedding/v1/annual/2020/33N/a.tiff"


def test_index_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks"):
        official.TileIndex.from_records([{"path": "x.tiff", "year": 2020}])
    with pytest.raises(FileNotFoundError):
        official.TileIndex.load(tmp_path / "none.json")
    (tmp_path / "index.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.parquet, \.json or \.csv"):
        official.TileIndex.load(tmp_path / "index.txt")


def test_parquet_index_needs_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    (tmp_path / "index.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ModuleNotFoundError, match="pip install pyarrow"):
        official.TileIndex.load(tmp_path / "index.parquet")


def _wkb_box(west: float, south: float, east: float, north: float) -> bytes:
    """A lon/lat box as a little-endian WKB polygon (the GeoParquet ``geometry`` column)."""
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def _write_geoparquet_index(records: list[dict], path: Path) -> Path:
    """The records as a GeoParquet index in the Source Cooperative layout: the index columns, the
    UTM zone, a WKB footprint and GeoParquet metadata (extra columns the reader must skip)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    boxes = [(r["wgs84_west"], r["wgs84_south"], r["wgs84_east"], r["wgs84_north"]) for r in records]
    table = pa.table({
        "path": pa.array([r["path"] for r in records], pa.string()),
        "year": pa.array([r["year"] for r in records], pa.int32()),
        "crs": pa.array([r["crs"] for r in records], pa.string()),
        "utm_zone": pa.array([r["path"].split("/")[-2] for r in records], pa.string()),
        **{c: pa.array([r[c] for r in records], pa.float64()) for c in official.INDEX_COLUMNS[3:]},
        "geometry": pa.array([_wkb_box(*b) for b in boxes], pa.binary()),
    })
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}}}
    pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), path)
    return path


def test_geoparquet_index_finds_and_mosaics_the_tiles(field: EmbeddingField, tmp_path: Path) -> None:
    """A local GeoParquet index in the Source Cooperative layout: 2020 in two halves, 2021 whole
    (other vectors), a far-away 2020 row with an S3 path; relative paths are relative to the index."""
    pytest.importorskip("pyarrow")
    other = make_field(seed=1)  # same grid, other vectors: tells the years apart
    files = {"2020/33N/west.tiff": (_sub(field, slice(None), slice(0, 150)), 2020),
             "2020/33N/east.tiff": (_sub(field, slice(None), slice(150, None)), 2020),
             "2021/33N/whole.tiff": (other, 2021)}
    records = []
    for rel, (part, year) in files.items():
        record = _tile_record(geoio.save_release_layout(part, tmp_path / rel), year)
        records.append({**record, "path": rel})
    records.append({"path": official.SOURCE_COOP_S3_PREFIX + "v1/annual/2020/47N/far.tiff", "year": 2020,
                    "crs": "EPSG:32647", "wgs84_west": 100.0, "wgs84_south": 10.0, "wgs84_east": 101.0,
                    "wgs84_north": 11.0})
    index_path = _write_geoparquet_index(records, tmp_path / "aef_index.parquet")

    index = official.TileIndex.load(index_path)
    assert len(index) == 4
    assert [t.path for t in index.tiles[:3]] == [str(tmp_path / rel) for rel in files]
    assert index.tiles[3].path == official.SOURCE_COOP_HTTPS_PREFIX + "v1/annual/2020/47N/far.tiff"
    assert {t.year for t in index.tiles} == {2020, 2021} and index.tiles[0].crs == "EPSG:32633"
    only_2021 = official.TileIndex.load(index_path, year=2021)
    assert [t.path for t in only_2021.tiles] == [str(tmp_path / "2021/33N/whole.tiff")]
    assert [Path(t.path).name for t in index.query((100.2, 10.2, 100.3, 10.3), 2020)] == ["far.tiff"]
    assert index.query((100.2, 10.2, 100.3, 10.3), 2021) == []

    for year, expected in [(2020, field), (2021, other)]:
        back = official.read_official_like(field, year, index_path)  # the index file as the source
        np.testing.assert_array_equal(geoio.field_codes(back), geoio.field_codes(expected))
        np.testing.assert_array_equal(back.period, official.year_period(year))
    assert not np.array_equal(geoio.field_codes(field), geoio.field_codes(other))
    part = official.read_official((400_000.0 + 1000, 5_797_000.0 + 1, 400_000.0 + 2000, 5_798_000.0), 2021,
                                  crs="EPSG:32633", source=index_path)
    np.testing.assert_array_equal(geoio.field_codes(part),
                                  geoio.field_codes(_sub(other, slice(200, 300), slice(100, 200))))
    with pytest.raises(ValueError, match="no file of the index"):
        official.read_official_like(field, 2019, index_path)


# ----------------------------------------------------------------------------------------------
# Mosaics
# ----------------------------------------------------------------------------------------------


def test_mosaic_of_two_adjacent_tiles_is_exact(field: EmbeddingField, tmp_path: Path) -> None:
    west = geoio.save_release_layout(_sub(field, slice(None), slice(0, 150)), tmp_path / "2020/33N/west.tiff")
    east = geoio.save_release_layout(_sub(field, slice(None), slice(150, None)), tmp_path / "2020/33N/east.tiff")
    index = official.TileIndex.from_records([_tile_record(west, 2020), _tile_record(east, 2020)])
    back = official.read_official_like(field, 2020, index)
    np.testing.assert_array_equal(geoio.field_codes(back), geoio.field_codes(field))
    np.testing.assert_array_equal(back.period, official.year_period(2020))
    # the same through a box in the field's own CRS: grid snapped to 10 m, every pixel from the tiles
    box = official.read_official((400_000.0 + 1000, 5_797_000.0 + 1, 400_000.0 + 2000, 5_798_000.0), 2020,
                                 crs="EPSG:32633", source=index)
    assert box.emb.shape == (64, 100, 100) and box.transform == [10.0, 0.0, 401_000.0, 0.0, -10.0, 5_798_000.0]
    expected = _sub(field, slice(200, 300), slice(100, 200))
    np.testing.assert_array_equal(geoio.field_codes(box), geoio.field_codes(expected))


def _lonlat_cells(lon: np.ndarray, lat: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The code vector of the 0.004 x 0.004 degree cell holding each point: (64, ...) int8."""
    i = np.floor(lon / 0.004).astype(int) % 7
    j = np.floor(lat / 0.004).astype(int) % 5
    return np.moveaxis(vectors[i * 5 + j], -1, 0)


def _zone_tile(zone: int, lon0: float, lon1: float, lat0: float, lat1: float, vectors: np.ndarray,
               path: Path) -> Path:
    """A 20 m release-layout tile in UTM ``zone`` over the lon/lat box, coded by lon/lat cell."""
    e, n, _, _ = lonlat_to_utm(np.array([lon0, lon1, lon0, lon1]), np.array([lat0, lat0, lat1, lat1]), zone)
    left, bottom = np.floor(e.min() / 20) * 20, np.floor(n.min() / 20) * 20
    width, height = int(np.ceil((e.max() - left) / 20)), int(np.ceil((n.max() - bottom) / 20))
    top = bottom + 20 * height
    east = left + 20 * (np.arange(width) + 0.5)
    north = top - 20 * (np.arange(height) + 0.5)
    lon, lat = utm_to_lonlat(east[None, :], north[:, None], zone)
    codes = _lonlat_cells(lon, lat, vectors)
    inside = (lon >= lon0) & (lon < lon1)  # the file holds data only inside its zone's part
    codes[:, ~inside] = NODATA
    emb = np.where(codes == NODATA, np.nan, np.sign(codes) * (codes / 127.5) ** 2).astype(np.float32)
    tile = EmbeddingField(emb, np.zeros(2), f"EPSG:326{zone:02d}", [20.0, 0.0, left, 0.0, -20.0, top], 20.0, "t")
    return geoio.save_release_layout(tile, path)


def test_mosaic_across_two_utm_zones(tmp_path: Path) -> None:
    """Tiles in UTM 32N (west of 12 E) and 33N (east of it), read onto one 33N grid. They overlap by
    0.002 degrees (~140 m): without overlap, nearest-neighbour resampling would leave the output
    pixels whose nearest source pixels lie just outside both files' data empty."""
    rng = np.random.default_rng(0)
    vectors = rng.integers(-127, 128, (35, 64)).astype(np.int8)
    w = _zone_tile(32, 11.95, 12.002, 52.49, 52.51, vectors, tmp_path / "2021/32N/w.tiff")
    e = _zone_tile(33, 11.998, 12.05, 52.49, 52.51, vectors, tmp_path / "2021/33N/e.tiff")
    index = official.TileIndex.from_records([_tile_record(w, 2021), _tile_record(e, 2021)])
    box = (11.96, 52.492, 12.04, 52.508)
    out = official.read_official(box, 2021, source=index, resolution=20.0)
    assert out.crs == "EPSG:32633"  # the zone of the box's centre (12.0 E)
    _, height, width = out.emb.shape
    a, _, c, _, e_, f = out.transform
    east = c + a * (np.arange(width) + 0.5)
    north = f + e_ * (np.arange(height) + 0.5)
    lon, lat = utm_to_lonlat(east[None, :], north[:, None], 33)
    inside = (lon > 11.951) & (lon < 12.049) & (lat > 52.491) & (lat < 52.509)
    assert out.valid[inside].all()  # both zones' files contribute, no gap at the zone border
    assert (lon[inside] < 12.0).sum() > 1000 and (lon[inside] > 12.0).sum() > 1000
    got = geoio.field_codes(out)[:, inside]
    expected = _lonlat_cells(lon, lat, vectors)[:, inside]
    agree = (got == expected).all(axis=0).mean()
    assert agree > 0.97, agree  # nearest neighbour misses only along the cell borders


def test_read_official_errors(field: EmbeddingField, tmp_path: Path) -> None:
    path = geoio.save_release_layout(field, tmp_path / "2020/33N/a.tiff")
    index = official.TileIndex.from_records([_tile_record(path, 2020)])
    with pytest.raises(ValueError, match="no file of the index"):
        official.read_official((12.0, 52.0, 12.01, 52.01), 2019, source=index)
    with pytest.raises(ValueError, match="max_pixels"):
        official.read_official((10.0, 50.0, 14.0, 54.0), 2020, source=index)
    with pytest.raises(ValueError, match="west < east"):
        official.read_official((13.0, 52.0, 12.0, 53.0), 2020, source=index)


# ----------------------------------------------------------------------------------------------
# Comparing embedding spaces
# ----------------------------------------------------------------------------------------------


def test_compare_rotated_copy_scores_one(field: EmbeddingField) -> None:
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((64, 64)))
    rotated = EmbeddingField(np.einsum("fe,ehw->fhw", q, field.emb).astype(np.float32), field.period, field.crs,
                             field.transform, 10.0, "rotated")
    out = official.compare_with_official(field, rotated)
    assert out["structure_r"] > 0.999 and out["cka"] > 0.999 and out["r2_test"] > 0.999
    assert out["n_pixels"] == field.valid.sum() and out["n_train"] > 1000 and out["n_test"] > 1000
    assert out["n_train"] + out["n_test"] < out["n_pixels"]  # the gap around train blocks is dropped


def test_compare_unrelated_fields_scores_low(field: EmbeddingField) -> None:
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(field.emb.shape)
    other = EmbeddingField((noise / np.linalg.norm(noise, axis=0)).astype(np.float32), field.period, field.crs,
                           field.transform, 10.0, "noise")
    out = official.compare_with_official(field, other)
    assert abs(out["structure_r"]) < 0.1 and out["cka"] < 0.1 and out["r2_test"] < 0.05
    assert out["r2_train"] > out["r2_test"]  # fitting noise helps only on the training pixels


def test_compare_needs_one_grid(field: EmbeddingField) -> None:
    shifted = EmbeddingField(field.emb, field.period, field.crs, [10.0, 0.0, 400_010.0, 0.0, -10.0, 5_800_000.0],
                             10.0, "shifted")
    with pytest.raises(ValueError, match="read_official_like"):
        official.compare_with_official(field, shifted)


def test_cka_and_r2_properties() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 8))
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert official.linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)
    assert official.linear_cka(x, rng.standard_normal((500, 8))) < 0.1
    y = x @ rng.standard_normal((8, 5)) + 2.0
    assert official.linear_map_r2(x[:300], y[:300], x[300:], y[300:]) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="same N"):
        official.linear_cka(x, x[:10])


# ----------------------------------------------------------------------------------------------
# The real bucket (network)
# ----------------------------------------------------------------------------------------------


def _online(host: str = "data.source.coop") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.network
def test_real_source_cooperative_window() -> None:
    """A 32 x 32 px window over Brandenburg, 2020, from the public mirror."""
    pytest.importorskip("pyarrow")
    if not _online():
        pytest.skip("no network access to data.source.coop")
    out = official.read_official((12.68, 52.50, 12.6847, 52.5029), 2020)
    assert out.crs == "EPSG:32633" and out.emb.shape[0] == 64
    norms = np.linalg.norm(out.emb[:, out.valid], axis=0)
    assert out.valid.mean() > 0.9 and np.abs(norms - 1).max() < 0.03  # unit vectors up to quantisation
