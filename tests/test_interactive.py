"""Similarity search and click-to-label functions (aef_lite.interactive) on a synthetic two-class field."""

from __future__ import annotations

import folium
import numpy as np
import pytest

from aef_lite import interactive as ia
from aef_lite.embed import EmbeddingField
from aef_lite.geo import pixel_to_lonlat

TRANSFORM = [10.0, 0.0, 400_000.0, 0.0, -10.0, 5_800_000.0]


@pytest.fixture(scope="module")
def two_class() -> tuple[EmbeddingField, np.ndarray]:
    """A 40 x 50 px field: class 1 (a 'lake', rows 10..24, cols 5..29) around direction u, class 0
    around an orthogonal direction v, small noise; a 3 x 3 px no-data corner."""
    rng = np.random.default_rng(0)
    u, v = np.zeros(64), np.zeros(64)
    u[0], v[1] = 1.0, 1.0
    truth = np.zeros((40, 50), dtype=bool)
    truth[10:25, 5:30] = True
    emb = np.where(truth, u[:, None, None], v[:, None, None]) + 0.05 * rng.standard_normal((64, 40, 50))
    emb = (emb / np.linalg.norm(emb, axis=0)).astype(np.float32)
    emb[:, :3, -3:] = np.nan
    return EmbeddingField(emb, np.array([0.0, 365.0]), "EPSG:32633", TRANSFORM, 10.0, "two_class"), truth


def test_lonlat_to_pixel_inverts_pixel_to_lonlat(two_class: tuple[EmbeddingField, np.ndarray]) -> None:
    field, _ = two_class
    rows, cols = np.array([0, 17, 39]), np.array([0, 23, 49])
    lon, lat = pixel_to_lonlat(field.transform, field.crs, rows + 0.5, cols + 0.5)
    got_r, got_c = ia.lonlat_to_pixel(field, lon, lat)
    np.testing.assert_array_equal(got_r, rows)
    np.testing.assert_array_equal(got_c, cols)
    with pytest.raises(ValueError, match="outside"):
        ia.lonlat_to_pixel(field, 0.0, 0.0)


def test_similarity_from_pixel_and_lonlat_points_agree(two_class: tuple[EmbeddingField, np.ndarray]) -> None:
    field, truth = two_class
    sim = ia.reference_similarity(field, [(15, 10), (20, 25)])
    lon, lat = pixel_to_lonlat(field.transform, field.crs, np.array([15.5, 20.5]), np.array([10.5, 25.5]))
    sim_ll = ia.reference_similarity(field, list(zip(lon, lat, strict=True)), units="lonlat")
    np.testing.assert_array_equal(sim, sim_ll)
    assert sim.shape == (40, 50) and np.isnan(sim[0, -1])
    assert np.nanmean(sim[truth]) > 0.7 > 0.2 > np.nanmean(sim[~truth])
    with pytest.raises(ValueError, match="without data"):
        ia.reference_similarity(field, [(0, 49)])
    with pytest.raises(ValueError, match="grid"):
        ia.reference_similarity(field, [(40, 0)])


def test_threshold_and_metrics(two_class: tuple[EmbeddingField, np.ndarray]) -> None:
    field, truth = two_class
    sim = ia.reference_similarity(field, [(15, 10)])
    mask = ia.threshold_mask(sim, 0.5)
    assert mask.dtype == bool and not mask[0, -1]  # NaN -> False
    m = ia.mask_metrics(mask, truth, field.valid)
    assert m["precision"] > 0.99 and m["recall"] > 0.99 and m["iou"] > 0.98
    # hand-checked counts on a tiny case
    pred = np.array([[True, True], [False, False]])
    true = np.array([[True, False], [True, False]])
    small = ia.mask_metrics(pred, true)
    assert (small["tp"], small["fp"], small["fn"]) == (1.0, 1.0, 1.0)
    assert small["precision"] == 0.5 and small["recall"] == 0.5 and small["iou"] == pytest.approx(1 / 3)
    assert np.isnan(ia.mask_metrics(np.zeros((2, 2), bool), true)["precision"])


def test_threshold_sweep_and_relative_threshold(two_class: tuple[EmbeddingField, np.ndarray]) -> None:
    field, truth = two_class
    sim = ia.reference_similarity(field, [(15, 10)])
    rows = ia.threshold_sweep(sim, truth, [-1.0, 0.5, 1.01])
    assert [r["threshold"] for r in rows] == [-1.0, 0.5, 1.01]
    assert rows[0]["recall"] == 1.0 and rows[0]["precision"] == pytest.approx(truth[field.valid].mean())
    assert rows[1]["iou"] > 0.98 and rows[2]["tp"] == 0.0
    t = ia.top_fraction_threshold(sim, 0.1)
    assert ia.threshold_mask(sim, t).sum() == pytest.approx(0.1 * field.valid.sum(), abs=2)
    with pytest.raises(ValueError, match="fraction"):
        ia.top_fraction_threshold(sim, 0.0)


def test_knn_label_map_from_a_few_points(two_class: tuple[EmbeddingField, np.ndarray]) -> None:
    field, truth = two_class
    ids = ia.knn_label_map(field, [(12, 8), (22, 27), (35, 40), (5, 45)], [1, 1, 0, 0], k=1)
    assert ids.shape == (40, 50) and (ids[~field.valid] == -1).all()
    assert (ids[field.valid] == truth[field.valid]).mean() > 0.99
    with pytest.raises(ValueError, match="integer class ids"):
        ia.knn_label_map(field, [(12, 8), (35, 40)], [1.5, 0.0])


def test_widget_has_the_layers_and_markers(two_class: tuple[EmbeddingField, np.ndarray]) -> None:
    field, _ = two_class
    m = ia.similarity_map_widget(field, [(15, 10)], 0.5, label_points=[(12, 8), (35, 40)], labels=[1, 0],
                                 class_colors={0: "tan", 1: "navy"}, basemap=None)
    assert isinstance(m, folium.Map)
    children = list(m._children.values())
    overlays = [c.layer_name for c in children if isinstance(c, folium.raster_layers.ImageOverlay)]
    assert overlays == ["similarity", "similarity >= 0.5", "kNN labels"]
    markers = [c for c in children if isinstance(c, folium.CircleMarker)]
    assert len(markers) == 3
    assert any(isinstance(c, folium.LatLngPopup) for c in children)
    html = m.get_root().render()
    assert "#000080" in html  # navy marker of the class-1 point
    with pytest.raises(ValueError, match="need labels"):
        ia.similarity_map_widget(field, [(15, 10)], 0.5, label_points=[(12, 8)])
