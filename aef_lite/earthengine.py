"""Google Earth Engine access: the official AEF embeddings and raw input stacks (optional).

The official AlphaEarth Foundations Satellite Embedding dataset is the Earth Engine
ImageCollection ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL``: one image per calendar year (2017 on)
and UTM tile, bands ``A00``..``A63`` holding 64-d unit vectors at 10 m (arXiv 2507.22291,
"Released dataset"; quantised as in :mod:`aef_lite.quantization`). Licence CC-BY 4.0; attribution:
"The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google
DeepMind." (:data:`ATTRIBUTION`).

Earth Engine needs the ``earthengine-api`` package, credentials (``earthengine authenticate`` or
``ee.Authenticate()``, gcloud application-default credentials, a service account, or the
metadata server of a Google Cloud machine) and a Google Cloud project registered for Earth
Engine (noncommercial projects also have a quota tier, Community by default, whose quotas apply
from 27 April 2026). Everything here
works without them except the network calls: the query builders (``embedding_image``,
``pixels_request``, ``s2_collection``, ...) only assemble ``ee`` objects and request dicts (they
are unit-tested with a fake ``ee`` module), :func:`initialize` fails fast with instructions, and
notebooks print :func:`fallback_message` and carry on with the mini model's own embeddings.

Pixels come back through ``ee.data.computePixels`` on a north-up UTM grid of 10 m pixels centred
on the requested point (:func:`utm_grid`), so they line up with ``aef_lite.data`` samples.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aef_lite.data import Sample, SourceSeries
from aef_lite.geo import lonlat_to_utm, utm_epsg

EMBEDDING_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
EMBEDDING_BANDS: tuple[str, ...] = tuple(f"A{i:02d}" for i in range(64))
EMBEDDING_FIRST_YEAR = 2017
SCALE_M = 10.0
"""Pixel size of every request (m); the embeddings' native resolution."""
ATTRIBUTION = ("The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and "
               "Google DeepMind.")
LICENSE = "CC-BY-4.0"
PROJECT_ENV = "AEF_LITE_EE_PROJECT"
"""Environment variable naming the Google Cloud project used for Earth Engine requests."""
NODATA_FILL = -9999.0
"""Value masked pixels are unmasked to before download, so they can be told apart from data."""
MAX_REQUEST_BYTES = 50_331_648
"""computePixels refuses responses above 48 MiB ("Total request size ... must be less than or
equal to 50331648 bytes")."""
INIT_TIMEOUT_S = 30.0
REQUEST_DEADLINE_MS = 120_000

S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"
CLOUD_SCORE_PLUS = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
CLOUD_SCORE_BAND = "cs_cdf"
CLEAR_THRESHOLD = 0.6
"""A Sentinel-2 pixel counts as clear where Cloud Score+ ``cs_cdf >= 0.6``."""
S1_COLLECTION = "COPERNICUS/S1_GRD"
S1_DB_RANGE = (-30.0, 10.0)
"""Sentinel-1 backscatter outside this range (dB) is masked (paper S2.1)."""
LANDSAT_COLLECTIONS = ("LANDSAT/LC08/C02/T1_TOA", "LANDSAT/LC09/C02/T1_TOA")
LANDSAT_CLOUD_BITS = 0b11111
"""QA_PIXEL bits 0-4: fill, dilated cloud, cirrus, cloud, cloud shadow; any set = invalid."""
_MS_PER_DAY = 86_400_000


class EarthEngineUnavailable(RuntimeError):
    """Earth Engine cannot be used here (package, credentials, project or network missing)."""


_HOW_TO = (
    "To use Earth Engine: (1) pip install earthengine-api; (2) authenticate once with "
    "`earthengine authenticate` in a shell or `ee.Authenticate()` in Python (or use gcloud "
    "application-default credentials, a service account, or a Google Cloud machine's own "
    "credentials); (3) use a Google Cloud project registered for Earth Engine: "
    f"initialize(project='my-project'), the environment variable {PROJECT_ENV}, or the default "
    "that `earthengine set_project` or the gcloud quota project stored. Noncommercial projects "
    "must be registered for noncommercial use and get a quota tier (Community unless another is "
    "selected in the Cloud console), whose quotas apply from 27 April 2026. "
    "See https://developers.google.com/earth-engine/guides/auth"
)


