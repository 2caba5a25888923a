"""Similarity search and click-to-label mapping on an embedding field, as pure functions plus a map.

The official Earth Engine similarity-search tutorial (and leafmap's similarity search) work like
this: click a few reference points on a map, score every pixel by the dot product of its
embedding with the (mean) reference embedding, threshold the score to a mask, and check the mask
against what is really there; or click a few points per class and label every pixel by its
nearest labelled neighbours (kNN). For unit vectors the dot product is the cosine similarity.

Everything that computes is a pure function here, unit-tested and usable from any UI:

* :func:`lonlat_to_pixel`: a clicked longitude/latitude -> the (row, col) of the field's pixel;
* :func:`reference_similarity`: reference points (pixels or lon/lat) -> (H, W) similarity map
  (:func:`aef_lite.viz.similarity_map`);
* :func:`threshold_mask`, :func:`top_fraction_threshold`: similarity -> mask;
* :func:`mask_metrics`, :func:`threshold_sweep`: a mask against a label mask (precision, recall,
  IoU, F1);
* :func:`knn_label_map`: a few labelled points -> (H, W) label map
  (:func:`aef_lite.evaluate.knn_predict`).

:func:`similarity_map_widget` wires them into a folium map (layers: similarity, mask, kNN labels;
markers at the points; a click shows its lon/lat to paste back as a new point). A folium map is
static HTML: it cannot call Python back, and notebooks run under nbval cannot click, which is why
the logic lives in the functions above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import folium
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_hex, to_rgb

from aef_lite.embed import EmbeddingField
from aef_lite.evaluate import knn_predict
from aef_lite.geo import (
    UTM_FALSE_NORTHING_SOUTH,
    epsg_to_utm_zone,
    lonlat_to_utm,
    pixel_bounds_lonlat,
    pixel_to_lonlat,
)
from aef_lite.viz import folium_overlay, similarity_map

Units = Literal["pixel", "lonlat"]
"""How points are given: ``"pixel"`` = (row, col), ``"lonlat"`` = (lon, lat) degrees."""


def lonlat_to_pixel(field: EmbeddingField, lon: float | Sequence[float], lat: float | Sequence[float]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) degrees -> ((N,) rows, (N,) cols) int64 of the pixels of ``field`` holding them.

    The field must be on an axis-aligned WGS84 / UTM grid (``aef_lite.geo``). Raises ValueError
    for points outside the grid.
    """
    zone, north = epsg_to_utm_zone(field.crs)
    lon_a, lat_a = np.atleast_1d(np.asarray(lon, dtype=np.float64)), np.atleast_1d(np.asarray(lat, dtype=np.float64))
    if lon_a.shape != lat_a.shape or lon_a.ndim != 1:
        raise ValueError(f"lon and lat must be numbers or equal-length sequences, got {lon!r}, {lat!r}")
    easting, northing, _, points_north = lonlat_to_utm(lon_a, lat_a, zone)
    northing = northing + (points_north - north) * UTM_FALSE_NORTHING_SOUTH  # the field's hemisphere
    a, b, c, d, e, f = (float(v) for v in field.transform[:6])
    if b or d:
        raise ValueError(f"only axis-aligned grids are supported, got transform {list(field.transform)}")
    rows = np.floor((northing - f) / e).astype(np.int64)
    cols = np.floor((easting - c) / a).astype(np.int64)
    _, height, width = field.emb.shape
    outside = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(f"point (lon {lon_a[i]:.6f}, lat {lat_a[i]:.6f}) lies outside the field's "
                         f"{height} x {width} px grid")
    return rows, cols


