"""Pictures of scenes and embedding fields: composites, PCA colours, clusters, similarity, maps.

Everything returns arrays, matplotlib figures or folium maps; nothing here calls ``plt.show()``.
The embedding tools follow the uses the paper and the official dataset tutorials show for the
64-d unit-vector fields (arXiv 2507.22291, S3-S6 and "Released dataset"): three components as
RGB, k-means clustering, similarity search by dot product with reference pixels, and
unsupervised change detection by thresholding the dot product of two years' embeddings.

Shapes: embedding fields are (E, H, W) (E = 64 for AEF), images (H, W, 3) float in [0, 1].
Pixels whose embedding is not finite (e.g. the dataset's no-data code dequantised to NaN) are
treated as invalid everywhere.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import folium
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import Patch

from aef_lite.data import LabelMap, Sample, SourceSeries
from aef_lite.fileio import write_text
from aef_lite.geo import pixel_bounds_lonlat
from aef_lite.tutorials import kmeans_fit, kmeans_predict

Bounds = tuple[tuple[float, float], tuple[float, float]]
"""``((south, west), (north, east))`` in degrees, as folium expects."""

# Band names that play each colour role: Sentinel-2 band ids and descriptive names (Landsat
# numbering differs between sensors, so Landsat sources use descriptive names).
_ROLE_BANDS: dict[str, tuple[str, ...]] = {
    "blue": ("B02", "blue"),
    "green": ("B03", "green"),
    "red": ("B04", "red"),
    "nir": ("B08", "nir"),
    "swir1": ("B11", "swir1"),
}
TRUE_COLOR = (("red", "green", "blue"),)
"""Composites tried by :func:`true_color`, in order (S2: B04, B03, B02)."""
FALSE_COLOR = (("nir", "red", "green"), ("swir1", "nir", "red"))
"""Composites tried by :func:`false_color`, in order: colour infrared (S2: B08, B04, B03), else
SWIR1 / NIR / red (Landsat TM bands 5-4-3) for sources without a green band."""

SATELLITE_TILES = "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}"
SATELLITE_ATTRIBUTION = "Tiles &copy; Esri, Maxar, Earthstar Geographics, and the GIS User Community"


# ----------------------------------------------------------------------------------------------
# Composites of the input imagery
# ----------------------------------------------------------------------------------------------


def stretch(image: np.ndarray, lo: float = 2, hi: float = 98, mask: np.ndarray | None = None) -> np.ndarray:
    """Percentile stretch of each channel to [0, 1].

    image: (H, W) or (H, W, C) float. mask: (H, W) bool, True = valid (optional). Percentiles
    ``lo`` and ``hi`` of each channel are taken over valid pixels only (mask True and all channels
    finite); they map to 0 and 1 and values outside are clipped. Invalid pixels come out as 0.
    Returns float32 of the input's shape.
    """
    img = np.asarray(image, dtype=np.float64)
    chans = img[..., None] if img.ndim == 2 else img
    valid = np.all(np.isfinite(chans), axis=-1)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    out = np.zeros(chans.shape, dtype=np.float32)
    if valid.any():
        p_lo, p_hi = np.percentile(chans[valid], [lo, hi], axis=0)  # (C,) each
        scaled = (chans - p_lo) / np.maximum(p_hi - p_lo, 1e-12)
        out[valid] = np.clip(scaled[valid], 0.0, 1.0)
    return out[..., 0] if img.ndim == 2 else out


def _band_index(series: SourceSeries, role: str) -> int | None:
    for name in _ROLE_BANDS[role]:
        if name in series.bands:
            return series.bands.index(name)
    return None


def _composite(sample: Sample, frame: int, source: str | None,
               recipes: tuple[tuple[str, str, str], ...], what: str) -> np.ndarray:
    """Stretched (H, W, 3) composite of the first source (or ``source``) and recipe that fits."""
    names = [source] if source is not None else list(sample.sources)
    for name in names:
        series = sample.sources[name]
        for recipe in recipes:
            idx = [_band_index(series, role) for role in recipe]
            if None not in idx:
                rgb = np.moveaxis(series.values[frame, idx], 0, -1)
                return stretch(rgb, mask=series.mask[frame])
    available = {k: sample.sources[k].bands for k in names}
    raise ValueError(f"no {what} composite possible: it needs bands for one of {list(recipes)} "
                     f"(roles map to {_ROLE_BANDS}); available bands: {available}")


def true_color(sample: Sample, frame: int = 0, source: str | None = None) -> np.ndarray:
    """Natural-colour composite (red, green, blue; S2: B04, B03, B02) of one frame.

    Uses ``source`` or the first source with those bands; 2-98 % stretch over valid pixels.
    Returns (H, W, 3) float32 in [0, 1]. Raises ValueError when no source has a blue and a green
    band (e.g. the red/NIR/SWIR1 Landsat sample: use :func:`false_color`).
    """
    return _composite(sample, frame, source, TRUE_COLOR, "true-colour")


def false_color(sample: Sample, frame: int = 0, source: str | None = None) -> np.ndarray:
    """False-colour composite of one frame: NIR, red, green (S2: B08, B04, B03; vegetation red,
    water dark), or SWIR1, NIR, red when there is no green band (Landsat 5-4-3).

    Returns (H, W, 3) float32 in [0, 1].
    """
    return _composite(sample, frame, source, FALSE_COLOR, "false-colour")


# ----------------------------------------------------------------------------------------------
# Embedding fields
# ----------------------------------------------------------------------------------------------


def _pixels(emb: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(E, H, W) field -> ((N, E) float64 valid pixel vectors, (H, W) bool validity)."""
    field = np.asarray(emb, dtype=np.float64)
    if field.ndim != 3:
        raise ValueError(f"embedding field must be (E, H, W), got shape {field.shape}")
    valid = np.all(np.isfinite(field), axis=0)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    if not valid.any():
        raise ValueError("the embedding field has no valid pixel (all masked or not finite)")
    return np.moveaxis(field, 0, -1)[valid], valid


