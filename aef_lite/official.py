"""The official AlphaEarth embeddings without Earth Engine: the released Cloud-Optimized GeoTIFFs.

Besides Earth Engine (``aef_lite.earthengine``), the annual Satellite Embedding dataset is
published as COG files:

* Google Cloud Storage, ``gs://alphaearth_foundations`` (requester pays: reading needs Google
  credentials and a billing project), and
* a Source Cooperative mirror (public, no credentials; "not officially supported by Google"),
  ``https://data.source.coop/tge-labs/aef/v1/annual/<year>/<UTM zone>/<name>.tiff``, with a
  GeoParquet index of all files, :data:`SOURCE_COOP_INDEX_URL`.

The layout, as documented by Google and Source Cooperative: one folder per year, inside it one per
UTM zone (``10N``, ``33S``, ...); each file 8192 x 8192 px of 10 m in that zone's WGS84 / UTM
CRS, 64 int8 bands ``A00``..``A63`` quantised as in :mod:`aef_lite.quantization` (paper S8.1),
``-128`` = no data in every band, overviews down to 1 x 1 px (mean vectors, renormalised).
The trap: **the files are stored bottom-up** (origin at the lower-left corner, positive y pixel
size, first row = southern edge). Readers that assume a negative y pixel size show the image
upside down or misplace it. :func:`read_cog` flips such files so row 0 is north and fixes the
transform; Source Cooperative also ships a ``.vrt`` next to each file that does the same.

* :func:`read_cog`: one file (local, ``http(s)://`` over range requests with GDAL's
  ``/vsicurl/``, ``s3://`` or ``gs://``), optionally a window, as an
  :class:`~aef_lite.embed.EmbeddingField` (dequantised, NaN = no data, north-up).
* :class:`TileIndex`: the file index (path, year, CRS, lon/lat box per file), loaded from the
  Source Cooperative GeoParquet (needs pyarrow) or from a local ``.json`` / ``.csv`` / ``.parquet``
  file with the same columns, or built in memory (what the offline tests do).
* :func:`read_official`: every file covering a box for a year, read and mosaicked onto one
  north-up grid (reprojected with nearest-neighbour resampling of the int8 codes, so every output
  pixel is an unaltered released vector, also across UTM zones); :func:`read_official_like` puts
  them exactly on the grid of another field.
* :func:`compare_with_official`: how well a mini field's geometry matches the official one
  (pairwise-similarity correlation, linear CKA, R^2 of a linear map on held-out blocks).

What was checked here and what was not: the layout (folders, 8192 px, int8, -128, A00..A63,
bottom-up) is from Google's and Source Cooperative's READMEs; the index URL and its columns
(``path`` as ``s3://us-west-2.opendata.source.coop/tge-labs/aef/...``, ``year``, ``crs``,
``wgs84_west``/``_south``/``_east``/``_north``) are from public code that reads it, not from
an official schema, and the GCS object names (:data:`GCS_PREFIX` + the same ``v1/annual/...``
suffix) are inferred. The offline tests use files written in that layout; the one test that
reads the real bucket is marked ``network``.

Needs the optional ``geo`` extra (``pip install "aef-lite[geo]"``); the remote GeoParquet index
also needs ``pyarrow``. Licence of the data: CC-BY 4.0, attribution
``aef_lite.earthengine.ATTRIBUTION``.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from aef_lite.data import days_since_origin
from aef_lite.earthengine import compare_with_official as _structure_stats
from aef_lite.embed import EmbeddingField
from aef_lite.evaluate import _block_regions
from aef_lite.fileio import read_json
from aef_lite.geo import utm_epsg, utm_zone_for
from aef_lite.geoio import north_up, require_geo
from aef_lite.quantization import NODATA, dequantize

SOURCE_COOP_INDEX_URL = "https://data.source.coop/tge-labs/aef/v1/annual/aef_index.parquet"
"""GeoParquet index of every released file on Source Cooperative (one row per file and year)."""
SOURCE_COOP_S3_PREFIX = "s3://us-west-2.opendata.source.coop/tge-labs/aef/"
SOURCE_COOP_HTTPS_PREFIX = "https://data.source.coop/tge-labs/aef/"
"""Index paths start with the S3 prefix; the same objects are public over HTTPS here."""
GCS_PREFIX = "gs://alphaearth_foundations/satellite_embedding/"
"""Google's bucket (requester pays); followed by ``v1/annual/<year>/<zone>/<name>.tiff`` (inferred)."""
INDEX_COLUMNS = ("path", "year", "crs", "wgs84_west", "wgs84_south", "wgs84_east", "wgs84_north")
"""Columns read from an index file (``crs`` may be missing: then it is read from each file)."""
MAX_PIXELS = 2048 * 2048
"""Default cap on the output grid of :func:`read_official` (float32 field: 1 GiB)."""
CACHE_ENV = "AEF_LITE_CACHE"
"""Environment variable naming the folder where a downloaded index is cached
(default ``~/.cache/aef-lite``)."""

