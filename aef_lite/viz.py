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
from typing import TYPE_CHECKING

import folium
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

from aef_lite.data import LabelMap, Sample, SourceSeries
from aef_lite.fileio import write_text
from aef_lite.geo import pixel_bounds_lonlat
from aef_lite.tutorials import kmeans_fit, kmeans_predict

if TYPE_CHECKING:
    from aef_lite.config import AEFConfig

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


# ----------------------------------------------------------------------------------------------
# Architecture diagram
# ----------------------------------------------------------------------------------------------


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str,
         fontsize: float = 7.5, weight: str = "normal") -> tuple[float, float, float, float]:
    """A rounded box with centred text in data coordinates (0..100 x 0..60); returns its extent."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.3,rounding_size=0.8",
                                fc=color, ec="0.25", lw=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, weight=weight,
            linespacing=1.25)
    return x, y, w, h


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], color: str = "0.2",
           style: str = "-|>", ls: str = "-", rad: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=9, color=color, lw=1.0,
                                 ls=ls, connectionstyle=f"arc3,rad={rad}", shrinkA=1, shrinkB=1))


def architecture_diagram(config: AEFConfig | None = None) -> Figure:
    """Boxes-and-arrows diagram of the STP encoder and the training objective (paper S2.2, S2.4).

    Top: the encoder as :class:`aef_lite.AEFModel` builds it from ``config``: the inputs of each
    source (values, timestamps, mask) -> per-source input projectors (2 x 2 patches to D_P at
    1/2 L) -> ``n_blocks`` STP blocks (precision: 3x3 convolutions at 1/2 L, width D_P; time:
    time-axial attention at 1/8 L, width D_T, with timecodes; space: self-attention at 1/16 L,
    width D_S; the pyramid exchange between them) -> summary pooling of a valid period
    ``[t_s, t_e)`` -> a unit ``embed_dim``-d mean direction mu (vMF sample with ``kappa`` in
    training) -> one implicit decoder per source at any instant t. Bottom: the four terms of the
    objective (reconstruction of held-out targets, batch uniformity, teacher-student consistency,
    CLIP text alignment) with the default :class:`aef_lite.losses.LossWeights`.

    Args:
        config: the model configuration whose widths and scales label the boxes (default
            ``AEFConfig.tiny()``).

    Returns:
        The matplotlib figure (created through pyplot, so a notebook displays it; nothing is shown
        or saved here). Every number in it comes from ``config``.

    Raises:
        TypeError: ``config`` is not an :class:`aef_lite.AEFConfig` (or None).
    """
    from aef_lite.config import AEFConfig
    from aef_lite.losses import LossWeights

    if config is None:
        config = AEFConfig.tiny()
    if not isinstance(config, AEFConfig):
        raise TypeError(f"architecture_diagram needs an aef_lite.AEFConfig (or None for AEFConfig.tiny()), "
                        f"got {type(config).__name__}")
    c = config
    L, w = c.tile_size, LossWeights()
    fig, ax = plt.subplots(figsize=(15, 6.6))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    ax.set_xlim(-0.5, 100.5)
    ax.set_ylim(0, 60)
    ax.axis("off")
    ax.text(0, 58.5, f"AEF-lite STP encoder and training objective: L = {L} px tile, {c.n_blocks} STP blocks, "
            f"E = {c.embed_dim}", fontsize=11, weight="bold", va="top")

    # inputs per source -> input projectors
    sources = list(c.sources.items())
    n = len(sources)
    top, bottom = 52.0, 30.0
    slot = (top - bottom) / max(n, 1)
    proj_x, proj_w = 14.0, 11.0
    for i, (name, channels) in enumerate(sources):
        y = top - (i + 1) * slot + 0.6
        h = slot - 1.6
        _box(ax, 0.5, y, 11.0, h, f"{name}: {channels} bands\n(T, {channels}, {L}, {L}) + days (T,)\n"
             f"+ mask (T, {L}, {L})", "#dbe9f6", fontsize=6.5)
        _box(ax, proj_x, y, proj_w, h, f"input projector\n[values*mask, mask]\n2x2 patches -> 1/2 L, D_P = "
             f"{c.dim_precision}", "#fde9c9", fontsize=6.5)
        _arrow(ax, (11.8, y + h / 2), (proj_x - 0.3, y + h / 2))
        _arrow(ax, (proj_x + proj_w + 0.3, y + h / 2), (28.6, (top + bottom) / 2))
    ax.text(6, bottom - 1.6, "frames of all sources, each with its own\ntimestamp, concatenated along time",
            fontsize=6.5, ha="center", va="top", style="italic")

    # the STP blocks
    bx, bw = 29.0, 33.0
    ax.add_patch(FancyBboxPatch((bx, bottom - 1), bw, top - bottom + 2, boxstyle="round,pad=0.3,rounding_size=1",
                                fc="#f4f4f4", ec="0.3", lw=1.2, ls="--"))
    ax.text(bx + bw / 2, top + 1.8, f"STP block x {c.n_blocks} (each block's output feeds the next)", ha="center",
            fontsize=8.5, weight="bold")
    rows = [
        ("precision", f"precision operator: 3x3 convs\n1/2 L = {L // 2} x {L // 2}, D_P = {c.dim_precision}",
         "#fde9c9"),
        ("time", f"time operator: time-axial attention\n+ timecodes, masked keys\n1/8 L = {L // 8} x {L // 8}, "
         f"D_T = {c.dim_time}, {c.heads_time} heads", "#d9f0d3"),
        ("space", f"space operator: self-attention\nwithin each frame, 2-D positions\n1/16 L = {L // 16} x {L // 16}, "
         f"D_S = {c.dim_space}, {c.heads_space} heads", "#e8dcf2"),
    ]
    row_h = (top - bottom) / 3
    centres = []
    for i, (_, text, color) in enumerate(rows):
        y = top - (i + 1) * row_h + 0.7
        _box(ax, bx + 1.0, y, 18.0, row_h - 1.8, text, color, fontsize=6.5)
        centres.append(y + (row_h - 1.8) / 2)
    ex_x = bx + 22.5
    _box(ax, ex_x, bottom + 1.0, 9.5, top - bottom - 2.0, "pyramid\nexchange\n\nlearned\nDown / Up\nresampling\n"
         "between\n1/2, 1/8, 1/16 L\n\n(every state\ngets the\nother two)", "#fff7bc", fontsize=6.5)
    for yc in centres:
        _arrow(ax, (bx + 19.3, yc), (ex_x - 0.3, yc), style="<|-|>")

    # final resampling, summary, mu, decoders
    sx = 64.0
    _box(ax, sx, 44.0, 11.0, 8.0, f"final resampling\nto 1/2 L (D_P = {c.dim_precision})", "#fde9c9",
         fontsize=6.5)
    _box(ax, sx, 29.5, 11.0, 12.0, f"summary pooling of a\nvalid period [t_s, t_e)\n(may hold no frame):\n"
         f"one query from its timecodes\nattends over frames\n({c.heads_summary} heads) -> upsample to L\n"
         "+ pixel skip: frames at L\nmixed by the same weights", "#d9f0d3", fontsize=6.0)
    _arrow(ax, (bx + bw + 0.4, (top + bottom) / 2 + 4), (sx - 0.3, 48.0))
    _arrow(ax, (sx + 5.5, 43.7), (sx + 5.5, 41.8))
    mx = 78.0
    _box(ax, mx, 33.0, 9.0, 10.0, f"mu: unit {c.embed_dim}-d\nvector per pixel\n(B, {c.embed_dim}, {L}, {L})\n"
         f"training: sample\nvMF(mu, kappa = {c.kappa:g})", "#c7e9c0", fontsize=6.5, weight="bold")
    _arrow(ax, (sx + 11.3, 36.5), (mx - 0.3, 38.0))
    dx = 90.0
    _box(ax, dx, 40.0, 9.5, 12.0, "implicit decoders\none per source:\n" + ", ".join(c.sources) +
         f"\nMLP width {c.decoder_hidden}\nat any instant t\n(position u in period)", "#dbe9f6", fontsize=6.2)
    _arrow(ax, (mx + 9.3, 40.5), (dx - 0.3, 45.0))

    # the objective
    oy, oh = 4.0, 10.5
    ax.text(0, oy + oh + 4.5, "Training objective (weights: LossWeights defaults)", fontsize=9.5, weight="bold")
    terms = [
        (f"reconstruction (a = {w.reconstruction:g})\nL1 of held-out targets:\nframes left out of the input,\n"
         "decoded at their instant", "#dbe9f6", 4.0),
        (f"batch uniformity (b = {w.uniformity:g})\nmean |u_b . u_(b-1)|:\ntiles of the batch spread\n"
         "over the sphere", "#c7e9c0", 28.0),
        (f"teacher-student consistency\n(c = {w.consistency:g}): 1 - u . u_s,\nstudent = same model on a\n"
         "perturbed view, same period", "#fff7bc", 52.0),
        (f"CLIP text alignment (d = {w.clip:g})\ncontrastive loss between\npooled embeddings and\n"
         "captions (text tower)", "#e8dcf2", 76.0),
    ]
    for text, color, x in terms:
        _box(ax, x, oy, 20.0, oh, text, color, fontsize=7)
    _arrow(ax, (dx + 4.75, 39.7), (14.0, oy + oh + 0.4), rad=-0.12, color="#4a78b0")
    for x in (38.0, 62.0, 86.0):
        _arrow(ax, (mx + 4.5, 32.7), (x, oy + oh + 0.4), color="#3c8d3c")
    ax.text(mx + 5.5, 27.0, "mu of every pixel,\nteacher and student", fontsize=6.3, color="#2d6b2d", style="italic")
    ax.text(dx - 1.0, 30.5, "decoded held-out\ntargets", fontsize=6.3, color="#4a78b0", style="italic")
    ax.text(50, 1.0, "total = a * reconstruction + b * uniformity + c * consistency + d * CLIP", ha="center",
            fontsize=8, style="italic")
    return fig
