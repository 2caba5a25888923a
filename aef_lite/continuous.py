"""Continuous time on real data: decode held-out observations at any instant of a valid period.

The paper's first claim (S2.2.1-S2.2.2) is that AEF summarises *any* valid period
``[t_s, t_e)`` of a source stream, also one with no input inside part of it, and that its implicit
decoders reconstruct a source at *any* instant of that period. This module turns that into
measurements on a multi-year series (``landsat_colorado``): observations that the model never
saw as input (their frames are left out of the input, i.e. masked) are reconstructed at their
acquisition instant and compared, pixel by pixel, with the classical per-pixel baselines of
:mod:`aef_lite.timeseries` computed from exactly the same input frames.

How a trial is built (the choices are ours; they follow the training recipe of
:mod:`aef_lite.train`):

* **Valid period**: ``window`` whole days (default ``TrainConfig().frames_window_days`` = 365)
  placed at a random whole-day offset inside the data span, or a calendar season.
* **Inputs**: the frames of every source inside the period that have at least
  ``min_input_clear`` clear pixels, minus the held-out frames and any frame in an exclusion
  window, then at most ``max_frames`` per source (default ``TrainConfig().max_frames`` = 8)
  evenly spread with the first and last kept, as :func:`aef_lite.data.make_batch` does.
* **Targets**: held-out frames with at least ``min_target_clear`` of their pixels clear; scored on
  their clear pixels where the model and every baseline have a prediction.
* **Embedding**: :func:`aef_lite.embed.embed_scene` over overlapping tiles (the 61 px scene is
  covered by 3 x 3 tiles of 32 px at overlap 16). The decoders are per-pixel MLPs, so the
  stitched field is decoded whole: ``model.decode(field, source, day, period)``.
* **Baselines** use the input frames of every source with the same bands as the target source,
  pooled (Landsat 5 TM and Landsat 7 ETM+ red/NIR/SWIR1 are nearly cross-calibrated), so they
  see at least as many observations as the model.

Caveat: the model is self-supervised on the same scene; apart from the last 365 days (its
validation block), every target frame was, during training, seen as input or as a target in
other random windows. The measurements show what the *summary + decoder* can do for a held-out
frame of a given input set, not generalisation to an unseen place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch

from aef_lite.data import Sample, days_since_origin, denormalise, to_iso
from aef_lite.embed import embed_scene
from aef_lite.evaluate import median_composite as median_composite_of_frames
from aef_lite.model import AEFModel
from aef_lite.timeseries import (
    carry_observation,
    harmonic_fit,
    linear_interpolation,
    masked_mae,
    nearest_observation,
    roc_auc,
    seasonal_ndvi,
    spearman,
)

MODEL = "model"
BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "nearest": nearest_observation,
    "linear": linear_interpolation,
    "carry_forward": partial(carry_observation, direction="forward"),
    "carry_backward": partial(carry_observation, direction="backward"),
    "harmonic": harmonic_fit,
}
"""Per-pixel baselines by name: ``fn(values, mask, days, target_days) -> (N, C, H, W)``."""

SEASONS: dict[str, tuple[str, str]] = {"spring": ("04-01", "07-01"), "autumn": ("08-01", "11-01")}
"""Season-long valid periods [MM-DD, MM-DD) of the sub-annual setting. ``landsat_colorado`` has
no clear winter observation (snow is masked by Fmask, and there are hardly any winter scenes),
so the two seasons compared are spring (April-June: green-up, snowmelt) and late summer /
autumn (August-October: senescence)."""

MIN_PIXELS = 50
"""A target frame scores only if at least this many of its pixels can be scored."""


# ----------------------------------------------------------------------------------------------
# Frames and inputs
# ----------------------------------------------------------------------------------------------


def clear_fraction(sample: Sample, source: str) -> np.ndarray:
    """(T,) fraction of clear pixels of each frame of ``source``."""
    return sample.sources[source].mask.mean(axis=(1, 2))


def data_span(sample: Sample) -> tuple[float, float]:
    """[first day, last day + 1) over all frames of all sources."""
    days = np.concatenate([s.days for s in sample.sources.values()])
    return float(days.min()), float(days.max()) + 1.0


def _even(indices: np.ndarray, max_frames: int) -> np.ndarray:
    if len(indices) <= max_frames:
        return indices
    return indices[np.unique(np.rint(np.linspace(0, len(indices) - 1, max_frames)).astype(np.int64))]


def choose_inputs(sample: Sample, period: tuple[float, float], held_out: Sequence[tuple[str, int]] = (),
                  exclude: Sequence[tuple[float, float]] = (), max_frames: int = 8,
                  min_input_clear: float = 0.05) -> dict[str, np.ndarray]:
    """Input frames of every source for a trial (see the module docstring).

    Args:
        period: valid period [t_s, t_e) in days; only frames inside it are inputs.
        held_out: ``(source, frame index)`` pairs never given as input.
        exclude: day windows [a, b) with no input from any source (the gaps).
        max_frames: at most this many frames per source, evenly spread (first and last kept).
        min_input_clear: a frame is an input only if at least this fraction of it is clear.

    Returns:
        source -> sorted frame indices (possibly empty) into ``sample.sources[source]``.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    picks = {}
    for name, series in sample.sources.items():
        ok = (series.days >= period[0]) & (series.days < period[1]) & (clear_fraction(sample, name) >= min_input_clear)
        for a, b in exclude:
            ok &= ~((series.days >= a) & (series.days < b))
        for src, i in held_out:
            if src == name:
                ok[i] = False
        picks[name] = _even(np.flatnonzero(ok), max_frames)
    return picks


