"""Scene-scale inference: stream a scene through the model in overlapping tiles, export the field.

The model sees ``L x L`` tiles (paper S2.4: L = 128 px = 1.28 km; the tiny config uses 32 px).
A scene of any size is embedded by :func:`embed_scene`:

* tiles of ``tile`` px step by ``tile - overlap`` (:func:`aef_lite.data.tile_grid`), the last row
  and column flush with the scene edge, so the whole scene is covered;
* each pixel is written exactly once, by the tile whose centre it is closest to along each axis:
  between two neighbouring tiles the cut runs through the middle of their overlap, so every tile
  drops ``overlap / 2`` px on its interior sides (more where the flush edge tile overlaps its
  neighbour by more) and keeps them on the scene's outer sides. Seams from the tile borders,
  where the 3x3 convolutions and attention see zero padding, are thus hidden;
* tiles are embedded ``batch_size`` at a time and written into one preallocated float32
  ``(64, H, W)`` array, so peak working memory is one batch of tiles, whatever the scene size.

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

import numpy as np
import torch

from aef_lite.data import (
    Batch,
    Sample,
    SourceBatch,
    annual_period,
    check_sample_grid,
    check_tile_multiple,
    cut_tile,
    make_batch,
    read_npz,
    tile_grid,
)
from aef_lite.fileio import atomic_path, atomic_write
from aef_lite.model import AEFModel
from aef_lite.quantization import NODATA, band_names, dequantize, quantize


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


def _check_tiling(tile: int, overlap: int) -> None:
    check_tile_multiple(tile)  # a scene smaller than the tile is padded (see _pad_to_tile)
    if not 0 <= overlap < tile or overlap % 2:
        raise ValueError(f"overlap={overlap} must be even and satisfy 0 <= overlap < tile ({tile}): "
                         "each tile gives up overlap / 2 px on its interior sides")


def _cuts(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Per tile start along one axis, the [lo, hi) range it writes: cuts in the middle of overlaps."""
    mids = [(nxt + cur + tile) // 2 for cur, nxt in zip(starts[:-1], starts[1:], strict=True)]
    return list(zip([0, *mids], [*mids, length], strict=True))


def _pad_to_tile(sample: Sample, tile: int) -> Sample:
    """``sample`` grown at the bottom and right to at least ``tile`` x ``tile`` px with masked pixels
    (values 0, mask False); unchanged when it is large enough."""
    pad_h, pad_w = max(0, tile - sample.height), max(0, tile - sample.width)
    if not pad_h and not pad_w:
        return sample
    grow = ((0, pad_h), (0, pad_w))
    sources = {k: replace(s, values=np.pad(s.values, ((0, 0), (0, 0), *grow)),
                          mask=np.pad(s.mask, ((0, 0), *grow), constant_values=False))
               for k, s in sample.sources.items()}
    return replace(sample, sources=sources, labels={})


def _has_valid_pixel(tile: Sample) -> bool:
    return any(bool(s.mask.any()) for s in tile.sources.values())


def _to_device(batch: Batch, device: torch.device) -> Batch:
    sources = {k: SourceBatch(s.values.to(device), s.days.to(device), s.mask.to(device))
               for k, s in batch.sources.items()}
    return Batch(sources=sources, period=batch.period.to(device))


def embed_scene(model: AEFModel, sample: Sample, tile: int | None = None, overlap: int = 16,
                period: tuple[float, float] | np.ndarray | None = None, batch_size: int = 8,
                max_frames: int | None = None) -> EmbeddingField:
    """Embed a whole scene with overlapping tiles (see the module docstring).

    Args:
        model: a trained (or untrained) :class:`AEFModel`; only :meth:`AEFModel.embed` is used,
            which is deterministic (vMF mean direction, paper S2.2.3). Batches are moved to the
            device of its parameters; the field is gathered on the CPU.
        sample: the scene, H x W px, any size. A scene smaller than ``tile`` along an axis is
            padded there with masked pixels (values 0, mask False) to one tile, and the field is
            cropped back to H x W (e.g. the 61 x 61 px ``landsat_colorado`` with 64 px tiles).
        tile: tile side in px, a multiple of 16; default ``model.config.tile_size``.
        overlap: even number of px shared by neighbouring tiles (0 <= overlap < tile).
        period: valid period [t_s, t_e) in days since ``TIME_ORIGIN``; default
            [first day, last day + 1) of the whole sample, the same for every tile.
        batch_size: tiles per forward pass (bounds peak memory).
        max_frames: keep at most this many evenly spread frames per source
            (:func:`aef_lite.data.make_batch`).

    Returns:
        :class:`EmbeddingField` with ``emb`` (64, H, W) float32, unit norm per pixel. Tiles with
        no valid input pixel in any source are not embedded; their pixels are NaN.

    Raises:
        ValueError: tile not a positive multiple of 16; overlap odd, negative or >= tile;
            batch_size < 1.
    """
    tile = model.config.tile_size if tile is None else int(tile)
    _check_tiling(tile, overlap)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_sample_grid(sample)
    span = annual_period(sample) if period is None else np.asarray(period, dtype=np.float64)
    scene_h, scene_w = sample.height, sample.width
    sample = _pad_to_tile(sample, tile)
    height, width = sample.height, sample.width
    corners = tile_grid(height, width, tile, overlap)
    row_starts, col_starts = sorted({r for r, _ in corners}), sorted({c for _, c in corners})
    row_cut = dict(zip(row_starts, _cuts(row_starts, tile, height), strict=True))
    col_cut = dict(zip(col_starts, _cuts(col_starts, tile, width), strict=True))

    device = next(model.parameters()).device
    out = np.full((model.config.embed_dim, height, width), np.nan, dtype=np.float32)
    todo = [(r, c) for r, c in corners if _has_valid_pixel(cut_tile(sample, r, c, tile))]
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        batch = _to_device(make_batch([cut_tile(sample, r, c, tile) for r, c in chunk], period=span,
                                      max_frames=max_frames), device)
        emb = model.embed(batch).to(torch.float32).cpu().numpy()  # (b, E, tile, tile)
        for (r, c), e in zip(chunk, emb, strict=True):
            (r0, r1), (c0, c1) = row_cut[r], col_cut[c]
            out[:, r0:r1, c0:c1] = e[:, r0 - r:r1 - r, c0 - c:c1 - c]
    if (height, width) != (scene_h, scene_w):
        out = np.ascontiguousarray(out[:, :scene_h, :scene_w])
    return EmbeddingField(emb=out, period=span, crs=sample.crs, transform=list(sample.transform),
                          pixel_size_m=float(sample.pixel_size_m), name=sample.name)


EXPORT_BLOCK_PIXELS = 1 << 18
"""Pixels of one band quantised and written at a time by :func:`save_field` and
:func:`save_geotiff`, which bounds their extra memory (a few MiB) whatever the field size."""


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
    ``name``. The codes are computed and compressed block by block (:data:`EXPORT_BLOCK_PIXELS`),
    so the memory needed beyond the field itself does not grow with its size; ``np.load`` reads
    the file like one written by ``np.savez_compressed``. The file is written to a temporary name
    and moved into place atomically. Returns the path written.
    """
    path = Path(path)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int8)), "fortran_order": False,
              "shape": tuple(field.emb.shape)}
    with atomic_write(path) as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
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
