"""Sparse-label evaluation of feature maps: spatial splits, kNN and linear probes, balanced accuracy.

The paper's protocol (S3-S6): for each task, a class-balanced training set of 1, 10 or up to 300
samples per class, an unbalanced test set, train and test points at least 1.28 km apart; transfer
by k-nearest neighbours (k = 1 or 3) and a least-squares linear probe; metric: balanced accuracy
(mean per-class recall), averaged over repeated draws.

Adapted to the mini scale. The paper samples points from global datasets; here a task is one
label map of one shipped scene (``s2_brandenburg``: 512 x 512 px = 5.12 km at 10 m, labels
``water_land`` and ``osm``), so a 1.28 km exclusion radius would leave almost nothing to test on.
Instead :func:`spatial_split` cuts the scene into square blocks (default 64 px = 640 m at 10 m)
on a randomly shifted grid and assigns each block to train or test at random (a random
"checkerboard"); training points are drawn only from train blocks, test pixels only from test
blocks, and test pixels closer than ``gap`` px (default 16 px = 160 m) to any train block are
dropped. Train and test sets are therefore at least ``gap`` px apart (Euclidean, pixel centres),
not 1.28 km; points *within* a set are not separated (the test set is every remaining labelled
pixel, so large polygons weigh more, which balanced accuracy compensates across classes).
The default label budgets are 1 and 10 per class; the max-label setting is left out because the
``water_land`` map has only 283 land pixels. Everything here is numpy only and deterministic
given the seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from aef_lite.data import LabelMap, Sample, normalise
from aef_lite.neighbourhood import gaussian_blur
from aef_lite.quantization import dequantize, quantize

FeatureMap = np.ndarray
"""A per-pixel feature map (D, H, W) float: embeddings (64, H, W), raw bands (C, H, W), ..."""

PROBES = ("knn1", "knn3", "linear")
"""Probe names accepted by :func:`evaluate_features`."""

_KNN_CHUNK = 4096


# ----------------------------------------------------------------------------------------------
# Spatially separated splits
# ----------------------------------------------------------------------------------------------


@dataclass
class SpatialSplit:
    """Train / test pixels of one label map (see :func:`spatial_split`).

    train_rc: (N, 2) int64 (row, col) of the class-balanced training pixels; train_y: (N,) ids.
    test_rc:  (M, 2) int64 (row, col) of the test pixels; test_y: (M,) ids (unbalanced).
    train_region: (H, W) bool, the train blocks. test_region: (H, W) bool, the test blocks minus
    the buffer of ``gap`` px around the train blocks. classes: (K,) the class ids kept (>= 2).
    """

    train_rc: np.ndarray
    train_y: np.ndarray
    test_rc: np.ndarray
    test_y: np.ndarray
    train_region: np.ndarray
    test_region: np.ndarray
    classes: np.ndarray


def _block_regions(shape: tuple[int, int], block: int, gap: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random block assignment: (train_region, test_region) (H, W) bool.

    The squared distance from pixel (r, c) to the nearest train block is
    min over block rows k of (dy_k(r)^2 + min over train blocks l in row k of dx_l(c)^2),
    computed exactly from the per-axis distances to each block's extent.
    """
    height, width = shape
    off_y, off_x = rng.integers(0, block, size=2)
    edges_y = np.arange(-off_y, height, block)  # block starts along each axis (first may be < 0)
    edges_x = np.arange(-off_x, width, block)
    is_train = rng.random((len(edges_y), len(edges_x))) < 0.5
    rows, cols = np.arange(height), np.arange(width)
    by, bx = (rows + off_y) // block, (cols + off_x) // block
    train_region = is_train[by[:, None], bx[None, :]]

    def axis_dist2(coords: np.ndarray, starts: np.ndarray) -> np.ndarray:  # (n_blocks, n_coords)
        d = np.maximum(np.maximum(starts[:, None] - coords, coords - (starts[:, None] + block - 1)), 0)
        return d.astype(np.float64) ** 2

    dx2 = np.where(is_train[:, :, None], axis_dist2(cols, edges_x)[None], np.inf).min(axis=1)  # (nby, W)
    dist2 = (axis_dist2(rows, edges_y)[:, :, None] + dx2[:, None, :]).min(axis=0)  # (H, W)
    test_region = ~train_region & (dist2 >= gap * gap)
    return train_region, test_region