def input_sample(sample: Sample, picks: dict[str, np.ndarray]) -> Sample:
    """``sample`` with every source reduced to the frames in ``picks`` (a source may keep none)."""
    sources = {k: replace(s, values=s.values[picks[k]], days=s.days[picks[k]], mask=s.mask[picks[k]])
               for k, s in sample.sources.items()}
    return replace(sample, sources=sources)


def pooled_inputs(sample: Sample, picks: dict[str, np.ndarray], like: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The input frames of every source with the same bands as ``like``, merged in time order:
    ``(values (T, C, H, W) reflectance, mask (T, H, W), days (T,))``."""
    bands = sample.sources[like].bands
    parts = [(s.values[picks[k]], s.mask[picks[k]], s.days[picks[k]])
             for k, s in sample.sources.items() if s.bands == bands]
    values, mask, days = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = np.argsort(days, kind="stable")
    return values[order], mask[order], days[order]


def embed_period(model: AEFModel, sample: Sample, picks: dict[str, np.ndarray], period: tuple[float, float],
                 overlap: int = 16, support: bool = True, tile: int | None = None) -> np.ndarray:
    """The embedding field (E, H, W) float32 of the chosen input frames for ``period`` (NaN where no
    tile had a valid input pixel). ``support=False``: every chosen frame is an input, even outside
    the period's support window; ``tile``: as in :func:`aef_lite.embed.embed_scene`."""
    return embed_scene(model, input_sample(sample, picks), tile=tile, overlap=overlap,
                       period=np.asarray(period, float), support=support).emb


@torch.no_grad()
def decode_at(model: AEFModel, emb: np.ndarray, source: str, days: Sequence[float],
              period: tuple[float, float]) -> np.ndarray:
    """Decode ``source`` at each of ``days`` (N,) from one embedding field ``emb`` (E, H, W) of the
    valid ``period``: (N, C, H, W) float64 reflectance (the decoders are per-pixel, so a whole
    scene decodes at once; NaN where ``emb`` is NaN)."""
    device = next(model.parameters()).device
    days_t = torch.as_tensor(np.asarray(days, dtype=np.float64), device=device)
    z = torch.from_numpy(np.ascontiguousarray(emb)).to(device)[None].expand(len(days_t), -1, -1, -1)
    per = torch.tensor(period, dtype=torch.float64, device=device)[None].expand(len(days_t), 2)
    out = model.decode(z, source, days_t, per).float().cpu()
    return denormalise(out, source).double().numpy()


# ----------------------------------------------------------------------------------------------
# Trials
# ----------------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One embedding to evaluate.

    setting: ``"interpolation"``, ``"extrapolation"`` or ``"season"``.
    period:  valid period [t_s, t_e) in days.
    inputs:  source -> input frame indices (:func:`choose_inputs`).
    targets: held-out ``(source, frame index)`` pairs, decoded at their acquisition days.
    methods: baselines (keys of :data:`BASELINES`) to compare with.
    info:    setting-specific facts copied into every record (gap, direction, year, season...).
    """

    setting: str
    period: tuple[float, float]
    inputs: dict[str, np.ndarray]
    targets: list[tuple[str, int]]
    methods: tuple[str, ...]
    info: dict[str, object] = field(default_factory=dict)


@dataclass
class TrialResult:
    """A trial's field and predictions.

    emb:     (E, H, W) embedding field.
    truth:   per target, (C, H, W) observed reflectance.
    mask:    per target, (H, W) bool: clear and predicted by the model and every baseline.
    preds:   method -> per target (C, H, W) reflectance prediction (``"model"`` included).
    records: per target, a dict: the trial's ``info``, ``setting``, ``source``, ``day``,
             ``nearest_input_days`` (days to the closest input frame of any source), ``n_pixels``,
             ``mae`` (method -> per-band list of C floats, NaN if fewer than MIN_PIXELS pixels).
    """

    emb: np.ndarray
    truth: list[np.ndarray]
    mask: list[np.ndarray]
    preds: dict[str, list[np.ndarray]]
    records: list[dict]


def run_trial(model: AEFModel, sample: Sample, trial: Trial, overlap: int = 16) -> TrialResult:
    """Embed the trial's inputs, decode every target at its day, run the baselines, score MAE."""
    emb = embed_period(model, sample, trial.inputs, trial.period, overlap)
    input_days = np.concatenate([sample.sources[k].days[v] for k, v in trial.inputs.items()])
    truth, masks, records = [], [], []
    preds: dict[str, list[np.ndarray]] = {m: [] for m in (MODEL, *trial.methods)}
    for source, index in trial.targets:
        series = sample.sources[source]
        day = float(series.days[index])
        pred = {MODEL: decode_at(model, emb, source, [day], trial.period)[0]}
        values, mask, days = pooled_inputs(sample, trial.inputs, source)
        for m in trial.methods:
            pred[m] = BASELINES[m](values, mask, days, np.array([day]))[0]
        ok = series.mask[index].copy()
        for p in pred.values():
            ok &= np.isfinite(p).all(axis=0)
        n = int(ok.sum())
        mae = {m: (masked_mae(p, series.values[index], ok) if n >= MIN_PIXELS else np.full(p.shape[0], np.nan))
               for m, p in pred.items()}
        gap = float(np.abs(input_days - day).min()) if input_days.size else float("nan")
        records.append({"setting": trial.setting, **trial.info, "source": source, "day": day,
                        "nearest_input_days": gap, "n_pixels": n, "mae": {m: v.tolist() for m, v in mae.items()}})
        truth.append(series.values[index].astype(np.float64))
        masks.append(ok)
        for m, p in pred.items():
            preds[m].append(p)
    return TrialResult(emb=emb, truth=truth, mask=masks, preds=preds, records=records)


def _candidates(sample: Sample, min_target_clear: float, start: float = -np.inf,
                end: float = np.inf) -> list[tuple[str, int]]:
    """(source, index) of the frames in [start, end) with at least ``min_target_clear`` clear."""
    return [(k, int(i)) for k, s in sample.sources.items()
            for i in np.flatnonzero((clear_fraction(sample, k) >= min_target_clear) & (s.days >= start)
                                    & (s.days < end))]


def _day(sample: Sample, target: tuple[str, int]) -> float:
    return float(sample.sources[target[0]].days[target[1]])


def _clear_days(sample: Sample, picks: dict[str, np.ndarray], min_clear: float) -> np.ndarray:
    """Days of the input frames with at least ``min_clear`` clear pixels, all sources."""
    return np.concatenate([sample.sources[k].days[v][clear_fraction(sample, k)[v] >= min_clear]
                           for k, v in picks.items()])


def interpolation_trials(sample: Sample, rng: np.random.Generator, per_gap: int,
                         gaps: Sequence[float] = (0.0, 60.0, 120.0), window: float = 365.0, max_frames: int = 8,
                         min_target_clear: float = 0.3, min_input_clear: float = 0.05,
                         margin: float = 30.0) -> list[Trial]:
    """Interpolation: a target frame inside a ``window``-day valid period, with no input from any
    source in ``[t - gap / 2, t + gap / 2)`` around its day t (gap 0: only the target frame is
    held out), and clear inputs (>= ``min_target_clear``) before and after the gap.

    The period is placed at a random whole-day offset in the data span with the target at least
    ``gap / 2 + margin`` days from either end. ``per_gap`` trials per gap, drawn with ``rng``.
    Baselines: nearest, linear, harmonic.
    """
    first, end = data_span(sample)
    pool = _candidates(sample, min_target_clear)
    trials = []
    for gap in gaps:
        made = 0
        for _attempt in range(200 * per_gap):
            if made == per_gap:
                break
            target = pool[int(rng.integers(len(pool)))]
            t = _day(sample, target)
            lo = max(first, t + gap / 2 + margin - window)
            hi = min(end - window, t - gap / 2 - margin)
            if hi < lo:
                continue
            t0 = float(np.floor(lo + rng.uniform() * (hi - lo)))
            period = (t0, t0 + window)
            exclude = [(t - gap / 2, t + gap / 2)] if gap > 0 else []
            picks = choose_inputs(sample, period, [target], exclude, max_frames, min_input_clear)
            days = _clear_days(sample, picks, min_target_clear)
            if not ((days < t).any() and (days > t).any()):
                continue
            trials.append(Trial("interpolation", period, picks, [target], ("nearest", "linear", "harmonic"),
                                {"gap_days": float(gap)}))
            made += 1
        if made < per_gap:
            raise ValueError(f"found only {made} of {per_gap} interpolation trials with a {gap:g}-day gap in "
                             f"{sample.name}: use a shorter gap or a longer window")
    return trials


def extrapolation_trials(sample: Sample, rng: np.random.Generator, per_direction: int, window: float = 365.0,
                         horizon: float = 182.0, max_frames: int = 8, min_target_clear: float = 0.3,
                         min_input_clear: float = 0.05) -> list[Trial]:
    """Extrapolation: a ``window``-day valid period whose last (``"forward"``) or first
    (``"backward"``) ``horizon`` days have no input. Inputs come from the other ``window - horizon``
    days and must include two frames at least ``min_target_clear`` clear; the targets are the
    frames of the input-free part with at least ``min_target_clear`` clear pixels and at most
    ``horizon`` days after the last input (before the first). The period starts at a random
    whole day of the data span. Baselines: carry forward (backward), harmonic.
    """
    if not 0 < horizon < window:
        raise ValueError(f"need 0 < horizon < window, got horizon={horizon}, window={window}")
    first, end = data_span(sample)
    if end - first < window:
        raise ValueError(f"{sample.name} spans {end - first:.0f} days, less than the {window:g}-day window")
    trials = []
    for direction in ("forward", "backward"):
        made = 0
        for _attempt in range(200 * per_direction):
            if made == per_direction:
                break
            t0 = first + float(rng.integers(0, int(end - first - window) + 1))
            period = (t0, t0 + window)
            if direction == "forward":
                support, blank = (t0, t0 + window - horizon), (t0 + window - horizon, t0 + window)
            else:
                support, blank = (t0 + horizon, t0 + window), (t0, t0 + horizon)
            picks = choose_inputs(sample, support, (), (), max_frames, min_input_clear)
            days = np.concatenate([sample.sources[k].days[v] for k, v in picks.items()])
            if len(_clear_days(sample, picks, min_target_clear)) < 2:
                continue
            edge = days.max() if direction == "forward" else days.min()
            targets = [x for x in _candidates(sample, min_target_clear, *blank)
                       if abs(_day(sample, x) - edge) <= horizon]
            if not targets:
                continue
            trials.append(Trial("extrapolation", period, picks, targets, (f"carry_{direction}", "harmonic"),
                                {"direction": direction}))
            made += 1
        if made < per_direction:
            raise ValueError(f"found only {made} of {per_direction} {direction} extrapolation trials in "
                             f"{sample.name}")
    return trials


def season_period(year: int, season: str) -> tuple[float, float]:
    """Valid period [t_s, t_e) in days of ``season`` (a key of :data:`SEASONS`) in ``year``."""
    if season not in SEASONS:
        raise ValueError(f"unknown season {season!r}; known: {sorted(SEASONS)}")
    a, b = SEASONS[season]
    start, stop = days_since_origin([f"{year}-{a}", f"{year}-{b}"])
    return float(start), float(stop)


def other_season(season: str) -> str:
    """The other key of the two-season :data:`SEASONS`."""
    seasons = list(SEASONS)
    return seasons[1 - seasons.index(season)]


def season_years(sample: Sample, min_frames: int = 2, min_target_clear: float = 0.3) -> list[int]:
    """The years in which every season of :data:`SEASONS` has at least ``min_frames`` frames with at
    least ``min_target_clear`` clear pixels (2: one to hold out and one to keep as input)."""
    y0, y1 = (int(d[:4]) for d in to_iso(np.floor(np.array(data_span(sample)) - [0.0, 1.0])))
    return [y for y in range(y0, y1 + 1)
            if all(len(_candidates(sample, min_target_clear, *season_period(y, s))) >= min_frames for s in SEASONS)]


def season_trials(sample: Sample, rng: np.random.Generator, years: Sequence[int], rep: int = 0,
                  max_frames: int = 8, min_target_clear: float = 0.3, min_input_clear: float = 0.05) -> list[Trial]:
    """Sub-annual periods: per year and season, the season is the valid period, one random frame of
    it (>= ``min_target_clear`` clear) is held out and decoded at its day from the season's other
    frames. ``rep`` (e.g. the seed) is stored in ``info`` to pair the seasons of one draw.
    Baselines: nearest, linear, harmonic."""
    trials = []
    for year in years:
        for season in SEASONS:
            period = season_period(year, season)
            pool = _candidates(sample, min_target_clear, *period)
            if len(pool) < 2:
                raise ValueError(f"{year} {season}: fewer than 2 frames with {min_target_clear:.0%} clear pixels")
            target = pool[int(rng.integers(len(pool)))]
            picks = choose_inputs(sample, period, [target], (), max_frames, min_input_clear)
            trials.append(Trial("season", period, picks, [target], ("nearest", "linear", "harmonic"),
                                {"year": year, "season": season, "rep": rep}))
    return trials


# ----------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------


def summarise_mae(records: Sequence[dict], baseline_names: Sequence[str]) -> dict:
    """Mean per-target MAE (reflectance) per method, per band and over bands, and the ratio of the
    model's mean-over-bands MAE to each baseline's (< 1: the model is better).

    Returns ``{"n_targets", "mae": {method: {"bands": [C], "mean": float}}, "ratio": {baseline: float}}``;
    targets with a NaN MAE (too few scorable pixels) are skipped.
    """
    scored = [r for r in records if np.isfinite(r["mae"][MODEL]).all()]
    out: dict = {"n_targets": len(scored), "mae": {}, "ratio": {}}
    for m in (MODEL, *baseline_names):
        per_band = np.array([r["mae"][m] for r in scored]).mean(axis=0) if scored else np.full(1, np.nan)
        out["mae"][m] = {"bands": per_band.tolist(), "mean": float(per_band.mean())}
    for b in baseline_names:
        out["ratio"][b] = out["mae"][MODEL]["mean"] / out["mae"][b]["mean"]
    return out


def mean_cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``1 - mean cosine`` of two unit embedding fields (E, H, W) over the pixels valid in both."""
    cos = (a * b).sum(axis=0)
    return float(1.0 - np.nanmean(cos))


def median_composite(sample: Sample, picks: dict[str, np.ndarray], like: str) -> np.ndarray:
    """Per-pixel median of the clear input reflectance (C, H, W) of the sources with the same
    bands as ``like`` (NaN where no input frame is clear): the raw-data counterpart of an
    embedding of the same frames."""
    values, mask, _ = pooled_inputs(sample, picks, like)
    return np.where(mask.any(axis=0), median_composite_of_frames(values, mask), np.nan)


def season_contrast(maps: dict[tuple[int, str], np.ndarray],
                    distance: Callable[[np.ndarray, np.ndarray], float]) -> tuple[float, float]:
    """``(d_cross, d_same)``: the mean ``distance`` between the two seasons' maps of one year, and
    between one season's maps of consecutive years (see :func:`season_checks`)."""
    years = sorted({y for y, _ in maps})
    seasons = list(SEASONS)
    cross = [distance(maps[(y, seasons[0])], maps[(y, seasons[1])]) for y in years
             if (y, seasons[0]) in maps and (y, seasons[1]) in maps]
    same = [distance(maps[(y, s)], maps[(y + 1, s)]) for s in seasons for y in years
            if (y, s) in maps and (y + 1, s) in maps]
    return (float(np.mean(cross)) if cross else float("nan"), float(np.mean(same)) if same else float("nan"))


def period_steering(model: AEFModel, sample: Sample, picks: dict[tuple[int, str], dict[str, np.ndarray]],
                    fields: dict[tuple[int, str], np.ndarray]) -> dict[str, float]:
    """How far the valid period alone moves the summary, with the inputs held fixed.

    Each season's inputs ``picks[(year, season)]`` (embedded for their own period in
    ``fields``) are embedded again, with ``support=False`` so that the very same frames are the
    input, for the same season one year later and for the other season of the same year.
    Returns the mean ``1 - mean cos`` to the own-period field: ``{"next_year", "other_season"}``.
    A summary that reads the season from the period moves more for the other season; one that
    reads the period as an absolute date moves more for the next year.
    """
    moves: dict[str, list[float]] = {"next_year": [], "other_season": []}
    for (year, season), p in picks.items():
        asked = {"next_year": season_period(year + 1, season),
                 "other_season": season_period(year, other_season(season))}
        for key, period in asked.items():
            moved = embed_period(model, sample, p, period, support=False)
            moves[key].append(mean_cosine_distance(fields[(year, season)], moved))
    return {k: float(np.nanmean(v)) if v else float("nan") for k, v in moves.items()}


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean ``|a - b|`` over the entries finite in both (e.g. two reflectance composites)."""
    return float(np.nanmean(np.abs(a - b)))


def season_checks(fields: dict[tuple[int, str], np.ndarray], results: Sequence[TrialResult]) -> dict:
    """The two sub-annual checks.

    1. Distinct seasons: ``d_cross`` = mean over years of ``1 - mean cos`` between the two seasons'
       embeddings of the same year, against ``d_same`` = the same between one season's embeddings
       of consecutive years. Met if ``d_cross > d_same``.
    2. Season-specific decoding: per year, each season's held-out target is decoded from its own
       season's embedding; the decoded image is compared with that target (``own``) and with the
       other season's held-out target of the same year (``other``), on the pixels clear in both.
       Met if, for every season, the mean ``own`` MAE is below the mean ``other`` MAE. The same
       comparison for the baselines' predictions (``decode_baselines``) shows how far apart the two
       seasons' observations are at all.

    Args:
        fields: (year, season) -> (E, H, W) embedding of the season from all its inputs.
        results: :func:`run_trial` results of :func:`season_trials` (one target each).
    """
    seasons = list(SEASONS)
    d_cross, d_same = season_contrast(fields, mean_cosine_distance)
    by_key = {(r.records[0]["year"], r.records[0]["season"], r.records[0]["rep"]): r for r in results}
    methods = list(results[0].preds) if results else [MODEL]
    own = {m: {s: [] for s in seasons} for m in methods}
    other = {m: {s: [] for s in seasons} for m in methods}
    for (year, season, rep), res in by_key.items():
        partner = by_key.get((year, other_season(season), rep))
        if partner is None:
            continue
        both = res.mask[0] & partner.mask[0]
        if both.sum() < MIN_PIXELS:
            continue
        for m in methods:
            pred = res.preds[m][0]
            own[m][season].append(float(masked_mae(pred, res.truth[0], both).mean()))
            other[m][season].append(float(masked_mae(pred, partner.truth[0], both).mean()))
    decode = {m: {s: {"own": float(np.mean(own[m][s])) if own[m][s] else float("nan"),
                      "other": float(np.mean(other[m][s])) if other[m][s] else float("nan"), "n": len(own[m][s])}
                  for s in seasons} for m in methods}
    return {"d_cross_season": d_cross, "d_same_season": d_same, "distinct": bool(d_cross > d_same),
            "decode": decode[MODEL], "decode_baselines": {m: d for m, d in decode.items() if m != MODEL},
            "own_closer": bool(all(d["n"] and d["own"] < d["other"] for d in decode[MODEL].values()))}


# ----------------------------------------------------------------------------------------------
# Change detection
# ----------------------------------------------------------------------------------------------


def year_period(year: int) -> tuple[float, float]:
    """The calendar year [Jan 1, Jan 1 of the next year) in days."""
    start, stop = days_since_origin([f"{year}-01-01", f"{year + 1}-01-01"])
    return float(start), float(stop)


def annual_field(model: AEFModel, sample: Sample, year: int, max_frames: int = 8, min_input_clear: float = 0.05,
                 overlap: int = 16) -> np.ndarray:
    """The embedding field (E, H, W) of calendar ``year`` from at most ``max_frames`` frames per
    source inside it (:func:`choose_inputs`)."""
    period = year_period(year)
    return embed_period(model, sample, choose_inputs(sample, period, (), (), max_frames, min_input_clear), period,
                        overlap)


def summer_ndvi(sample: Sample, year: int, months: tuple[int, int] = (6, 9)) -> np.ndarray:
    """Median clear-sky NDVI (H, W) of ``year`` from the first day of month ``months[0]`` to that of
    ``months[1]`` (default June-August), all sources with red/NIR bands pooled; NaN where no clear
    observation."""
    period = tuple(float(d) for d in days_since_origin([f"{year}-{months[0]:02d}-01", f"{year}-{months[1]:02d}-01"]))
    picks = {k: np.arange(s.num_frames) for k, s in sample.sources.items()}
    like = next(k for k, s in sample.sources.items() if {"red", "nir"} <= set(s.bands))
    values, mask, days = pooled_inputs(sample, picks, like)
    bands = sample.sources[like].bands
    return seasonal_ndvi(values, mask, days, *period, red=bands.index("red"), nir=bands.index("nir"))


def change_agreement(field_a: np.ndarray, field_b: np.ndarray, ndvi_a: np.ndarray, ndvi_b: np.ndarray,
                     top_fraction: float = 0.1) -> dict:
    """Agreement of embedding change with clear-sky NDVI change between two years, per pixel.

    Embedding change is ``1 - a . b`` of the two unit fields (E, H, W) (the year-to-year dot
    product, paper S6's change-detection use); NDVI change is ``|ndvi_b - ndvi_a|`` (H, W). Over the
    pixels where both are defined: Spearman rank correlation of the two, and ROC AUC of embedding
    change for telling the ``top_fraction`` largest NDVI changes from the rest.

    What this can show: whether the embedding moves more where the surface's summer greenness
    changed, a change signal computed independently of the model (median of the clear
    observations, no learning). What it cannot: NDVI change is a proxy, not a reference change map;
    it misses changes invisible to NDVI (e.g. in SWIR only) and counts phenology shifts and
    residual clouds as change, and the embedding also responds to the different sets of input dates
    of the two years. A high AUC is evidence of sensitivity to real surface change, not of change
    detection accuracy; the model was also trained on these pixels (self-supervised).

    Returns ``{"spearman", "auc", "n_pixels", "top_threshold", "mean_dot"}``.
    """
    if not 0 < top_fraction < 1:
        raise ValueError(f"top_fraction must be in (0, 1), got {top_fraction}")
    dot = (field_a * field_b).sum(axis=0)
    dndvi = np.abs(ndvi_b - ndvi_a)
    ok = np.isfinite(dot) & np.isfinite(dndvi)
    score, signal = 1.0 - dot[ok], dndvi[ok]
    threshold = float(np.quantile(signal, 1 - top_fraction)) if signal.size else float("nan")
    return {"spearman": spearman(score, signal), "auc": roc_auc(score, signal >= threshold),
            "n_pixels": int(ok.sum()), "top_threshold": threshold,
            "mean_dot": float(dot[ok].mean()) if ok.any() else float("nan")}
