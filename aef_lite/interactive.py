"""Similarity search and click-to-label mapping on an embedding field: pure functions, a click
session, a static folium map and a live ipyleaflet widget.

The official Earth Engine similarity-search tutorial (and leafmap's similarity search) work like
this: click a few reference points on a map, score every pixel by the dot product of its
embedding with the (mean) reference embedding, threshold the score to a mask, and check the mask
against what is really there; or click a few points per class and label every pixel by its
nearest labelled neighbours (kNN). For unit vectors the dot product is the cosine similarity.

Everything that computes is a pure function here, unit-tested and usable from any UI:

* :func:`lonlat_to_pixel`: a clicked longitude/latitude -> the (row, col) of the field's pixel, and
  :func:`pixel_centre_lonlat` back (where a click on that pixel's centre lands);
* :func:`reference_similarity`: reference points (pixels or lon/lat) -> (H, W) similarity map
  (:func:`aef_lite.viz.similarity_map`);
* :func:`threshold_mask`, :func:`top_fraction_threshold`: similarity -> mask;
* :func:`mask_metrics`, :func:`threshold_sweep`: a mask against a label mask (precision, recall,
  IoU, F1);
* :func:`knn_label_map`: a few labelled points -> (H, W) label map
  (:func:`aef_lite.evaluate.knn_predict`).

:class:`SimilaritySession` holds the state of a clicking session (the field, the reference
points, the labelled points, the threshold) and answers with the similarity map, the mask and the
kNN label map as numpy arrays; it is plain Python, so the callback logic is tested without a map.

Two maps show them:

* :func:`similarity_map_widget`: a folium map (layers: similarity, mask, kNN labels; markers at
  the points; a click shows its lon/lat to paste back as a new point). A folium map is static
  HTML: it cannot call Python back, and notebooks run under nbval cannot click.
* :func:`live_similarity_widget`: a live ipyleaflet map driving a :class:`SimilaritySession`: a
  click adds a reference point (or, in "label" mode, a point of the class chosen in a dropdown), a
  slider moves the threshold, and the similarity, mask and kNN layers are redrawn. Needs a running
  Jupyter kernel and the optional ``interactive`` extra (``pip install "aef-lite[interactive]"``:
  ipyleaflet, ipywidgets), imported only when the widget is built.

Both draw the field on its lon/lat bounding box (:func:`aef_lite.geo.pixel_bounds_lonlat`) with
the same colours and PNG data URLs (:func:`aef_lite.viz.png_data_url`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

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
from aef_lite.viz import Bounds, folium_overlay, png_data_url, similarity_map

if TYPE_CHECKING:
    import ipyleaflet
    import ipywidgets

Units = Literal["pixel", "lonlat"]
"""How points are given: ``"pixel"`` = (row, col), ``"lonlat"`` = (lon, lat) degrees."""
INTERACTIVE_EXTRA_HINT = 'pip install "aef-lite[interactive]"'
"""How to install what :func:`live_similarity_widget` needs (ipyleaflet, ipywidgets)."""
REFERENCE_COLOR = "#1f77b4"
"""Marker colour of the reference points."""
MASK_COLOR = "red"
"""Colour of the mask layer ``similarity >= threshold``."""


def _lonlat_grid(field: EmbeddingField, lon: float | Sequence[float], lat: float | Sequence[float]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lon, lat) degrees -> ((N,) rows, (N,) cols, (N,) inside): int64 pixel indices (0 where not
    ``inside``) and whether the point lies on the field's grid. Longitudes outside [-180, 180]
    (a click on a wrapped copy of the world) and latitudes outside [-90, 90] are outside."""
    zone, north = epsg_to_utm_zone(field.crs)
    lon_a, lat_a = np.atleast_1d(np.asarray(lon, dtype=np.float64)), np.atleast_1d(np.asarray(lat, dtype=np.float64))
    if lon_a.shape != lat_a.shape or lon_a.ndim != 1:
        raise ValueError(f"lon and lat must be numbers or equal-length sequences, got {lon!r}, {lat!r}")
    if not (np.isfinite(lon_a).all() and np.isfinite(lat_a).all()):
        raise ValueError(f"lon and lat must be finite, got {lon!r}, {lat!r}")
    a, b, c, d, e, f = (float(v) for v in field.transform[:6])
    if b or d:
        raise ValueError(f"only axis-aligned grids are supported, got transform {list(field.transform)}")
    easting, northing, _, points_north = lonlat_to_utm(lon_a, lat_a, zone)
    northing = northing + (points_north - north) * UTM_FALSE_NORTHING_SOUTH  # the field's hemisphere
    rows_f, cols_f = np.floor((northing - f) / e), np.floor((easting - c) / a)
    _, height, width = field.emb.shape
    inside = ((np.abs(lon_a) <= 180) & (np.abs(lat_a) <= 90) & (rows_f >= 0) & (rows_f < height)
              & (cols_f >= 0) & (cols_f < width))
    return np.where(inside, rows_f, 0).astype(np.int64), np.where(inside, cols_f, 0).astype(np.int64), inside