def spatial_split(label_ids: np.ndarray, n_per_class: int, seed: int, block: int = 64, gap: int = 16,
                  max_test: int | None = None, tries: int = 100) -> SpatialSplit:
    """Spatially separated, class-balanced train / unbalanced test split of a label map (S3).

    Blocks of ``block`` x ``block`` px on a grid shifted by a random offset are assigned to train
    or test with probability 1/2 each. Train: ``n_per_class`` pixels per class drawn without
    replacement from the train blocks. Test: every labelled pixel of the test blocks at least
    ``gap`` px (Euclidean, pixel centres) from every train-block pixel, or a random subset of
    ``max_test`` of them. Class 0 is unlabelled and ignored.

    A class is usable if it has >= ``n_per_class`` train candidates and >= 1 test pixel. Up to
    ``tries`` assignments are drawn; the first that keeps every class present in ``label_ids`` is
    used, otherwise the one keeping most classes (classes absent from either side are dropped).

    Args:
        label_ids: (H, W) int class ids, 0 = unlabelled.
        n_per_class: training pixels per class (>= 1).
        seed: seeds the assignment, the grid offset and the draws; same seed, same split.
        block, gap: block side and train-test buffer in px (10 m pixels: 640 m and 160 m).
        max_test: cap on the number of test pixels (None = all).
        tries: assignments to draw at most.

    Raises:
        ValueError: bad arguments, or fewer than 2 classes usable on both sides.
    """
    ids = np.asarray(label_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"label_ids must be an (H, W) integer array, got {ids.dtype} {ids.shape}")
    if n_per_class < 1 or block < 1 or gap < 0 or tries < 1 or (max_test is not None and max_test < 1):
        raise ValueError(f"need n_per_class >= 1, block >= 1, gap >= 0, tries >= 1, max_test >= 1 "
                         f"or None; got {n_per_class}, {block}, {gap}, {tries}, {max_test}")
    classes = np.unique(ids[ids > 0])
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for _ in range(tries):
        train_region, test_region = _block_regions(ids.shape, block, gap, rng)
        usable = np.array([np.count_nonzero(train_region & (ids == k)) >= n_per_class
                           and np.count_nonzero(test_region & (ids == k)) >= 1 for k in classes], dtype=bool)
        if best is None or usable.sum() > best[2].sum():
            best = (train_region, test_region, usable)
        if usable.all():
            break
    train_region, test_region, usable = best
    kept = classes[usable]
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} of classes {classes.tolist()} have >= {n_per_class} train and "
                         f">= 1 test pixels after {tries} block assignments; use a smaller block, gap or "
                         "n_per_class")
    train_idx = np.concatenate([
        np.sort(rng.choice(np.flatnonzero(train_region & (ids == k)), n_per_class, replace=False))
        for k in kept
    ])
    test_idx = np.flatnonzero(test_region & np.isin(ids, kept))
    if max_test is not None and len(test_idx) > max_test:
        test_idx = np.sort(rng.choice(test_idx, max_test, replace=False))
    as_rc = lambda flat: np.stack(np.unravel_index(flat, ids.shape), axis=1).astype(np.int64)
    return SpatialSplit(train_rc=as_rc(train_idx), train_y=ids.ravel()[train_idx],
                        test_rc=as_rc(test_idx), test_y=ids.ravel()[test_idx],
                        train_region=train_region, test_region=test_region, classes=kept)


