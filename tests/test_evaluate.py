"""Sparse-label evaluation: metric, probes, spatial splits and the loop on real labels."""

from __future__ import annotations

import numpy as np
import pytest

from aef_lite.data import LabelMap, Sample, normalise
from aef_lite.evaluate import (
    balanced_accuracy,
    evaluate_features,
    format_table,
    knn_predict,
    linear_probe_predict,
    pca_features,
    raw_band_features,
    spatial_split,
    summarise,
)


def test_balanced_accuracy_averages_per_class_recall() -> None:
    y_true = np.array([1, 1, 1, 2])
    assert balanced_accuracy(y_true, np.array([1, 1, 2, 2])) == pytest.approx((2 / 3 + 1) / 2)
    # a majority-class predictor scores chance (1 / K) however unbalanced the test set is
    y_true = np.array([1] * 90 + [2] * 9 + [3])
    assert balanced_accuracy(y_true, np.ones(100, dtype=int)) == pytest.approx(1 / 3)
    assert balanced_accuracy(y_true, y_true) == 1.0


def _blobs(rng: np.random.Generator, n: int, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(1, len(centres) + 1), n)
    return centres[y - 1] + 0.1 * rng.normal(size=(len(y), centres.shape[1])), y


def test_knn_on_separable_data_is_perfect() -> None:
    rng = np.random.default_rng(0)
    centres = 3.0 * rng.normal(size=(4, 8))
    train_x, train_y = _blobs(rng, 1, centres)  # one label per class
    test_x, test_y = _blobs(rng, 50, centres)
    np.testing.assert_array_equal(knn_predict(train_x, train_y, test_x, k=1), test_y)
    train_x, train_y = _blobs(rng, 5, centres)
    np.testing.assert_array_equal(knn_predict(train_x, train_y, test_x, k=3), test_y)


def test_knn_ties_and_votes_are_deterministic() -> None:
    train_x = np.array([[0.0], [0.0], [1.0], [1.1], [-5.0]])
    train_y = np.array([7, 5, 5, 5, 7])
    # equidistant neighbours: the lower training index wins
    assert knn_predict(train_x, train_y, np.array([[0.0]]), k=1).tolist() == [7]
    # 3-NN of 0.4: 0.0 (7), 0.0 (5), 1.0 (5): the vote overrides the nearest neighbour
    assert knn_predict(train_x, train_y, np.array([[0.4]]), k=3).tolist() == [5]
    # vote tie 1-1-1: the class of the nearest neighbour wins (not the first index or smallest id)
    tie_x, tie_y = np.array([[-3.0], [2.0], [0.0]]), np.array([2, 9, 4])
    assert knn_predict(tie_x, tie_y, np.array([[0.5]]), k=3).tolist() == [4]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_knn_neighbours_are_those_of_a_stable_sort(k: int) -> None:
    """The arg-min passes pick the same ranked neighbours as a stable argsort of the distances,
    ties included (integer coordinates make many equal distances)."""
    rng = np.random.default_rng(k)
    train_x = rng.integers(0, 3, size=(40, 2)).astype(float)
    train_y = rng.integers(0, 6, size=40)
    test_x = rng.integers(0, 3, size=(300, 2)).astype(float)
    dist2 = ((test_x[:, None, :] - train_x[None]) ** 2).sum(-1)
    nearest = train_y[np.argsort(dist2, axis=1, kind="stable")[:, :k]]
    expected = []
    for row in nearest:  # majority vote, ties to the class whose member ranks first
        counts = {c: (row == c).sum() for c in row}
        expected.append(max(row, key=lambda c: (counts[c], -list(row).index(c))))
    np.testing.assert_array_equal(knn_predict(train_x, train_y, test_x, k=k), expected)


def test_linear_probe_recovers_a_linear_rule() -> None:
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=6), 0.3
    rule = lambda x: np.where(x @ w + b > 0, 2, 1)
    train_x, test_x = rng.normal(size=(300, 6)), rng.normal(size=(2000, 6))
    pred = linear_probe_predict(train_x, rule(train_x), test_x)
    assert balanced_accuracy(rule(test_x), pred) > 0.95
    # the ridge is relative to the features' scale: rescaling changes nothing
    np.testing.assert_array_equal(linear_probe_predict(1e3 * train_x, rule(train_x), 1e3 * test_x), pred)