_YEAR_PART = re.compile(r"^(19|20)\d{2}$")
_GDAL_REMOTE_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.vrt",
                        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES", "GDAL_HTTP_MULTIPLEX": "YES"}


# ----------------------------------------------------------------------------------------------
# One file
# ----------------------------------------------------------------------------------------------


class RasterCodes(NamedTuple):
    """int8 codes of a (window of a) release-format file, north-up.

    codes: (64, H, W) int8, ``NODATA`` = -128. transform: ``[a, 0, c, 0, e, f]`` with e < 0.
    crs: e.g. ``"EPSG:32633"``. tags: the file's GDAL metadata.
    """

    codes: np.ndarray
    transform: list[float]
    crs: str
    tags: dict[str, str]


def gdal_path(path_or_url: str | os.PathLike[str]) -> str:
    """The path GDAL opens: ``http(s)://`` -> ``/vsicurl/...`` (range requests), ``s3://`` ->
    ``/vsis3/``, ``gs://`` -> ``/vsigs/``, ``/vsi...`` unchanged; a local path must exist
    (FileNotFoundError otherwise)."""
    text = os.fspath(path_or_url)
    for scheme, vsi in (("http://", "/vsicurl/http://"), ("https://", "/vsicurl/https://"),
                        ("s3://", "/vsis3/"), ("gs://", "/vsigs/")):
        if text.startswith(scheme):
            return vsi + text[len(scheme):]
    if text.startswith("/vsi"):
        return text
    if not Path(text).is_file():
        raise FileNotFoundError(f"no such file: {text}")
    return text


@contextmanager
def _open(path_or_url: str | os.PathLike[str]) -> Iterator[Any]:
    """rasterio dataset of a release-format file (checked: int8 bands)."""
    require_geo("reading the released GeoTIFFs")
    import rasterio

    path = gdal_path(path_or_url)
    options = dict(_GDAL_REMOTE_OPTIONS) if path.startswith("/vsi") else {}
    if path.startswith("/vsis3/us-west-2.opendata.source.coop/"):
        options["AWS_NO_SIGN_REQUEST"] = "YES"
    with rasterio.Env(**options), rasterio.open(path) as src:
        if set(src.dtypes) != {"int8"}:
            raise ValueError(f"{path_or_url} is not in the release format: bands are {sorted(set(src.dtypes))}, "
                             "expected int8 codes (paper S8.1, aef_lite.quantization)")
        yield src


def _window(transform: Sequence[float], width: int, height: int, bounds: Sequence[float]) -> Any:
    """The pixel window (rasterio Window) of ``bounds`` (left, bottom, right, top) in the grid's
    CRS, grown to whole pixels and clipped to the raster; None when they do not overlap."""
    from rasterio.transform import Affine
    from rasterio.windows import Window

    left, bottom, right, top = (float(v) for v in bounds)
    if not (left < right and bottom < top):
        raise ValueError(f"bounds must be (left, bottom, right, top) with left < right and bottom < top, "
                         f"got {tuple(bounds)}")
    inverse = ~Affine(*transform[:6])
    corners = [inverse * (x, y) for x in (left, right) for y in (bottom, top)]
    cols, rows = [p[0] for p in corners], [p[1] for p in corners]
    eps = 1e-9  # a box edge exactly on a pixel edge does not pull in the neighbouring pixel
    c0, c1 = max(0, math.floor(min(cols) + eps)), min(width, math.ceil(max(cols) - eps))
    r0, r1 = max(0, math.floor(min(rows) + eps)), min(height, math.ceil(max(rows) - eps))
    if c0 >= c1 or r0 >= r1:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _read(src: Any, bounds: Sequence[float] | None) -> RasterCodes | None:
    window = None if bounds is None else _window(list(src.transform)[:6], src.width, src.height, bounds)
    if bounds is not None and window is None:
        return None
    codes = src.read(window=window)
    transform = list(src.window_transform(window) if window is not None else src.transform)[:6]
    codes, transform = north_up(codes, transform)
    return RasterCodes(codes, transform, src.crs.to_string(), dict(src.tags()))


