"""Scene-scale inference: stream a scene through the model in overlapping tiles, export the field.

The model sees ``L x L`` tiles (paper S2.4: L = 128 px = 1.28 km; the tiny config uses 32 px).
A scene of any size is embedded by :func:`embed_scene`:

* the scene is padded by reflection (:func:`reflect_pad`) by ``overlap / 2`` px on every side,
  and to at least one tile, so pixels at the scene's edges are not at a tile's zero-padded
  border (this removed an edge artefact in the outer 2-3 columns) and scenes smaller than a
  tile can be embedded; the padding is cropped off the result. The padded scene is never built:
  each tile is gathered from the original through the padding's index maps (:func:`pad_indices`),
  so memory stays one batch of tiles plus the output;
* tiles of ``tile`` px step by ``tile - overlap`` (:func:`aef_lite.data.tile_grid`), the last row
  and column flush with the padded scene's edge, so the whole scene is covered. The default tile
  (:data:`EMBED_TILE`, 64 px) is larger than the tiny configs' 32 px training tile: the field is
  the same within the variation a shift of the tile grid already causes, for half the work;
* overlapping tiles are blended, not cut: each tile's vectors are weighted by a window that is 1
  in its interior and falls linearly to near 0 over ``overlap`` px towards its borders
  (:func:`blend_window`), summed, and renormalised to unit length. Hard cuts through the overlaps
  left a seam every ``tile - overlap`` px, since a tile's operators see its border differently;
* the frames each tile sees are those of :func:`aef_lite.support.support_of` the valid period,
  at most :data:`aef_lite.support.MAX_FRAMES` per source, exactly as in training;
* tiles are embedded ``batch_size`` at a time and accumulated into preallocated float32
  ``(64, H, W)`` and ``(H, W)`` arrays, so peak working memory is one batch of tiles plus the
  output, whatever the scene size.

The field is exported as the released dataset stores it (paper S8.1, ``quantization.py``): 64 int8
bands ``A00``..``A63`` per pixel, ``-128`` = no data, as ``.npz`` (numpy only) or GeoTIFF
(needs rasterio, the optional ``prep`` extra).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aef_lite.data import (
    Sample,
    annual_period,
    check_sample_grid,
    check_tile_multiple,
    make_batch,
    read_npz,
    tile_grid,
)
from aef_lite.fileio import atomic_path, atomic_write
from aef_lite.model import AEFModel
from aef_lite.quantization import NODATA, band_names, dequantize, quantize
from aef_lite.support import MAX_FRAMES, support_of

if TYPE_CHECKING:  # pragma: no cover
    import xarray


@dataclass
class EmbeddingField:
    """An embedding field on a scene's grid.

    emb:          (E, H, W) float32, unit vectors along axis 0 (E = 64); NaN where no tile had a
                  valid input pixel (or no data in a loaded file).
    period:       (2,) float64, the valid period [t_s, t_e) in days since ``TIME_ORIGIN``.
    crs:          coordinate reference system, e.g. ``"EPSG:32633"``.
    transform:    the 6 affine numbers ``[a, b, c, d, e, f]`` of the pixel-corner grid in ``crs``.
    pixel_size_m: ground sampling distance in metres.
    name:         the sample the field was computed from.
    """

    emb: np.ndarray
    period: np.ndarray
    crs: str
    transform: list[float]
    pixel_size_m: float
    name: str

    @property
    def valid(self) -> np.ndarray:
        """(H, W) bool, True where the pixel holds an embedding."""
        return _valid_pixels(self.emb)

    def to_xarray(self) -> xarray.DataArray:
        """The field as an ``xarray.DataArray`` (band, y, x) with its CRS; see :func:`aef_lite.geoio.to_xarray`."""
        from aef_lite.geoio import to_xarray

        return to_xarray(self)

    def save_cog(self, path: str | os.PathLike[str]) -> Path:
        """Write a Cloud-Optimized GeoTIFF (int8, ``A00``..``A63``); see :func:`aef_lite.geoio.save_cog`."""
        from aef_lite.geoio import save_cog

        return save_cog(self, path)


def _check_tiling(tile: int, overlap: int) -> None:
    check_tile_multiple(tile)  # a scene smaller than the tile is padded (see reflect_pad)
    if not 0 <= overlap < tile or overlap % 2:
        raise ValueError(f"overlap={overlap} must be even and satisfy 0 <= overlap < tile ({tile}): "
                         "each tile gives up overlap / 2 px on its interior sides")


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """``(tile,)`` float32 weights along one axis: 1 inside, a linear ramp over the ``overlap`` px
    next to each border, never 0 (so every pixel of a lone tile keeps its vector)."""
    d = np.minimum(np.arange(tile) + 0.5, tile - 0.5 - np.arange(tile))  # distance to the border
    return np.clip(d / max(overlap, 1), 1.0 / (2 * max(overlap, 1)), 1.0).astype(np.float32)


def pad_indices(height: int, width: int, margin: int, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Reflection padding as index maps: ``(rows, cols)``, int arrays of the padded height and width
    whose entries are the original row / column each padded position copies. ``margin`` px on
    each side, more at the bottom / right if needed to reach ``min_size``; mirrored without
    repeating the edge pixel (numpy's ``"reflect"``), or with it (``"symmetric"``) when the scene
    is too small to mirror."""
    extra_h = max(0, min_size - (height + 2 * margin))
    extra_w = max(0, min_size - (width + 2 * margin))
    mode = "reflect" if min(height, width) > max(margin + max(extra_h, extra_w), 1) else "symmetric"
    rows = np.pad(np.arange(height), (margin, margin + extra_h), mode=mode)
    cols = np.pad(np.arange(width), (margin, margin + extra_w), mode=mode)
    return rows, cols