def pca_rgb(emb: np.ndarray, n: int = 3, mask: np.ndarray | None = None) -> np.ndarray:
    """First ``n`` principal components of an embedding field, each stretched to [0, 1].

    emb: (E, H, W); mask: (H, W) bool, True = valid. PCA by numpy SVD of the (E, E) covariance of
    the valid pixel vectors (same axes as an SVD of the centred (N, E) pixel matrix, much
    cheaper for N >> E). Sign convention (so figures are reproducible): each component's loading
    vector is flipped so its largest-magnitude entry is positive. Each component gets the 2-98 %
    stretch of :func:`stretch`; invalid pixels are 0. Returns (H, W, n) float32 (n = 3: RGB).
    """
    x, valid = _pixels(emb, mask)
    if not 1 <= n <= x.shape[1]:
        raise ValueError(f"n must be in 1..{x.shape[1]} (the embedding size), got {n}")
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred.T @ centred / len(x))
    comps = vt[:n]  # (n, E), rows are unit principal axes, by decreasing variance
    biggest = np.argmax(np.abs(comps), axis=1)
    comps = comps * np.sign(comps[np.arange(n), biggest])[:, None]
    scores = np.zeros((*valid.shape, n), dtype=np.float64)
    scores[valid] = centred @ comps.T
    return stretch(scores, mask=valid)


def kmeans(emb: np.ndarray, k: int, seed: int = 0, iters: int = 50,
           mask: np.ndarray | None = None, max_fit: int = 20_000) -> np.ndarray:
    """k-means clustering of the pixel vectors of an embedding field (numpy, deterministic).

    emb: (E, H, W); mask: (H, W) bool, True = valid. The centres are fitted on at most
    ``max_fit`` valid pixels drawn with ``np.random.default_rng(seed)`` (as the official
    tutorials train their clusterer on a pixel sample) by :func:`aef_lite.tutorials.kmeans_fit`
    (k-means++ seeding, at most ``iters`` Lloyd iterations, one start). Then every valid pixel
    goes to its nearest centre. Cluster
    ids are renumbered by size, largest first, so figures do not depend on the seeding order.
    Returns (H, W) int64 ids in 0..k-1, and -1 at invalid pixels.
    """
    x, valid = _pixels(emb, mask)
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in 1..{len(x)} (the number of valid pixels), got {k}")
    rng = np.random.default_rng(seed)
    fit = x[np.sort(rng.choice(len(x), max_fit, replace=False))] if len(x) > max_fit else x
    centres = kmeans_fit(fit, k, seed=seed, n_init=1, max_iter=iters).centres
    labels = kmeans_predict(x, centres)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-np.bincount(labels, minlength=k), kind="stable")] = np.arange(k)
    ids = np.full(valid.shape, -1, dtype=np.int64)
    ids[valid] = rank[labels]
    return ids