def read_cog_codes(path_or_url: str | os.PathLike[str], bounds: Sequence[float] | None = None) -> RasterCodes:
    """The raw int8 codes of a release-format file (or of the window ``bounds``), north-up.

    ``bounds``: ``(left, bottom, right, top)`` in the **file's CRS** (for the release, the UTM
    zone of the file, metres); the window is every pixel the box touches, clipped to the file.
    Only the tiles of that window are fetched (range requests for remote files).

    Raises:
        FileNotFoundError: a local path that does not exist.
        ValueError: not int8 bands; bounds malformed or outside the file.
    """
    with _open(path_or_url) as src:
        result = _read(src, bounds)
        if result is None:
            raise ValueError(f"bounds {tuple(bounds)} do not overlap {path_or_url} (its bounds in "
                             f"{src.crs.to_string()}: {tuple(src.bounds)}); give them in the file's CRS")
        return result


def _year_of(path: str) -> int | None:
    """The year folder of a released file's path (``.../2024/10N/name.tiff`` -> 2024)."""
    for part in reversed(re.split(r"[/\\]", path)[:-1]):
        if _YEAR_PART.match(part):
            return int(part)
    return None


def year_period(year: int) -> np.ndarray:
    """(2,) float64 [Jan 1 of ``year``, Jan 1 of ``year + 1``) in days since ``TIME_ORIGIN``: the
    calendar year an annual embedding summarises."""
    return days_since_origin([f"{int(year):04d}-01-01", f"{int(year) + 1:04d}-01-01"])


def _field(codes: RasterCodes, period: np.ndarray, name: str) -> EmbeddingField:
    emb = dequantize(codes.codes)
    emb[:, (codes.codes == NODATA).any(axis=0)] = np.nan  # -128 in one band = no data in all
    return EmbeddingField(emb=emb, period=np.asarray(period, dtype=np.float64), crs=codes.crs,
                          transform=codes.transform, pixel_size_m=abs(codes.transform[0]), name=name)


def read_cog(path_or_url: str | os.PathLike[str], bounds: Sequence[float] | None = None) -> EmbeddingField:
    """Read a release-format GeoTIFF (the official files, or :func:`aef_lite.geoio.save_cog`'s).

    Args:
        path_or_url: local path, ``http(s)://`` URL (read with range requests through GDAL's
            ``/vsicurl/``; only the header and the tiles of the window are fetched), ``s3://`` or
            ``gs://`` URI (GDAL's cloud credentials apply), or a ``/vsi...`` path.
        bounds: optional ``(left, bottom, right, top)`` in the **file's CRS** (the UTM zone of a
            released file, metres): read only the pixels this box touches.

    Returns:
        :class:`~aef_lite.embed.EmbeddingField`: ``emb`` (64, H, W) float32 dequantised exactly by
        :func:`aef_lite.quantization.dequantize`, NaN where any band holds ``-128``; north-up
        (bottom-up files are flipped, the transform fixed); CRS and transform from the file;
        ``period`` from the ``period_days`` tag (files written by aef_lite), else the calendar
        year of the path's year folder (released files), else NaN; ``name`` = file stem.

    Raises:
        FileNotFoundError, ValueError: see :func:`read_cog_codes`.
    """
    codes = read_cog_codes(path_or_url, bounds)
    text = os.fspath(path_or_url)
    if "period_days" in codes.tags:
        period = np.array([float(v) for v in codes.tags["period_days"].split()], dtype=np.float64)
    elif (year := _year_of(text)) is not None:
        period = year_period(year)
    else:
        period = np.full(2, np.nan)
    return _field(codes, period, Path(text).stem)