def _dist_min(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest Euclidean distance between rows of a (N, 2) and b (M, 2)."""
    return float(min(np.sqrt(((a[:, None, :] - chunk[None]) ** 2).sum(-1)).min()
                     for chunk in np.array_split(b, max(1, len(b) // 2000))))


@pytest.fixture(scope="module")
def osm(samples: dict[str, Sample]) -> LabelMap:
    return samples["s2_brandenburg"].labels["osm"]


@pytest.mark.parametrize("gap", [16, 24])
def test_spatial_split_is_balanced_separated_and_seeded(osm: LabelMap, gap: int) -> None:
    split = spatial_split(osm.ids, n_per_class=10, seed=3, gap=gap)
    assert len(split.classes) >= 2 and 0 not in split.classes
    assert np.bincount(split.train_y).tolist()[1:] == [10 if k in split.classes else 0
                                                       for k in range(1, split.train_y.max() + 1)]
    assert set(split.test_y.tolist()) == set(split.classes.tolist())
    assert split.train_region[tuple(split.train_rc.T)].all() and split.test_region[tuple(split.test_rc.T)].all()
    assert not (split.train_region & split.test_region).any()
    np.testing.assert_array_equal(osm.ids[tuple(split.test_rc.T)], split.test_y)
    assert _dist_min(split.train_rc, split.test_rc) >= gap
    # the buffer holds for whole regions: dilating the train region by a disk of radius < gap
    # (brute force over offsets) never reaches the test region
    pad = np.pad(split.train_region, gap)
    height, width = split.train_region.shape
    dilated = np.zeros_like(split.train_region)
    for dy in range(-gap + 1, gap):
        for dx in range(-gap + 1, gap):
            if dy * dy + dx * dx < gap * gap:
                dilated |= pad[gap + dy:gap + dy + height, gap + dx:gap + dx + width]
    assert not (dilated & split.test_region).any()

    again = spatial_split(osm.ids, n_per_class=10, seed=3, gap=gap)
    np.testing.assert_array_equal(again.train_rc, split.train_rc)
    np.testing.assert_array_equal(again.test_rc, split.test_rc)
    other = spatial_split(osm.ids, n_per_class=10, seed=4, gap=gap)
    assert not np.array_equal(other.train_region, split.train_region)


def test_spatial_split_drops_classes_missing_on_a_side() -> None:
    ids = np.zeros((128, 128), dtype=np.int64)
    ids[:, :64], ids[:, 64:] = 1, 2
    ids[5, 5] = 3  # one pixel: never 10 train pixels
    split = spatial_split(ids, n_per_class=10, seed=0, block=32, gap=4, max_test=500, tries=5)
    assert split.classes.tolist() == [1, 2] and len(split.test_y) == 500
    with pytest.raises(ValueError, match="classes"):
        spatial_split(np.ones((64, 64), dtype=np.int64), n_per_class=1, seed=0)


def test_raw_band_features_median_composite(samples: dict[str, Sample]) -> None:
    scene = samples["landsat_colorado"]
    raw = raw_band_features(scene)
    assert raw.shape == (6, scene.height, scene.width) and np.isfinite(raw).all()
    series = scene.sources["landsat7"]
    z = np.where(series.mask[:, None], normalise(series.values, series.sensor), np.nan)
    r, c = np.argwhere(series.mask.sum(axis=0) > 0)[17]
    np.testing.assert_allclose(raw[3:, r, c], np.nanmedian(z[:, :, r, c], axis=0), atol=1e-6)
    s2 = samples["s2_brandenburg"]
    single = s2.sources["s2"]
    np.testing.assert_allclose(raw_band_features(s2), normalise(single.values[0], "s2", single.mask[0]))


def test_pca_features_are_ordered_uncorrelated_and_deterministic(samples: dict[str, Sample]) -> None:
    raw = raw_band_features(samples["s2_brandenburg"])
    pcs = pca_features(raw, 4)
    assert pcs.shape == (4, *raw.shape[1:])
    cov = np.cov(pcs.reshape(4, -1).astype(np.float64))
    assert (np.diff(np.diag(cov)) <= 0).all()
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-3 * cov[0, 0])
    np.testing.assert_array_equal(pca_features(raw, 4), pcs)


def test_evaluate_features_on_real_water_land_beats_chance(samples: dict[str, Sample]) -> None:
    scene = samples["s2_brandenburg"]
    labels = scene.labels["water_land"]
    raw = raw_band_features(scene)
    noise = np.random.default_rng(0).normal(size=raw.shape).astype(np.float32)
    feats = {"raw": raw, "noise": noise}
    rows = evaluate_features(feats, labels, n_per_class=(1, 10), seeds=range(3))
    assert rows == evaluate_features(feats, labels, n_per_class=(1, 10), seeds=range(3))
    assert {(r["probe"], r["n_per_class"]) for r in rows} == {
        ("knn1", 1), ("linear", 1), ("knn1", 10), ("knn3", 10), ("linear", 10)}
    assert all(r["n_train"] == 2 * r["n_per_class"] and r["n_classes"] == 2 for r in rows)

    summary = summarise(rows)
    assert len(summary) == 2 * 5 and all(s["n_seeds"] == 3 for s in summary)
    mean = {(s["method"], s["probe"], s["n_per_class"]): s["mean"] for s in summary}
    for probe in ("knn1", "knn3", "linear"):
        assert mean["raw", probe, 10] > 0.5, probe
        assert mean["raw", probe, 10] > mean["noise", probe, 10], probe
    table = format_table(summary)
    assert table.splitlines()[0].split()[0] == "method" and len(table.splitlines()) == 3
    assert f"{mean['raw', 'knn3', 10]:.3f}" in table
