"""Real satellite samples, normalisation, tiles and model batches.

The batch containers below are the contract between the data pipeline and the model.

Conventions
-----------
* Time is in days (float64) since ``TIME_ORIGIN`` (1970-01-01), never raw epoch milliseconds.
* A source is one sensor stream with its own timestamps and masks. Its *kind* (``"s2"``,
  ``"landsat5"``, ``"landsat7"``) selects the band count and the normalisation statistics.
* Masks are True where a pixel is valid. Invalid pixels hold 0.0 in physical values (never NaN)
  and 0.0 after normalisation, so nothing downstream can confuse them with data without the mask.
* Samples are read with numpy and json only (no rasterio); see ``data_samples/README.md``.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from aef_lite.fileio import read_json

TIME_ORIGIN = "1970-01-01"
"""Origin of all timestamps: ``days = (t - TIME_ORIGIN) / 1 day``."""

DATA_DIR_ENV = "AEF_LITE_DATA_DIR"
TILE_MULTIPLE = 16
"""Tile sides must be divisible by this (the space operator runs at 1/16 L)."""

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


# ----------------------------------------------------------------------------------------------
# Batch contract (consumed by the model)
# ----------------------------------------------------------------------------------------------


@dataclass
class SourceBatch:
    """One input source (e.g. one sensor) for a batch of B tiles.

    values: (B, T, C, L, L) float32, normalised (see :func:`normalise`).
    days:   (B, T) float64, acquisition time in days since ``TIME_ORIGIN``.
    mask:   (B, T, L, L) bool, True where the pixel is valid; False for cloud, fill, or padding
            frames. Sources are asynchronous: each has its own T and timestamps.
    """

    values: torch.Tensor
    days: torch.Tensor
    mask: torch.Tensor


@dataclass
class Batch:
    """Model input: named sources plus the valid period to summarise.

    sources: name -> SourceBatch (each with its own T and channel count C).
    period:  (B, 2) float64, valid period [t_s, t_e) in days since ``TIME_ORIGIN``.
    """

    sources: dict[str, SourceBatch]
    period: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        sources = {n: SourceBatch(s.values.to(device), s.days.to(device), s.mask.to(device))
                   for n, s in self.sources.items()}
        return Batch(sources=sources, period=self.period.to(device))


# ----------------------------------------------------------------------------------------------
# Time
# ----------------------------------------------------------------------------------------------

_ORIGIN = np.datetime64(TIME_ORIGIN, "s")
_SECONDS_PER_DAY = 86400.0


def days_since_origin(iso_dates: Sequence[str]) -> np.ndarray:
    """ISO dates or UTC datetimes (``"2017-02-16"``, ``"2017-02-16T10:21:01Z"``) -> (N,) float64
    days since ``TIME_ORIGIN``."""
    stamps = np.array([d.rstrip("Z") for d in iso_dates], dtype="datetime64[s]")
    return (stamps - _ORIGIN).astype(np.float64) / _SECONDS_PER_DAY


def to_iso(days: float | Sequence[float] | np.ndarray | torch.Tensor) -> list[str]:
    """Days since ``TIME_ORIGIN`` (scalar or any shape) -> flat list of ISO strings.

    Whole days print as ``YYYY-MM-DD``; fractional days as ``YYYY-MM-DDTHH:MM:SS``.
    """
    if isinstance(days, torch.Tensor):
        days = days.detach().cpu().numpy()
    flat = np.atleast_1d(np.asarray(days, dtype=np.float64)).ravel()
    seconds = np.rint(flat * _SECONDS_PER_DAY).astype(np.int64)
    unit = "D" if np.all(seconds % 86400 == 0) else "s"
    return [str(s) for s in (_ORIGIN + seconds.astype("timedelta64[s]")).astype(f"datetime64[{unit}]")]


# ----------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------


@dataclass
class SourceSeries:
    """A time series of one source on one grid.

    values:         (T, C, H, W) float32, physical units (reflectance 0-1); never NaN/inf,
                    invalid pixels hold 0.0 and are False in ``mask``.
    days:           (T,) float64, strictly increasing, days since ``TIME_ORIGIN``.
    mask:           (T, H, W) bool, True = valid pixel.
    bands:          C band names, in the order of ``NORM_STATS[sensor]``.
    wavelengths_nm: C centre wavelengths in nm.
    sensor:         source kind, a key of ``NORM_STATS`` (``"s2"``, ``"landsat5"``, ...).
    """

    values: np.ndarray
    days: np.ndarray
    mask: np.ndarray
    bands: list[str]
    wavelengths_nm: list[float]
    sensor: str

    @property
    def num_frames(self) -> int:
        """T, the number of frames."""
        return int(self.values.shape[0])


@dataclass
class LabelMap:
    """A categorical label raster: ids (H, W) int64 with 0 = unlabelled; ``class_names[i]`` and
    ``colors[i]`` (hex ``#rrggbb``) describe id ``i``."""

    ids: np.ndarray
    class_names: list[str]
    colors: list[str]


@dataclass
class Sample:
    """A site: named sources and label maps on one grid of H x W pixels.

    transform: the 6 affine numbers ``[a, b, c, d, e, f]`` (x = a*col + b*row + c,
    y = d*col + e*row + f) of the pixel-corner grid in ``crs``; meta: the sample's JSON metadata.
    """

    name: str
    sources: dict[str, SourceSeries]
    labels: dict[str, LabelMap]
    crs: str
    transform: list[float]
    pixel_size_m: float
    meta: dict[str, Any] = field(repr=False)

    @property
    def height(self) -> int:
        """H in pixels."""
        return int(next(iter(self.sources.values())).values.shape[-2])

    @property
    def width(self) -> int:
        """W in pixels."""
        return int(next(iter(self.sources.values())).values.shape[-1])


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------

REFLECTANCE_SCALE = 1e4
CLIP_SIGMA = 6.0

# Per-band (mean, std) of log1p(reflectance * 1e4) over all valid pixels of the shipped samples
# (s2: s2_brandenburg + s2_virginia pooled; landsat5 / landsat7: their frames of
# landsat_colorado). Obtained once with `python data_samples/prepare.py --print-norm-stats`
# (which calls compute_norm_stats) and pasted here; they are fixed constants, not refit.
NORM_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "landsat5": (
        (6.2550, 7.7614, 7.1376),
        (0.6305, 0.3653, 0.4248),
    ),
    "landsat7": (
        (6.1691, 7.7056, 7.2340),
        (0.5478, 0.3620, 0.4573),
    ),
    "s2": (
        (7.4230, 7.2084, 6.9709, 6.8242, 6.9381, 7.0758, 7.1370, 7.0669, 7.1558, 5.9585, 2.5705,
         6.7914, 6.3316),
        (0.1398, 0.1684, 0.2171, 0.3703, 0.4196, 0.6299, 0.7059, 0.7685, 0.8352, 0.7256, 0.1947,
         1.2264, 1.2259),
    ),
}