def _rows_cols(field: EmbeddingField, points: Sequence[Sequence[float]], units: Units
               ) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"points must be a non-empty sequence of pairs, got shape {pts.shape}")
    if units == "lonlat":
        return lonlat_to_pixel(field, pts[:, 0], pts[:, 1])
    if units != "pixel":
        raise ValueError(f"units must be 'pixel' or 'lonlat', got {units!r}")
    rows, cols = pts[:, 0].astype(np.int64), pts[:, 1].astype(np.int64)
    _, height, width = field.emb.shape
    if (rows < 0).any() or (rows >= height).any() or (cols < 0).any() or (cols >= width).any():
        raise ValueError(f"pixel points must lie in the {height} x {width} px grid, got {pts.tolist()}")
    return rows, cols


def reference_similarity(field: EmbeddingField, points: Sequence[Sequence[float]], units: Units = "pixel"
                         ) -> np.ndarray:
    """Similarity search: dot product of every pixel with the mean reference embedding.

    points: (N, 2) of (row, col) or, with ``units="lonlat"``, (lon, lat). The reference is the
    mean of the points' vectors renormalised (:func:`aef_lite.viz.similarity_map`). Returns
    (H, W) float32, NaN where the field has no data. ValueError if a reference pixel has no data.
    """
    rows, cols = _rows_cols(field, points, units)
    if not field.valid[rows, cols].all():
        raise ValueError(f"reference point(s) {np.flatnonzero(~field.valid[rows, cols]).tolist()} fall on "
                         "pixels without data")
    return similarity_map(field.emb, rows, cols)


def threshold_mask(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) bool: similarity >= ``threshold`` (False where NaN)."""
    sim = np.asarray(similarity, dtype=np.float64)
    return np.isfinite(sim) & (np.nan_to_num(sim, nan=-np.inf) >= threshold)


def top_fraction_threshold(similarity: np.ndarray, fraction: float) -> float:
    """The threshold that keeps the top ``fraction`` (0 < fraction <= 1) of the valid pixels: a
    relative threshold, for fields whose similarities are not spread like the release's."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    sim = np.asarray(similarity, dtype=np.float64)
    finite = sim[np.isfinite(sim)]
    if finite.size == 0:
        raise ValueError("the similarity map has no finite value")
    return float(np.quantile(finite, 1.0 - fraction))


def mask_metrics(predicted: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """A predicted mask against a true mask, both (H, W) bool, over ``valid`` pixels (default all).

    Returns ``precision`` = TP / (TP + FP), ``recall`` = TP / (TP + FN), ``iou`` = TP / (TP + FP +
    FN), ``f1``, and the counts ``tp``, ``fp``, ``fn`` (floats; a ratio with a zero denominator is
    NaN).
    """
    pred, true = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"need two (H, W) masks of one shape, got {pred.shape} and {true.shape}")
    keep = np.ones_like(pred) if valid is None else np.asarray(valid, dtype=bool)
    tp = float(np.count_nonzero(pred & true & keep))
    fp = float(np.count_nonzero(pred & ~true & keep))
    fn = float(np.count_nonzero(~pred & true & keep))
    ratio = lambda num, den: num / den if den > 0 else float("nan")
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {"precision": precision, "recall": recall, "iou": ratio(tp, tp + fp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn), "tp": tp, "fp": fp, "fn": fn}


def threshold_sweep(similarity: np.ndarray, truth: np.ndarray, thresholds: Sequence[float],
                    valid: np.ndarray | None = None) -> list[dict[str, float]]:
    """:func:`mask_metrics` of :func:`threshold_mask` at each threshold (plus key ``threshold``),
    over the pixels where the similarity is finite (and ``valid``)."""
    finite = np.isfinite(np.asarray(similarity, dtype=np.float64))
    keep = finite if valid is None else finite & np.asarray(valid, dtype=bool)
    return [{"threshold": float(t), **mask_metrics(threshold_mask(similarity, t), truth, keep)} for t in thresholds]


