"""The official Satellite Embedding tutorials' recipes as small numpy tools, with their evaluations.

The Earth Engine tutorials for the released dataset (paper "Released dataset"; the uses of S3-S6)
cluster the 64-d unit vectors with k-means, search for pixels similar to a few reference points
by dot product, classify from ~10 points per class and regress a continuous variable on them.
:mod:`aef_lite.evaluate` holds the classification protocol (splits, kNN, linear probe, balanced
accuracy, raw-band baselines); this module adds what the other three recipes need to be *scored*,
not just drawn:

- clustering: seeded k-means (k-means++ seeding, Lloyd iterations, restarts) and the mapping of
  clusters to classes by a majority vote of a few labelled pixels;
- similarity search: cosine scores against the mean direction of reference points, a threshold
  chosen on labelled pixels (best F1), precision / recall / F1 and the ROC AUC;
- regression: block means of a feature map, the fractional cover of a class per block, ridge
  regression, and spatial cross-validation over contiguous folds of blocks separated by a gap.

Everything is numpy only and deterministic given the seeds. Shapes: a pixel table is (N, D), a
feature map (D, H, W), a block grid (D, h, w) with h = H // block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from aef_lite.evaluate import relative_ridge
from aef_lite.timeseries import roc_auc as timeseries_auc

# ----------------------------------------------------------------------------------------------
# k-means and cluster -> class mapping
# ----------------------------------------------------------------------------------------------


@dataclass
class KMeansResult:
    """centres: (k, D) float64; labels: (N,) int64 cluster of each fitted point; inertia: the sum of
    squared distances of the points to their centres; n_iter: Lloyd iterations of the kept run."""

    centres: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int


def _sq_dist(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, D), (k, D) -> (N, k) squared Euclidean distances (clipped at 0 against rounding)."""
    d2 = (x**2).sum(axis=1)[:, None] - 2.0 * x @ centres.T + (centres**2).sum(axis=1)[None, :]
    return np.maximum(d2, 0.0)


def kmeans_predict(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest centre of each point: x (N, D), centres (k, D) -> (N,) int64 (ties: lowest index)."""
    x = np.asarray(x, dtype=np.float64)
    return np.argmin(_sq_dist(x, np.asarray(centres, dtype=np.float64)), axis=1).astype(np.int64)


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre uniform, each next one a
    point drawn with probability proportional to its squared distance to the nearest centre."""
    centres = [x[rng.integers(len(x))]]
    d2 = _sq_dist(x, centres[0][None])[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        centres.append(x[i])
        d2 = np.minimum(d2, _sq_dist(x, x[i][None])[:, 0])
    return np.stack(centres)


def kmeans_fit(x: np.ndarray, k: int, seed: int = 0, n_init: int = 3, max_iter: int = 100) -> KMeansResult:
    """k-means (Lloyd's algorithm) with k-means++ seeding and ``n_init`` restarts.

    Each restart seeds with :func:`_kmeans_plus_plus` from ``np.random.default_rng(seed)`` (the
    restarts share one generator, so the same seed gives the same result), then alternates
    assignment and centre update until no assignment changes or ``max_iter`` iterations; an empty
    cluster is re-seeded at the point farthest from its centre. The restart with the lowest inertia
    is kept. For unit vectors (embeddings) the squared distance is 2 - 2 cos, so k-means groups by
    cosine similarity; raw bands should be on comparable scales first.

    x: (N, D) points, N >= k. Returns a :class:`KMeansResult`.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"x must be a finite (N, D) array, got shape {x.shape}")
    if not 1 <= k <= len(x) or n_init < 1 or max_iter < 1:
        raise ValueError(f"need 1 <= k <= N = {len(x)}, n_init >= 1, max_iter >= 1; got {k}, {n_init}, {max_iter}")
    rng = np.random.default_rng(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        centres = _kmeans_plus_plus(x, k, rng)
        labels = np.full(len(x), -1, dtype=np.int64)
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            d2 = _sq_dist(x, centres)
            new = np.argmin(d2, axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
            dist = d2[np.arange(len(x)), labels]
            for j in range(k):
                members = labels == j
                if members.any():
                    centres[j] = x[members].mean(axis=0)
                else:  # re-seed an empty cluster at the worst-fitted point
                    far = int(np.argmax(dist))
                    centres[j], labels[far], dist[far] = x[far], j, 0.0
        inertia = float(_sq_dist(x, centres)[np.arange(len(x)), labels].sum())
        if best is None or inertia < best.inertia:
            best = KMeansResult(centres=centres.copy(), labels=labels.copy(), inertia=inertia, n_iter=n_iter)
    return best


def cluster_to_class(clusters: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Name each cluster after the majority class of the labelled points that fall in it.

    clusters: (N,) cluster ids in 0..k-1 of labelled points; y: (N,) their class ids (> 0).
    Returns (k,) int64, the class of each cluster; a tie goes to the smallest class id, and a
    cluster that no labelled point falls in gets 0 (unassigned: its pixels count as errors).
    With a class-balanced labelled set (e.g. 10 per class) every class has the same vote weight.
    """
    clusters, y = np.asarray(clusters), np.asarray(y)
    if clusters.shape != y.shape or clusters.ndim != 1:
        raise ValueError(f"need equal-length 1-d arrays, got {clusters.shape}, {y.shape}")
    if clusters.size and (clusters.min() < 0 or clusters.max() >= k or y.min() < 1):
        raise ValueError("clusters must be in 0..k-1 and class ids >= 1")
    votes = np.zeros((k, int(y.max(initial=0)) + 1), dtype=np.int64)
    np.add.at(votes, (clusters, y), 1)
    return np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), 0).astype(np.int64)