def random_split(label_ids: np.ndarray, n_per_class: int, seed: int, max_test: int | None = None) -> SpatialSplit:
    """A split with no spatial separation: ``n_per_class`` random training pixels per class, every
    other labelled pixel (or ``max_test`` of them) for testing. Neighbours of training pixels are
    then in the test set, so this measures in-distribution transfer; compare with
    :func:`spatial_split`. Classes with fewer than ``n_per_class + 1`` pixels are dropped."""
    ids = np.asarray(label_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer) or n_per_class < 1:
        raise ValueError(f"need (H, W) integer label_ids and n_per_class >= 1, got {ids.shape}, {n_per_class}")
    rng = np.random.default_rng(seed)
    kept = np.array([k for k in np.unique(ids[ids > 0]) if np.count_nonzero(ids == k) > n_per_class])
    if len(kept) < 2:
        raise ValueError(f"fewer than 2 classes have more than {n_per_class} labelled pixels")
    train_idx = np.concatenate([np.sort(rng.choice(np.flatnonzero(ids == k), n_per_class, replace=False))
                                for k in kept])
    test_mask = np.isin(ids, kept).ravel()
    test_mask[train_idx] = False
    test_idx = np.flatnonzero(test_mask)
    if max_test is not None and len(test_idx) > max_test:
        test_idx = np.sort(rng.choice(test_idx, max_test, replace=False))
    as_rc = lambda flat: np.stack(np.unravel_index(flat, ids.shape), axis=1).astype(np.int64)
    region = np.ones(ids.shape, dtype=bool)
    return SpatialSplit(train_rc=as_rc(train_idx), train_y=ids.ravel()[train_idx], test_rc=as_rc(test_idx),
                        test_y=ids.ravel()[test_idx], train_region=region, test_region=region, classes=kept)


SPLITS = ("spatial", "random")
"""Split kinds accepted by :func:`evaluate_features`."""


# ----------------------------------------------------------------------------------------------
# Probes and metric
# ----------------------------------------------------------------------------------------------


def _check_xy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> None:
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"need train_x (N, D) and test_x (M, D); got {train_x.shape}, {test_x.shape}")
    if train_y.shape != (train_x.shape[0],):
        raise ValueError(f"train_y must be ({train_x.shape[0]},), got {train_y.shape}")
    if not (np.isfinite(train_x).all() and np.isfinite(test_x).all()):
        raise ValueError("features contain NaN/inf (e.g. no-data pixels of a dequantised field)")


def _k_smallest(dist2: np.ndarray, k: int) -> np.ndarray:
    """Columns of the ``k`` smallest entries of each row of ``dist2`` (m, N), nearest first, ties
    by column index: the first ``k`` columns of a stable ``argsort``, found by ``k`` arg-min passes
    (``dist2`` is overwritten). At the evaluation's N of 10-100 training points and k <= 3 this is
    several times faster than sorting every row."""
    rows = np.arange(len(dist2))
    ranks = np.empty((len(dist2), k), dtype=np.intp)
    for j in range(k):
        ranks[:, j] = np.argmin(dist2, axis=1)  # first occurrence: the lowest index among ties
        dist2[rows, ranks[:, j]] = np.inf
    return ranks


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 1) -> np.ndarray:
    """k-nearest-neighbour labels by Euclidean distance (paper S3 uses k = 1 and 3).

    For unit vectors (embeddings) Euclidean and cosine distance give the same neighbours.
    Deterministic ties: equidistant neighbours are ranked by training index; a vote tie between
    classes goes to the tied class whose nearest member ranks first.

    train_x: (N, D); train_y: (N,) int; test_x: (M, D). Returns (M,) predicted labels.
    """
    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    train_y = np.asarray(train_y)
    _check_xy(train_x, train_y, test_x)
    if not 1 <= k <= len(train_y):
        raise ValueError(f"k={k} must be in [1, number of training points = {len(train_y)}]")
    classes, y_idx = np.unique(train_y, return_inverse=True)
    sq_train = (train_x**2).sum(axis=1)
    out = np.empty(len(test_x), dtype=train_y.dtype)
    for start in range(0, len(test_x), _KNN_CHUNK):  # bounded memory: chunk x N distances
        x = test_x[start:start + _KNN_CHUNK]
        dist2 = (x**2).sum(axis=1)[:, None] - 2.0 * x @ train_x.T + sq_train[None, :]
        nearest = y_idx[_k_smallest(dist2, k)]  # (m, k) class indices
        hits = nearest[:, :, None] == np.arange(len(classes))  # (m, k, K)
        votes = hits.sum(axis=1)
        first = np.where(hits.any(axis=1), hits.argmax(axis=1), k)  # rank of each class's nearest
        out[start:start + _KNN_CHUNK] = classes[np.argmax(votes * (k + 1) - first, axis=1)]
    return out