def _stats(source: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of ``source`` as (C, 1, 1) tensors matching ``like``'s dtype/device."""
    if source not in NORM_STATS:
        raise ValueError(f"no normalisation statistics for source {source!r}; known sources: "
                         f"{sorted(NORM_STATS)}. Add (mean, std) per band to NORM_STATS.")
    mean, std = NORM_STATS[source]
    if like.ndim < 3 or like.shape[-3] != len(mean):
        raise ValueError(f"{source} expects values shaped (..., C={len(mean)}, H, W); got "
                         f"{tuple(like.shape)}. Pass the bands in NORM_STATS order.")
    as_t = lambda v: torch.tensor(v, dtype=like.dtype, device=like.device)[:, None, None]
    return as_t(mean), as_t(std)


def _as_tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))


def _like_input(result: torch.Tensor, original: ArrayT) -> ArrayT:
    return result if isinstance(original, torch.Tensor) else result.numpy()


def normalise(values: ArrayT, source: str,
              mask: np.ndarray | torch.Tensor | None = None) -> ArrayT:
    """Physical reflectance -> model input, per band (numpy or torch, same type out).

    The paper's "log(1+x)-type transform" for optical bands: ``y = log1p(max(x, 0) * 1e4)``
    (x = reflectance 0-1; negatives are clamped to 0), then ``z = (y - mean) / std`` with the fixed
    ``NORM_STATS[source]``, clipped to +-``CLIP_SIGMA`` (6 sigma). Where ``mask`` is False the
    output is 0 (whatever the input holds there).

    values: (..., C, H, W) float; mask: (..., H, W) bool or None. Returns (..., C, H, W).

    Raises:
        ValueError: NaN or inf at a valid pixel (checked before the clip, which would turn +inf
            into 6 sigma).
    """
    x = _as_tensor(values)
    mean, std = _stats(source, x)
    keep = None if mask is None else _as_tensor(mask).unsqueeze(-3)
    bad = ~torch.isfinite(x) if keep is None else ~torch.isfinite(x) & keep
    if bool(bad.any()):
        raise ValueError(f"{source}: {int(bad.sum())} NaN/inf values at valid pixels. Set invalid pixels "
                         "to 0.0 and mark them False in the mask instead.")
    z = ((torch.log1p(x.clamp(min=0) * REFLECTANCE_SCALE) - mean) / std).clamp(-CLIP_SIGMA,
                                                                                CLIP_SIGMA)
    if keep is not None:
        z = torch.where(keep, z, torch.zeros((), dtype=z.dtype))
    return _like_input(z, values)