def lonlat_to_pixel(field: EmbeddingField, lon: float | Sequence[float], lat: float | Sequence[float]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) degrees -> ((N,) rows, (N,) cols) int64 of the pixels of ``field`` holding them.

    The field must be on an axis-aligned WGS84 / UTM grid (``aef_lite.geo``). Raises ValueError
    for points outside the grid (or not finite).
    """
    rows, cols, inside = _lonlat_grid(field, lon, lat)
    if not inside.all():
        i = int(np.argmin(inside))
        _, height, width = field.emb.shape
        x, y = np.atleast_1d(lon)[i], np.atleast_1d(lat)[i]
        raise ValueError(f"point (lon {x:.6f}, lat {y:.6f}) lies outside the field's {height} x {width} px grid")
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


def _field_bounds(field: EmbeddingField) -> Bounds:
    """The field's lon/lat box ``((south, west), (north, east))`` from its UTM grid."""
    _, height, width = field.emb.shape
    return pixel_bounds_lonlat(field.transform, height, width, field.crs)


def pixel_centre_lonlat(field: EmbeddingField, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) (N,) degrees of the centres of the pixels (rows, cols)."""
    lon, lat = pixel_to_lonlat(field.transform, field.crs, np.asarray(rows) + 0.5, np.asarray(cols) + 0.5)
    return np.atleast_1d(lon), np.atleast_1d(lat)


def _palette(class_ids: Iterable[int], class_colors: Mapping[int, str] | None) -> dict[int, str]:
    """Class id -> hex colour: ``class_colors`` where given, else tab10."""
    given = dict(class_colors or {})
    return {int(c): to_hex(given.get(int(c), plt.get_cmap("tab10").colors[int(c) % 10])) for c in class_ids}


def _mask_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W, 3): :data:`MASK_COLOR` where True, NaN (transparent) elsewhere."""
    rgb = np.full((*mask.shape, 3), np.nan)
    rgb[mask] = to_rgb(MASK_COLOR)
    return rgb