def _gather(sample: Sample, rows: np.ndarray, cols: np.ndarray) -> Sample:
    """Every source (values and masks) at ``rows x cols`` of its grid; labels dropped."""
    def take(a: np.ndarray) -> np.ndarray:
        return a[..., rows[:, None], cols[None, :]]

    sources = {k: replace(s, values=take(s.values), mask=take(s.mask)) for k, s in sample.sources.items()}
    return replace(sample, sources=sources, labels={})


def reflect_pad(sample: Sample, margin: int, min_size: int) -> tuple[Sample, int, int]:
    """Pad every source (values and masks) by reflection as :func:`pad_indices` says. Returns the
    padded sample and the (top, left) offset of the original pixels. Labels are dropped (not needed
    for embedding). :func:`embed_scene` does not build this copy: it gathers each tile from the
    original scene through the same index maps."""
    rows, cols = pad_indices(sample.height, sample.width, margin, min_size)
    a, b, c, d, e, f = sample.transform
    transform = [a, b, c - a * margin - b * margin, d, e, f - d * margin - e * margin]
    return replace(_gather(sample, rows, cols), transform=transform), margin, margin


EMBED_TILE = 64
"""Default tile side of :func:`embed_scene` (px), or the model's training tile
(``config.tile_size``) where that is larger. The tiny configs train on 32 px tiles, but their
operators see a few pixels around each pixel, not the whole tile, so a larger tile gives the same
field for less work: with overlap 16, a 32 px tile computes 3.9 tile pixels per scene pixel and a
64 px tile 1.9. On the shipped reference model and ``s2_brandenburg`` (512 x 512 px) the 64 px
field differs from the 32 px one by at most 0.016 per component (mean cosine 0.99999, the same
sparse-label scores), less than moving the 32 px tile grid by 8 px already changes it (0.018;
``tests/test_embed_tiling.py`` checks this relation), and embeds about 2x faster
(``benchmarks/inference_scale.py``)."""

EMBED_BATCH_PIXELS = 32 * 32 * 32
"""Default tile pixels per forward pass of :func:`embed_scene`: 8 tiles of 64 px (32 of 32 px).
Larger batches amortise the per-operator overhead of the small model (32 tiles of 32 px embed a
256 px scene 1.4x faster than 8) for more activation memory (tens of MiB); results are the same
within float32 rounding."""