def knn_label_map(field: EmbeddingField, points: Sequence[Sequence[float]], labels: Sequence[int], k: int = 1,
                  units: Units = "pixel") -> np.ndarray:
    """Label every pixel from a few labelled points by k-nearest neighbours in embedding space.

    points: (N, 2) (row, col) or (lon, lat); labels: (N,) int class ids (>= 0). Uses
    :func:`aef_lite.evaluate.knn_predict` (Euclidean = cosine neighbours for unit vectors). Returns
    (H, W) int64, -1 where the field has no data.
    """
    rows, cols = _rows_cols(field, points, units)
    y = np.asarray(labels)
    if y.shape != rows.shape or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise ValueError(f"labels must be {len(rows)} integer class ids >= 0, got {labels!r}")
    if not field.valid[rows, cols].all():
        raise ValueError("labelled point(s) fall on pixels without data")
    valid = field.valid
    out = np.full(valid.shape, -1, dtype=np.int64)
    out[valid] = knn_predict(field.emb[:, rows, cols].T, y, field.emb[:, valid].T, k=k)
    return out


def _colorize(values: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """(H, W) float -> (H, W, 3) in [0, 1] over the finite range; NaN stays NaN (transparent)."""
    finite = np.isfinite(values)
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 1.0)
    rgb = plt.get_cmap(cmap)((np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-12))[..., :3]
    rgb[~finite] = np.nan
    return rgb


def similarity_map_widget(field: EmbeddingField, points: Sequence[Sequence[float]], threshold: float,
                          units: Units = "pixel", label_points: Sequence[Sequence[float]] | None = None,
                          labels: Sequence[int] | None = None, class_colors: Mapping[int, str] | None = None,
                          basemap: str | None = "satellite") -> folium.Map:
    """A folium map of a similarity search (and optionally a kNN labelling) on ``field``.

    Layers: the similarity map (viridis), the mask ``similarity >= threshold`` (red), and with
    ``label_points`` / ``labels`` the :func:`knn_label_map` coloured by ``class_colors`` (id ->
    colour, default tab10). Markers: the reference points (blue) and the labelled points (class
    colours). Clicking the map pops up the clicked lon/lat, to add as a point with
    ``units="lonlat"`` and rebuild. The field must be on a WGS84 / UTM grid.
    """
    sim = reference_similarity(field, points, units)
    mask = threshold_mask(sim, threshold)
    mask_rgb = np.full((*mask.shape, 3), np.nan)
    mask_rgb[mask] = to_rgb("red")
    layers = {f"similarity >= {threshold:g}": mask_rgb}
    palette = dict(class_colors or {})
    if label_points is not None:
        if labels is None:
            raise ValueError("label_points need labels")
        ids = knn_label_map(field, label_points, labels, units=units)
        for c in np.unique(np.asarray(labels)):
            palette.setdefault(int(c), plt.get_cmap("tab10").colors[int(c) % 10])
        label_rgb = np.full((*ids.shape, 3), np.nan)
        for c, color in palette.items():
            label_rgb[ids == c] = to_rgb(color)
        layers["kNN labels"] = label_rgb
    _, height, width = field.emb.shape
    bounds = pixel_bounds_lonlat(field.transform, height, width, field.crs)
    m = folium_overlay(_colorize(sim), bounds, name="similarity", basemap=basemap, extra_layers=layers)

    def add_markers(pts: Sequence[Sequence[float]], colors: Sequence[str], tips: Sequence[str]) -> None:
        rows, cols = _rows_cols(field, pts, units)
        lon, lat = pixel_to_lonlat(field.transform, field.crs, rows + 0.5, cols + 0.5)
        for x, y, color, tip in zip(np.atleast_1d(lon), np.atleast_1d(lat), colors, tips, strict=True):
            folium.CircleMarker([float(y), float(x)], radius=6, color=color, fill=True, fill_opacity=0.9,
                                tooltip=tip).add_to(m)

    add_markers(points, ["#1f77b4"] * len(points), [f"reference {i}" for i in range(len(points))])
    if label_points is not None and labels is not None:
        add_markers(label_points, [to_hex(palette[int(c)]) for c in labels], [f"class {int(c)}" for c in labels])
    folium.LatLngPopup().add_to(m)
    return m