def _ee() -> Any:
    """The ``ee`` module, imported on first use (tests substitute a fake via ``sys.modules``)."""
    try:
        return importlib.import_module("ee")
    except ImportError as err:
        raise EarthEngineUnavailable(f"the earthengine-api package is not installed. {_HOW_TO}") from err


def _gcloud_config_dir() -> Path:
    """gcloud's configuration folder: ``$CLOUDSDK_CONFIG``, else ``%APPDATA%\\gcloud`` on Windows,
    else ``~/.config/gcloud`` (where google-auth looks for application-default credentials)."""
    if os.environ.get("CLOUDSDK_CONFIG"):
        return Path(os.environ["CLOUDSDK_CONFIG"])
    if _WINDOWS:
        return Path(os.environ.get("APPDATA") or os.environ.get("SystemDrive", "C:") + "\\") / "gcloud"
    return Path(os.path.expanduser("~")) / ".config" / "gcloud"


_WINDOWS = os.name == "nt"
DMI_PRODUCT_NAME = Path("/sys/class/dmi/id/product_name")
"""Linux's BIOS product name; "Google Compute Engine" on Compute Engine, GKE and Colab machines."""

GOOGLE_CLOUD_ENV = ("GCE_METADATA_HOST", "GCE_METADATA_IP", "K_SERVICE", "CLOUD_RUN_JOB", "GAE_ENV")
"""Environment variables set on Google Cloud runtimes (Compute Engine metadata overrides, Cloud
Run and Cloud Functions, App Engine), where credentials come from the metadata server."""


def _on_google_cloud() -> bool:
    """Whether this looks like a Google Cloud machine (its metadata server gives credentials):
    one of :data:`GOOGLE_CLOUD_ENV`, or a Compute Engine BIOS name (Linux; no network)."""
    if any(os.environ.get(v) for v in GOOGLE_CLOUD_ENV):
        return True
    try:
        return DMI_PRODUCT_NAME.read_text(encoding="ascii").startswith("Google")
    except (OSError, UnicodeDecodeError):
        return False


def _credentials_found(ee: Any) -> bool:
    """Whether Earth Engine could find credentials here, checked offline: the EE credentials
    file (``ee.oauth.get_credentials_path()``), ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud
    application-default credentials (:func:`_gcloud_config_dir`), or a Google Cloud machine."""
    oauth = getattr(ee, "oauth", None)
    ee_file = (Path(oauth.get_credentials_path()) if hasattr(oauth, "get_credentials_path")
               else Path(os.path.expanduser("~")) / ".config" / "earthengine" / "credentials")
    candidates = [ee_file, _gcloud_config_dir() / "application_default_credentials.json"]
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        candidates.append(Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]))
    return any(p.is_file() for p in candidates) or _on_google_cloud()


