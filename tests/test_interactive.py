"""Similarity search and click-to-label functions (aef_lite.interactive) on a synthetic two-class field:
the pure functions, the click session behind the live widget, the folium and ipyleaflet maps."""

from __future__ import annotations

import base64
import io
import sys

import folium
import matplotlib.pyplot as plt
import numpy as np
import pytest

from aef_lite import interactive as ia
from aef_lite.embed import EmbeddingField
from aef_lite.geo import pixel_bounds_lonlat, pixel_to_lonlat

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
    lon_c, lat_c = ia.pixel_centre_lonlat(field, rows, cols)
    np.testing.assert_allclose(lon_c, lon)
    np.testing.assert_allclose(lat_c, lat)
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


def _centre(field: EmbeddingField, row: float, col: float) -> tuple[float, float]:
    """(lon, lat) of the point ``row``, ``col`` (fractional pixels from the top-left corner)."""
    lon, lat = pixel_to_lonlat(field.transform, field.crs, np.array([row]), np.array([col]))
    return float(lon[0]), float(lat[0])


class TestSimilaritySession:
    """The plain-Python state behind the live widget, without ipyleaflet."""

    def test_clicks_land_on_their_pixel(self, two_class: tuple[EmbeddingField, np.ndarray]) -> None:
        field, _ = two_class
        session = ia.SimilaritySession(field)
        # centres, and points just inside a pixel's corners
        for row, col, expected in [(15.5, 10.5, (15, 10)), (20.05, 25.95, (20, 25)), (39.9, 0.02, (39, 0))]:
            assert session.add_point(*_centre(field, row, col)) == expected
        assert session.points == [(15, 10), (20, 25), (39, 0)]
        assert "reference point 3 at pixel (39, 0)" in session.message

    def test_similarity_is_the_dot_product_with_the_mean_reference(
            self, two_class: tuple[EmbeddingField, np.ndarray]) -> None:
        field, truth = two_class
        session = ia.SimilaritySession(field)
        assert np.isnan(session.similarity()).all() and not session.mask().any()  # no reference yet
        session.add_point(*_centre(field, 12.5, 8.5))
        session.add_point(*_centre(field, 35.5, 40.5))  # one point of each class: a mixed reference
        ref = field.emb[:, [12, 35], [8, 40]].astype(np.float64).mean(axis=1)
        expected = np.einsum("ehw,e->hw", field.emb.astype(np.float64), ref / np.linalg.norm(ref))
        sim = session.similarity()
        assert sim.shape == truth.shape
        np.testing.assert_allclose(sim[field.valid], expected[field.valid], rtol=1e-5, atol=1e-6)
        assert np.isnan(sim[~field.valid]).all()
        np.testing.assert_array_equal(sim, ia.reference_similarity(field, [(12, 8), (35, 40)]))

    def test_threshold_changes_the_mask_monotonically(self, two_class: tuple[EmbeddingField, np.ndarray]) -> None:
        field, truth = two_class
        session = ia.SimilaritySession(field, threshold=0.5)
        session.add_point(*_centre(field, 15.5, 10.5))
        assert ia.mask_metrics(session.mask(), truth, field.valid)["iou"] > 0.98
        previous = None
        counts = []
        for t in [-1.0, -0.2, 0.0, 0.1, 0.5, 0.9, 0.97, 1.0]:
            session.set_threshold(t)
            mask = session.mask()
            np.testing.assert_array_equal(mask, ia.threshold_mask(session.similarity(), t))
            if previous is not None:
                assert not (mask & ~previous).any()  # a higher threshold only removes pixels
            previous = mask
            counts.append(int(mask.sum()))
        assert counts[0] == field.valid.sum() and counts[-1] <= 1  # only the reference pixel itself can reach 1
        assert counts[0] > counts[3] > counts[5] > counts[-1]  # and it really changes

    def test_label_map_from_clicks_matches_knn_label_map(self, two_class: tuple[EmbeddingField, np.ndarray]) -> None:
        field, truth = two_class
        session = ia.SimilaritySession(field, classes=("land", "lake"), k=3)
        assert (session.label_map() == -1).all()  # no labels yet
        for (row, col), cls in [((12, 8), 1), ((35, 40), 0)]:
            assert session.add_label(*_centre(field, row + 0.5, col + 0.5), cls) == (row, col)
        assert session.labels == [1, 0] and "land point 2" in session.message
        # k = 3 is capped at the two labelled points
        ids = session.label_map()
        np.testing.assert_array_equal(ids, ia.knn_label_map(field, [(12, 8), (35, 40)], [1, 0], k=2))
        assert (ids[field.valid] == truth[field.valid]).mean() > 0.99
        session.add_label(*_centre(field, 5.5, 45.5), 0)
        session.add_label(*_centre(field, 38.5, 2.5), 0)
        # one lake point against three land points: with k = 3 every pixel has a land majority
        ids = session.label_map()
        np.testing.assert_array_equal(ids, ia.knn_label_map(field, [(12, 8), (35, 40), (5, 45), (38, 2)],
                                                            [1, 0, 0, 0], k=3))
        assert (ids[field.valid] == 0).all()
        session.clear()
        assert session.labels == [] and (session.label_map() == -1).all()

    def test_clicks_outside_the_field_are_ignored(self, two_class: tuple[EmbeddingField, np.ndarray]) -> None:
        field, _ = two_class
        session = ia.SimilaritySession(field)
        session.add_point(*_centre(field, 15.5, 10.5))
        before = session.similarity()
        lon, lat = _centre(field, 20.5, 25.5)
        _, north_lat = _centre(field, -0.5, 25.5)
        for click in [(0.0, 0.0), (lon, north_lat), (lon + 360.0, lat), (lon, 95.0)]:  # far, 1 px north, wrapped
            assert session.add_point(*click) is None
            assert session.message.startswith("ignored:") and "outside the 40 x 50 px field" in session.message
            assert session.add_label(*click, 0) is None
        assert session.add_point(*_centre(field, 0.5, 49.5)) is None and "no data" in session.message
        assert session.points == [(15, 10)] and session.label_points == [] and session.labels == []
        assert session.similarity() is before  # nothing recomputed

    def test_bad_inputs_raise(self, two_class: tuple[EmbeddingField, np.ndarray]) -> None:
        field, _ = two_class
        session = ia.SimilaritySession(field, threshold=0.3, classes=("a", "b"))
        for bad in [1.5, -1.01, float("nan"), "0.5", None, True]:
            with pytest.raises(ValueError, match=r"threshold must be a number in \[-1, 1\]"):
                session.set_threshold(bad)
        assert session.threshold == 0.3
        lon, lat = _centre(field, 15.5, 10.5)
        for cls in [2, -1, 0.0, "a", True]:
            with pytest.raises(ValueError, match=r"unknown class .*0\.\.1 \(a, b\)"):
                session.add_label(lon, lat, cls)
        with pytest.raises(ValueError, match="finite"):
            session.add_point(float("nan"), lat)
        assert session.labels == [] and session.points == []
        with pytest.raises(ValueError, match="classes"):
            ia.SimilaritySession(field, classes=())
        with pytest.raises(ValueError, match="k must be"):
            ia.SimilaritySession(field, k=0)
        with pytest.raises(ValueError, match="threshold"):
            ia.SimilaritySession(field, threshold=2.0)
        lonlat_field = EmbeddingField(field.emb, field.period, "EPSG:4326", TRANSFORM, 10.0, "degrees")
        with pytest.raises(ValueError):
            ia.SimilaritySession(lonlat_field)