def embed_scene(model: AEFModel, sample: Sample, tile: int | None = None, overlap: int = 16,
                period: tuple[float, float] | np.ndarray | None = None, batch_size: int | None = None,
                max_frames: int | None = MAX_FRAMES, support: bool = True) -> EmbeddingField:
    """Embed a whole scene with overlapping tiles (see the module docstring).

    Args:
        model: a trained (or untrained) :class:`AEFModel`; only :meth:`AEFModel.embed` is used,
            which is deterministic (vMF mean direction, paper S2.2.3). Batches are moved to the
            device of its parameters; the field is gathered on the CPU.
        sample: the scene, H x W px, any size (smaller than a tile too).
        tile: tile side in px, a multiple of 16; default :data:`EMBED_TILE` (or
            ``model.config.tile_size`` where larger).
        overlap: even number of px shared by neighbouring tiles (0 <= overlap < tile).
        period: valid period [t_s, t_e) in days since ``TIME_ORIGIN``; default
            :func:`aef_lite.data.annual_period` (the calendar year of the median date), the same
            for every tile. The tiles see the frames of its support window (module docstring).
        batch_size: tiles per forward pass (bounds peak memory); default
            :data:`EMBED_BATCH_PIXELS` / tile².
        max_frames: keep at most this many evenly spread frames per source
            (:func:`aef_lite.data.make_batch`); default as in training.
        support: True (default, as in training) keeps the frames in the support window of
            ``period``; False gives the model every frame of ``sample``, wherever the period
            lies, to measure what the period alone does to the summary (the same inputs asked
            for another period).

    Returns:
        :class:`EmbeddingField` with ``emb`` (64, H, W) float32, unit norm per pixel. Tiles with
        no valid input pixel in any source are not embedded; their pixels are NaN.

    Raises:
        ValueError: tile not a positive multiple of 16; overlap odd, negative or >= tile;
            batch_size < 1.
    """
    tile = max(EMBED_TILE, model.config.tile_size) if tile is None else int(tile)
    height, width = sample.height, sample.width
    _check_tiling(tile, overlap)
    batch_size = max(1, EMBED_BATCH_PIXELS // tile**2) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_sample_grid(sample)
    span = annual_period(sample) if period is None else np.asarray(period, dtype=np.float64)
    scene = support_of(sample, span) if support else sample
    top = left = overlap // 2
    rows, cols = pad_indices(height, width, top, tile)  # the padded scene, never materialised

    def cut(r: int, c: int) -> Sample:
        return _gather(scene, rows[r:r + tile], cols[c:c + tile])

    window = blend_window(tile, overlap)
    weight_tile = window[:, None] * window[None, :]  # (tile, tile)

    device = next(model.parameters()).device
    out = np.zeros((model.config.embed_dim, height, width), dtype=np.float32)  # accumulated in place
    weight = np.zeros((height, width), dtype=np.float32)
    observed = np.zeros((height, width), dtype=bool)  # any valid frame of any source at the pixel
    for series in scene.sources.values():
        observed |= series.mask.any(axis=0)
    todo = [(r, c) for r, c in tile_grid(len(rows), len(cols), tile, overlap)
            if observed[np.ix_(rows[r:r + tile], cols[c:c + tile])].any()]
    blend = torch.from_numpy(weight_tile).to(device)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        batch = make_batch([cut(r, c) for r, c in chunk], period=span, max_frames=max_frames).to(device)
        with torch.inference_mode():  # no autograd bookkeeping: the vectors go straight to numpy
            emb = (model.embed(batch).to(torch.float32) * blend).cpu().numpy()  # (b, E, tile, tile), weighted
        for (r, c), e in zip(chunk, emb, strict=True):
            # the part of the tile inside the original scene (padding is never accumulated)
            r0, r1 = max(r, top), min(r + tile, top + height)
            c0, c1 = max(c, left), min(c + tile, left + width)
            if r0 >= r1 or c0 >= c1:
                continue
            out[:, r0 - top:r1 - top, c0 - left:c1 - left] += e[:, r0 - r:r1 - r, c0 - c:c1 - c]
            weight[r0 - top:r1 - top, c0 - left:c1 - left] += weight_tile[r0 - r:r1 - r, c0 - c:c1 - c]
    norm = np.zeros_like(weight)
    for band in out:  # band by band: np.linalg.norm(out, axis=0) would allocate a field-sized square
        norm += band * band
    np.sqrt(norm, out=norm)
    out /= np.maximum(norm, 1e-12)
    out[:, (weight <= 0) | (norm <= 0)] = np.nan
    return EmbeddingField(emb=out, period=span, crs=sample.crs, transform=list(sample.transform),
                          pixel_size_m=float(sample.pixel_size_m), name=sample.name)


EXPORT_BLOCK_PIXELS = 1 << 18
"""Pixels of one band quantised and written at a time by :func:`save_field` and
:func:`save_geotiff`, which bounds their extra memory (a few MiB) whatever the field size."""

NPZ_COMPRESSLEVEL = 1
"""zlib level of :func:`save_field`'s DEFLATE members. Measured on the int8 codes of the reference
model's 512 x 512 px field of ``s2_brandenburg`` (16 MiB), one thread: level 1 compresses them 2.05x
in 0.19 s, ``np.savez_compressed``'s level 6 2.28x in 1.0 s (files 10 % smaller for 5x the time).
Any level reads back the same codes."""


GDAL_CACHE_MB = 64
"""GDAL's block cache while :func:`save_geotiff` writes (MiB)."""
GEOTIFF_TILE = 256
"""Side of the GeoTIFF's internal tiles (px)."""


def _valid_pixels(emb: np.ndarray) -> np.ndarray:
    """(H, W) bool, True where every band of ``emb`` (E, H, W) is finite (one band at a time)."""
    valid = np.ones(emb.shape[1:], dtype=bool)
    for band in emb:
        valid &= np.isfinite(band)
    return valid


def _code_blocks(field: EmbeddingField, rows_multiple: int = 1) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """The field's int8 codes (:func:`aef_lite.quantization.quantize`) block by block in C order
    of (E, H, W): ``(band, row_start, row_stop, codes (rows, W))``, every block of band 0, then
    of band 1, ...; identical to quantising the whole field. Blocks span a multiple of
    ``rows_multiple`` rows (except the last of each band)."""
    emb = field.emb
    valid = _valid_pixels(emb)
    bands, height, width = emb.shape
    step = max(1, EXPORT_BLOCK_PIXELS // max(width, 1))
    step = max(rows_multiple, step // rows_multiple * rows_multiple)
    for b in range(bands):
        for r0 in range(0, height, step):
            r1 = min(height, r0 + step)
            yield b, r0, r1, quantize(emb[b:b + 1, r0:r1], dim=0, valid=valid[r0:r1])[0]


def _write_npy_member(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def save_field(field: EmbeddingField, path: str | os.PathLike[str]) -> Path:
    """Write ``field`` as a compressed ``.npz`` in the released dataset's encoding (paper S8.1).

    Arrays: ``emb`` (64, H, W) int8 (:func:`aef_lite.quantization.quantize`, ``-128`` = no data),
    ``bands`` ["A00", ..., "A63"], ``crs``, ``transform`` (6,), ``period`` (2,), ``pixel_size_m``,
    ``name``. The codes are computed and compressed (zlib level :data:`NPZ_COMPRESSLEVEL`) block
    by block (:data:`EXPORT_BLOCK_PIXELS`),
    so the memory needed beyond the field itself does not grow with its size; ``np.load`` reads
    the file like one written by ``np.savez_compressed``. The file is written to a temporary name
    and moved into place atomically. Returns the path written.
    """
    path = Path(path)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int8)), "fortran_order": False,
              "shape": tuple(field.emb.shape)}
    with atomic_write(path) as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=NPZ_COMPRESSLEVEL,
                             allowZip64=True) as zf:
            with zf.open("emb.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, header)
                for *_, codes in _code_blocks(field):
                    member.write(codes.tobytes())
            for name, array in (("bands", np.array(band_names(field.emb.shape[0]))), ("crs", np.array(field.crs)),
                                ("transform", np.asarray(field.transform, dtype=np.float64)),
                                ("period", np.asarray(field.period, dtype=np.float64)),
                                ("pixel_size_m", np.float64(field.pixel_size_m)), ("name", np.array(field.name))):
                _write_npy_member(zf, name, array)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_field(path: str | os.PathLike[str]) -> EmbeddingField:
    """Read a :func:`save_field` file; ``emb`` is dequantised to float32 (NaN where no data).

    Dequantised vectors are unit norm only up to the quantisation error (cosine >= 0.9997, see
    ``quantization.py``).
    """
    npz = read_npz(path)
    missing = sorted({"emb", "period", "crs", "transform", "pixel_size_m", "name"} - set(npz))
    if missing:
        raise ValueError(f"{path} is not an embedding field file: it lacks {missing}")
    return EmbeddingField(emb=dequantize(npz["emb"]), period=npz["period"].astype(np.float64),
                          crs=str(npz["crs"]), transform=[float(v) for v in npz["transform"]],
                          pixel_size_m=float(npz["pixel_size_m"]), name=str(npz["name"]))


def save_geotiff(field: EmbeddingField, path: str | os.PathLike[str]) -> Path:
    """Write ``field`` as a 64-band int8 GeoTIFF like ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL``.

    Bands carry the descriptions ``A00``..``A63``; the scene's CRS and transform; nodata ``-128``;
    DEFLATE compression, band-interleaved 256 px tiles. Written atomically and block by block
    (bounded extra memory). Needs rasterio (``pip install aef-lite[prep]``).
    Returns the path written.
    """
    try:
        import rasterio
        from rasterio.transform import Affine
        from rasterio.windows import Window
    except ImportError as err:
        raise ImportError("save_geotiff needs rasterio: pip install 'aef-lite[prep]' (or pip install "
                          "rasterio); save_field writes the same codes as .npz with numpy only") from err
    path = Path(path)
    bands, height, width = field.emb.shape
    profile = dict(driver="GTiff", dtype="int8", count=bands, height=height, width=width,
                   crs=field.crs, transform=Affine(*field.transform[:6]), nodata=NODATA,
                   compress="deflate", interleave="band", tiled=True, blockxsize=GEOTIFF_TILE,
                   blockysize=GEOTIFF_TILE)
    # Band-interleaved tiles written a band and a row of tiles at a time: each block is complete
    # when GDAL flushes it, so its small cache never has to hold the whole image.
    with atomic_path(path) as tmp, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        with rasterio.open(tmp, "w", **profile) as dst:
            for b, r0, r1, codes in _code_blocks(field, rows_multiple=GEOTIFF_TILE):
                dst.write(codes, b + 1, window=Window(0, r0, width, r1 - r0))
            dst.descriptions = tuple(band_names(bands))
            dst.update_tags(period_days=" ".join(f"{v:.6f}" for v in field.period),
                            source_sample=field.name)
    return path