# ----------------------------------------------------------------------------------------------
# The index of released files
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One released file: where it is, its year, CRS (None = read from the file) and lon/lat box."""

    path: str
    year: int
    crs: str | None
    west: float
    south: float
    east: float
    north: float


def _href(path: str, base: Path | None) -> str:
    """Source Cooperative S3 paths -> public HTTPS; relative paths -> relative to the index file."""
    if path.startswith(SOURCE_COOP_S3_PREFIX):
        return SOURCE_COOP_HTTPS_PREFIX + path[len(SOURCE_COOP_S3_PREFIX):]
    if base is not None and "://" not in path and not path.startswith("/vsi") and not Path(path).is_absolute():
        return str(base / path)
    return path


class TileIndex:
    """The released files as a list of :class:`Tile`, queried by lon/lat box and year."""

    def __init__(self, tiles: Sequence[Tile]) -> None:
        self.tiles = list(tiles)

    def __len__(self) -> int:
        return len(self.tiles)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], base: str | os.PathLike[str] | None = None
                     ) -> TileIndex:
        """Rows with the index columns :data:`INDEX_COLUMNS` (``crs`` optional). Paths under
        :data:`SOURCE_COOP_S3_PREFIX` become public HTTPS URLs; relative paths are taken relative
        to ``base`` (the index file's folder)."""
        base_dir = None if base is None else Path(base)
        tiles = []
        for i, row in enumerate(records):
            missing = [c for c in INDEX_COLUMNS if c != "crs" and row.get(c) in (None, "")]
            if missing:
                raise ValueError(f"index row {i} lacks {missing}; an index needs the columns {list(INDEX_COLUMNS)}")
            crs = row.get("crs") or None
            tiles.append(Tile(path=_href(str(row["path"]), base_dir), year=int(row["year"]),
                              crs=None if crs is None else str(crs),
                              west=float(row["wgs84_west"]), south=float(row["wgs84_south"]),
                              east=float(row["wgs84_east"]), north=float(row["wgs84_north"])))
        return cls(tiles)

    @classmethod
    def load(cls, path_or_url: str | os.PathLike[str], year: int | None = None) -> TileIndex:
        """Read an index file: ``.parquet`` (the Source Cooperative GeoParquet; needs pyarrow),
        ``.json`` (a list of rows, or ``{"tiles": [...]}``) or ``.csv``, with the columns
        :data:`INDEX_COLUMNS`. A URL is downloaded once into the cache folder (:data:`CACHE_ENV`).
        ``year`` keeps only that year's rows (cheaper for the large remote index)."""
        text = os.fspath(path_or_url)
        path = _cached_download(text) if text.startswith(("http://", "https://")) else Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"no such index file: {path}")
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            rows = _parquet_rows(path, year)
        elif suffix == ".json":
            payload = read_json(path)
            rows = payload["tiles"] if isinstance(payload, dict) else payload
        elif suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        else:
            raise ValueError(f"index file must be .parquet, .json or .csv, got {path.name}")
        index = cls.from_records(rows, base=None if text.startswith(("http://", "https://")) else path.parent)
        return index if year is None else cls([t for t in index.tiles if t.year == int(year)])

    def on_gcs(self) -> TileIndex:
        """The same files in Google's bucket (:data:`GCS_PREFIX`; requester pays, GDAL needs Google
        credentials). The object names are inferred from the mirror's, not verified."""
        n = len(SOURCE_COOP_HTTPS_PREFIX)
        return TileIndex([replace(t, path=GCS_PREFIX + t.path[n:]) if t.path.startswith(SOURCE_COOP_HTTPS_PREFIX)
                          else t for t in self.tiles])

    def query(self, bounds_lonlat: Sequence[float], year: int) -> list[Tile]:
        """Tiles of ``year`` whose lon/lat box intersects ``(west, south, east, north)``, sorted by
        path (the mosaic order). Boxes crossing the antimeridian are not handled."""
        west, south, east, north = (float(v) for v in bounds_lonlat)
        hits = [t for t in self.tiles if t.year == int(year) and t.west < east and t.east > west
                and t.south < north and t.north > south]
        return sorted(hits, key=lambda t: t.path)


