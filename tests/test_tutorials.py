"""The official tutorials' tools: k-means, cluster naming, similarity metrics, ridge and spatial CV."""

from __future__ import annotations

import numpy as np
import pytest

from aef_lite.tutorials import (
    best_f1_threshold,
    block_fraction,
    block_means,
    cluster_to_class,
    cosine_scores,
    kmeans_fit,
    kmeans_predict,
    mean_absolute_error,
    precision_recall_f1,
    purity,
    r2_score,
    ridge_fit,
    roc_auc,
    spatial_cv_ridge,
    spatial_folds,
    standardise,
)


def _blobs(seed: int = 0, n: int = 60, k: int = 4, d: int = 5, spread: float = 0.1):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.normal(size=(k, d))
    y = np.repeat(np.arange(k), n)
    return centres[y] + spread * rng.normal(size=(len(y), d)), y, centres


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_separated_blobs_and_is_seeded() -> None:
    x, y, centres = _blobs()
    res = kmeans_fit(x, 4, seed=0, n_init=3)
    assert res.centres.shape == (4, 5) and res.labels.shape == (len(x),) and res.labels.dtype == np.int64
    assert _same_partition(res.labels, y)
    # every fitted centre is next to one true centre
    d = np.linalg.norm(res.centres[:, None] - centres[None], axis=-1).min(axis=1)
    assert d.max() < 0.1
    np.testing.assert_array_equal(kmeans_predict(x, res.centres), res.labels)
    again = kmeans_fit(x, 4, seed=0, n_init=3)
    np.testing.assert_array_equal(again.centres, res.centres)
    assert res.inertia == pytest.approx(((x - res.centres[res.labels]) ** 2).sum())


def test_kmeans_restarts_never_increase_inertia() -> None:
    x, _, _ = _blobs(seed=1, k=6, spread=1.0)
    one = kmeans_fit(x, 6, seed=3, n_init=1)
    many = kmeans_fit(x, 6, seed=3, n_init=5)  # the first restart is the n_init=1 run
    assert many.inertia <= one.inertia + 1e-9


def test_kmeans_rejects_bad_arguments() -> None:
    x, _, _ = _blobs()
    for bad in (dict(k=0), dict(k=len(x) + 1), dict(k=2, n_init=0)):
        with pytest.raises(ValueError):
            kmeans_fit(x, **bad)
    with pytest.raises(ValueError):
        kmeans_fit(np.full((5, 2), np.nan), 2)


def test_cluster_to_class_majority_ties_and_empty_clusters() -> None:
    clusters = np.array([0, 0, 0, 1, 1, 2, 2])
    y = np.array([3, 3, 1, 2, 2, 1, 4])  # cluster 2: a tie between 1 and 4 -> 1; cluster 3: no votes -> 0
    np.testing.assert_array_equal(cluster_to_class(clusters, y, k=4), [3, 2, 1, 0])
    with pytest.raises(ValueError):
        cluster_to_class(clusters, y, k=2)


def test_purity() -> None:
    y = np.array([1, 1, 1, 2, 2, 3])
    assert purity(y, y) == 1.0
    assert purity(np.zeros(6, dtype=int), y) == pytest.approx(3 / 6)  # one cluster: the largest class
    assert purity(np.array([0, 0, 1, 1, 1, 1]), y) == pytest.approx((2 + 2) / 6)


def test_standardise_and_cosine_scores() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3)) * [1, 10, 100] + [0, 5, -7]
    z = standardise(x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1)
    s = cosine_scores(x, x[:1])
    assert s[0] == pytest.approx(1.0) and np.all(np.abs(s) <= 1 + 1e-12)
    # the query is the mean *direction*: scaling a reference does not change it
    np.testing.assert_allclose(cosine_scores(x, np.stack([x[1], 5 * x[2]])), cosine_scores(x, x[1:3]))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)  # for unit vectors: a plain dot product
    np.testing.assert_allclose(cosine_scores(unit, unit[:1]), unit @ unit[0])


def test_precision_recall_f1() -> None:
    truth = np.array([1, 1, 0, 0, 1], dtype=bool)
    pred = np.array([1, 0, 1, 0, 1], dtype=bool)
    p, r, f = precision_recall_f1(pred, truth)
    assert (p, r) == pytest.approx((2 / 3, 2 / 3)) and f == pytest.approx(2 / 3)
    assert precision_recall_f1(np.zeros(5, bool), truth) == (0.0, 0.0, 0.0)


