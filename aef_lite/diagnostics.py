"""Diagnostics of an embedding field: collapse (participation ratio) and block artefacts.

* :func:`participation_ratio`: ``(sum lambda)^2 / sum lambda^2`` of the eigenvalues of the
  pixels' covariance; 1 if all variance lies along one direction, D if spread evenly over D. A
  field whose ratio is below that of the raw bands it came from has collapsed onto fewer
  directions than the data has.
* :func:`grid_line_ratio`: how much more neighbouring pixels differ across the lines of a
  ``period`` px grid (the coarse operators' cells, tile seams) than elsewhere; about 1 for a
  field without block artefacts (raw bands: 1.06-1.08 on the shipped Sentinel-2 scenes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _pixels(fmap: np.ndarray) -> np.ndarray:
    if fmap.ndim != 3:
        raise ValueError(f"a feature map must be (D, H, W), got shape {fmap.shape}")
    x = fmap.reshape(fmap.shape[0], -1).T.astype(np.float64)
    return x[np.isfinite(x).all(axis=1)]


def participation_ratio(fmap: np.ndarray) -> float:
    """Participation ratio of a ``(D, H, W)`` map's pixel covariance (finite pixels only)."""
    x = _pixels(fmap)
    if len(x) < 2:
        raise ValueError("participation_ratio needs at least 2 finite pixels")
    ev = np.clip(np.linalg.eigvalsh(np.cov(x.T)), 0.0, None)
    return float(ev.sum() ** 2 / max((ev ** 2).sum(), 1e-300))


def grid_line_ratio(fmap: np.ndarray, periods: Sequence[int] = (8, 16)) -> float:
    """Mean ``|f(y, x+1) - f(y, x)|`` (and the same along y) across the lines of a grid of each
    ``period`` px divided by the mean elsewhere, for a ``(D, H, W)`` map; the largest over
    ``periods``. Lines sit between pixels ``k * period - 1`` and ``k * period``."""
    dx = np.linalg.norm(np.diff(fmap, axis=2), axis=0)  # (H, W-1): between x and x+1
    dy = np.linalg.norm(np.diff(fmap, axis=1), axis=0)  # (H-1, W)
    ratios = []
    for p in periods:
        on_x = (np.arange(dx.shape[1]) + 1) % p == 0
        on_y = (np.arange(dy.shape[0]) + 1) % p == 0
        across = np.concatenate([dx[:, on_x].ravel(), dy[on_y].ravel()])
        other = np.concatenate([dx[:, ~on_x].ravel(), dy[~on_y].ravel()])
        across, other = across[np.isfinite(across)], other[np.isfinite(other)]
        if not len(across) or not len(other):
            raise ValueError(f"the map is too small for a {p} px grid")
        ratios.append(float(across.mean() / max(other.mean(), 1e-12)))
    return max(ratios)


def mean_cosine_to_mean(emb: np.ndarray) -> float:
    """Mean cosine of each unit pixel vector of ``(E, H, W)`` to the field's mean direction
    (1 = every pixel the same vector)."""
    x = _pixels(emb)
    m = x.mean(axis=0)
    return float((x @ (m / max(np.linalg.norm(m), 1e-12))).mean())