def _parquet_rows(path: Path, year: int | None) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ModuleNotFoundError("reading a GeoParquet index needs pyarrow: pip install pyarrow "
                                  "(or give a .json / .csv index)", name="pyarrow") from err
    names = set(pq.read_schema(path).names)
    columns = [c for c in INDEX_COLUMNS if c in names]
    filters = None if year is None else [("year", "=", int(year))]
    return pq.read_table(path, columns=columns, filters=filters).to_pylist()


def _cached_download(url: str) -> Path:
    """Download ``url`` once into the cache folder (atomically); later calls reuse the file."""
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aef-lite")
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / url.rstrip("/").rsplit("/", 1)[-1]
    if target.is_file():
        return target
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, target)
    except OSError as err:
        raise ConnectionError(f"could not download the index {url}: {err}") from err
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def resolve_index(source: str | os.PathLike[str] | TileIndex, year: int | None = None) -> TileIndex:
    """``"source_coop"`` (the public mirror's index), ``"gcs"`` (the same files in Google's bucket),
    a :class:`TileIndex`, or the path / URL of an index file (:meth:`TileIndex.load`)."""
    if isinstance(source, TileIndex):
        return source
    if source == "source_coop":
        return TileIndex.load(SOURCE_COOP_INDEX_URL, year)
    if source == "gcs":
        return TileIndex.load(SOURCE_COOP_INDEX_URL, year).on_gcs()
    return TileIndex.load(source, year)


# ----------------------------------------------------------------------------------------------
# Mosaics
# ----------------------------------------------------------------------------------------------


def _grid_bounds(transform: Sequence[float], height: int, width: int) -> tuple[float, float, float, float]:
    a, _, c, _, e, f = (float(v) for v in transform[:6])
    xs, ys = (c, c + a * width), (f, f + e * height)
    return min(xs), min(ys), max(xs), max(ys)


def _mosaic(index: TileIndex, year: int, crs: str, transform: Sequence[float], height: int, width: int
            ) -> EmbeddingField:
    """Every indexed file of ``year`` touching the grid, reprojected (nearest) onto it and mosaicked:
    each pixel from the first file (by path) that has data there."""
    from rasterio.enums import Resampling
    from rasterio.transform import Affine
    from rasterio.warp import reproject, transform_bounds

    dst_bounds = _grid_bounds(transform, height, width)
    lonlat = transform_bounds(crs, "EPSG:4326", *dst_bounds, densify_pts=21)
    tiles = index.query(lonlat, year)
    if not tiles:
        raise ValueError(f"no file of the index covers lon/lat box {tuple(round(v, 5) for v in lonlat)} in {year}")
    out = np.full((64, height, width), NODATA, dtype=np.int8)
    for tile in tiles:
        with _open(tile.path) as src:
            pad = 2 * abs(src.transform.a)  # a margin of 2 source pixels for the nearest-neighbour lookup
            left, bottom, right, top = transform_bounds(crs, src.crs, *dst_bounds, densify_pts=21)
            part = _read(src, (left - pad, bottom - pad, right + pad, top + pad))
        if part is None:
            continue
        if part.codes.shape[0] != out.shape[0]:
            raise ValueError(f"{tile.path} has {part.codes.shape[0]} bands, expected 64")
        warped = np.full_like(out, NODATA)
        reproject(source=part.codes, destination=warped, src_transform=Affine(*part.transform), src_crs=part.crs,
                  dst_transform=Affine(*transform[:6]), dst_crs=crs, resampling=Resampling.nearest,
                  src_nodata=NODATA, dst_nodata=NODATA)
        take = (out == NODATA).all(axis=0) & (warped != NODATA).all(axis=0)
        out[:, take] = warped[:, take]
    codes = RasterCodes(out, [float(v) for v in transform[:6]], crs, {})
    return _field(codes, year_period(year), f"official_{year}")