def _label_rgb(ids: np.ndarray, palette: Mapping[int, str]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) in the palette's colours, NaN (transparent) for other ids."""
    rgb = np.full((*ids.shape, 3), np.nan)
    for c, color in palette.items():
        rgb[ids == c] = to_rgb(color)
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
    layers = {f"similarity >= {threshold:g}": _mask_rgb(threshold_mask(sim, threshold))}
    palette: dict[int, str] = {}
    if label_points is not None:
        if labels is None:
            raise ValueError("label_points need labels")
        ids = knn_label_map(field, label_points, labels, units=units)
        palette = _palette(np.unique(np.asarray(labels)), class_colors)
        layers["kNN labels"] = _label_rgb(ids, palette)
    m = folium_overlay(_colorize(sim), _field_bounds(field), name="similarity", basemap=basemap, extra_layers=layers)

    def add_markers(pts: Sequence[Sequence[float]], colors: Sequence[str], tips: Sequence[str]) -> None:
        lon, lat = pixel_centre_lonlat(field, *_rows_cols(field, pts, units))
        for x, y, color, tip in zip(lon, lat, colors, tips, strict=True):
            folium.CircleMarker([float(y), float(x)], radius=6, color=color, fill=True, fill_opacity=0.9,
                                tooltip=tip).add_to(m)

    add_markers(points, [REFERENCE_COLOR] * len(points), [f"reference {i}" for i in range(len(points))])
    if label_points is not None and labels is not None:
        add_markers(label_points, [palette[int(c)] for c in labels], [f"class {int(c)}" for c in labels])
    folium.LatLngPopup().add_to(m)
    return m


# ----------------------------------------------------------------------------------------------
# A clicking session and the live ipyleaflet widget
# ----------------------------------------------------------------------------------------------


