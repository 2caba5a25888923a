"""Classical per-pixel time-series baselines, NDVI and rank-agreement metrics (numpy only).

The continuous-time claim of AEF (paper S2.2.1-S2.2.2: summarise any valid period, decode any
instant in it) is only worth something against what a remote-sensing analyst would do with the
same clear-sky observations, pixel by pixel:

* :func:`nearest_observation`: the clear observation closest in time;
* :func:`linear_interpolation`: straight line between the clear observations just before and
  just after, the nearest one beyond the ends;
* :func:`carry_observation`: last observation carried forward (or first carried backward);
* :func:`harmonic_fit`: least-squares mean (+ optional trend) + annual + semi-annual sin/cos per
  pixel, the model of CCDC (Zhu & Woodcock 2014), with a fall-back to the mean where a pixel has
  too few clear observations.

Shared array conventions: ``values`` (T, C, H, W) float reflectance, ``mask`` (T, H, W) bool
(True = clear), ``days`` (T,) float64 days since 1970-01-01 (need not be sorted for the
harmonic fit; sorted for the others), ``target_days`` (N,). Predictions are (N, C, H, W)
float64 and NaN where the method has nothing to predict from (e.g. a pixel with no clear
observation); callers score only finite predictions.

Metrics: :func:`spearman` (rank correlation) and :func:`roc_auc` (Mann-Whitney), both with
average ranks for ties, and :func:`masked_mae`.
"""

from __future__ import annotations

import numpy as np

YEAR_DAYS = 365.25


def _check(values: np.ndarray, mask: np.ndarray, days: np.ndarray, sorted_days: bool = True) -> None:
    if values.ndim != 4:
        raise ValueError(f"values must be (T, C, H, W), got shape {values.shape}")
    t, _, h, w = values.shape
    if mask.shape != (t, h, w) or mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool (T, H, W) = {(t, h, w)}, got {mask.dtype} {mask.shape}")
    if days.shape != (t,):
        raise ValueError(f"days must be (T,) = ({t},), got {days.shape}")
    if sorted_days and np.any(np.diff(days) < 0):
        raise ValueError("days must be sorted in increasing order")


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values (T, C, H, W), index (N, H, W) int in [-1, T) -> (N, C, H, W) float64, NaN where -1."""
    safe = np.clip(index, 0, None)
    out = np.take_along_axis(values.astype(np.float64), safe[:, None].repeat(values.shape[1], axis=1), axis=0)
    out[np.broadcast_to((index < 0)[:, None], out.shape)] = np.nan
    return out


def neighbour_indices(mask: np.ndarray, days: np.ndarray, target_days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per target and pixel, the frame index of the last clear observation at or before the target
    and of the first one at or after it.

    mask: (T, H, W) bool; days: (T,) sorted; target_days: (N,). Returns ``(before, after)``, each
    (N, H, W) int64, -1 where there is no such observation.
    """
    t = mask.shape[0]
    target_days = np.atleast_1d(np.asarray(target_days, dtype=np.float64))
    idx = np.arange(t)[:, None, None]
    last_upto = np.maximum.accumulate(np.where(mask, idx, -1), axis=0)  # (T, H, W)
    first_from = np.minimum.accumulate(np.where(mask, idx, t)[::-1], axis=0)[::-1]
    k_before = np.searchsorted(days, target_days, side="right") - 1  # last frame with day <= target
    k_after = np.searchsorted(days, target_days, side="left")  # first frame with day >= target
    before = np.where((k_before >= 0)[:, None, None], last_upto[np.clip(k_before, 0, t - 1)], -1)
    after = np.where((k_after < t)[:, None, None], first_from[np.clip(k_after, 0, t - 1)], t)
    return before, np.where(after >= t, -1, after)