def purity(clusters: np.ndarray, y: np.ndarray) -> float:
    """Share of points whose cluster's majority class (over *all* the points given) is their own
    class: the best any cluster -> class mapping can score in plain accuracy. A single cluster
    scores the share of the largest class. clusters, y: (N,) ids."""
    clusters, y = np.asarray(clusters), np.asarray(y)
    if clusters.shape != y.shape or clusters.ndim != 1 or clusters.size == 0:
        raise ValueError(f"need equal-length non-empty 1-d arrays, got {clusters.shape}, {y.shape}")
    _, ci = np.unique(clusters, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    table = np.zeros((ci.max() + 1, yi.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, yi), 1)
    return float(table.max(axis=1).sum() / len(y))


# ----------------------------------------------------------------------------------------------
# Similarity search: scores, threshold, metrics
# ----------------------------------------------------------------------------------------------


def standardise(x: np.ndarray) -> np.ndarray:
    """Each column of a pixel table to zero mean and unit standard deviation: (N, D) -> (N, D)
    float64 (a constant column stays 0). Raw bands need this before a cosine similarity, or the
    brightest bands dominate it; embeddings are unit vectors already and are used as they are."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def cosine_scores(x: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Cosine similarity of every point with the mean direction of the reference points.

    x: (N, D); refs: (R, D). The query is the mean of the unit-normalised references, renormalised
    (for unit-vector embeddings: the mean embedding, as in the tutorials; the score is then the
    dot product of each pixel's embedding with it). Returns (N,) float64 in [-1, 1].
    """
    x, refs = np.asarray(x, dtype=np.float64), np.atleast_2d(np.asarray(refs, dtype=np.float64))
    if x.ndim != 2 or refs.shape[1] != x.shape[1]:
        raise ValueError(f"need x (N, D) and refs (R, D); got {x.shape}, {refs.shape}")
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    query = unit(unit(refs).mean(axis=0))
    return unit(x) @ query


def precision_recall_f1(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of boolean predictions against boolean truth, both (N,).
    An empty prediction has precision 0 (and F1 0)."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim != 1:
        raise ValueError(f"need equal-length 1-d arrays, got {pred.shape}, {truth.shape}")
    tp = np.count_nonzero(pred & truth)
    precision = tp / max(np.count_nonzero(pred), 1)
    recall = tp / max(np.count_nonzero(truth), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(precision), float(recall), float(f1)


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold t that maximises F1 of ``scores >= t`` on a labelled set.

    scores: (N,); truth: (N,) bool with at least one positive. Candidates are the scores of the
    positives; among equal F1 the highest t wins. Choose it on pixels *separate* from the ones
    you evaluate on, or the F1 you report is optimistic.
    """
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    if scores.shape != truth.shape or scores.ndim != 1 or not truth.any():
        raise ValueError("need equal-length 1-d scores and truth with at least one positive")
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    tp = np.cumsum(t)
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each run of equal scores
    tp, n_pred, cand = tp[last], np.flatnonzero(last) + 1, s[last]  # predicting score >= cand
    f1 = 2 * tp / (n_pred + truth.sum())
    f1[~np.isin(cand, scores[truth])] = -1.0  # only the positives' scores are candidates
    return float(cand[np.argmax(f1)])  # argmax: the first, i.e. the highest threshold, among ties


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count 1/2), from the ranks (Mann-Whitney U). Threshold-free; 0.5 = chance.
    scores: (N,); truth: (N,) bool with both classes present (:func:`aef_lite.timeseries.roc_auc`,
    which returns NaN for a single class, with a clear error instead)."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth, dtype=bool)
    n_pos, n_neg = np.count_nonzero(truth), np.count_nonzero(~truth)
    if scores.shape != truth.shape or scores.ndim != 1 or n_pos == 0 or n_neg == 0:
        raise ValueError("need equal-length 1-d scores and truth with positives and negatives")
    return timeseries_auc(scores, truth)


# ----------------------------------------------------------------------------------------------
# Regression: block targets and features, ridge, spatial cross-validation
# ----------------------------------------------------------------------------------------------


def block_means(fmap: np.ndarray, block: int) -> np.ndarray:
    """Mean of a feature map over non-overlapping ``block`` x ``block`` px blocks.

    fmap: (D, H, W) -> (D, H // block, W // block) float64; the last H % block rows and W % block
    columns are dropped. (Block means of unit vectors are not unit vectors; their length says how
    uniform the block is.)
    """
    fmap = np.asarray(fmap, dtype=np.float64)
    if fmap.ndim != 3 or block < 1 or block > min(fmap.shape[1:]):
        raise ValueError(f"need fmap (D, H, W) and 1 <= block <= min(H, W); got {fmap.shape}, {block}")
    d, h, w = fmap.shape[0], fmap.shape[1] // block, fmap.shape[2] // block
    return fmap[:, :h * block, :w * block].reshape(d, h, block, w, block).mean(axis=(2, 4))


def block_fraction(mask: np.ndarray, block: int, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fractional cover of ``mask`` per block, among the ``valid`` pixels of the block.

    mask: (H, W) bool (e.g. ``labels.ids == forest``); valid: (H, W) bool (e.g. ``labels.ids > 0``;
    None = all). Returns ``(fraction, valid_share)``, both (H // block, W // block) float64:
    fraction = #(mask & valid) / #valid (NaN for a block without valid pixels), valid_share =
    #valid / block². Keep only blocks with a high valid_share as regression targets.
    """
    mask = np.asarray(mask, dtype=bool)
    valid = np.ones_like(mask) if valid is None else np.asarray(valid, dtype=bool)
    if mask.shape != valid.shape or mask.ndim != 2:
        raise ValueError(f"need mask and valid of the same (H, W) shape, got {mask.shape}, {valid.shape}")
    share = block_means(valid[None].astype(np.float64), block)[0]
    covered = block_means((mask & valid)[None].astype(np.float64), block)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(share > 0, covered / share, np.nan), share


@dataclass
class Ridge:
    """A fitted ridge regression: prediction = x @ weights + bias. weights: (D,); bias: float."""

    weights: np.ndarray
    bias: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x: (N, D) -> (N,) predictions."""
        return np.asarray(x, dtype=np.float64) @ self.weights + self.bias


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float = 1e-3) -> Ridge:
    """Ridge regression with an unpenalised bias: min_w,b ||x w + b - y||² + lam ||w||².

    As :func:`aef_lite.evaluate.linear_probe_predict`, lam = alpha * trace(Xc^T Xc) / D (Xc: the
    centred training features), so the penalty is relative to the features' scale: rescaling the
    features does not change the predictions, and feature maps of different scales (unit-vector
    embeddings, normalised raw bands) get the same amount of regularisation.

    x: (N, D); y: (N,). Returns a :class:`Ridge`.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (len(x),) or len(x) < 2 or alpha < 0:
        raise ValueError(f"need x (N, D), y (N,), N >= 2 and alpha >= 0; got {x.shape}, {y.shape}, {alpha}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    weights, mean_x, mean_y = relative_ridge(x, y, alpha)
    return Ridge(weights=weights, bias=float(mean_y - mean_x @ weights))


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot on (N,) arrays (SS_tot about the mean of
    ``y_true``): 1 = perfect, 0 = as good as predicting the test set's own mean, < 0 worse."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) < 2:
        raise ValueError(f"need equal-length 1-d arrays of length >= 2, got {y_true.shape}, {y_pred.shape}")
    ss_tot = ((y_true - y_true.mean()) ** 2).sum()
    if ss_tot == 0:
        raise ValueError("y_true is constant: R² is undefined")
    return float(1.0 - ((y_true - y_pred) ** 2).sum() / ss_tot)


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean |y_true - y_pred| over (N,) arrays."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"need equal-length non-empty 1-d arrays, got {y_true.shape}, {y_pred.shape}")
    return float(np.abs(y_true - y_pred).mean())


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """(h, w) bool -> (h, w) bool: True within Chebyshev distance ``radius`` of a True cell."""
    if radius == 0:
        return mask.copy()
    out = np.pad(mask, radius)
    for axis in (0, 1):
        out = np.lib.stride_tricks.sliding_window_view(out, 2 * radius + 1, axis=axis).any(axis=-1)
    return out


def spatial_folds(shape: tuple[int, int], group: int, n_folds: int, gap: int = 1, seed: int = 0
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Spatial cross-validation folds over a grid of blocks: contiguous groups, with a buffer.

    The (h, w) grid of blocks is cut into squares of ``group`` x ``group`` blocks (the last row and
    column of squares may be smaller); the squares are dealt at random (``seed``) to ``n_folds``
    folds in equal numbers (up to one), so every fold's test set is a set of contiguous squares
    spread over the scene. The training set of a fold is every block at a Chebyshev distance
    > ``gap`` blocks from all its test blocks; the buffer in between is used by neither.
    Neighbouring blocks look alike and have similar targets, so without the buffer a test block's
    neighbour in the training set would leak its answer (the block-level version of
    :func:`aef_lite.evaluate.spatial_split`).

    Returns ``n_folds`` pairs ``(train, test)`` of (h, w) bool masks; the test masks partition the grid.
    """
    h, w = shape
    n_r, n_c = -(-h // max(group, 1)), -(-w // max(group, 1))
    if group < 1 or gap < 0 or not 2 <= n_folds <= n_r * n_c:
        raise ValueError(f"need group >= 1, gap >= 0 and 2 <= n_folds <= {n_r * n_c} squares; "
                         f"got {group}, {gap}, {n_folds}")
    rng = np.random.default_rng(seed)
    fold_of_square = rng.permutation(np.arange(n_r * n_c) % n_folds).reshape(n_r, n_c)
    fold = fold_of_square[np.arange(h)[:, None] // group, np.arange(w)[None, :] // group]  # (h, w)
    return [(~_dilate(fold == k, gap), fold == k) for k in range(n_folds)]


def spatial_cv_ridge(features: Mapping[str, np.ndarray], target: np.ndarray, keep: np.ndarray,
                     folds: list[tuple[np.ndarray, np.ndarray]], alpha: float = 1e-3,
                     min_test: int = 10) -> list[dict]:
    """Ridge regression of a block target on several block-feature grids, by spatial CV.

    features: name -> (D, h, w) block features (e.g. :func:`block_means` of embeddings and of raw
    bands); target: (h, w); keep: (h, w) bool, the blocks to use (finite target, enough labels);
    folds: from :func:`spatial_folds`. For each fold with at least ``min_test`` kept test blocks
    (and a test target that is not constant), every method is fitted on the kept training blocks
    and scored on the kept test blocks, next to the trivial baseline ``"training mean"``, which
    predicts the training blocks' mean target everywhere.

    Returns one dict per (fold, method): ``fold``, ``method``, ``r2``, ``mae``, ``n_train``, ``n_test``.
    """
    target, keep = np.asarray(target, dtype=np.float64), np.asarray(keep, dtype=bool)
    if keep.shape != target.shape or not np.isfinite(target[keep]).all():
        raise ValueError("keep must match target's (h, w) shape and select finite targets only")
    for name, f in features.items():
        if f.ndim != 3 or f.shape[1:] != target.shape:
            raise ValueError(f"features {name!r} must be (D, {target.shape[0]}, {target.shape[1]}), got {f.shape}")
    rows = []
    for k, (train, test) in enumerate(folds):
        tr, te = train & keep, test & keep
        y_tr, y_te = target[tr], target[te]
        if te.sum() < min_test or tr.sum() < 2 or np.ptp(y_te) == 0:
            continue
        preds = {"training mean": np.full(len(y_te), y_tr.mean())}
        for name, f in features.items():
            preds[name] = ridge_fit(f[:, tr].T, y_tr, alpha).predict(f[:, te].T)
        for name, p in preds.items():
            rows.append(dict(fold=k, method=name, r2=r2_score(y_te, p), mae=mean_absolute_error(y_te, p),
                             n_train=int(tr.sum()), n_test=int(te.sum())))
    return rows