def similarity_map(emb: np.ndarray, row: int | Sequence[int], col: int | Sequence[int]) -> np.ndarray:
    """Similarity search: dot product of every pixel with a reference embedding.

    emb: (E, H, W). ``row``/``col``: one reference pixel, or equal-length sequences of several;
    the reference is the mean of their vectors renormalised to unit length (the mean direction,
    as for the vMF mean of the paper's S2.2). For unit vectors the map is the cosine similarity,
    exactly 1 at a single reference pixel. Returns (H, W) float32 (NaN where emb is not finite).
    """
    field = np.asarray(emb, dtype=np.float64)
    rows, cols = np.atleast_1d(row), np.atleast_1d(col)
    if rows.shape != cols.shape or rows.ndim != 1 or rows.size == 0:
        raise ValueError(f"row and col must be ints or equal-length sequences; got {row!r}, {col!r}")
    ref = field[:, rows, cols].mean(axis=1)  # (E,)
    norm = np.linalg.norm(ref)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("the reference embedding is zero or not finite (masked reference pixel?)")
    return np.einsum("ehw,e->hw", field, ref / norm).astype(np.float32)


def change_map(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Per-pixel dot product of two embedding fields (E, H, W) -> (H, W) float32.

    For unit vectors this is the cosine between e.g. two years' embeddings: ~1 where nothing
    changed, lower where the surface changed; thresholding it is the paper's unsupervised change
    detection. NaN where either input is not finite.
    """
    a, b = np.asarray(emb_a, dtype=np.float64), np.asarray(emb_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"need two (E, H, W) fields of the same shape, got {a.shape} and {b.shape}")
    return np.einsum("ehw,ehw->hw", a, b).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------


def label_rgb(label_map: LabelMap) -> np.ndarray:
    """Colour a label raster with its class colours: ids (H, W) -> (H, W, 3) float32 in [0, 1]
    (id 0, unlabelled, gets ``colors[0]``)."""
    ids = np.asarray(label_map.ids)
    palette = np.array([to_rgb(c) for c in label_map.colors], dtype=np.float32)  # (K, 3)
    if ids.min() < 0 or ids.max() >= len(palette):
        raise ValueError(f"label ids span {ids.min()}..{ids.max()} but only {len(palette)} colours "
                         "are defined")
    return palette[ids]


def plot_label_legend(ax: Axes, label_map: LabelMap, include_unlabelled: bool = False,
                      present_only: bool = True, **legend_kw: object) -> Legend:
    """Add a legend of class colours to ``ax``: classes present in the map (or all with
    ``present_only=False``), without id 0 unless ``include_unlabelled``. Extra keywords go to
    ``ax.legend`` (default: outside, right of the axes)."""
    present = set(np.unique(label_map.ids).tolist()) if present_only else None
    handles = [Patch(facecolor=color, edgecolor="none", label=name)
               for i, (name, color) in enumerate(zip(label_map.class_names, label_map.colors, strict=True))
               if (i > 0 or include_unlabelled) and (present is None or i in present)]
    kw = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False, "fontsize": "small"}
    return ax.legend(handles=handles, **{**kw, **legend_kw})


def show_images(images: Mapping[str, np.ndarray], ncols: int = 3, size: float = 3.5,
                cmap: str = "viridis", colorbar: bool = False, suptitle: str | None = None) -> Figure:
    """Grid of titled images without ticks: (H, W, 3) arrays as RGB, (H, W) arrays with ``cmap``
    (and a colour bar each when ``colorbar``). Unused grid cells are hidden. Returns the figure
    (created through pyplot, so notebooks display it; call ``plt.show()`` or end with ``;``)."""
    if not images:
        raise ValueError("show_images needs at least one image")
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(images):]:
        ax.set_visible(False)
    for ax, (title, img) in zip(axes.flat, images.items(), strict=False):
        arr = np.asarray(img)
        artist = ax.imshow(arr, cmap=None if arr.ndim == 3 else cmap, interpolation="nearest")
        if colorbar and arr.ndim == 2:
            fig.colorbar(artist, ax=ax, shrink=0.8)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# ----------------------------------------------------------------------------------------------
# Web maps
# ----------------------------------------------------------------------------------------------


def png_data_url(image: np.ndarray) -> str:
    """(H, W, 3|4) float in [0, 1] -> ``data:image/png;base64,...``; NaN pixels are transparent."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) or (H, W, 4), got shape {img.shape}")
    rgba = np.ones((*img.shape[:2], 4))
    rgba[..., : img.shape[-1]] = img
    rgba[~np.all(np.isfinite(img), axis=-1)] = 0.0
    buf = io.BytesIO()
    plt.imsave(buf, np.clip(rgba, 0.0, 1.0), format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _bounds_of(sample_or_bounds: Sample | Bounds) -> Bounds:
    if isinstance(sample_or_bounds, Sample):
        s = sample_or_bounds
        return pixel_bounds_lonlat(s.transform, s.height, s.width, s.crs)
    (south, west), (north, east) = sample_or_bounds
    if not (south < north and west < east):
        raise ValueError(f"bounds must be ((south, west), (north, east)), got {sample_or_bounds}")
    return (float(south), float(west)), (float(north), float(east))


def folium_overlay(rgb: np.ndarray, sample_or_bounds: Sample | Bounds, name: str = "overlay",
                   opacity: float = 0.7, basemap: str | None = "OpenStreetMap",
                   extra_layers: Mapping[str, np.ndarray] | None = None,
                   attribution: str | None = None, zoom_start: int = 13) -> folium.Map:
    """Interactive map with image overlays on a basemap (no files, no network to build it).

    rgb: (H, W, 3|4) float in [0, 1] (NaN = transparent), drawn as a folium ImageOverlay whose
    PNG is embedded as a data URL. ``sample_or_bounds``: a :class:`~aef_lite.data.Sample` (bounds
    from its UTM grid, :func:`aef_lite.geo.pixel_bounds_lonlat`) or ``((south, west), (north,
    east))``. ``extra_layers``: more name -> image overlays on the same bounds (hidden at first).
    ``basemap``: a folium tile name, ``"satellite"`` (Esri World Imagery) or None. A LayerControl
    toggles the layers; the view fits the bounds. Leaflet draws the overlay axis-aligned in Web
    Mercator, so the small UTM grid rotation is ignored (see ``pixel_bounds_lonlat``).
    """
    bounds = _bounds_of(sample_or_bounds)
    (south, west), (north, east) = bounds
    tiles = SATELLITE_TILES if basemap == "satellite" else basemap
    attr = SATELLITE_ATTRIBUTION if basemap == "satellite" else None
    m = folium.Map(location=[(south + north) / 2, (west + east) / 2], zoom_start=zoom_start,
                   tiles=tiles, attr=attr)
    layers = {name: rgb, **(extra_layers or {})}
    for i, (layer_name, image) in enumerate(layers.items()):
        folium.raster_layers.ImageOverlay(image=png_data_url(image), bounds=[list(bounds[0]), list(bounds[1])],
                                          name=layer_name, opacity=opacity, attr=attribution,
                                          show=i == 0).add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds([list(bounds[0]), list(bounds[1])])
    return m


def save_map(m: folium.Map, path: str | os.PathLike[str]) -> Path:
    """Write the map as a standalone HTML file atomically (:func:`aef_lite.fileio.write_text`: temp file, then
    ``os.replace``), so a reader never sees a half-written file. Returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_text(target, m.get_root().render())