def denormalise(values: ArrayT, source: str) -> ArrayT:
    """Inverse of :func:`normalise` (exact for reflectance >= 0 inside the 6 sigma clip range).

    values: (..., C, H, W) normalised. Returns reflectance (..., C, H, W).
    """
    z = _as_tensor(values)
    mean, std = _stats(source, z)
    return _like_input(torch.expm1(z * std + mean) / REFLECTANCE_SCALE, values)


def compute_norm_stats(series: Sequence[SourceSeries]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (mean, std), each (C,) float64, of ``log1p(max(x, 0) * 1e4)`` over the valid pixels
    of all given series pooled (used once to obtain ``NORM_STATS``)."""
    logs = []
    for s in series:
        valid = np.moveaxis(s.values, 1, -1)[s.mask]  # (N, C)
        logs.append(np.log1p(np.maximum(valid.astype(np.float64), 0) * REFLECTANCE_SCALE))
    pooled = np.concatenate(logs)
    return pooled.mean(axis=0), pooled.std(axis=0)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def validate_series(series: SourceSeries) -> None:
    """Raise ValueError, saying what is wrong and how to fix it, unless ``series`` is well formed:
    known source kind with its band count, (T, C, H, W) values with T >= 1 and no NaN/inf,
    (T,) strictly increasing days, (T, H, W) bool mask with at least one valid pixel."""
    kind = series.sensor
    if kind not in NORM_STATS:
        raise ValueError(f"unknown source kind {kind!r}: expected one of {sorted(NORM_STATS)}")
    n_bands = len(NORM_STATS[kind][0])
    values, days, mask = series.values, series.days, series.mask
    if values.ndim != 4:
        raise ValueError(f"{kind}: values must be (T, C, H, W), got shape {values.shape}")
    t, c, h, w = values.shape
    if c != n_bands or len(series.bands) != n_bands or len(series.wavelengths_nm) != n_bands:
        raise ValueError(f"{kind}: wrong band count: needs {n_bands} bands, got values C={c}, "
                         f"{len(series.bands)} band names, {len(series.wavelengths_nm)} "
                         "wavelengths. Provide all bands of the source in NORM_STATS order.")
    if t == 0:
        raise ValueError(f"{kind}: empty time series (T == 0). Leave the source out of the "
                         "sample instead of passing it without frames.")
    if days.shape != (t,) or mask.shape != (t, h, w):
        raise ValueError(f"{kind}: shape mismatch: values {values.shape} need days ({t},) and "
                         f"mask ({t}, {h}, {w}); got days {days.shape}, mask {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"{kind}: mask must be bool (True = valid), got {mask.dtype}")
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise ValueError(f"{kind}: values contain {bad} NaN/inf entries. Set invalid pixels to "
                         "0.0 and mark them False in mask instead.")
    if not np.all(np.isfinite(days)):
        raise ValueError(f"{kind}: days contain NaN/inf; every frame needs a timestamp")
    steps = np.diff(days)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        what = "duplicate" if steps[i] == 0 else "unsorted"
        raise ValueError(f"{kind}: {what} timestamps: days[{i}] = {days[i]} ({to_iso(days[i])[0]})"
                         f" then days[{i + 1}] = {days[i + 1]}. Sort frames by time and merge or "
                         "drop duplicates (days must be strictly increasing).")
    if not mask.any():
        raise ValueError(f"{kind}: all frames are fully masked (no True in mask). Check the mask "
                         "polarity (True = valid) or drop the source.")


# ----------------------------------------------------------------------------------------------
# Loading the shipped samples
# ----------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """``$AEF_LITE_DATA_DIR`` if set; else the samples installed inside the package
    (``aef_lite/data_samples/``, from a wheel or ``pip install .``); else ``data_samples/`` of the
    source checkout next to the package (editable installs and plain checkouts)."""
    env = os.environ.get(DATA_DIR_ENV)
    here = Path(__file__).resolve().parent
    installed, checkout = here / "data_samples", here.parent / "data_samples"
    path = Path(env) if env else installed if installed.is_dir() else checkout
    if not path.is_dir():
        raise FileNotFoundError(
            f"sample data folder {path} not found. Set the environment variable {DATA_DIR_ENV} "
            "to the folder holding the <name>.npz/.json samples (data_samples/ in the repo), or "
            "pass data_dir=...")
    return path


def list_samples(data_dir: Path | str | None = None) -> list[str]:
    """Sorted names of the samples (``<name>.json`` + ``<name>.npz`` pairs) in the data folder."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return sorted(p.stem for p in root.glob("*.json") if p.with_suffix(".npz").exists())


def _frame_days(frames: list[dict[str, Any]]) -> np.ndarray:
    """(T,) days of the frames; a frame with an unknown date uses its documented nominal date."""
    return days_since_origin([f["date"] if f["date"] is not None else f["nominal_date"]
                              for f in frames])


def _valid_pixels(arrays: dict[str, np.ndarray], meta: dict[str, Any],
                  info: dict[str, Any]) -> np.ndarray:
    """(T, H, W) bool validity of a source's stored frames: no band at nodata or outside the
    array's ``valid_range``, and (if the source has a mask array) a valid mask code."""
    spec = meta["arrays"][info["array"]]
    raw = arrays[info["array"]]
    valid = np.all(raw != spec["nodata"], axis=1)
    if "valid_range" in spec:
        lo, hi = spec["valid_range"]
        valid &= np.all((raw >= lo) & (raw <= hi), axis=1)
    if info["mask_array"] is not None:
        codes = meta["arrays"][info["mask_array"]]["valid_codes"]
        valid &= np.isin(arrays[info["mask_array"]], codes)
    return valid


def _build_sources(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, SourceSeries]:
    """Split the stored frames by their ``source`` into validated SourceSeries."""
    frames = meta["frames"]
    days = _frame_days(frames)
    per_frame_source = np.array([f["source"] for f in frames])
    sources = {}
    for source, info in meta["sources"].items():
        spec = meta["arrays"][info["array"]]
        for name in (info["array"], info["mask_array"]):
            if name is not None and name not in arrays:
                raise ValueError(f"the metadata names array {name!r}, which the .npz lacks (it has {sorted(arrays)})")
            if name is not None and len(arrays[name]) != len(frames):
                raise ValueError(f"array {name!r} holds {len(arrays[name])} frames but the metadata lists "
                                 f"{len(frames)}; the .json and .npz do not belong together")
        valid = _valid_pixels(arrays, meta, info)
        phys = arrays[info["array"]].astype(np.float32) * np.float32(spec["scale"]) + np.float32(
            spec["offset"])
        phys *= valid[:, None]  # invalid pixels -> 0.0 (they may hold fill values)
        keep = per_frame_source == source
        series = SourceSeries(values=phys[keep], days=days[keep], mask=valid[keep],
                              bands=list(info["bands"]),
                              wavelengths_nm=[float(v) for v in info["wavelengths_nm"]],
                              sensor=source)
        validate_series(series)
        sources[source] = series
    return sources


def load_sample(name: str, data_dir: Path | str | None = None) -> Sample:
    """Read ``<name>.npz`` + ``<name>.json`` (numpy/json only) into a validated :class:`Sample`.

    Sources: ``landsat_colorado`` -> ``landsat5`` (44 frames), ``landsat7`` (61 frames), masks from
    Fmask (valid: 0 clear land, 1 clear water; invalid: 2 cloud shadow, 3 snow, 4 cloud, 255 fill),
    the -9999 fill and reflectance outside [0, 1]; the Sentinel-2 samples -> ``s2`` (1 frame,
    invalid only where a band is 0 = L1C no data).
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    json_path, npz_path = root / f"{name}.json", root / f"{name}.npz"
    if not json_path.exists():
        raise FileNotFoundError(f"no sample {name!r} in {root}; available: {list_samples(root)}")
    meta = read_json(json_path)
    arrays = read_npz(npz_path)
    try:
        labels = {
            key: LabelMap(ids=arrays[spec["array"]].astype(np.int64),
                          class_names=list(spec["class_names"]), colors=list(spec["colors"]))
            for key, spec in meta["labels"].items()
        }
        sample = Sample(name=name, sources=_build_sources(arrays, meta), labels=labels,
                        crs=meta["crs"], transform=[float(v) for v in meta["transform"]],
                        pixel_size_m=float(meta["pixel_size_m"]), meta=meta)
    except KeyError as err:
        raise ValueError(f"sample {name!r} in {root}: key {err} is missing from {json_path.name} or "
                         f"{npz_path.name}; see data_samples/README.md for the format") from err
    except (TypeError, AttributeError) as err:
        raise ValueError(f"sample {name!r} in {root}: malformed metadata in {json_path.name} ({err})") from err
    except ValueError as err:
        raise ValueError(f"sample {name!r} in {root}: {err}") from err
    check_sample_grid(sample)
    return sample


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickle). Raises ``FileNotFoundError`` if it is missing
    and ``ValueError`` naming the file if it is truncated or not an npz; other I/O errors (e.g.
    ``PermissionError``) propagate unchanged: an unreadable file is not a corrupt one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is truncated or not a valid .npz file ({type(err).__name__}: {err})") from err


# ----------------------------------------------------------------------------------------------
# Tiles
# ----------------------------------------------------------------------------------------------


def check_tile_multiple(tile: int) -> None:
    """Raise a clear ``ValueError`` unless ``tile`` is a positive multiple of 16."""
    if tile <= 0 or tile % TILE_MULTIPLE:
        raise ValueError(f"tile size {tile} must be a positive multiple of {TILE_MULTIPLE} (the "
                         f"model works at 1/{TILE_MULTIPLE} of the tile); try "
                         f"{max(TILE_MULTIPLE, tile // TILE_MULTIPLE * TILE_MULTIPLE)}")


def check_tile_size(tile: int, height: int, width: int) -> None:
    """Raise a clear ``ValueError`` unless ``tile`` is a positive multiple of 16 that fits the scene."""
    check_tile_multiple(tile)
    if tile > min(height, width):
        raise ValueError(f"tile size {tile} is larger than the scene ({height} x {width} px); "
                         f"use at most {min(height, width) // TILE_MULTIPLE * TILE_MULTIPLE}")


def check_sample_grid(sample: Sample) -> None:
    """Raise a clear ``ValueError`` unless every source and label map of ``sample`` lies on one
    H x W grid (values (T, C, H, W), mask (T, H, W), days (T,) finite, labels (H, W))."""
    if not sample.sources:
        raise ValueError(f"{sample.name}: the sample has no source")
    shapes = {}
    for name, s in sample.sources.items():
        values, mask, days = np.shape(s.values), np.shape(s.mask), np.shape(s.days)
        if len(values) != 4 or mask != (values[0], *values[2:]) or days != values[:1]:
            raise ValueError(f"{sample.name}/{name}: values must be (T, C, H, W) with mask (T, H, W) and days (T,); "
                             f"got values {values}, mask {mask}, days {days}")
        if not np.all(np.isfinite(s.days)):
            raise ValueError(f"{sample.name}/{name}: days contain NaN/inf; every frame needs a finite "
                             f"timestamp (days since {TIME_ORIGIN})")
        shapes[name] = values[2:]
    shapes.update({f"label {k}": np.shape(m.ids) for k, m in sample.labels.items()})
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{sample.name}: all sources and label maps must share one H x W grid; got "
                         + ", ".join(f"{k} {h} x {w}" for k, (h, w) in shapes.items())
                         + ". Resample them onto one grid first.")


def _starts(length: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, length - tile + 1, stride))
    return starts if starts[-1] == length - tile else [*starts, length - tile]


def tile_grid(height: int, width: int, tile: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Top-left (row, col) of tiles of ``tile`` x ``tile`` px covering an H x W scene, row-major,
    stepping ``tile - overlap``; the last row/column of tiles is flush with the scene edge."""
    check_tile_size(tile, height, width)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must satisfy 0 <= overlap < tile ({tile})")
    stride = tile - overlap
    return [(r, c) for r in _starts(height, tile, stride) for c in _starts(width, tile, stride)]


def cut_tile(sample: Sample, row: int, col: int, size: int) -> Sample:
    """The ``size`` x ``size`` px window of ``sample`` at top-left (row, col): every source and
    label map cropped, transform shifted, ``meta["tile"] = {"row", "col", "size"}`` added."""
    check_tile_size(size, sample.height, sample.width)
    if not (0 <= row <= sample.height - size and 0 <= col <= sample.width - size):
        raise ValueError(f"tile at ({row}, {col}) of size {size} leaves the "
                         f"{sample.height} x {sample.width} scene")
    ys, xs = slice(row, row + size), slice(col, col + size)
    sources = {k: replace(s, values=s.values[..., ys, xs], mask=s.mask[..., ys, xs])
               for k, s in sample.sources.items()}
    labels = {k: replace(m, ids=m.ids[ys, xs]) for k, m in sample.labels.items()}
    a, b, c, d, e, f = sample.transform
    transform = [a, b, c + a * col + b * row, d, e, f + d * col + e * row]
    meta = {**sample.meta, "tile": {"row": row, "col": col, "size": size}}
    return replace(sample, sources=sources, labels=labels, transform=transform, meta=meta)


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


def _even_subset(num: int, max_frames: int | None) -> np.ndarray:
    """Indices of at most ``max_frames`` frames out of ``num``, evenly spread, first and last kept."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if max_frames is None or num <= max_frames:
        return np.arange(num)
    return np.unique(np.rint(np.linspace(0, num - 1, max_frames)).astype(np.int64))


def _stack_source(rows: list[SourceSeries], starts: np.ndarray, max_frames: int | None,
                  source: str) -> SourceBatch:
    """Stack and normalise one source over B rows, padding to the longest row.

    Frames are taken in time order (``max_frames`` picks by time, not by position). Padding
    frames: values 0, mask all False, day = the row's last real day (or ``starts[b]`` when the
    row has no frame). Every source keeps T >= 1. The stacked batch is normalised in one call
    (not row by row: for the 32 small tiles of an inference batch the per-call overhead was about
    a sixth of :func:`aef_lite.embed.embed_scene`'s time).
    """
    picks = [np.argsort(s.days, kind="stable")[_even_subset(s.num_frames, max_frames)] for s in rows]
    t_max = max(1, *(len(p) for p in picks))
    c, h, w = rows[0].values.shape[1:]
    values = torch.zeros(len(rows), t_max, c, h, w, dtype=torch.float32)
    mask = torch.zeros(len(rows), t_max, h, w, dtype=torch.bool)
    days = torch.empty(len(rows), t_max, dtype=torch.float64)
    for b, (series, pick) in enumerate(zip(rows, picks, strict=True)):
        n = len(pick)
        m = torch.from_numpy(series.mask[pick])
        values[b, :n] = torch.from_numpy(series.values[pick])
        mask[b, :n] = m
        days[b, :n] = torch.from_numpy(series.days[pick])
        days[b, n:] = float(series.days[pick[-1]]) if n else float(starts[b])
    return SourceBatch(values=normalise(values, source, mask), days=days, mask=mask)


def _default_period(sources: dict[str, SourceSeries]) -> tuple[float, float]:
    """[first day, last day + 1) over all frames of all sources of one row."""
    days = np.concatenate([s.days for s in sources.values()])
    if days.size == 0:
        raise ValueError("cannot infer a valid period: no source has any frame; pass period=")
    return float(days.min()), float(days.max()) + 1.0


def annual_period(sample: Sample) -> np.ndarray:
    """The calendar year containing the sample's median acquisition day: (2,) float64 days.

    The default valid period for embedding a whole scene: the released AEF dataset is annual
    (calendar years), and training uses periods of about one year.
    """
    days = np.concatenate([s.days for s in sample.sources.values()])
    if days.size == 0:
        raise ValueError(f"{sample.name}: no source has any frame, so there is no year to embed; pass period=")
    year = np.datetime64(to_iso(float(np.median(days)))[0][:4], "Y")
    return days_since_origin([str(year), str(year + 1)])


def _periods(rows: list[dict[str, SourceSeries]], period: Any) -> np.ndarray:
    """(B, 2) float64 valid periods: given (broadcast from (2,)) or inferred per row."""
    if period is None:
        return np.array([_default_period(r) for r in rows], dtype=np.float64)
    p = np.broadcast_to(np.asarray(period, dtype=np.float64), (len(rows), 2)).copy()
    if not np.isfinite(p).all():
        raise ValueError(f"period must be finite days since {TIME_ORIGIN}; got {p.tolist()}")
    if not np.all(p[:, 0] < p[:, 1]):
        raise ValueError(f"period rows must be [t_s, t_e) with t_s < t_e (days); got {p.tolist()}")
    return p


def _assemble(rows: list[dict[str, SourceSeries]], period: Any,
              max_frames: int | None) -> Batch:
    periods = _periods(rows, period)
    sources = {name: _stack_source([r[name] for r in rows], periods[:, 0], max_frames, name)
               for name in rows[0]}
    return Batch(sources=sources, period=torch.from_numpy(periods))


def _check_batchable(tiles: Sequence[Sample]) -> None:
    if not tiles:
        raise ValueError("make_batch needs at least one tile")
    names = list(tiles[0].sources)
    for t in tiles:
        check_sample_grid(t)
        if list(t.sources) != names:
            raise ValueError(f"all tiles need the same sources {names}; {t.name} has "
                             f"{list(t.sources)}")
        if t.height != t.width or t.height % TILE_MULTIPLE:
            raise ValueError(f"tiles must be square with a side divisible by {TILE_MULTIPLE}; "
                             f"got {t.height} x {t.width}. Cut them with cut_tile().")
        if (t.height, t.width) != (tiles[0].height, tiles[0].width):
            raise ValueError("all tiles need the same size; got "
                             f"{[(x.height, x.width) for x in tiles]}")


def make_batch(tiles: Sequence[Sample], period: Any = None,
               max_frames: int | None = None) -> Batch:
    """Stack B equally sized square tiles (same sources, e.g. of one site) into a :class:`Batch`.

    values (B, T, C, L, L) float32 normalised with masked pixels 0; days (B, T) float64;
    mask (B, T, L, L) bool. T per source is the longest row (after ``max_frames``, which keeps
    at most that many evenly spread frames); shorter rows get padding frames with an all-False mask
    whose day copies the row's last real day. ``period``: (B, 2) or (2,) days [t_s, t_e); default
    per row is [first day, last day + 1) over all its sources.
    """
    _check_batchable(tiles)
    return _assemble([t.sources for t in tiles], period, max_frames)


def _window(series: SourceSeries, start: float, end: float) -> SourceSeries:
    """The frames of ``series`` with start <= day < end (may be empty)."""
    keep = (series.days >= start) & (series.days < end)
    return replace(series, values=series.values[keep], days=series.days[keep],
                   mask=series.mask[keep])


def random_batches(sample: Sample, batch_size: int, tile: int,
                   seed: int | np.random.Generator = 0, frames_window_days: float | None = None,
                   max_frames: int | None = None) -> Iterator[Batch]:
    """Endless seeded stream of training batches of random ``tile`` x ``tile`` crops of ``sample``.

    With ``frames_window_days`` (e.g. 365) each row also keeps only the frames of a random
    contiguous window [t0, t0 + window) of whole days inside the sample's time span, and that
    window is the row's valid period (a source with no frame in it gets one all-masked padding
    frame). Without it the period is each row's [first day, last day + 1).
    """
    rng = np.random.default_rng(seed)
    check_sample_grid(sample)
    check_tile_size(tile, sample.height, sample.width)
    first, end = _default_period(sample.sources)
    while True:
        rows, periods = [], []
        for _ in range(batch_size):
            r = int(rng.integers(0, sample.height - tile + 1))
            c = int(rng.integers(0, sample.width - tile + 1))
            sources = cut_tile(sample, r, c, tile).sources
            if frames_window_days is None:
                periods.append(_default_period(sources))
            else:
                slack = max(0, int(np.floor(end - first - frames_window_days)))
                t0 = first + int(rng.integers(0, slack + 1))
                t1 = t0 + float(frames_window_days)
                sources = {k: _window(s, t0, t1) for k, s in sources.items()}
                periods.append((t0, t1))
            rows.append(sources)
        yield _assemble(rows, np.array(periods), max_frames)
