"""Embedding fields for the GIS world: xarray / rioxarray arrays and Cloud-Optimized GeoTIFFs.

Users of rasterio, xarray / rioxarray, QGIS and torchgeo want the field as a georeferenced raster,
not as a dataclass. This module provides

* :func:`to_xarray`: an ``xarray.DataArray`` (band, y, x) with band names ``A00``..``A63``,
  pixel-centre coordinates and the CRS and transform attached through rioxarray;
* :func:`save_cog`: a Cloud-Optimized GeoTIFF in the encoding of the released dataset (paper S8.1,
  ``aef_lite.quantization``): 64 int8 bands ``A00``..``A63``, ``-128`` = no data, tiled, DEFLATE,
  overviews, north-up, written atomically;
* :func:`save_release_layout`: the same codes in the *layout* of the released files, which are
  stored bottom-up (positive y pixel size, first row = southern edge). It exists so readers can be
  tested against that layout offline (``aef_lite.official.read_cog`` must flip it);
* :func:`cog_problems`: an offline check of the COG structure (tiling, overviews, the order of
  the TIFF directories and data), the rules of GDAL's COG validation.

Overviews: the released files' overview pixels are the *mean* of the full-resolution vectors
renormalised to unit length. GDAL cannot compute that on the int8 codes (averaging the
square-root codes is not averaging the vectors), so our overviews are nearest-neighbour
decimations: every overview pixel is a real embedding of the field, fine for display in QGIS;
analyses should read the full resolution.

Needs the optional ``geo`` extra (``pip install "aef-lite[geo]"``: rasterio, xarray, rioxarray);
importing this module does not, each function imports what it uses.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aef_lite.quantization import NODATA, band_names, quantize

if TYPE_CHECKING:  # pragma: no cover
    import xarray

    from aef_lite.embed import EmbeddingField

GEO_EXTRA_HINT = 'pip install "aef-lite[geo]"'
"""How to install what this module and ``aef_lite.official`` need."""

COG_BLOCKSIZE = 256
"""Tile side (px) of the GeoTIFFs written here."""


def require_geo(what: str, modules: tuple[str, ...] = ("rasterio",)) -> None:
    """Import ``modules`` or raise ModuleNotFoundError naming the ``geo`` extra.

    ``what`` names the caller in the message, e.g. ``"save_cog"``.
    """
    for name in modules:
        try:
            __import__(name)
        except ImportError as err:
            raise ModuleNotFoundError(f"{what} needs {name} ({', '.join(modules)}): {GEO_EXTRA_HINT}",
                                      name=name) from err


def _check_axis_aligned(transform: list[float] | tuple[float, ...]) -> tuple[float, ...]:
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    if b != 0 or d != 0 or a == 0 or e == 0:
        raise ValueError(f"only axis-aligned grids are supported (transform [a, b, c, d, e, f] with b = d = 0 "
                         f"and a, e != 0), got {list(transform[:6])}")
    return a, b, c, d, e, f


def north_up(codes: np.ndarray, transform: list[float] | tuple[float, ...]) -> tuple[np.ndarray, list[float]]:
    """Flip a bottom-up raster (positive y pixel size ``e``) so row 0 is its northern edge.

    codes: (B, H, W) any dtype. transform: ``[a, b, c, d, e, f]``, axis-aligned. For ``e > 0``
    the rows are reversed and the transform becomes ``[a, 0, c, 0, -e, f + e * H]`` (the top edge
    of the last row); north-up input comes back unchanged. Returns (codes, transform).
    """
    a, b, c, d, e, f = _check_axis_aligned(transform)
    if e < 0:
        return codes, [a, b, c, d, e, f]
    height = codes.shape[-2]
    return np.ascontiguousarray(codes[..., ::-1, :]), [a, b, c, d, -e, f + e * height]


def field_codes(field: EmbeddingField) -> np.ndarray:
    """(64, H, W) int8 codes of ``field`` as the release stores them (S8.1), ``NODATA`` where not valid."""
    return quantize(np.nan_to_num(field.emb, nan=0.0), dim=0, valid=field.valid)


def to_xarray(field: EmbeddingField) -> xarray.DataArray:
    """The field as an ``xarray.DataArray`` of dims (band, y, x), float32, NaN = no data.

    Coordinates: ``band`` = ``A00``..``A63``; ``x``, ``y`` = pixel centres in the field's CRS
    (``y`` decreasing for a north-up grid). The CRS, the transform and the NaN nodata are attached
    with rioxarray (``da.rio.crs``, ``da.rio.transform()``), so ``da.rio.reproject``,
    ``da.rio.to_raster`` and ``da.rio.clip_box`` work. Attributes: ``period_days`` (2,),
    ``pixel_size_m``, ``name``.
    """
    require_geo("to_xarray", ("rasterio", "xarray", "rioxarray"))
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    from rasterio.transform import Affine

    a, b, c, d, e, f = _check_axis_aligned(field.transform)
    bands, height, width = field.emb.shape
    da = xr.DataArray(
        np.asarray(field.emb, dtype=np.float32), dims=("band", "y", "x"),
        coords={"band": band_names(bands), "y": f + e * (np.arange(height) + 0.5),
                "x": c + a * (np.arange(width) + 0.5)},
        name="embedding",
        attrs={"period_days": [float(v) for v in field.period], "pixel_size_m": float(field.pixel_size_m),
               "name": field.name},
    )
    da = da.rio.write_crs(field.crs).rio.write_transform(Affine(a, b, c, d, e, f))
    return da.rio.write_nodata(np.nan, encoded=False)


@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A unique temporary path in ``path``'s folder, moved onto ``path`` (os.replace) on success and
    deleted on failure, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.tif")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a raster is meant to be shared
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _overview_factors(height: int, width: int, blocksize: int) -> list[int]:
    """Powers of two until the coarsest overview fits in one tile (GDAL's COG rule)."""
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > blocksize:
        factors.append(factor)
        factor *= 2
    return factors


def has_cog_driver() -> bool:
    """True when GDAL (through rasterio) has the COG driver (GDAL >= 3.1)."""
    require_geo("has_cog_driver")
    import rasterio

    with rasterio.Env() as env:
        return "COG" in env.drivers()


def _write_int8(codes: np.ndarray, transform: list[float], crs: str, tags: dict[str, str], path: Path,
                blocksize: int, use_cog_driver: bool) -> None:
    """Write (B, H, W) int8 codes: an in-memory GTiff source, copied to ``path`` as a COG (COG driver)
    or as a tiled GTiff with the source's overviews copied in front of the data (COPY_SRC_OVERVIEWS)."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine

    bands, height, width = codes.shape
    profile = dict(driver="GTiff", dtype="int8", count=bands, height=height, width=width, crs=crs,
                   transform=Affine(*transform[:6]), nodata=NODATA)
    with MemoryFile() as memfile:
        with memfile.open(**profile) as mem:
            mem.write(codes)
            mem.descriptions = tuple(band_names(bands))
            mem.update_tags(**tags)
            if not use_cog_driver and (factors := _overview_factors(height, width, blocksize)):
                mem.build_overviews(factors, Resampling.nearest)
        with memfile.open() as src:
            if use_cog_driver:
                rasterio.shutil.copy(src, path, driver="COG", compress="DEFLATE", blocksize=blocksize,
                                     overviews="AUTO", overview_resampling="NEAREST", resampling="NEAREST")
            else:
                rasterio.shutil.copy(src, path, driver="GTiff", tiled=True, blockxsize=blocksize,
                                     blockysize=blocksize, compress="DEFLATE", copy_src_overviews=True)


def _tags(field: EmbeddingField) -> dict[str, str]:
    return {"period_days": " ".join(f"{v:.6f}" for v in field.period), "source_sample": field.name,
            "pixel_size_m": f"{float(field.pixel_size_m):.6f}"}


def save_cog(field: EmbeddingField, path: str | os.PathLike[str], blocksize: int = COG_BLOCKSIZE) -> Path:
    """Write ``field`` as a Cloud-Optimized GeoTIFF in the released dataset's encoding (S8.1).

    64 int8 bands with descriptions ``A00``..``A63`` (:func:`aef_lite.quantization.quantize`),
    nodata ``-128``, north-up, tiles of ``blocksize`` px (a multiple of 16), DEFLATE, overviews by
    factors of 2 until the coarsest fits in one tile (none for a field within one tile; see the
    module docstring for why they are nearest-neighbour), the field's CRS and transform; tags
    ``period_days``, ``source_sample``, ``pixel_size_m``. GDAL's COG driver is used when present
    (GDAL >= 3.1), else a tiled GTiff with COPY_SRC_OVERVIEWS (same layout). Written to a unique
    temporary file in the same folder, then moved into place (os.replace).

    Returns the path written. Raises ValueError for a rotated grid or a bad blocksize.
    """
    require_geo("save_cog")
    if blocksize < 16 or blocksize % 16:
        raise ValueError(f"blocksize must be a positive multiple of 16, got {blocksize}")
    codes, transform = north_up(field_codes(field), field.transform)
    path = Path(path)
    with _atomic_target(path) as tmp:
        _write_int8(codes, transform, field.crs, _tags(field), tmp, blocksize, has_cog_driver())
    return path


def save_release_layout(field: EmbeddingField, path: str | os.PathLike[str], blocksize: int = COG_BLOCKSIZE
                        ) -> Path:
    """Write ``field`` as the released files are laid out: bottom-up (first row = southern edge,
    positive y pixel size), 64 int8 bands ``A00``..``A63``, nodata ``-128``, tiled, DEFLATE,
    nearest-neighbour overviews in front of the data, no aef_lite tags (a reader takes the year
    from the folder, ``.../<year>/<zone>/<name>.tiff``). Written atomically.

    For testing and teaching readers of the release (:func:`aef_lite.official.read_cog`); for
    anything else use :func:`save_cog` (north-up, what every viewer expects). Returns the path.
    """
    require_geo("save_release_layout")
    codes, transform = north_up(field_codes(field), field.transform)
    a, b, c, d, e, f = transform
    height = codes.shape[1]
    bottom_up = [a, b, c, d, -e, f + e * height]  # origin at the south-west corner, e > 0
    path = Path(path)
    with _atomic_target(path) as tmp:
        _write_int8(np.ascontiguousarray(codes[:, ::-1]), bottom_up, field.crs, {}, tmp, blocksize,
                    use_cog_driver=False)
    return path


# ----------------------------------------------------------------------------------------------
# COG structure check (offline, pure Python TIFF directory parsing)
# ----------------------------------------------------------------------------------------------

_TIFF_TYPES = {1: "B", 2: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 16: "Q", 17: "q"}
_TAG_WIDTH, _TAG_LENGTH, _TAG_TILE_WIDTH, _TAG_SUBFILE = 256, 257, 322, 254
_TAG_TILE_OFFSETS, _TAG_STRIP_OFFSETS = 324, 273


def _read_ifds(data: bytes) -> list[tuple[int, dict[int, list[int]]]]:
    """(offset, {tag: values}) of every IFD of a classic or Big TIFF, in file order of the chain."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        raise ValueError("not a TIFF file (no II/MM byte order mark)")
    magic = struct.unpack(order + "H", data[2:4])[0]
    big = magic == 43
    if magic not in (42, 43):
        raise ValueError(f"not a TIFF file (magic {magic})")
    off_fmt, count_fmt, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    offset = struct.unpack(order + off_fmt, data[8:16] if big else data[4:8])[0]
    ifds = []
    while offset:
        count_size = struct.calcsize(count_fmt)
        count = struct.unpack(order + count_fmt, data[offset:offset + count_size])[0]
        tags: dict[int, list[int]] = {}
        for i in range(count):
            entry = offset + count_size + i * entry_size
            tag, typ = struct.unpack(order + "HH", data[entry:entry + 4])
            n = struct.unpack(order + count_fmt.replace("H", "I"), data[entry + 4:entry + (12 if big else 8)])[0]
            if typ not in _TIFF_TYPES:
                continue
            fmt = order + f"{n}{_TIFF_TYPES[typ]}"
            size = struct.calcsize(fmt)
            inline = 8 if big else 4
            value_at = entry + (12 if big else 8)
            if size > inline:
                value_at = struct.unpack(order + off_fmt, data[value_at:value_at + (8 if big else 4)])[0]
            tags[tag] = list(struct.unpack(fmt, data[value_at:value_at + size]))
        ifds.append((offset, tags))
        next_at = offset + count_size + count * entry_size
        offset = struct.unpack(order + off_fmt, data[next_at:next_at + struct.calcsize(off_fmt)])[0]
    return ifds


def cog_problems(path: str | os.PathLike[str]) -> list[str]:
    """Check the Cloud-Optimized GeoTIFF structure of a local file; returns the problems found
    (empty list = a valid COG). Pure Python, no GDAL needed.

    The rules of GDAL's ``validate_cloud_optimized_geotiff.py``: the full-resolution image is the
    first directory and is tiled; every overview is tiled and has a reduced-resolution subfile
    type; all directories (IFDs) come before the image data; the data of coarser overviews comes
    before that of finer ones, the full resolution last; and the GDAL "ghost" header announcing
    ``LAYOUT=IFDS_BEFORE_DATA`` is present (what lets readers such as QGIS or /vsicurl/ fetch
    the header in one range request).
    """
    data = Path(path).read_bytes()
    ifds = _read_ifds(data)
    problems = []
    if b"GDAL_STRUCTURAL_METADATA_SIZE" not in data[:1024] or b"LAYOUT=IFDS_BEFORE_DATA" not in data[:1024]:
        problems.append("no GDAL ghost header with LAYOUT=IFDS_BEFORE_DATA")
    images = [(off, tags) for off, tags in ifds if not tags.get(_TAG_SUBFILE, [0])[0] & 4]  # skip masks
    for i, (_, tags) in enumerate(images):
        if _TAG_TILE_WIDTH not in tags:
            problems.append(f"image {i} (0 = full resolution) is not tiled")
        if i and not tags.get(_TAG_SUBFILE, [0])[0] & 1:
            problems.append(f"image {i} is not marked as a reduced-resolution overview")
    widths = [tags[_TAG_WIDTH][0] for _, tags in images]
    if widths != sorted(widths, reverse=True):
        problems.append(f"the first image is not the full resolution / overviews not by decreasing size: {widths}")
    data_starts = [min((o for o in tags.get(_TAG_TILE_OFFSETS, tags.get(_TAG_STRIP_OFFSETS, [])) if o), default=0)
                   for _, tags in images]
    if any(data_starts) and max(off for off, _ in ifds) > min(s for s in data_starts if s):
        problems.append("an IFD lies after image data (IFDs must all come first)")
    if data_starts != sorted(data_starts, reverse=True):
        problems.append("image data is not ordered from the coarsest overview to the full resolution")
    if len(images) == 1 and max(widths[0], images[0][1][_TAG_LENGTH][0]) > 512:
        problems.append("an image larger than 512 px has no overviews")
    return problems


def describe_cog(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What rasterio sees of a GeoTIFF: dtype, count, nodata, CRS, transform, tiling, block shape,
    overview factors, compression, GDAL's IMAGE_STRUCTURE ``LAYOUT`` and the band descriptions."""
    require_geo("describe_cog")
    import rasterio

    with rasterio.open(path) as src:
        structure = src.tags(ns="IMAGE_STRUCTURE")
        return {"dtype": src.dtypes[0], "count": src.count, "nodata": src.nodata,
                "crs": src.crs.to_string() if src.crs else None, "transform": list(src.transform)[:6],
                "tiled": src.profile.get("tiled", False), "block_shape": src.block_shapes[0],
                "overviews": src.overviews(1), "compress": src.compression.name if src.compression else None,
                "layout": structure.get("LAYOUT"), "descriptions": list(src.descriptions)}
