"""Composites, embedding pictures and web maps."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import folium
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from aef_lite import viz
from aef_lite.data import LabelMap, Sample
from aef_lite.geo import pixel_bounds_lonlat

matplotlib.use("Agg")


def _unit_field(e: int = 16, h: int = 24, w: int = 20, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((e, h, w))
    return x / np.linalg.norm(x, axis=0, keepdims=True)


def test_stretch_range_and_invalid_pixels() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 30.0, (40, 50, 3))
    img[0, 0] = np.nan
    mask = np.ones((40, 50), bool)
    mask[5:10] = False
    img[5:10] = 1e9  # would dominate the percentiles if the mask were ignored
    out = viz.stretch(img, mask=mask)
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[5:10] == 0) and np.all(out[0, 0] == 0)
    assert 0.3 < out[10:].mean() < 0.7  # the 1e9 rows did not set the upper percentile
    single = viz.stretch(img[..., 0])
    assert single.shape == (40, 50) and 0.0 <= single.min() and single.max() <= 1.0


def test_composites_of_the_brandenburg_scene(samples: dict[str, Sample]) -> None:
    s = samples["s2_brandenburg"]
    tc, fc = viz.true_color(s), viz.false_color(s)
    assert tc.shape == fc.shape == (s.height, s.width, 3)
    assert 0.0 <= tc.min() and tc.max() <= 1.0
    bands = s.sources["s2"].bands
    # The false-colour red channel is the stretched NIR band B08, so it must rank like B08 does.
    nir = s.sources["s2"].values[0, bands.index("B08")]
    assert np.corrcoef(fc[..., 0].ravel(), nir.ravel())[0, 1] > 0.95
    # Water absorbs NIR: OSM water polygons are darker than OSM land classes in that channel.
    osm = s.labels["osm"]
    water = osm.ids == osm.class_names.index("water")
    land = np.isin(osm.ids, [osm.class_names.index(c) for c in ("meadow", "farm", "forest")])
    assert fc[..., 0][water].mean() < 0.6 * fc[..., 0][land].mean()


def test_landsat_composites_choose_by_band_name(samples: dict[str, Sample]) -> None:
    s = samples["landsat_colorado"]
    fc = viz.false_color(s, frame=3, source="landsat7")
    assert fc.shape == (s.height, s.width, 3)
    mask = s.sources["landsat7"].mask[3]
    assert np.all(fc[~mask] == 0)
    with pytest.raises(ValueError, match="no true-colour composite"):
        viz.true_color(s)  # red, nir, swir1 only


def test_pca_rgb_deterministic_and_sign_fixed() -> None:
    emb = _unit_field()
    a, b = viz.pca_rgb(emb), viz.pca_rgb(emb.copy())
    assert a.shape == (24, 20, 3) and a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    # Flipping the sign of the whole field flips every principal axis: the fixed sign
    # convention must then invert the picture (c -> 1 - c up to stretch clipping).
    flipped = viz.pca_rgb(-emb)
    inner = (a > 0.05) & (a < 0.95)
    np.testing.assert_allclose(flipped[inner], 1.0 - a[inner], atol=1e-5)
    mask = np.ones((24, 20), bool)
    mask[:3] = False
    masked = viz.pca_rgb(emb, mask=mask)
    assert np.all(masked[:3] == 0)


def test_kmeans_deterministic_and_separates_toy_clusters() -> None:
    rng = np.random.default_rng(1)
    e, h, w = 8, 30, 30
    field = rng.normal(0.0, 0.05, (e, h, w))
    truth = np.zeros((h, w), bool)
    truth[:, 12:] = True
    field[0] += np.where(truth, 1.0, -1.0)
    ids = viz.kmeans(field, k=2, seed=3)
    assert set(np.unique(ids)) == {0, 1}
    assert np.array_equal(ids == ids[0, -1], truth)  # the split is exactly the truth
    assert ids[0, -1] == 0  # the larger cluster (columns 12..29) gets id 0
    np.testing.assert_array_equal(ids, viz.kmeans(field, k=2, seed=3))
    five = viz.kmeans(_unit_field(), k=5, seed=0, iters=20)
    assert set(np.unique(five)) == set(range(5))
    np.testing.assert_array_equal(five, viz.kmeans(_unit_field(), k=5, seed=0, iters=20))
    field[:, 0, 0] = np.nan
    assert viz.kmeans(field, k=2)[0, 0] == -1


def test_similarity_and_change_maps() -> None:
    emb = _unit_field()
    sim = viz.similarity_map(emb, 5, 7)
    assert sim.shape == (24, 20)
    assert sim[5, 7] == pytest.approx(1.0, abs=1e-6)
    assert np.all(sim <= 1.0 + 1e-6) and np.all(sim >= -1.0 - 1e-6)
    several = viz.similarity_map(emb, [1, 2], [3, 4])
    ref = emb[:, 1, 3] + emb[:, 2, 4]
    np.testing.assert_allclose(several, np.einsum("ehw,e->hw", emb, ref / np.linalg.norm(ref)), atol=1e-6)
    np.testing.assert_allclose(viz.change_map(emb, emb), 1.0, atol=1e-6)
    other = _unit_field(seed=1)
    change = viz.change_map(emb, other)
    np.testing.assert_allclose(change, (emb * other).sum(0), atol=1e-6)
    assert np.abs(change).mean() < 0.5  # independent random unit vectors are nearly orthogonal


def test_label_rgb_and_legend() -> None:
    labels = LabelMap(ids=np.array([[0, 1], [2, 1]]), class_names=["unlabelled", "land", "water"],
                      colors=["#000000", "#ff0000", "#0000ff"])
    rgb = viz.label_rgb(labels)
    np.testing.assert_array_equal(rgb[0, 1], [1, 0, 0])
    np.testing.assert_array_equal(rgb[1, 0], [0, 0, 1])
    fig, ax = plt.subplots()
    legend = viz.plot_label_legend(ax, labels)
    assert [t.get_text() for t in legend.get_texts()] == ["land", "water"]
    plt.close(fig)
    with pytest.raises(ValueError, match="colours"):
        viz.label_rgb(LabelMap(ids=np.array([[3]]), class_names=labels.class_names, colors=labels.colors))


def test_show_images_grid() -> None:
    images = {"rgb": np.zeros((8, 8, 3)), "gray": np.arange(64.0).reshape(8, 8), "third": np.ones((8, 8))}
    fig = viz.show_images(images, ncols=2, colorbar=True, suptitle="demo")
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in visible] == ["rgb", "gray", "third"]
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in visible)
    assert sum(not ax.get_visible() for ax in fig.axes) == 1  # the 4th cell of the 2 x 2 grid
    plt.close(fig)


def _overlays(m: folium.Map) -> list[folium.raster_layers.ImageOverlay]:
    return [c for c in m._children.values() if isinstance(c, folium.raster_layers.ImageOverlay)]


def test_folium_overlay_layers_and_bounds(samples: dict[str, Sample]) -> None:
    s = samples["s2_brandenburg"]
    rgb = np.random.default_rng(0).uniform(size=(s.height, s.width, 3))
    rgb[0, 0] = np.nan
    m = viz.folium_overlay(rgb, s, name="scene", extra_layers={"clusters": rgb[::-1]},
                           attribution="test attribution")
    overlays = _overlays(m)
    assert [o.layer_name for o in overlays] == ["scene", "clusters"]
    (south, west), (north, east) = pixel_bounds_lonlat(s.transform, s.height, s.width, s.crs)
    assert overlays[0].bounds == overlays[1].bounds == [[south, west], [north, east]]
    assert south < s.meta["center_lonlat"][1] < north
    url = overlays[0].url
    assert url.startswith("data:image/png;base64,")
    png = plt.imread(io.BytesIO(base64.b64decode(url.split(",", 1)[1])), format="png")
    assert png.shape == (s.height, s.width, 4) and png[0, 0, 3] == 0 and png[1, 1, 3] == 1
    assert any(isinstance(c, folium.LayerControl) for c in m._children.values())
    html = m.get_root().render()
    assert "test attribution" in html


def test_folium_overlay_explicit_bounds_and_satellite_basemap() -> None:
    bounds = ((52.0, 12.0), (52.1, 12.2))
    m = viz.folium_overlay(np.zeros((4, 4, 3)), bounds, basemap="satellite")
    assert len(_overlays(m)) == 1
    tiles = [c for c in m._children.values() if isinstance(c, folium.raster_layers.TileLayer)]
    assert tiles and "World_Imagery" in tiles[0].tiles
    with pytest.raises(ValueError, match="south, west"):
        viz.folium_overlay(np.zeros((4, 4, 3)), ((52.1, 12.0), (52.0, 12.2)))


def test_save_map_is_atomic(tmp_path: Path) -> None:
    m = viz.folium_overlay(np.zeros((4, 4, 3)), ((52.0, 12.0), (52.1, 12.2)))
    target = tmp_path / "maps" / "scene.html"
    assert viz.save_map(m, target) == target
    text = target.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html>") and "data:image/png;base64," in text
    assert [p.name for p in target.parent.iterdir()] == ["scene.html"]  # no temp file left
    target.write_text("old", encoding="utf-8")
    viz.save_map(m, target)  # replaces an existing file
    assert "data:image/png;base64," in target.read_text(encoding="utf-8")
    assert [p.name for p in target.parent.iterdir()] == ["scene.html"]


def test_save_map_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = viz.folium_overlay(np.zeros((4, 4, 3)), ((52.0, 12.0), (52.1, 12.2)))
    target = tmp_path / "scene.html"
    target.write_text("old", encoding="utf-8")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(viz.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        viz.save_map(m, target)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scene.html"]
