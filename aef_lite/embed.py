"""Scene-scale inference: stream a scene through the model in overlapping tiles, export the field.

The model sees ``L x L`` tiles (paper S2.4: L = 128 px = 1.28 km; the tiny config uses 32 px).
A scene of any size is embedded by :func:`embed_scene`:

* the scene is first padded by reflection (:func:`reflect_pad`) by ``overlap / 2`` px on every
  side, and to at least one tile, so pixels at the scene's edges are not at a tile's zero-padded
  border (this removed an edge artefact in the outer 2-3 columns) and scenes smaller than a
  tile can be embedded; the padding is cropped off the result;
* tiles of ``tile`` px step by ``tile - overlap`` (:func:`aef_lite.data.tile_grid`), the last row
  and column flush with the padded scene's edge, so the whole scene is covered;
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aef_lite.data import Batch, Sample, SourceBatch, annual_period, cut_tile, make_batch, tile_grid
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
        return np.isfinite(self.emb).all(axis=0)

    def to_xarray(self) -> xarray.DataArray:
        """The field as an ``xarray.DataArray`` (band, y, x) with its CRS; see :func:`aef_lite.geoio.to_xarray`."""
        from aef_lite.geoio import to_xarray

        return to_xarray(self)

    def save_cog(self, path: str | os.PathLike[str]) -> Path:
        """Write a Cloud-Optimized GeoTIFF (int8, ``A00``..``A63``); see :func:`aef_lite.geoio.save_cog`."""
        from aef_lite.geoio import save_cog

        return save_cog(self, path)


def _check_tiling(tile: int, overlap: int) -> None:
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16 px, got {tile}")
    if not 0 <= overlap < tile or overlap % 2:
        raise ValueError(f"overlap={overlap} must be even and satisfy 0 <= overlap < tile ({tile}): "
                         "each tile gives up overlap / 2 px on its interior sides")


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """``(tile,)`` float32 weights along one axis: 1 inside, a linear ramp over the ``overlap`` px
    next to each border, never 0 (so every pixel of a lone tile keeps its vector)."""
    d = np.minimum(np.arange(tile) + 0.5, tile - 0.5 - np.arange(tile))  # distance to the border
    return np.clip(d / max(overlap, 1), 1.0 / (2 * max(overlap, 1)), 1.0).astype(np.float32)


def reflect_pad(sample: Sample, margin: int, min_size: int) -> tuple[Sample, int, int]:
    """Pad every source (values and masks) by reflection: ``margin`` px on each side, more at the
    bottom / right if needed to reach ``min_size``. Returns the padded sample and the (top, left)
    offset of the original pixels. Labels are dropped (not needed for embedding)."""
    extra_h = max(0, min_size - (sample.height + 2 * margin))
    extra_w = max(0, min_size - (sample.width + 2 * margin))
    pads = ((margin, margin + extra_h), (margin, margin + extra_w))
    mode = "reflect" if min(sample.height, sample.width) > max(margin + max(extra_h, extra_w), 1) else "symmetric"

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, [(0, 0)] * (a.ndim - 2) + list(pads), mode=mode)

    sources = {k: replace(s, values=pad(s.values), mask=pad(s.mask)) for k, s in sample.sources.items()}
    a, b, c, d, e, f = sample.transform
    transform = [a, b, c - a * margin - b * margin, d, e, f - d * margin - e * margin]
    return replace(sample, sources=sources, labels={}, transform=transform), margin, margin


def _has_valid_pixel(tile: Sample) -> bool:
    return any(bool(s.mask.any()) for s in tile.sources.values())


def _to_device(batch: Batch, device: torch.device) -> Batch:
    sources = {k: SourceBatch(s.values.to(device), s.days.to(device), s.mask.to(device))
               for k, s in batch.sources.items()}
    return Batch(sources=sources, period=batch.period.to(device))


def embed_scene(model: AEFModel, sample: Sample, tile: int | None = None, overlap: int = 16,
                period: tuple[float, float] | np.ndarray | None = None, batch_size: int = 8,
                max_frames: int | None = MAX_FRAMES) -> EmbeddingField:
    """Embed a whole scene with overlapping tiles (see the module docstring).

    Args:
        model: a trained (or untrained) :class:`AEFModel`; only :meth:`AEFModel.embed` is used,
            which is deterministic (vMF mean direction, paper S2.2.3). Batches are moved to the
            device of its parameters; the field is gathered on the CPU.
        sample: the scene, H x W px, any size (smaller than a tile too).
        tile: tile side in px, a multiple of 16; default ``model.config.tile_size``.
        overlap: even number of px shared by neighbouring tiles (0 <= overlap < tile).
        period: valid period [t_s, t_e) in days since ``TIME_ORIGIN``; default
            :func:`aef_lite.data.annual_period` (the calendar year of the median date), the same
            for every tile. The tiles see the frames of its support window (module docstring).
        batch_size: tiles per forward pass (bounds peak memory).
        max_frames: keep at most this many evenly spread frames per source
            (:func:`aef_lite.data.make_batch`); default as in training.

    Returns:
        :class:`EmbeddingField` with ``emb`` (64, H, W) float32, unit norm per pixel. Tiles with
        no valid input pixel in any source are not embedded; their pixels are NaN.

    Raises:
        ValueError: tile not a positive multiple of 16; overlap odd, negative or >= tile;
            batch_size < 1.
    """
    tile = model.config.tile_size if tile is None else int(tile)
    height, width = sample.height, sample.width
    _check_tiling(tile, overlap)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    span = annual_period(sample) if period is None else np.asarray(period, dtype=np.float64)
    scene = support_of(sample, span)
    padded, top, left = reflect_pad(scene, overlap // 2, tile)
    window = blend_window(tile, overlap)
    weight_tile = window[:, None] * window[None, :]  # (tile, tile)

    device = next(model.parameters()).device
    acc = np.zeros((model.config.embed_dim, padded.height, padded.width), dtype=np.float32)
    weight = np.zeros((padded.height, padded.width), dtype=np.float32)
    corners = tile_grid(padded.height, padded.width, tile, overlap)
    todo = [(r, c) for r, c in corners if _has_valid_pixel(cut_tile(padded, r, c, tile))]
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        batch = _to_device(make_batch([cut_tile(padded, r, c, tile) for r, c in chunk], period=span,
                                      max_frames=max_frames), device)
        emb = model.embed(batch).to(torch.float32).cpu().numpy()  # (b, E, tile, tile)
        for (r, c), e in zip(chunk, emb, strict=True):
            acc[:, r:r + tile, c:c + tile] += e * weight_tile
            weight[r:r + tile, c:c + tile] += weight_tile
    out = acc[:, top:top + height, left:left + width]
    covered = weight[top:top + height, left:left + width] > 0
    norm = np.linalg.norm(out, axis=0)
    out = np.where(covered & (norm > 0), out / np.maximum(norm, 1e-12), np.nan).astype(np.float32)
    return EmbeddingField(emb=out, period=span, crs=sample.crs, transform=list(sample.transform),
                          pixel_size_m=float(sample.pixel_size_m), name=sample.name)


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` (os.replace), on
    failure delete it. Readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_field(field: EmbeddingField, path: str | os.PathLike[str]) -> Path:
    """Write ``field`` as a compressed ``.npz`` in the released dataset's encoding (paper S8.1).

    Arrays: ``emb`` (64, H, W) int8 (:func:`aef_lite.quantization.quantize`, ``-128`` = no data),
    ``bands`` ["A00", ..., "A63"], ``crs``, ``transform`` (6,), ``period`` (2,), ``pixel_size_m``,
    ``name``. The file is written to a temporary name and moved into place atomically.
    Returns the path written.
    """
    path = Path(path)
    codes = quantize(np.nan_to_num(field.emb, nan=0.0), dim=0, valid=field.valid)
    with _atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, emb=codes, bands=np.array(band_names(codes.shape[0])), crs=np.array(field.crs),
            transform=np.asarray(field.transform, dtype=np.float64),
            period=np.asarray(field.period, dtype=np.float64),
            pixel_size_m=np.float64(field.pixel_size_m), name=np.array(field.name),
        )
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_field(path: str | os.PathLike[str]) -> EmbeddingField:
    """Read a :func:`save_field` file; ``emb`` is dequantised to float32 (NaN where no data).

    Dequantised vectors are unit norm only up to the quantisation error (cosine >= 0.9997, see
    ``quantization.py``).
    """
    with np.load(path, allow_pickle=False) as npz:
        return EmbeddingField(emb=dequantize(npz["emb"]), period=npz["period"].astype(np.float64),
                              crs=str(npz["crs"]), transform=[float(v) for v in npz["transform"]],
                              pixel_size_m=float(npz["pixel_size_m"]), name=str(npz["name"]))


def save_geotiff(field: EmbeddingField, path: str | os.PathLike[str]) -> Path:
    """Write ``field`` as a 64-band int8 GeoTIFF like ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL``.

    Bands carry the descriptions ``A00``..``A63``; the scene's CRS and transform; nodata ``-128``;
    DEFLATE compression. Written atomically. Needs rasterio (``pip install aef-lite[prep]``).
    Returns the path written.
    """
    try:
        import rasterio
        from rasterio.transform import Affine
    except ImportError as err:
        raise ImportError("save_geotiff needs rasterio: pip install 'aef-lite[prep]' (or pip install "
                          "rasterio); save_field writes the same codes as .npz with numpy only") from err
    path = Path(path)
    codes = quantize(np.nan_to_num(field.emb, nan=0.0), dim=0, valid=field.valid)
    bands, height, width = codes.shape
    profile = dict(driver="GTiff", dtype="int8", count=bands, height=height, width=width,
                   crs=field.crs, transform=Affine(*field.transform[:6]), nodata=NODATA,
                   compress="deflate")
    with _atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(codes)
            dst.descriptions = tuple(band_names(bands))
            dst.update_tags(period_days=" ".join(f"{v:.6f}" for v in field.period),
                            source_sample=field.name)
    return path