def initialize(project: str | None = None, timeout_s: float = INIT_TIMEOUT_S, credentials: Any = "persistent") -> bool:
    """Initialise Earth Engine; return True, or raise :class:`EarthEngineUnavailable` saying how
    to fix it.

    ``project``: the Google Cloud project (argument, else ``$AEF_LITE_EE_PROJECT``, else
    ``$GOOGLE_CLOUD_PROJECT``, else None: ``ee.Initialize`` then uses the project stored by
    ``earthengine set_project``, the credentials' quota project, or a service account's own).
    ``credentials``: passed to ``ee.Initialize`` (e.g. ``ee.ServiceAccountCredentials(...)``);
    with the default ``"persistent"`` the credentials Earth Engine would look for are checked
    offline first (:func:`_credentials_found`), so a machine without any fails at once.
    ``ee.Initialize`` runs in a daemon thread abandoned after ``timeout_s``; once it succeeds
    (even after the timeout), every request gets a deadline of ``REQUEST_DEADLINE_MS``.
    Already initialised: returns True at once.
    """
    ee = _ee()
    if ee.data.is_initialized():
        return True
    if isinstance(credentials, str) and credentials == "persistent" and not _credentials_found(ee):
        raise EarthEngineUnavailable(f"no Earth Engine credentials found. {_HOW_TO}")
    project = project or os.environ.get(PROJECT_ENV) or os.environ.get("GOOGLE_CLOUD_PROJECT") or None
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            ee.Initialize(credentials=credentials, project=project)
            ee.data.setDeadline(REQUEST_DEADLINE_MS)  # here, so that a late success still sets it
            outcome.append(None)
        except Exception as err:  # any failure means "unavailable"; reported below
            outcome.append(err)

    worker = threading.Thread(target=attempt, daemon=True, name="ee-initialize")
    worker.start()
    worker.join(timeout_s)
    call = f"ee.Initialize(project={project!r})"
    if not outcome:
        raise EarthEngineUnavailable(f"{call} did not finish within {timeout_s:g} s (no network?). {_HOW_TO}")
    if outcome[0] is not None:
        err = outcome[0]
        raise EarthEngineUnavailable(f"{call} failed: {type(err).__name__}: {err}. {_HOW_TO}") from err
    return True


def available(project: str | None = None, timeout_s: float = INIT_TIMEOUT_S) -> bool:
    """:func:`initialize`, but False instead of raising when Earth Engine is unavailable."""
    try:
        return initialize(project, timeout_s)
    except EarthEngineUnavailable:
        return False


def fallback_message() -> str:
    """What notebooks print when Earth Engine is unavailable (fixed text, safe for nbval)."""
    return ("Earth Engine is not available in this environment, so the official AlphaEarth "
            f"Foundations embeddings ({EMBEDDING_COLLECTION}, bands A00..A63) are not downloaded; "
            "the cells below use the mini model's embeddings of the bundled samples instead.\n"
            f"{_HOW_TO}\nData licence {LICENSE}. {ATTRIBUTION}")


# ----------------------------------------------------------------------------------------------
# Pure builders: grids, ee objects and request dicts (no network)
# ----------------------------------------------------------------------------------------------


def year_range(year: int) -> tuple[str, str]:
    """The calendar year as Earth Engine's half-open date range ``("YYYY-01-01", "YYYY+1-01-01")``."""
    return f"{year:04d}-01-01", f"{year + 1:04d}-01-01"


def utm_grid(lon: float, lat: float, size_px: int, scale_m: float = SCALE_M) -> dict[str, Any]:
    """computePixels ``grid`` of ``size_px`` x ``size_px`` north-up pixels of ``scale_m`` metres in
    the point's standard UTM zone, on the lattice of multiples of ``scale_m`` and centred on
    (lon, lat): for even ``size_px`` the pixel corner nearest the point is the grid's centre, for
    odd ``size_px`` the point lies in the central pixel.

    Returns ``{"dimensions": {"width", "height"}, "affineTransform": {"scaleX", "shearX",
    "translateX", "shearY", "scaleY", "translateY"}, "crsCode": "EPSG:326zz"}``.
    """
    if size_px < 1:
        raise ValueError(f"size_px must be >= 1, got {size_px}")
    easting, northing, zone, north = lonlat_to_utm(lon, lat)
    snap = np.round if size_px % 2 == 0 else np.floor  # a lattice corner, or the corner of the point's pixel
    half = size_px // 2
    x0 = float((snap(float(easting) / scale_m) - half) * scale_m)
    y0 = float((snap(float(northing) / scale_m) + (size_px - half)) * scale_m)
    return {"dimensions": {"width": size_px, "height": size_px},
            "affineTransform": {"scaleX": scale_m, "shearX": 0.0, "translateX": x0,
                                "shearY": 0.0, "scaleY": -scale_m, "translateY": y0},
            "crsCode": utm_epsg(zone, north)}


