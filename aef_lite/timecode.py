"""Continuous-time sinusoidal timecodes (paper S2.2.1, "continuous time").

AEF has no notion of a frame index: every input frame carries its own acquisition time and
every embedding summarises a *valid period* ``[t_s, t_e)``. Times enter the network only
through sinusoidal timecodes.

Numerics (a bug seen in other re-implementations): raw epoch milliseconds times a high
frequency, in float32, is aliased noise. Here times are **days since** ``TIME_ORIGIN``
(1970-01-01, see :mod:`aef_lite.data`), the phase ``t mod P`` is taken in float64 and only the
resulting angles are cast to float32. Periods are geometric from ``min_period`` (1 day) to
``max_period`` (4 years by default), so the codes resolve the day, the season and the year
cycle. The paper does not list its periods; these are our choice.
"""

from __future__ import annotations

import math

import torch


def timecode_periods(n_periods: int, min_period: float = 1.0, max_period: float = 4 * 365.25) -> torch.Tensor:
    """Geometric sequence of ``n_periods`` periods in days, shape ``(n_periods,)`` float64."""
    if n_periods < 1 or not 0 < min_period <= max_period:
        raise ValueError(
            f"need n_periods >= 1 and 0 < min_period <= max_period, got {n_periods}, "
            f"{min_period}, {max_period}"
        )
    return torch.logspace(math.log10(min_period), math.log10(max_period), n_periods, dtype=torch.float64, device="cpu")


def timecode(days: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """Sinusoidal code of absolute times.

    Args:
        days: ``(...)`` times in days since the origin (any float dtype; float64 recommended).
        periods: ``(P,)`` periods in days.

    Returns:
        ``(..., 2P)`` float32: ``[sin(2 pi t / p_1), ..., cos(2 pi t / p_P)]``.
    """
    t = days.to(torch.float64).unsqueeze(-1)
    phase = torch.remainder(t, periods.to(t.device)) / periods.to(t.device)  # in [0, 1), exact-ish
    angle = (2 * math.pi) * phase
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(torch.float32)


def period_position(days: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """Position of instants inside the valid period, normalised to ``[0, 1)`` (paper S2.2.2).

    Args:
        days: ``(B,)`` target instants in days.
        period: ``(B, 2)`` valid periods ``[t_s, t_e)`` in days.

    Returns:
        ``(B,)`` float32 ``(t - t_s) / (t_e - t_s)`` clamped into ``[0, 1)``: instants outside
        the period are pinned to its nearest end.
    """
    start, end = period[:, 0].to(torch.float64), period[:, 1].to(torch.float64)
    u = (days.to(torch.float64) - start) / (end - start)
    return u.clamp(0.0, 1.0 - 1e-6).to(torch.float32)


def position_features(u: torch.Tensor, n_harmonics: int = 4) -> torch.Tensor:
    """Fourier features of a position ``u`` in ``[0, 1)``: ``(B,) -> (B, 1 + 2 * n_harmonics)``.

    ``[u, sin(2 pi k u), cos(2 pi k u)]`` for ``k = 1..n_harmonics``; used by the implicit
    decoders to know *when* inside the valid period they should reconstruct.
    """
    k = torch.arange(1, n_harmonics + 1, device=u.device, dtype=u.dtype)
    angle = 2 * math.pi * u.unsqueeze(-1) * k
    return torch.cat([u.unsqueeze(-1), angle.sin(), angle.cos()], dim=-1)