def test_best_f1_threshold_maximises_f1() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.3
    scores = truth + rng.normal(scale=0.7, size=300)
    t = best_f1_threshold(scores, truth)
    f_best = precision_recall_f1(scores >= t, truth)[2]
    for cand in np.unique(scores):  # brute force over every threshold
        assert precision_recall_f1(scores >= cand, truth)[2] <= f_best + 1e-12
    assert best_f1_threshold(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0], bool)) == 0.8


def test_roc_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=80), 1)  # with ties
    truth = rng.random(80) < 0.4
    pos, neg = scores[truth], scores[~truth]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(scores, truth) == pytest.approx(brute)
    assert roc_auc(truth.astype(float), truth) == 1.0 and roc_auc(-truth.astype(float), truth) == 0.0
    with pytest.raises(ValueError):
        roc_auc(scores, np.ones(80, bool))


def test_block_means_and_fraction() -> None:
    fmap = np.arange(2 * 5 * 7, dtype=float).reshape(2, 5, 7)
    out = block_means(fmap, 2)
    assert out.shape == (2, 2, 3)
    assert out[1, 1, 2] == pytest.approx(fmap[1, 2:4, 4:6].mean())
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    valid[2:, 2:] = False
    frac, share = block_fraction(mask, 2, valid)
    np.testing.assert_allclose(share, [[0.75, 1.0], [1.0, 0.0]])
    assert frac[0, 0] == 1.0 and frac[0, 1] == 0.0 and np.isnan(frac[1, 1])


def test_ridge_recovers_linear_map_and_is_scale_invariant() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    w, b = np.array([1.0, -2.0, 0.5, 0.0]), 3.0
    y = x @ w + b
    fit = ridge_fit(x, y, alpha=0.0)
    np.testing.assert_allclose(fit.weights, w, atol=1e-10)
    assert fit.bias == pytest.approx(b)
    shrunk = ridge_fit(x, y, alpha=1.0)
    assert np.linalg.norm(shrunk.weights) < np.linalg.norm(w)  # the penalty shrinks the weights
    np.testing.assert_allclose(ridge_fit(10 * x, y, alpha=0.1).predict(10 * x), ridge_fit(x, y, alpha=0.1).predict(x))


def test_r2_and_mae() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0 and r2_score(y, np.full(4, y.mean())) == 0.0
    assert r2_score(y, y[::-1]) < 0
    assert mean_absolute_error(y, y + 0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        r2_score(np.ones(3), np.ones(3))


def test_spatial_folds_partition_and_keep_a_gap() -> None:
    folds = spatial_folds((23, 17), group=4, n_folds=5, gap=1, seed=0)
    assert len(folds) == 5
    tests = np.stack([te for _, te in folds])
    np.testing.assert_array_equal(tests.sum(0), 1)  # each block is tested exactly once
    for train, test in folds:
        assert not (train & test).any() and train.any()
        tr, te = np.argwhere(train), np.argwhere(test)
        cheb = np.abs(tr[:, None] - te[None]).max(-1).min()
        assert cheb == 2  # > gap = 1 block, and the nearest allowed block is used
    a = spatial_folds((23, 17), 4, 5, 1, seed=0)
    assert all(np.array_equal(t1, t2) for (_, t1), (_, t2) in zip(a, folds, strict=True))
    with pytest.raises(ValueError):
        spatial_folds((8, 8), group=8, n_folds=2)


def test_spatial_cv_ridge_beats_the_mean_on_a_learnable_target() -> None:
    rng = np.random.default_rng(0)
    h, w = 20, 20
    feat = rng.normal(size=(3, h, w))
    target = 0.7 * feat[0] - 0.3 * feat[2] + 0.05 * rng.normal(size=(h, w))
    keep = np.ones((h, w), bool)
    keep[:3] = False
    noise = {"noise": rng.normal(size=(3, h, w)), "good": feat}
    rows = spatial_cv_ridge(noise, target, keep, spatial_folds((h, w), 5, 4, gap=1, seed=0))
    by = {m: np.mean([r["r2"] for r in rows if r["method"] == m]) for m in ("training mean", "noise", "good")}
    assert by["good"] > 0.95 and by["training mean"] <= 0.0 + 0.05 and by["noise"] < 0.3
    assert all(r["n_test"] >= 10 for r in rows)
    with pytest.raises(ValueError):
        spatial_cv_ridge({"bad": feat[:, :5]}, target, keep, [])