def grid_transform(grid: dict[str, Any]) -> list[float]:
    """A :func:`utm_grid` as the 6-number affine ``[a, b, c, d, e, f]`` of ``aef_lite.data``."""
    t = grid["affineTransform"]
    return [t["scaleX"], t["shearX"], t["translateX"], t["shearY"], t["scaleY"], t["translateY"]]


def region(grid: dict[str, Any]) -> Any:
    """The grid's footprint as an ``ee.Geometry.Rectangle`` in its UTM CRS (planar)."""
    t, d = grid["affineTransform"], grid["dimensions"]
    x0, y1 = t["translateX"], t["translateY"]
    x1, y0 = x0 + d["width"] * t["scaleX"], y1 + d["height"] * t["scaleY"]
    return _ee().Geometry.Rectangle(coords=[x0, y0, x1, y1], proj=grid["crsCode"], geodesic=False)


def embedding_image(year: int, grid: dict[str, Any]) -> Any:
    """The official embeddings of calendar ``year`` over ``grid`` as one float ``ee.Image`` with
    bands A00..A63, masked pixels unmasked to ``NODATA_FILL``."""
    if year < EMBEDDING_FIRST_YEAR:
        raise ValueError(f"the official embeddings start in {EMBEDDING_FIRST_YEAR}, got {year}")
    start, end = year_range(year)
    ee = _ee()
    return (ee.ImageCollection(EMBEDDING_COLLECTION).filterDate(start, end)
            .filterBounds(region(grid)).mosaic().select(list(EMBEDDING_BANDS))
            .toFloat().unmask(NODATA_FILL, False))


def pixels_request(image: Any, grid: dict[str, Any], band_ids: Sequence[str]) -> dict[str, Any]:
    """The ``ee.data.computePixels`` request for ``band_ids`` of ``image`` on ``grid`` (float32
    numpy answer); raises ValueError when the answer would exceed ``MAX_REQUEST_BYTES``."""
    d = grid["dimensions"]
    size = 4 * len(band_ids) * d["width"] * d["height"]
    if size > MAX_REQUEST_BYTES:
        raise ValueError(f"{len(band_ids)} float32 bands of {d['width']} x {d['height']} px is "
                         f"{size} bytes, over the computePixels limit of {MAX_REQUEST_BYTES}; "
                         "request a smaller size_px")
    return {"expression": image, "fileFormat": "NUMPY_NDARRAY", "bandIds": list(band_ids),
            "grid": grid}


def s2_collection(grid: dict[str, Any], start: str, end: str) -> Any:
    """Sentinel-2 L1C (harmonised) over ``grid`` in [start, end) with the Cloud Score+
    ``cs_cdf`` band linked to each image (used for the mask only)."""
    ee = _ee()
    return (ee.ImageCollection(S2_COLLECTION).filterDate(start, end).filterBounds(region(grid))
            .linkCollection(ee.ImageCollection(CLOUD_SCORE_PLUS), [CLOUD_SCORE_BAND]))