def linear_probe_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                         ridge: float = 1e-3) -> np.ndarray:
    """Least-squares linear probe on one-hot targets, with bias (paper S3).

    Solves min_W,b ||X W + b - Y||^2 + lam ||W||^2 and predicts the arg-max class (ties: the
    smallest class id). The bias is not penalised, and lam = ``ridge`` * trace(Xc^T Xc) / D
    (Xc: centred training features) is relative to the features' scale, so rescaling a feature
    map does not change its predictions and methods of different scales get the same amount of
    regularisation; the small ridge makes the 1- and 10-label cases, where N < D, well posed.

    train_x: (N, D); train_y: (N,) int; test_x: (M, D). Returns (M,) predicted labels.
    """
    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    train_y = np.asarray(train_y)
    _check_xy(train_x, train_y, test_x)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    classes, y_idx = np.unique(train_y, return_inverse=True)
    weights, mean_x, mean_t = relative_ridge(train_x, np.eye(len(classes))[y_idx], ridge)  # one-hot (N, K)
    scores = (test_x - mean_x) @ weights + mean_t
    return classes[np.argmax(scores, axis=1)]


def relative_ridge(x: np.ndarray, targets: np.ndarray, ridge: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge least squares with an unpenalised bias and a penalty relative to the features' scale:
    min_W,b ||x W + b - targets||^2 + lam ||W||^2 with lam = ``ridge`` * trace(Xc^T Xc) / D
    (Xc: centred ``x``), solved on centred data. x: (N, D) float64; targets: (N,) or (N, K).
    Returns ``(W, mean_x, mean_t)``: W (D,) or (D, K), and the means, so a prediction is
    ``(x' - mean_x) @ W + mean_t`` (the bias is ``mean_t - mean_x @ W``)."""
    mean_x, mean_t = x.mean(axis=0), targets.mean(axis=0)
    xc = x - mean_x
    gram = xc.T @ xc
    gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    weights = np.linalg.lstsq(gram, xc.T @ (targets - mean_t), rcond=None)[0]
    return weights, mean_x, mean_t


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of the per-class recall (chance = 1 / K).

    y_true, y_pred: (M,) labels.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"need two equal-length non-empty 1-d arrays, got {y_true.shape}, {y_pred.shape}")
    return float(np.mean([np.mean(y_pred[y_true == k] == k) for k in np.unique(y_true)]))


# ----------------------------------------------------------------------------------------------
# Baseline features
# ----------------------------------------------------------------------------------------------


def median_composite(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-band median over the valid frames: values (T, C, H, W), mask (T, H, W) -> (C, H, W);
    0 (the normalised mean) where a pixel has no valid frame."""
    x = np.where(mask[:, None], values, np.nan)
    x.sort(axis=0)  # NaN sort last
    n = mask.sum(axis=0)[None, None]  # (1, 1, H, W) valid frames per pixel
    lo = np.take_along_axis(x, np.maximum((n - 1) // 2, 0), axis=0)[0]  # the two middle values
    hi = np.take_along_axis(x, n // 2, axis=0)[0]  # (n = T: T // 2 <= T - 1)
    return np.where(n[0] > 0, 0.5 * (lo + hi), 0.0)


def raw_band_features(sample: Sample) -> FeatureMap:
    """The raw-band baseline (paper: "composites of raw bands"): (sum C, H, W) float32.

    Every source's bands normalised with :func:`aef_lite.data.normalise` (log1p, fixed statistics,
    6-sigma clip); a single-date source gives its bands as they are, a time series a per-band
    median composite of its valid (unmasked) frames. Sources are stacked in the sample's order.
    """
    parts = []
    for series in sample.sources.values():
        z = normalise(series.values.astype(np.float32), series.sensor, series.mask)
        parts.append(median_composite(z, series.mask))
    return np.concatenate(parts).astype(np.float32)


def smoothed_features(raw: FeatureMap, sigma: float) -> FeatureMap:
    """A feature map smoothed by a Gaussian of ``sigma`` px per channel: (D, H, W) -> (D, H, W).

    The "raw bands smoothed over a few pixels" baseline: a strong, cheap competitor of learned
    per-pixel embeddings, since it adds the spatial context an embedding model also sees.
    The filter is :func:`aef_lite.neighbourhood.gaussian_blur` (separable, truncated at 3 sigma,
    edges reflected), the one of the model's neighbourhood group, run in float64.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 px, got {sigma}")
    x = torch.from_numpy(np.asarray(raw, dtype=np.float64)[None])
    return gaussian_blur(x, sigma)[0].numpy().astype(np.float32)


def pca_features(raw: FeatureMap, n_components: int) -> FeatureMap:
    """Project a feature map onto its first principal components (numpy SVD over its pixels).

    raw: (D, H, W); pixels with any non-finite value are left out of the fit and come out NaN.
    Component signs are fixed (largest-magnitude loading positive) so the result is deterministic.
    Returns (n_components, H, W) float32.
    """
    raw = np.asarray(raw)
    if raw.ndim != 3 or not 1 <= n_components <= raw.shape[0]:
        raise ValueError(f"need raw (D, H, W) and 1 <= n_components <= D; got {raw.shape}, {n_components}")
    pixels = raw.reshape(raw.shape[0], -1).T.astype(np.float64)  # (H*W, D)
    valid = np.isfinite(pixels).all(axis=1)
    if valid.sum() < 2:
        raise ValueError("pca_features needs at least 2 pixels with finite values")
    mean = pixels[valid].mean(axis=0)
    _, _, vt = np.linalg.svd(pixels[valid] - mean, full_matrices=False)
    comps = vt[:n_components]
    comps *= np.sign(comps[np.arange(n_components), np.abs(comps).argmax(axis=1)])[:, None]
    return ((pixels - mean) @ comps.T).T.reshape(n_components, *raw.shape[1:]).astype(np.float32)


def standard_features(sample: Sample, embeddings: Mapping[str, FeatureMap], pca_components: int = 6,
                      quantized: bool = True) -> dict[str, FeatureMap]:
    """The feature maps compared throughout the project, on one scene.

    ``embeddings``: name -> embedding field ``(64, H, W)`` of ``sample`` (e.g. from
    :func:`aef_lite.embed.embed_scene` with a trained and an untrained model).
    Returns ``{"raw bands": (C, H, W), f"PCA-{k} of raw bands": (k, H, W)}``, then every
    embedding and, with ``quantized``, the same field after the released dataset's 64-byte int8
    round trip (``f"{name} int8"``).
    """
    raw = raw_band_features(sample)
    out = {"raw bands": raw, f"PCA-{pca_components} of raw bands": pca_features(raw, pca_components)}
    for name, emb in embeddings.items():
        out[name] = emb
        if quantized:
            out[f"{name} int8"] = dequantize(quantize(emb, dim=0, valid=np.isfinite(emb).all(axis=0)))
    return out


# ----------------------------------------------------------------------------------------------
# Evaluation loop and summary
# ----------------------------------------------------------------------------------------------


def _predict(probe: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    if probe == "linear":
        return linear_probe_predict(train_x, train_y, test_x)
    return knn_predict(train_x, train_y, test_x, k=int(probe.removeprefix("knn")))


def evaluate_features(features: Mapping[str, FeatureMap], labels: LabelMap,
                      n_per_class: Sequence[int] = (1, 10), seeds: Iterable[int] = range(5),
                      probes: Sequence[str] = PROBES, block: int = 64, gap: int = 16,
                      max_test: int | None = None, split: str = "spatial") -> list[dict]:
    """Sparse-label transfer of several feature maps on one label map (paper S3-S6).

    For every (n, seed) one :func:`spatial_split` (or, with ``split="random"``,
    :func:`random_split`) is drawn and shared by all methods and probes,
    so methods are compared on identical points. Probes: ``"knn1"``, ``"knn3"``
    (:func:`knn_predict`) and ``"linear"`` (:func:`linear_probe_predict`); a kNN probe with
    k > n is skipped (with one label per class a 3-NN vote always ties and reduces to 1-NN).

    features: method name -> (D, H, W) map on the label map's grid (e.g. embeddings, raw bands,
    PCA of raw bands, an untrained encoder's embeddings, dequantised embeddings).
    Returns one row per (n, seed, method, probe): dicts with ``method``, ``probe``,
    ``n_per_class``, ``seed``, ``balanced_accuracy``, ``n_classes``, ``n_train``, ``n_test``.
    """
    bad = [p for p in probes if p not in PROBES]
    if bad:
        raise ValueError(f"unknown probes {bad}; choose from {PROBES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    for name, fmap in features.items():
        if fmap.ndim != 3 or fmap.shape[1:] != labels.ids.shape:
            raise ValueError(f"features {name!r} must be (D, {labels.ids.shape[0]}, {labels.ids.shape[1]}), "
                             f"got {fmap.shape}")
    rows = []
    for n in n_per_class:
        for seed in seeds:
            part = (spatial_split(labels.ids, n, seed, block=block, gap=gap, max_test=max_test)
                    if split == "spatial" else random_split(labels.ids, n, seed, max_test=max_test))
            for name, fmap in features.items():
                train_x = fmap[:, part.train_rc[:, 0], part.train_rc[:, 1]].T
                test_x = fmap[:, part.test_rc[:, 0], part.test_rc[:, 1]].T
                for probe in probes:
                    if probe.startswith("knn") and int(probe.removeprefix("knn")) > n:
                        continue  # k > labels per class: the vote ties and reduces to 1-NN
                    pred = _predict(probe, train_x, part.train_y, test_x)
                    rows.append(dict(method=name, probe=probe, n_per_class=int(n), seed=int(seed),
                                     balanced_accuracy=balanced_accuracy(part.test_y, pred),
                                     n_classes=len(part.classes), n_train=len(part.train_y),
                                     n_test=len(part.test_y)))
    return rows


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Mean and standard deviation (ddof=1; 0 for one seed) of balanced accuracy over seeds, per
    (method, probe, n_per_class), in order of first appearance. Returns dicts with ``method``,
    ``probe``, ``n_per_class``, ``mean``, ``std``, ``n_seeds``."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["probe"], r["n_per_class"]), []).append(r["balanced_accuracy"])
    return [dict(method=m, probe=p, n_per_class=n, mean=float(np.mean(v)),
                 std=float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, n_seeds=len(v))
            for (m, p, n), v in groups.items()]


def format_table(summary: Sequence[Mapping]) -> str:
    """A compact text table of :func:`summarise` output: one line per method, one column per
    (probe, n), cells ``mean±std`` of balanced accuracy."""
    methods = list(dict.fromkeys(s["method"] for s in summary))
    columns = list(dict.fromkeys((s["probe"], s["n_per_class"]) for s in summary))
    cell = {(s["method"], s["probe"], s["n_per_class"]): f"{s['mean']:.3f}±{s['std']:.3f}" for s in summary}
    header = ["method", *(f"{p} n={n}" for p, n in columns)]
    body = [[m, *(cell.get((m, *c), "-") for c in columns)] for m in methods]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *body])