def read_official(bounds: Sequence[float], year: int, crs: str = "EPSG:4326",
                  source: str | os.PathLike[str] | TileIndex = "source_coop", resolution: float = 10.0,
                  dst_crs: str | None = None, max_pixels: int = MAX_PIXELS) -> EmbeddingField:
    """The official embeddings of a box for one year, mosaicked from the released files.

    Args:
        bounds: ``(west, south, east, north)`` / ``(left, bottom, right, top)`` in ``crs``.
        year: calendar year (2017 on; the mirror starts at 2018).
        crs: CRS of ``bounds`` (default lon/lat degrees).
        source: where the file index comes from, see :func:`resolve_index` (``"source_coop"``
            needs network and pyarrow; tests pass a :class:`TileIndex` or a local index file).
        resolution: output pixel size in ``dst_crs`` units (10 m = the native resolution).
        dst_crs: CRS of the output grid; default ``crs`` if projected, else the WGS84 / UTM zone
            of the box's centre (the release's own kind of grid).
        max_pixels: refuse grids larger than this (H * W).

    Returns:
        :class:`~aef_lite.embed.EmbeddingField` on the north-up grid of ``resolution`` px snapped
        to multiples of ``resolution`` and covering the box; pixels from files in other UTM zones
        are reprojected by nearest neighbour (an output pixel is always one released vector);
        NaN where no file has data; ``period`` = the calendar year.

    Raises:
        ValueError: malformed bounds, grid too large, no file of ``year`` covers the box.
    """
    require_geo("read_official")
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    west, south, east, north = (float(v) for v in bounds)
    if not (west < east and south < north):
        raise ValueError(f"bounds must be (west, south, east, north) with west < east and south < north, "
                         f"got {tuple(bounds)}")
    if resolution <= 0:
        raise ValueError(f"resolution must be > 0, got {resolution}")
    if dst_crs is None:
        if CRS.from_user_input(crs).is_geographic:
            lon0, lat0, lon1, lat1 = transform_bounds(crs, "EPSG:4326", west, south, east, north)
            dst_crs = utm_epsg(utm_zone_for((lon0 + lon1) / 2), north=(lat0 + lat1) / 2 >= 0)
        else:
            dst_crs = crs
    left, bottom, right, top = (transform_bounds(crs, dst_crs, west, south, east, north, densify_pts=21)
                                if CRS.from_user_input(crs) != CRS.from_user_input(dst_crs)
                                else (west, south, east, north))
    left, bottom = math.floor(left / resolution) * resolution, math.floor(bottom / resolution) * resolution
    right, top = math.ceil(right / resolution) * resolution, math.ceil(top / resolution) * resolution
    width, height = round((right - left) / resolution), round((top - bottom) / resolution)
    if width * height > max_pixels:
        raise ValueError(f"the box is {height} x {width} px at {resolution} {dst_crs} units, more than "
                         f"max_pixels={max_pixels}; read a smaller box or raise max_pixels")
    index = resolve_index(source, year)
    return _mosaic(index, year, dst_crs, [resolution, 0.0, left, 0.0, -resolution, top], height, width)


def read_official_like(field: EmbeddingField, year: int,
                       source: str | os.PathLike[str] | TileIndex = "source_coop") -> EmbeddingField:
    """The official embeddings of ``year`` on exactly ``field``'s grid (CRS, transform, shape),
    ready for :func:`compare_with_official`. Nearest-neighbour resampling of the released codes."""
    require_geo("read_official_like")
    _, height, width = field.emb.shape
    return _mosaic(resolve_index(source, year), year, field.crs, field.transform, height, width)


# ----------------------------------------------------------------------------------------------
# Comparing two embedding spaces
# ----------------------------------------------------------------------------------------------


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two representations of the same
    N points: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, Xc / Yc centred.

    x: (N, D1), y: (N, D2). In [0, 1]; 1 when y is an orthogonal transform of x times a scale
    (rotation-invariant, unlike the per-pixel dot product).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need x (N, D1) and y (N, D2) with the same N >= 2, got {x.shape}, {y.shape}")
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    denom = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(np.linalg.norm(yc.T @ xc) ** 2 / denom) if denom > 0 else 0.0