def _png_alpha(url: str) -> np.ndarray:
    """The alpha channel (H, W) of a ``data:image/png;base64,...`` URL."""
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return plt.imread(io.BytesIO(base64.b64decode(url[len(prefix):])), format="png")[..., 3]


def test_live_widget_click_updates_the_session_and_the_overlays(
        two_class: tuple[EmbeddingField, np.ndarray]) -> None:
    pytest.importorskip("ipyleaflet")
    pytest.importorskip("ipywidgets")
    field, _ = two_class
    w = ia.live_similarity_widget(field, threshold=0.5, classes=("land", "lake"), class_colors={1: "navy"},
                                  basemap=None)
    assert set(w.overlays) == {"similarity", "mask", "kNN labels"}
    (south, west), (north, east) = pixel_bounds_lonlat(field.transform, 40, 50, field.crs)
    for overlay in w.overlays.values():
        assert overlay in w.map.layers
        np.testing.assert_allclose(np.ravel(overlay.bounds), [south, west, north, east])
    urls = {name: o.url for name, o in w.overlays.items()}
    assert _png_alpha(urls["mask"]).shape == (40, 50) and not _png_alpha(urls["mask"]).any()

    def click(row: float, col: float, kind: str = "click") -> None:
        lon, lat = _centre(field, row, col)
        w.map._interaction_callbacks(type=kind, coordinates=[lat, lon])  # what Leaflet sends on a click

    click(15.5, 10.5, kind="mousemove")
    assert w.session.points == []  # only clicks count
    click(15.5, 10.5)
    assert w.session.points == [(15, 10)] and "reference point 1" in w.message.value
    assert w.overlays["similarity"].url != urls["similarity"] and w.overlays["mask"].url != urls["mask"]
    assert w.overlays["kNN labels"].url == urls["kNN labels"]  # no label yet
    np.testing.assert_array_equal(_png_alpha(w.overlays["mask"].url) > 0, w.session.mask())
    assert len(w.markers.layers) == 1

    before = w.overlays["similarity"].url
    w.map._interaction_callbacks(type="click", coordinates=[0.0, 0.0])  # far outside: ignored, no crash
    assert w.session.points == [(15, 10)] and "outside" in w.message.value
    assert w.overlays["similarity"].url == before

    w.mode.value, w.cls.value = "label", 1
    click(22.5, 27.5)
    assert w.session.label_points == [(22, 27)] and w.session.labels == [1] and "lake point 1" in w.message.value
    assert w.overlays["kNN labels"].url != urls["kNN labels"] and len(w.markers.layers) == 2
    assert w.markers.layers[-1].color == "#000080"  # the class colour
    assert w.session.points == [(15, 10)]

    mask_url = w.overlays["mask"].url
    w.threshold.value = -1.0
    assert w.session.threshold == -1.0 and w.overlays["mask"].url != mask_url
    np.testing.assert_array_equal(_png_alpha(w.overlays["mask"].url) > 0, field.valid)


def test_live_widget_without_the_extra_says_how_to_install(
        two_class: tuple[EmbeddingField, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    field, _ = two_class
    monkeypatch.setitem(sys.modules, "ipyleaflet", None)  # import ipyleaflet -> ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r'ipyleaflet and ipywidgets: pip install "aef-lite\[interactive\]"'
                       ) as info:
        ia.live_similarity_widget(field)
    assert "\n" not in str(info.value) and info.value.name == "ipyleaflet"