def carry_observation(values: np.ndarray, mask: np.ndarray, days: np.ndarray, target_days: np.ndarray,
                      direction: str = "forward") -> np.ndarray:
    """Last clear observation carried forward (``"forward"``: at or before the target) or first
    clear observation carried backward (``"backward"``: at or after the target).

    Returns (N, C, H, W) float64, NaN where the pixel has no clear observation on that side.
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    _check(values, mask, days)
    before, after = neighbour_indices(mask, days, target_days)
    return _gather(values, before if direction == "forward" else after)


def nearest_observation(values: np.ndarray, mask: np.ndarray, days: np.ndarray,
                        target_days: np.ndarray) -> np.ndarray:
    """The clear observation closest in time to each target, per pixel (ties: the earlier one).

    Returns (N, C, H, W) float64, NaN only where the pixel has no clear observation at all.
    """
    _check(values, mask, days)
    target_days = np.atleast_1d(np.asarray(target_days, dtype=np.float64))
    before, after = neighbour_indices(mask, days, target_days)
    tgt = target_days[:, None, None]
    gap_before = np.where(before >= 0, tgt - days[np.clip(before, 0, None)], np.inf)
    gap_after = np.where(after >= 0, days[np.clip(after, 0, None)] - tgt, np.inf)
    return _gather(values, np.where(gap_before <= gap_after, before, after))


def linear_interpolation(values: np.ndarray, mask: np.ndarray, days: np.ndarray,
                         target_days: np.ndarray) -> np.ndarray:
    """Linear interpolation in time between the clear observations just before and just after
    each target, per pixel; the nearest clear observation where only one side has one.

    Returns (N, C, H, W) float64, NaN only where the pixel has no clear observation at all.
    """
    _check(values, mask, days)
    target_days = np.atleast_1d(np.asarray(target_days, dtype=np.float64))
    before, after = neighbour_indices(mask, days, target_days)
    lo, hi = _gather(values, before), _gather(values, after)
    d_lo = np.where(before >= 0, days[np.clip(before, 0, None)], np.nan)
    d_hi = np.where(after >= 0, days[np.clip(after, 0, None)], np.nan)
    span = d_hi - d_lo
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(span > 0, (target_days[:, None, None] - d_lo) / span, 0.0)[:, None]
    both = lo + w * (hi - lo)
    return np.where(np.isnan(lo), hi, np.where(np.isnan(hi), lo, both))


def harmonic_design(days: np.ndarray, trend: bool = False, t_ref: float = 0.0) -> np.ndarray:
    """Regressors of the harmonic model at ``days`` (N,): (N, K) float64 with columns
    ``[1, (t - t_ref) / 365.25 (if trend), sin/cos(2 pi t / 365.25), sin/cos(4 pi t / 365.25)]``;
    K = 5, or 6 with the trend."""
    days = np.atleast_1d(np.asarray(days, dtype=np.float64))
    angle = 2 * np.pi * days / YEAR_DAYS
    cols = [np.ones_like(days)]
    if trend:
        cols.append((days - t_ref) / YEAR_DAYS)
    cols += [np.sin(angle), np.cos(angle), np.sin(2 * angle), np.cos(2 * angle)]
    return np.stack(cols, axis=1)


def harmonic_fit(values: np.ndarray, mask: np.ndarray, days: np.ndarray, target_days: np.ndarray,
                 trend: bool = False, min_obs: int | None = None, ridge: float = 1e-3) -> np.ndarray:
    """Per-pixel least-squares harmonic model (CCDC-like), evaluated at ``target_days``.

    Each pixel and band gets ``y(t) = a0 [+ a1 t] + b1 sin(wt) + c1 cos(wt) + b2 sin(2wt) + c2 cos(2wt)``
    with w = 2 pi / 365.25 days, fitted to its clear observations. A small ``ridge`` penalty (times
    the number of observations) on every coefficient but the mean keeps the fit finite when the
    observations cover only part of the year; ``ridge=0`` is ordinary least squares. Pixels with
    fewer than ``min_obs`` clear observations (default: 2 K, K = number of coefficients) get their
    clear mean instead.

    Returns (N, C, H, W) float64, NaN where the pixel has no clear observation at all.
    """
    _check(values, mask, days, sorted_days=False)
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    days = np.asarray(days, dtype=np.float64)
    t_ref = float(days.mean())
    design = harmonic_design(days, trend, t_ref)  # (T, K)
    k = design.shape[1]
    min_obs = 2 * k if min_obs is None else int(min_obs)
    t, c, h, w = values.shape
    y = np.moveaxis(values.astype(np.float64), 0, -1).reshape(c, h * w, t)  # (C, P, T)
    wgt = mask.reshape(t, h * w).T.astype(np.float64)  # (P, T)
    n_obs = wgt.sum(axis=1)  # (P,)
    gram = np.einsum("pt,tk,tl->pkl", wgt, design, design)  # (P, K, K)
    penalty = np.full(k, ridge)
    penalty[0] = 0.0
    gram += np.maximum(n_obs, 1)[:, None, None] * np.diag(penalty)
    rhs = np.einsum("pt,tk,cpt->cpk", wgt, design, y)  # (C, P, K)
    fit = n_obs >= max(min_obs, 1)
    coef = np.zeros((c, h * w, k))
    if fit.any():
        coef[:, fit] = np.linalg.solve(gram[fit][None], rhs[:, fit][..., None])[..., 0]
    pred = np.einsum("nk,cpk->ncp", harmonic_design(target_days, trend, t_ref), coef)  # (N, C, P)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (y * wgt[None]).sum(axis=-1) / n_obs[None]  # (C, P), NaN without observations
    pred = np.where(fit[None, None], pred, mean[None])
    return pred.reshape(len(np.atleast_1d(target_days)), c, h, w)


# ----------------------------------------------------------------------------------------------
# NDVI
# ----------------------------------------------------------------------------------------------


def clear_ndvi(values: np.ndarray, mask: np.ndarray, red: int = 0, nir: int = 1) -> np.ndarray:
    """NDVI = (NIR - red) / (NIR + red) of every frame: (T, C, H, W) reflectance + (T, H, W) clear
    mask -> (T, H, W) float64, NaN where not clear or NIR + red <= 0."""
    r, n = values[:, red].astype(np.float64), values[:, nir].astype(np.float64)
    total = n + r
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (n - r) / total
    return np.where(mask & (total > 0), ndvi, np.nan)


def seasonal_ndvi(values: np.ndarray, mask: np.ndarray, days: np.ndarray, start: float, end: float,
                  red: int = 0, nir: int = 1) -> np.ndarray:
    """Median clear-sky NDVI over the frames with ``start <= day < end``: (H, W) float64, NaN where
    a pixel has no clear observation in the window."""
    keep = (days >= start) & (days < end)
    ndvi = clear_ndvi(values[keep], mask[keep], red, nir)
    out = np.full(values.shape[-2:], np.nan)
    seen = np.isfinite(ndvi).any(axis=0)
    if seen.any():
        out[seen] = np.nanmedian(ndvi[:, seen], axis=0)
    return out


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def masked_mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean absolute error per band over the pixels where ``mask`` is True: pred, target (..., C, H, W),
    mask (..., H, W) bool -> (C,) float64 (NaN if the mask is empty)."""
    err = np.abs(np.asarray(pred, dtype=np.float64) - target)  # (..., C, H, W)
    err = np.moveaxis(err, -3, 0)[:, mask]  # (C, n)
    return err.mean(axis=1) if err.shape[1] else np.full(err.shape[0], np.nan)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-d array, ties sharing their average rank: (n,) -> (n,) float64."""
    x = np.asarray(x).ravel()
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    group_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally long 1-d arrays (average ranks for ties); NaN if
    either is constant or they have fewer than 2 entries."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs arrays of the same length, got {a.shape} and {b.shape}")
    if a.size < 2:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (higher = more positive) for bool ``labels``: the
    probability that a random positive outscores a random negative (ties count 1/2). NaN without
    both classes."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if labels.dtype != np.bool_ or labels.shape != scores.shape:
        raise ValueError(f"labels must be bool with the shape of scores {scores.shape}, got "
                         f"{labels.dtype} {labels.shape}")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