def s1_collection(grid: dict[str, Any], start: str, end: str) -> Any:
    """Sentinel-1 GRD (backscatter in dB) over ``grid`` in [start, end): IW mode scenes that have
    both VV and VH."""
    ee = _ee()
    return (ee.ImageCollection(S1_COLLECTION).filterDate(start, end).filterBounds(region(grid))
            .filter(ee.Filter.eq("instrumentMode", "IW"))
            .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VV"))
            .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH")))


def landsat_collection(grid: dict[str, Any], start: str, end: str) -> Any:
    """Landsat 8 and 9 Collection 2 Tier 1 TOA over ``grid`` in [start, end), merged."""
    ee = _ee()
    first, *rest = (ee.ImageCollection(c).filterDate(start, end).filterBounds(region(grid))
                    for c in LANDSAT_COLLECTIONS)
    for other in rest:
        first = first.merge(other)
    return first


def frame_image(collection: Any, day_start_ms: int, spec: SourceSpec) -> Any:
    """Mosaic of the collection's images acquired in the UTC day starting at ``day_start_ms``
    (adjacent tiles of one overpass), bands ``spec.ee_bands`` + ``spec.qa_band``, float, masked
    pixels unmasked to ``NODATA_FILL``."""
    return (collection.filterDate(day_start_ms, day_start_ms + _MS_PER_DAY).mosaic()
            .select(list(spec.request_bands)).toFloat().unmask(NODATA_FILL, False))


# ----------------------------------------------------------------------------------------------
# Sources of fetch_stack
# ----------------------------------------------------------------------------------------------


def _s2_valid(values: np.ndarray, qa: np.ndarray) -> np.ndarray:
    """L1C no data is 0 in any band; clear where Cloud Score+ cs_cdf >= CLEAR_THRESHOLD."""
    return np.all(values > 0, axis=0) & (qa >= CLEAR_THRESHOLD)


def _s1_valid(values: np.ndarray, qa: np.ndarray | None) -> np.ndarray:
    """Backscatter of every band inside ``S1_DB_RANGE`` dB."""
    lo, hi = S1_DB_RANGE
    return np.all((values >= lo) & (values <= hi), axis=0)


def _landsat_valid(values: np.ndarray, qa: np.ndarray) -> np.ndarray:
    """QA_PIXEL bits 0-4 (fill, dilated cloud, cirrus, cloud, shadow) all clear."""
    return (qa.astype(np.int64) & LANDSAT_CLOUD_BITS) == 0


@dataclass(frozen=True)
class SourceSpec:
    """How one input source of the paper (S2.1) is queried and masked.

    collection_ids: the Earth Engine collections used; collection: builds the
    ee.ImageCollection from (grid, start, end). ee_bands: value bands as
    named in Earth Engine, stored as ``bands`` (physical value = raw * scale). qa_band: extra
    band fetched only to build the mask. valid: (values (C, H, W), qa (H, W) or None) -> (H, W)
    bool, on top of "no band was masked in Earth Engine".
    """

    sensor: str
    collection_ids: tuple[str, ...]
    collection: Callable[[dict[str, Any], str, str], Any]
    ee_bands: tuple[str, ...]
    bands: tuple[str, ...]
    wavelengths_nm: tuple[float, ...]
    scale: float
    qa_band: str | None
    valid: Callable[[np.ndarray, Any], np.ndarray]

    @property
    def request_bands(self) -> tuple[str, ...]:
        """The bands downloaded per frame: values, then the QA band if any."""
        return self.ee_bands + ((self.qa_band,) if self.qa_band else ())


SOURCES: dict[str, SourceSpec] = {
    # 13 L1C bands in the order of aef_lite.data.NORM_STATS["s2"] (B01..B08, B8A, B09..B12).
    "s2": SourceSpec(
        sensor="s2", collection_ids=(S2_COLLECTION, CLOUD_SCORE_PLUS), collection=s2_collection,
        ee_bands=("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"),
        bands=("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
               "B12"),
        wavelengths_nm=(442.7, 492.4, 559.8, 664.6, 704.1, 740.5, 782.8, 832.8, 864.7, 945.1,
                        1373.5, 1613.7, 2202.4),
        scale=1e-4, qa_band=CLOUD_SCORE_BAND, valid=_s2_valid),
    # C-band SAR, 5.405 GHz: wavelength 5.55 cm; values stay in dB.
    "s1": SourceSpec(
        sensor="s1", collection_ids=(S1_COLLECTION,), collection=s1_collection,
        ee_bands=("VV", "VH"), bands=("VV", "VH"), wavelengths_nm=(5.5465e7, 5.5465e7),
        scale=1.0, qa_band=None, valid=_s1_valid),
    # Landsat 8/9 OLI/TIRS TOA bands of the paper: B2-B6, B8 (pan), B10 (brightness temperature, K).
    "landsat": SourceSpec(
        sensor="landsat", collection_ids=LANDSAT_COLLECTIONS, collection=landsat_collection,
        ee_bands=("B2", "B3", "B4", "B5", "B6", "B8", "B10"),
        bands=("blue", "green", "red", "nir", "swir1", "pan", "tir1"),
        wavelengths_nm=(482.0, 561.5, 654.5, 865.0, 1608.5, 589.5, 10895.0),
        scale=1.0, qa_band="QA_PIXEL", valid=_landsat_valid),
}


# ----------------------------------------------------------------------------------------------
# Network calls (thin) and their numpy post-processing
# ----------------------------------------------------------------------------------------------


def _compute_pixels(request: dict[str, Any]) -> np.ndarray:
    """Run a :func:`pixels_request`: -> (C, H, W) float32 in ``bandIds`` order (network)."""
    answer = _ee().data.computePixels(request)
    return np.stack([np.asarray(answer[b], dtype=np.float32) for b in request["bandIds"]])


def _frame_times(collection: Any) -> list[int]:
    """Acquisition times (ms since 1970, UTC) of the collection's images (network)."""
    return [int(t) for t in collection.aggregate_array("system:time_start").getInfo()]


def day_groups(times_ms: Sequence[int]) -> list[tuple[int, int]]:
    """Group acquisition times by UTC day: sorted ``(day_start_ms, first_time_ms)`` pairs, one per
    day with data (tiles of one overpass become one frame)."""
    first: dict[int, int] = {}
    for t in sorted(int(v) for v in times_ms):
        first.setdefault(t - t % _MS_PER_DAY, t)
    return sorted(first.items())


def _ensure_initialized() -> None:
    if not _ee().data.is_initialized():
        initialize()


def official_embeddings(lon: float, lat: float, year: int, size_px: int = 128) -> np.ndarray:
    """Download the official AEF embeddings of calendar ``year`` around (lon, lat).

    Returns (64, size_px, size_px) float32 unit vectors on :func:`utm_grid` (10 m, north-up,
    centred on the point; ``grid_transform(utm_grid(...))`` gives its affine), NaN where the
    dataset has no data. Needs Earth Engine (:func:`initialize` is called if needed).
    """
    _ensure_initialized()
    grid = utm_grid(lon, lat, size_px)
    emb = _compute_pixels(pixels_request(embedding_image(year, grid), grid, EMBEDDING_BANDS))
    emb[:, np.any(emb == NODATA_FILL, axis=0)] = np.nan
    return emb


def frame_arrays(raw: np.ndarray, spec: SourceSpec) -> tuple[np.ndarray, np.ndarray]:
    """One downloaded frame (C [+1 QA], H, W) -> (values (C, H, W) float32 physical, with 0.0 at
    invalid pixels; mask (H, W) bool, True = valid)."""
    n = len(spec.ee_bands)
    present = np.all(raw != NODATA_FILL, axis=0)
    values = raw[:n] * np.float32(spec.scale)
    qa = raw[n] if spec.qa_band else None
    mask = present & spec.valid(values, qa)
    return np.where(mask, values, np.float32(0.0)).astype(np.float32), mask


def fetch_stack(lon: float, lat: float, start: str, end: str, size_px: int = 128,
                sources: Sequence[str] = ("s2", "s1", "landsat")) -> Sample:
    """Download the paper's input sources (S2.1) around (lon, lat) for [start, end) as a Sample.

    One frame per source and UTC day with data (one computePixels request each, so a year of
    three sources is a few hundred requests); frames without a single valid pixel are dropped,
    and a source without frames is left out. Sources (see :data:`SOURCES`): ``"s2"`` 13 L1C bands
    as TOA reflectance, mask = data present and Cloud Score+ clear; ``"s1"`` VV, VH in dB, masked
    outside [-30, 10] dB; ``"landsat"`` Landsat 8/9 TOA B2-B6, B8, B10, mask from QA_PIXEL. All
    on the 10 m :func:`utm_grid` (nearest-neighbour resampling). ``aef_lite.data.NORM_STATS`` has
    statistics for ``"s2"`` only, so add ``"s1"`` / ``"landsat"`` there before normalising those.
    """
    _ensure_initialized()
    grid = utm_grid(lon, lat, size_px)
    series = {}
    for name in sources:
        spec = SOURCES[name]
        collection = spec.collection(grid, start, end)
        values, masks, days = [], [], []
        for day_ms, time_ms in day_groups(_frame_times(collection)):
            raw = _compute_pixels(pixels_request(frame_image(collection, day_ms, spec), grid,
                                                 spec.request_bands))
            frame, mask = frame_arrays(raw, spec)
            if mask.any():
                values.append(frame)
                masks.append(mask)
                days.append(time_ms / _MS_PER_DAY)
        if values:
            series[name] = SourceSeries(values=np.stack(values), days=np.array(days, dtype=np.float64),
                                        mask=np.stack(masks), bands=list(spec.bands),
                                        wavelengths_nm=list(spec.wavelengths_nm), sensor=spec.sensor)
    if not series:
        raise ValueError(f"no valid frame of {list(sources)} at ({lon}, {lat}) in [{start}, {end})")
    meta = {"center_lonlat": [lon, lat], "period": [start, end], "source": "Google Earth Engine",
            "collections": {n: list(SOURCES[n].collection_ids) for n in series}}
    return Sample(name=f"ee_{lon:.4f}_{lat:.4f}", sources=series, labels={}, crs=grid["crsCode"],
                  transform=grid_transform(grid), pixel_size_m=SCALE_M, meta=meta)


def compare_with_official(ours: np.ndarray, official: np.ndarray, max_pixels: int = 2000,
                          seed: int = 0) -> dict[str, float]:
    """Compare two embedding fields (E, H, W) of the same grid, e.g. ours vs the official one.

    Pixels finite and non-zero in both count. Returns ``n_pixels``; ``mean_dot`` and
    ``median_dot``, the per-pixel cosine (meaningful only when both live in the same space, e.g.
    official vs a re-quantised copy, or two years of the official data); ``ours_norm`` and
    ``official_norm``, mean vector lengths (1 for unit vectors); and ``structure_r``, the Pearson
    correlation of the pairwise cosine similarities among up to ``max_pixels`` seeded random
    pixels, which compares two *different* embedding spaces by how they relate pixels to each
    other.
    """
    if np.shape(ours) != np.shape(official) or np.ndim(ours) != 3:
        raise ValueError(f"need two (E, H, W) fields of one shape: {np.shape(ours)} vs {np.shape(official)}")
    a, b = (np.moveaxis(np.asarray(f, dtype=np.float64), 0, -1).reshape(-1, np.shape(f)[0])
            for f in (ours, official))
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = np.isfinite(na) & np.isfinite(nb) & (na > 0) & (nb > 0)
    if ok.sum() < 2:
        raise ValueError("fewer than 2 pixels are valid in both fields")
    ua, ub = a[ok] / na[ok, None], b[ok] / nb[ok, None]
    cos = (ua * ub).sum(axis=1)
    out = {"n_pixels": float(ok.sum()), "mean_dot": float(cos.mean()), "median_dot": float(np.median(cos)),
           "ours_norm": float(na[ok].mean()), "official_norm": float(nb[ok].mean())}
    pick = np.random.default_rng(seed).permutation(len(ua))[:max_pixels]
    upper = np.triu_indices(len(pick), k=1)
    sim_a, sim_b = (ua[pick] @ ua[pick].T)[upper], (ub[pick] @ ub[pick].T)[upper]
    out["structure_r"] = float(np.corrcoef(sim_a, sim_b)[0, 1])
    return out
