"""Continuous time, on the real Landsat 5/7 series: held-out reconstruction vs per-pixel baselines.

The paper's first claim (S2.2.1-S2.2.2): the model summarises any valid period [t_s, t_e), also one
with no input in part of it, and its implicit decoders reconstruct a source at any instant of the
period. On ``landsat_colorado`` (105 irregular dates 2008-2013, 61 x 61 px, red/NIR/SWIR1) clear
observations are held out of the input (their frames are not given to the model) and decoded at
their acquisition day; MAE in reflectance per band on their clear pixels, compared with per-pixel
baselines computed from the same input frames (:mod:`aef_lite.timeseries`). How periods, inputs and
targets are chosen: :mod:`aef_lite.continuous` (365-day periods and at most 8 frames per source, as
in training).

(a) interpolation: a target inside the period with no input within a 0 (the target only), 60 or
    120-day gap around it; baselines nearest observation, linear interpolation, harmonic fit.
(b) extrapolation: the last (first) 182 days of the period have no input; every clear frame there
    is decoded; baselines carry-forward (carry-backward) and harmonic fit.
(c) sub-annual periods: spring (Apr-Jun) and autumn (Aug-Oct) of each year as valid periods; one
    frame of each held out and decoded; checks that the two seasons' embeddings of a year differ
    more than one season's in consecutive years, and that each season's decoded frame is closer to
    its own season's observation than to the other season's. The same contrast of the raw data
    (per-pixel median composites of the same input frames, mean |diff| in reflectance) is printed
    beside the embeddings' as a reference, and so is the embeddings' contrast when each season is
    embedded from its support window (the frames :func:`aef_lite.embed.embed_scene` gives it, the
    same kind of input as in training): two seasons of a year then share most of their inputs, so
    only the valid period can tell them apart. Last, each season's very inputs are embedded for the
    same season a year later and for the other season of that year
    (:func:`aef_lite.continuous.period_steering`): how far the period alone moves the field.
Change detection (measured, no goal): year-to-year dot product of annual embedding fields against
the change in clear-sky June-August NDVI (Spearman, ROC AUC for the top 10 % NDVI changes).

Goal lines ``GOAL <name>: met|not met (<numbers>)``: the model beats nearest and linear in (a)
and carry in (b) (mean-over-bands MAE over all targets of the setting), and both checks of (c).
``STRETCH`` lines compare with the harmonic fit. ``--checkpoint PATH`` evaluates a ``ckpt_*.pt``;
default :func:`aef_lite.pretrained`; ``--quick`` trains for 20 steps instead, one seed and
one trial per case: a smoke test, not a result.

Run ``python benchmarks/continuous_time.py [--quick] [--seeds N] [--checkpoint PATH]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from common import machine_info, print_machine, torch_threads

from aef_lite import continuous as ct
from aef_lite.checkpoints import load_checkpoint, models_from_checkpoint
from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.data import Sample, check_tile_size, load_sample
from aef_lite.model import AEFModel
from aef_lite.sampling import split_site
from aef_lite.shipped import pretrained
from aef_lite.support import SUPPORT_DAYS, support_window
from aef_lite.train import train

SCENE = "landsat_colorado"
LEAD_BINS = (0.0, 60.0, 120.0, 183.0)


def load_model(checkpoint: str | None, quick: bool) -> AEFModel:
    """The model to evaluate: a checkpoint, else a 20-step run (quick) or the cached default run."""
    if checkpoint is not None:
        return models_from_checkpoint(load_checkpoint(checkpoint), checkpoint)[0]
    if quick:
        return train(AEFConfig.tiny(), TrainConfig(steps=20, out_dir=None, progress=False)).model.eval()
    return pretrained()[0]


def validation_start(sample: Sample, tile: int) -> float:
    """First day of the temporal validation block that the default training run never sees
    (:func:`aef_lite.sampling.split_site`: the last ``frames_window_days`` of the series)."""
    val = split_site(sample, tile, TrainConfig().frames_window_days).val
    return float(min(s.days.min() for s in val.sources.values() if s.num_frames))


def _by_block(records: list[dict], methods: tuple[str, ...], start: float) -> dict:
    """Summaries of the targets before (``trained``) and inside (``validation``) the validation block."""
    return {"trained": ct.summarise_mae([r for r in records if r["day"] < start], methods),
            "validation": ct.summarise_mae([r for r in records if r["day"] >= start], methods)}


def _line(name: str, s: dict, methods: tuple[str, ...]) -> str:
    parts = [f"{m} {s['mae'][m]['mean']:.4f}" for m in (ct.MODEL, *methods)]
    ratios = ", ".join(f"/{b} {s['ratio'][b]:.2f}" for b in methods)
    return f"  {name:24} n={s['n_targets']:3}  MAE {', '.join(parts)}  ratio {ratios}"


def _goal(kind: str, name: str, met: bool, detail: str) -> None:
    print(f"{kind} {name}: {'met' if met else 'not met'} ({detail})")


def _contrast(maps: dict, distance: Callable[[np.ndarray, np.ndarray], float]) -> dict[str, float]:
    """:func:`aef_lite.continuous.season_contrast` of ``maps`` as ``{"d_cross_season", "d_same_season"}``."""
    return dict(zip(("d_cross_season", "d_same_season"), ct.season_contrast(maps, distance), strict=True))


def measure(model: AEFModel, sample: Sample, seeds: int, per_case: int, max_frames: int = 8,
            window: float = 365.0, change_pairs: int | None = None, season_years: int | None = None) -> dict:
    """Every measurement of the module docstring on ``sample``; prints tables and goal lines.

    ``per_case``: interpolation trials per gap and extrapolation periods per direction, per seed;
    ``change_pairs`` / ``season_years``: use only the first that many (None: all).
    """
    val_start = validation_start(sample, model.config.tile_size)
    out: dict = {"seeds": seeds, "max_frames": max_frames, "window_days": window, "validation_start_day": val_start}
    interp, extra, season_results = [], [], []
    years_dec = ct.season_years(sample)[:season_years]
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 1])
        interp += [ct.run_trial(model, sample, t) for t in
                   ct.interpolation_trials(sample, rng, per_case, window=window, max_frames=max_frames)]
        extra += [ct.run_trial(model, sample, t) for t in
                  ct.extrapolation_trials(sample, rng, per_case, window=window, max_frames=max_frames)]
        season_results += [ct.run_trial(model, sample, t) for t in
                           ct.season_trials(sample, rng, years_dec, rep=seed, max_frames=max_frames)]

    # (a) interpolation
    methods = ("nearest", "linear", "harmonic")
    recs = [r for res in interp for r in res.records]
    a = {"all": ct.summarise_mae(recs, methods),
         "by_gap": {f"{g:g}": ct.summarise_mae([r for r in recs if r["gap_days"] == g], methods)
                    for g in sorted({r["gap_days"] for r in recs})},
         "by_block": _by_block(recs, methods, val_start)}
    print("\n(a) interpolation: held-out target inside the period; MAE (reflectance, mean over bands) per target")
    for g, s in a["by_gap"].items():
        print(_line(f"gap {g} days", s, methods))
    for k, s in a["by_block"].items():
        print(_line(f"{k} block", s, methods))
    print(_line("all", a["all"], methods))
    print(f"  per band (red, NIR, SWIR1): model {np.round(a['all']['mae'][ct.MODEL]['bands'], 4).tolist()}, "
          f"linear {np.round(a['all']['mae']['linear']['bands'], 4).tolist()}")
    out["interpolation"] = a

    # (b) extrapolation: pool the two directions under "carry"
    recs = [dict(r, mae={**r["mae"], "carry": r["mae"][f"carry_{r['direction']}"]}) for res in extra
            for r in res.records]
    methods = ("carry", "harmonic")
    b = {"all": ct.summarise_mae(recs, methods),
         "by_direction": {d: ct.summarise_mae([r for r in recs if r["direction"] == d], methods)
                          for d in ("forward", "backward")},
         "by_lead_days": {f"{lo:g}-{hi:g}": ct.summarise_mae(
                              [r for r in recs if lo < r["nearest_input_days"] <= hi], methods)
                          for lo, hi in zip(LEAD_BINS[:-1], LEAD_BINS[1:], strict=True)},
         "by_block": _by_block(recs, methods, val_start)}
    print("\n(b) extrapolation: targets up to 182 days after the last input (forward) or before the first (backward)")
    for d, s in b["by_direction"].items():
        print(_line(d, s, methods))
    for k, s in b["by_lead_days"].items():
        print(_line(f"{k} days from inputs", s, methods))
    for k, s in b["by_block"].items():
        print(_line(f"{k} block", s, methods))
    print(_line("all", b["all"], methods))
    out["extrapolation"] = b

    # (c) sub-annual periods
    years_emb = ct.season_years(sample, min_frames=1)
    years_emb = [y for y in years_emb if y <= max(years_dec) + 1] if season_years is not None else years_emb
    picks = {(y, s): ct.choose_inputs(sample, ct.season_period(y, s), max_frames=max_frames)
             for y in years_emb for s in ct.SEASONS}
    fields = {k: ct.embed_period(model, sample, p, ct.season_period(*k)) for k, p in picks.items()}
    same_support = {k: ct.embed_period(model, sample, ct.choose_inputs(sample, support_window(ct.season_period(*k)),
                                                                       max_frames=max_frames), ct.season_period(*k))
                    for k in picks}
    like = next(iter(sample.sources))
    composites = {k: ct.median_composite(sample, p, like) for k, p in picks.items()}
    methods = ("nearest", "linear", "harmonic")
    c = {"reconstruction": ct.summarise_mae([r for res in season_results for r in res.records], methods),
         **ct.season_checks(fields, season_results), "years_decoded": years_dec, "years_embedded": years_emb,
         "composite": _contrast(composites, ct.mean_abs_difference),
         "same_support": _contrast(same_support, ct.mean_cosine_distance),
         "period_steering": ct.period_steering(model, sample, picks, fields)}
    print(f"\n(c) sub-annual periods {dict(ct.SEASONS)} (days [MM-DD, MM-DD)); decoded years {years_dec}")
    print(_line("held-out in season", c["reconstruction"], methods))
    print(f"  1 - mean cos: same year, other season {c['d_cross_season']:.4f}; same season, next year "
          f"{c['d_same_season']:.4f}  (years {years_emb})")
    print(f"  raw median composites of the same inputs, mean |diff| (reflectance): same year, other season "
          f"{c['composite']['d_cross_season']:.4f}; same season, next year {c['composite']['d_same_season']:.4f}")
    print(f"  the same with each season's support window as input (embed_scene's frames, {SUPPORT_DAYS:g} days "
          f"around it): same year, other season {c['same_support']['d_cross_season']:.4f}; same season, next "
          f"year {c['same_support']['d_same_season']:.4f}")
    print(f"  the same inputs asked for another period (only the period moves the field): the same season a year "
          f"later {c['period_steering']['next_year']:.4f}; the other season of that year "
          f"{c['period_steering']['other_season']:.4f}")
    for s, d in c["decode"].items():
        base = ", ".join(f"{m} {b[s]['own']:.4f} vs {b[s]['other']:.4f}" for m, b in c["decode_baselines"].items())
        print(f"  {s}: decoded vs own season's target MAE {d['own']:.4f}, vs other season's {d['other']:.4f} "
              f"(n={d['n']}; baselines' own vs other: {base})")
    out["seasons"] = c

    # change detection
    years = [y for y in sorted({y for y, _ in fields})]
    pairs = list(zip(years[:-1], years[1:], strict=True))[:change_pairs]
    annual = {y: ct.annual_field(model, sample, y, max_frames) for y in {y for p in pairs for y in p}}
    ndvi = {y: ct.summer_ndvi(sample, y) for y in annual}
    change = {f"{y0}-{y1}": ct.change_agreement(annual[y0], annual[y1], ndvi[y0], ndvi[y1]) for y0, y1 in pairs}
    print("\nchange: 1 - dot of annual embeddings vs |change of clear-sky Jun-Aug NDVI| (top 10 % = changed)")
    for k, r in change.items():
        print(f"  {k}: Spearman {r['spearman']:+.3f}, AUC {r['auc']:.3f}, mean dot {r['mean_dot']:.3f}, "
              f"{r['n_pixels']} px, top-10 % |dNDVI| >= {r['top_threshold']:.3f}")
    out["change"] = change

    print()
    ia, eb = out["interpolation"]["all"], out["extrapolation"]["all"]
    for base in ("nearest", "linear"):
        _goal("GOAL", f"interpolation_beats_{base}", ia["ratio"][base] < 1,
              f"model {ia['mae'][ct.MODEL]['mean']:.4f} vs {base} {ia['mae'][base]['mean']:.4f}, "
              f"ratio {ia['ratio'][base]:.2f}, {ia['n_targets']} targets")
    _goal("GOAL", "extrapolation_beats_carry", eb["ratio"]["carry"] < 1,
          f"model {eb['mae'][ct.MODEL]['mean']:.4f} vs carry {eb['mae']['carry']['mean']:.4f}, "
          f"ratio {eb['ratio']['carry']:.2f}, {eb['n_targets']} targets")
    _goal("GOAL", "seasons_distinct", c["distinct"],
          f"1 - cos other season {c['d_cross_season']:.4f} vs next year {c['d_same_season']:.4f}; raw "
          f"composites {c['composite']['d_cross_season']:.4f} vs {c['composite']['d_same_season']:.4f}")
    _goal("GOAL", "seasons_decode_own", c["own_closer"],
          ", ".join(f"{s} own {d['own']:.4f} vs other {d['other']:.4f}" for s, d in c["decode"].items()))
    for name, s in (("interpolation", ia), ("extrapolation", eb), ("seasons", c["reconstruction"])):
        _goal("STRETCH", f"{name}_beats_harmonic", s["ratio"]["harmonic"] < 1,
              f"ratio {s['ratio']['harmonic']:.2f}")
    out["goals"] = {"interpolation_beats_nearest": bool(ia["ratio"]["nearest"] < 1),
                    "interpolation_beats_linear": bool(ia["ratio"]["linear"] < 1),
                    "extrapolation_beats_carry": bool(eb["ratio"]["carry"] < 1),
                    "seasons_distinct": c["distinct"], "seasons_decode_own": c["own_closer"]}
    return out


def main(quick: bool = False, seeds: int = 5, checkpoint: str | None = None, threads: int = 1,
         model: AEFModel | None = None) -> dict:
    """Run :func:`measure` on ``model`` (default :func:`load_model` of ``checkpoint``); quick: 1 seed,
    1 trial per case, the first 2 years with both seasons."""
    with torch_threads(threads):
        info = machine_info()
        print_machine(info)
        model = load_model(checkpoint, quick) if model is None else model
        sample = load_sample(SCENE)
        if quick:
            result = measure(model, sample, seeds=1, per_case=1, change_pairs=1, season_years=2)
        else:
            result = measure(model, sample, seeds=seeds, per_case=6)
    return {"machine": info, **result}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20-step model, one seed, one trial per case")
    parser.add_argument("--seeds", type=int, default=5, help="seeds (date draws) in full mode")
    parser.add_argument("--checkpoint", default=None, help="a ckpt_*.pt to evaluate (default: pretrained())")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    try:
        with torch_threads(args.threads):
            chosen = load_model(args.checkpoint, args.quick)
        scene = load_sample(SCENE)
        check_tile_size(chosen.config.tile_size, scene.height, scene.width)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    main(args.quick, args.seeds, args.checkpoint, args.threads, model=chosen)