class SimilaritySession:
    """The state of an interactive similarity search / labelling on ``field``, as plain Python.

    Holds the reference points and the labelled points as (row, col) pixels, their class ids, and
    the threshold. :meth:`add_point` / :meth:`add_label` take clicked (lon, lat) degrees; a click
    outside the field, on a wrapped copy of the world or on a pixel without data is ignored (the
    method returns None and :attr:`message` says why). :meth:`similarity`, :meth:`mask` and
    :meth:`label_map` answer with (H, W) arrays, computed by :func:`reference_similarity`,
    :func:`threshold_mask` and :func:`knn_label_map` (cached until the points change).

    Args:
        field: on an axis-aligned WGS84 / UTM grid.
        threshold: the mask is ``similarity >= threshold``, in [-1, 1] (unit vectors).
        classes: class names; class id ``i`` is ``classes[i]``.
        k: neighbours of the kNN label map (at most the number of labelled points is used).
    """

    def __init__(self, field: EmbeddingField, threshold: float = 0.5,
                 classes: Sequence[str] = ("class 0", "class 1"), k: int = 1) -> None:
        if isinstance(classes, str) or len(classes) == 0:
            raise ValueError(f"classes must be a non-empty sequence of names, got {classes!r}")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        _lonlat_grid(field, 0.0, 0.0)  # ValueError now, not at the first click, unless an axis-aligned UTM grid
        self.field = field
        self.classes = tuple(str(c) for c in classes)
        self.k = int(k)
        self.points: list[tuple[int, int]] = []
        self.label_points: list[tuple[int, int]] = []
        self.labels: list[int] = []
        self.threshold = 0.0
        self.message = ""
        self._similarity: np.ndarray | None = None
        self._label_map: np.ndarray | None = None
        self.set_threshold(threshold)

    def _locate(self, lon: float, lat: float) -> tuple[int, int] | None:
        """The (row, col) holding (lon, lat), or None (and :attr:`message`) if outside or no data."""
        rows, cols, inside = _lonlat_grid(self.field, float(lon), float(lat))
        if not inside[0]:
            _, height, width = self.field.emb.shape
            self.message = f"ignored: (lon {lon:.6f}, lat {lat:.6f}) is outside the {height} x {width} px field"
            return None
        pixel = (int(rows[0]), int(cols[0]))
        if not self.field.valid[pixel]:
            self.message = f"ignored: pixel {pixel} (lon {lon:.6f}, lat {lat:.6f}) has no data"
            return None
        return pixel

    def add_point(self, lon: float, lat: float) -> tuple[int, int] | None:
        """Add a reference point at (lon, lat) degrees; returns its (row, col), or None if ignored.
        ValueError if lon / lat are not finite."""
        pixel = self._locate(lon, lat)
        if pixel is not None:
            self.points.append(pixel)
            self._similarity = None
            self.message = f"reference point {len(self.points)} at pixel {pixel}"
        return pixel

    def add_label(self, lon: float, lat: float, cls: int) -> tuple[int, int] | None:
        """Add a labelled point of class id ``cls`` at (lon, lat) degrees; returns its (row, col), or
        None if ignored. ValueError for an unknown class or non-finite lon / lat."""
        if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 0 <= cls < len(self.classes):
            raise ValueError(f"unknown class {cls!r}: class ids are 0..{len(self.classes) - 1} "
                             f"({', '.join(self.classes)})")
        pixel = self._locate(lon, lat)
        if pixel is not None:
            self.label_points.append(pixel)
            self.labels.append(int(cls))
            self._label_map = None
            self.message = f"{self.classes[cls]} point {len(self.labels)} at pixel {pixel}"
        return pixel

    def set_threshold(self, threshold: float) -> None:
        """Set the mask threshold; ValueError unless it is a number in [-1, 1]."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
                or not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [-1, 1] (a cosine similarity), got {threshold!r}")
        self.threshold = float(threshold)

    def clear(self) -> None:
        """Forget all points and labels (the threshold stays)."""
        self.points.clear()
        self.label_points.clear()
        self.labels.clear()
        self._similarity = self._label_map = None
        self.message = "cleared all points"

    def similarity(self) -> np.ndarray:
        """(H, W) float32 :func:`reference_similarity` of the reference points; all NaN without any."""
        if self._similarity is None:
            self._similarity = (reference_similarity(self.field, self.points) if self.points
                                else np.full(self.field.valid.shape, np.nan, dtype=np.float32))
        return self._similarity

    def mask(self) -> np.ndarray:
        """(H, W) bool ``similarity >= threshold`` (all False without reference points)."""
        return threshold_mask(self.similarity(), self.threshold)

    def label_map(self) -> np.ndarray:
        """(H, W) int64 :func:`knn_label_map` of the labelled points (k capped at their number);
        -1 where the field has no data, and everywhere without labelled points."""
        if self._label_map is None:
            self._label_map = (knn_label_map(self.field, self.label_points, self.labels,
                                             k=min(self.k, len(self.labels))) if self.labels
                               else np.full(self.field.valid.shape, -1, dtype=np.int64))
        return self._label_map


def _interactive_modules() -> tuple[ModuleType, ModuleType]:
    """Import ipyleaflet and ipywidgets, or raise a one-line ModuleNotFoundError naming the extra."""
    try:
        import ipyleaflet
        import ipywidgets
    except ImportError as err:
        raise ModuleNotFoundError(f"live_similarity_widget needs ipyleaflet and ipywidgets: {INTERACTIVE_EXTRA_HINT}",
                                  name=err.name) from err
    return ipyleaflet, ipywidgets


@dataclass(frozen=True)
class LiveSimilarityWidget:
    """What :func:`live_similarity_widget` builds; displays as :attr:`box` in a notebook.

    ``overlays``: ``"similarity"``, ``"mask"`` and ``"kNN labels"`` image overlays (their ``url``
    is redrawn on each change); ``markers``: the layer group of the points' markers.
    """

    session: SimilaritySession
    map: ipyleaflet.Map
    overlays: dict[str, ipyleaflet.ImageOverlay]
    markers: ipyleaflet.LayerGroup
    mode: ipywidgets.ToggleButtons
    cls: ipywidgets.Dropdown
    threshold: ipywidgets.FloatSlider
    message: ipywidgets.Label
    box: ipywidgets.VBox

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)


def live_similarity_widget(field: EmbeddingField, threshold: float = 0.5,
                           classes: Sequence[str] = ("class 0", "class 1"),
                           class_colors: Mapping[int, str] | None = None, k: int = 1,
                           basemap: str | None = "satellite", zoom: int = 13) -> LiveSimilarityWidget:
    """A live ipyleaflet map of a :class:`SimilaritySession` on ``field`` (needs a Jupyter kernel).

    A click on the map adds a reference point (mode "reference") or a labelled point of the class
    chosen in the dropdown (mode "label"); the similarity (viridis), mask (red, ``similarity >=
    threshold``, threshold from the slider) and kNN label (``class_colors``, default tab10) layers
    are redrawn, and a line under the map says what the click did (clicks outside the field or on
    pixels without data are ignored). "clear" forgets the points. The field is drawn on its lon/lat
    box as in :func:`similarity_map_widget`. ``basemap``: ``"satellite"`` (Esri World Imagery),
    another ``ipyleaflet.basemaps`` name (e.g. ``"OpenStreetMap.Mapnik"``) or None.

    Raises ModuleNotFoundError without the ``interactive`` extra (ipyleaflet, ipywidgets).
    """
    leaflet, widgets = _interactive_modules()
    session = SimilaritySession(field, threshold, classes, k)
    palette = _palette(range(len(session.classes)), class_colors)
    (south, west), (north, east) = _field_bounds(field)
    overlays = {name: leaflet.ImageOverlay(bounds=[[south, west], [north, east]], name=name, opacity=0.7)
                for name in ("similarity", "mask", "kNN labels")}
    markers = leaflet.LayerGroup(name="points")
    tiles = () if basemap is None else (leaflet.basemap_to_tiles(leaflet.basemaps.query_name(
        "Esri.WorldImagery" if basemap == "satellite" else basemap)),)
    m = leaflet.Map(center=((south + north) / 2, (west + east) / 2), zoom=zoom, layers=tiles)
    for layer in (*overlays.values(), markers):
        m.add(layer)
    m.add(leaflet.LayersControl(position="topright"))
    mode = widgets.ToggleButtons(options=[("reference", "reference"), ("label", "label")], description="click adds")
    cls = widgets.Dropdown(options=[(name, i) for i, name in enumerate(session.classes)], description="class")
    slider = widgets.FloatSlider(value=session.threshold, min=-1.0, max=1.0, step=0.01, description="threshold")
    clear = widgets.Button(description="clear")
    message = widgets.Label()

    def draw_mask() -> None:
        overlays["mask"].url = png_data_url(_mask_rgb(session.mask()))

    def draw_all() -> None:
        overlays["similarity"].url = png_data_url(_colorize(session.similarity()))
        draw_mask()
        overlays["kNN labels"].url = png_data_url(_label_rgb(session.label_map(), palette))
        dots = []
        for pts, colors in ((session.points, [REFERENCE_COLOR] * len(session.points)),
                            (session.label_points, [palette[c] for c in session.labels])):
            if pts:
                lon, lat = pixel_centre_lonlat(field, *np.asarray(pts).T)
                dots += [leaflet.CircleMarker(location=(float(y), float(x)), radius=6, color=color, fill_color=color,
                                              fill_opacity=0.9) for x, y, color in zip(lon, lat, colors, strict=True)]
        markers.layers = tuple(dots)
        message.value = session.message

    def on_interaction(**event: Any) -> None:
        if event.get("type") != "click":
            return
        lat, lon = (float(v) for v in event["coordinates"])
        added = session.add_point(lon, lat) if mode.value == "reference" else session.add_label(lon, lat, cls.value)
        if added is None:
            message.value = session.message
        else:
            draw_all()

    def on_threshold(change: Mapping[str, Any]) -> None:
        session.set_threshold(change["new"])
        draw_mask()

    def on_clear(_: ipywidgets.Button) -> None:
        session.clear()
        draw_all()

    m.on_interaction(on_interaction)
    slider.observe(on_threshold, names="value")
    clear.on_click(on_clear)
    draw_all()
    message.value = 'click the map to add a reference point (or choose "label" and a class)'
    box = widgets.VBox([widgets.HBox([mode, cls]), widgets.HBox([slider, clear]), m, message])
    return LiveSimilarityWidget(session, m, overlays, markers, mode, cls, slider, message, box)
