"""Which input frames a summary sees: the support window of a valid period (paper S2.2.3).

The support period is the span of the input timestamps; the valid period ``[t_s, t_e)`` is the
period the embedding summarises, and may hold no input (interpolation) or lie beyond the inputs
(extrapolation). The paper does not say how many frames around the valid period a model is
given; aef-lite fixes it here, once, for training (:mod:`aef_lite.sampling`) and inference
(:func:`aef_lite.embed.embed_scene`) alike:

* the frames inside :func:`support_window` of the valid period: the period itself when it is at
  least :data:`SUPPORT_DAYS` long, else a window of :data:`SUPPORT_DAYS` centred on the period;
* at most :data:`MAX_FRAMES` per source, evenly spread in time (first and last kept).

Training draws each row's valid period as a :data:`SUPPORT_DAYS` window and gives the model its
frames, so a calendar-year embedding at inference sees what a training row saw. The per-source
summary periods of training (:func:`aef_lite.objective.summary_periods`) lie anywhere in or
around that window, so shorter periods are trained with support around them, as at inference.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from aef_lite.data import Sample, SourceSeries

SUPPORT_DAYS = 365.0
"""Length of the support window of periods shorter than a year (days)."""

MAX_FRAMES = 8
"""Frames per source a summary sees at most (training and inference)."""


def support_window(period: tuple[float, float] | np.ndarray) -> tuple[float, float]:
    """``[start, end)`` days of the input frames for the valid period ``[t_s, t_e)``."""
    t_s, t_e = (float(x) for x in np.asarray(period, dtype=np.float64))
    if not np.isfinite([t_s, t_e]).all() or t_e <= t_s:
        raise ValueError(f"a valid period needs finite days with t_s < t_e, got [{t_s}, {t_e})")
    if t_e - t_s >= SUPPORT_DAYS:
        return t_s, t_e
    centre = 0.5 * (t_s + t_e)
    return centre - SUPPORT_DAYS / 2, centre + SUPPORT_DAYS / 2


def frames_in(series: SourceSeries, start: float, end: float) -> SourceSeries:
    """The frames of ``series`` with ``start <= day < end`` (possibly none); ``series`` itself, not a
    copy of its arrays, when every frame is inside."""
    keep = (series.days >= start) & (series.days < end)
    if keep.all():
        return series
    return replace(series, values=series.values[keep], days=series.days[keep], mask=series.mask[keep])


def support_of(sample: Sample, period: tuple[float, float] | np.ndarray) -> Sample:
    """``sample`` limited to the frames in the support window of ``period`` (every source)."""
    start, end = support_window(period)
    return replace(sample, sources={k: frames_in(s, start, end) for k, s in sample.sources.items()})