def linear_map_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                  ridge: float = 1e-6) -> float:
    """R^2 on held-out points of the least-squares affine map x -> y fitted on training points.

    Fit: min_W,b ||X W + b - Y||^2 + lam ||W||^2, lam = ``ridge`` * trace(Xc^T Xc) / D (relative,
    bias not penalised). Score: ``1 - sum ||y - y_hat||^2 / sum ||y - mean(y_test)||^2`` over all
    output dimensions (variance-weighted). Shapes: x (N, D1), y (N, D2). 1 = y is an affine image
    of x; <= 0 = no better than the test mean.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (train_x, train_y, test_x, test_y)]
    train_x, train_y, test_x, test_y = arrays
    if any(a.ndim != 2 for a in arrays) or len(train_x) != len(train_y) or len(test_x) != len(test_y) \
            or train_x.shape[1] != test_x.shape[1] or train_y.shape[1] != test_y.shape[1] or len(test_x) < 2:
        raise ValueError(f"need matching (N, D1) / (N, D2) train and (M, D1) / (M, D2) test arrays, M >= 2; got "
                         f"{[a.shape for a in arrays]}")
    mean_x, mean_y = train_x.mean(axis=0), train_y.mean(axis=0)
    xc = train_x - mean_x
    gram = xc.T @ xc
    gram += ridge * max(np.trace(gram), 1e-12) / len(gram) * np.eye(len(gram))
    weights = np.linalg.solve(gram, xc.T @ (train_y - mean_y))
    pred = (test_x - mean_x) @ weights + mean_y
    total = ((test_y - test_y.mean(axis=0)) ** 2).sum()
    return float(1.0 - ((test_y - pred) ** 2).sum() / total) if total > 0 else float("nan")


def _check_same_grid(a: EmbeddingField, b: EmbeddingField) -> None:
    same_crs = a.crs.strip().upper() == b.crs.strip().upper()
    if a.emb.shape[1:] != b.emb.shape[1:] or not same_crs or not np.allclose(a.transform, b.transform):
        raise ValueError(f"the fields must share one grid (shape, CRS, transform); got {a.emb.shape[1:]} "
                         f"{a.crs} {list(a.transform)} vs {b.emb.shape[1:]} {b.crs} {list(b.transform)}. "
                         "Use read_official_like(mini, year, source) to read the official field on mini's grid.")


def compare_with_official(mini: EmbeddingField, official: EmbeddingField, max_pixels: int = 2000,
                          block: int = 32, gap: int = 8, seed: int = 0, ridge: float = 1e-6) -> dict[str, float]:
    """How well ``mini``'s embedding space matches ``official``'s on their common valid pixels.

    Two models pick their own axes, so per-pixel dot products between them mean nothing; these
    numbers are invariant to rotating either space:

    * ``structure_r``: Pearson correlation of the pairwise cosine similarities among up to
      ``max_pixels`` seeded random pixels (:func:`aef_lite.earthengine.compare_with_official`);
    * ``cka``: linear CKA of all common pixels (:func:`linear_cka`);
    * ``r2_test``: R^2 of a least-squares affine map mini -> official fitted on the pixels of
      random ``block`` px blocks and scored on the other blocks' pixels at least ``gap`` px away
      (:func:`linear_map_r2`; the split of ``aef_lite.evaluate``, so neighbouring, correlated
      pixels do not leak from train to test); ``r2_train`` on the training pixels.

    Also ``n_pixels``, ``n_train``, ``n_test``. Pure numpy, deterministic given ``seed``.

    Raises:
        ValueError: the fields are not on one grid, too few common valid pixels, or no block
            assignment with both train and test pixels.
    """
    _check_same_grid(mini, official)
    out = {k: v for k, v in _structure_stats(mini.emb, official.emb, max_pixels, seed).items()
           if k in ("n_pixels", "structure_r")}
    valid = mini.valid & official.valid
    x, y = mini.emb[:, valid].T, official.emb[:, valid].T
    out["cka"] = linear_cka(x, y)
    rng = np.random.default_rng(seed)
    for _ in range(100):
        train_region, test_region = _block_regions(valid.shape, block, gap, rng)
        train, test = (train_region & valid)[valid], (test_region & valid)[valid]
        if train.sum() >= 2 and test.sum() >= 2:
            break
    else:
        raise ValueError(f"no split into {block} px train / test blocks (gap {gap} px) leaves both sides >= 2 "
                         "valid pixels; use a smaller block or gap")
    out["r2_test"] = linear_map_r2(x[train], y[train], x[test], y[test], ridge)
    out["r2_train"] = linear_map_r2(x[train], y[train], x[train], y[train], ridge)
    out["n_train"], out["n_test"] = float(train.sum()), float(test.sum())
    return out
