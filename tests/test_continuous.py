"""Held-out reconstruction trials on small crops of the real Landsat series, untrained tiny model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from aef_lite import AEFConfig, AEFModel
from aef_lite import continuous as ct
from aef_lite.data import Sample, cut_tile, days_since_origin, denormalise, make_batch


@pytest.fixture(scope="module")
def model() -> AEFModel:
    torch.manual_seed(0)
    return AEFModel(AEFConfig.tiny()).eval()


@pytest.fixture()
def landsat(samples: dict[str, Sample]) -> Sample:
    """The 32 x 32 px top-left tile of ``landsat_colorado`` (one model tile)."""
    return cut_tile(samples["landsat_colorado"], 0, 0, 32)


def test_choose_inputs_respects_period_holdout_gaps_and_max_frames(landsat: Sample) -> None:
    period = (float(days_since_origin(["2010-01-01"])[0]), float(days_since_origin(["2011-01-01"])[0]))
    held = ("landsat5", int(np.flatnonzero(landsat.sources["landsat5"].days >= period[0] + 200)[0]))
    gap = (period[0] + 150, period[0] + 190)
    picks = ct.choose_inputs(landsat, period, [held], [gap], max_frames=3, min_input_clear=0.05)
    for name, idx in picks.items():
        days = landsat.sources[name].days[idx]
        assert len(idx) <= 3 and np.all(np.diff(idx) > 0)
        assert np.all((days >= period[0]) & (days < period[1]))
        assert not np.any((days >= gap[0]) & (days < gap[1]))
        assert np.all(ct.clear_fraction(landsat, name)[idx] >= 0.05)
    assert held[1] not in picks["landsat5"]
    every = ct.choose_inputs(landsat, period, max_frames=100)
    spread = ct.choose_inputs(landsat, period, max_frames=2)
    assert list(spread["landsat7"]) == [every["landsat7"][0], every["landsat7"][-1]]  # first and last kept
    with pytest.raises(ValueError, match="max_frames"):
        ct.choose_inputs(landsat, period, max_frames=0)


def test_pooled_inputs_merge_sources_in_time_order(landsat: Sample) -> None:
    picks = {"landsat5": np.array([0, 3]), "landsat7": np.array([1, 2, 5])}
    values, mask, days = ct.pooled_inputs(landsat, picks, "landsat7")
    assert values.shape == (5, 3, 32, 32) and mask.shape == (5, 32, 32)
    assert np.all(np.diff(days) > 0)
    expect = np.sort(np.r_[landsat.sources["landsat5"].days[[0, 3]], landsat.sources["landsat7"].days[[1, 2, 5]]])
    np.testing.assert_array_equal(days, expect)


def test_decode_at_equals_decoding_the_tile_directly(model: AEFModel, landsat: Sample) -> None:
    period = (14100.0, 14465.0)
    picks = ct.choose_inputs(landsat, period, max_frames=4)
    emb = ct.embed_period(model, landsat, picks, period, overlap=0, tile=32)  # one tile, no padding: direct
    out = ct.decode_at(model, emb, "landsat7", [14200.0, 14300.0], period)
    assert out.shape == (2, 3, 32, 32) and np.isfinite(out).all()
    batch = make_batch([ct.input_sample(landsat, picks)], period=np.array(period))
    with torch.no_grad():
        mu = model.embed(batch)
        direct = model.decode(mu, "landsat7", torch.tensor([14300.0], dtype=torch.float64), batch.period)
    np.testing.assert_allclose(out[1], denormalise(direct, "landsat7")[0].numpy(), rtol=1e-4, atol=1e-6)


def test_the_target_never_leaks_into_the_model_input(model: AEFModel, landsat: Sample) -> None:
    trial = ct.interpolation_trials(landsat, np.random.default_rng(0), per_gap=1, gaps=(0.0,))[0]
    source, index = trial.targets[0]
    assert index not in trial.inputs[source]
    first = ct.run_trial(model, landsat, trial)
    series = landsat.sources[source]
    values = series.values.copy()
    values[index] = 0.9 - values[index]  # a very different target frame
    changed = replace(landsat, sources={**landsat.sources, source: replace(series, values=values)})
    second = ct.run_trial(model, changed, trial)
    np.testing.assert_array_equal(first.preds[ct.MODEL][0], second.preds[ct.MODEL][0])
    assert first.records[0]["mae"][ct.MODEL] != second.records[0]["mae"][ct.MODEL]
    rec = first.records[0]
    assert set(rec["mae"]) == {"model", "nearest", "linear", "harmonic"} and rec["n_pixels"] >= ct.MIN_PIXELS
    assert all(len(v) == 3 and np.isfinite(v).all() for v in rec["mae"].values())


def test_interpolation_trials_keep_the_gap_free_of_inputs(landsat: Sample) -> None:
    trials = ct.interpolation_trials(landsat, np.random.default_rng(1), per_gap=2, gaps=(0.0, 120.0))
    assert len(trials) == 4
    for trial in trials:
        t = ct._day(landsat, trial.targets[0])
        assert trial.period[1] - trial.period[0] == 365.0 and trial.period[0] < t < trial.period[1]
        days = np.concatenate([landsat.sources[k].days[v] for k, v in trial.inputs.items()])
        gap = trial.info["gap_days"]
        assert not np.any(np.abs(days - t) < gap / 2) and (days < t).any() and (days > t).any()
    with pytest.raises(ValueError, match="interpolation trials"):
        ct.interpolation_trials(landsat, np.random.default_rng(0), per_gap=1, gaps=(900.0,))


def test_extrapolation_trials_have_inputs_on_one_side_only(landsat: Sample) -> None:
    trials = ct.extrapolation_trials(landsat, np.random.default_rng(2), per_direction=2)
    assert [t.info["direction"] for t in trials] == ["forward"] * 2 + ["backward"] * 2
    for trial in trials:
        days = np.concatenate([landsat.sources[k].days[v] for k, v in trial.inputs.items()])
        targets = np.array([ct._day(landsat, x) for x in trial.targets])
        if trial.info["direction"] == "forward":
            assert targets.min() > days.max() and targets.max() - days.max() <= 182
            assert days.max() < trial.period[1] - 182
        else:
            assert targets.max() < days.min() and days.min() - targets.min() <= 182
        assert np.all((targets >= trial.period[0]) & (targets < trial.period[1]))
    with pytest.raises(ValueError, match="horizon"):
        ct.extrapolation_trials(landsat, np.random.default_rng(0), 1, window=100.0, horizon=100.0)


def test_season_periods_and_years(landsat: Sample) -> None:
    assert ct.season_period(2008, "spring") == tuple(float(d) for d in days_since_origin(["2008-04-01", "2008-07-01"]))
    with pytest.raises(ValueError, match="unknown season"):
        ct.season_period(2008, "winter")
    years = ct.season_years(landsat)
    assert years and set(years) <= set(ct.season_years(landsat, min_frames=1))
    trials = ct.season_trials(landsat, np.random.default_rng(0), years[:1], rep=3)
    assert [t.info["season"] for t in trials] == list(ct.SEASONS) and trials[0].info["rep"] == 3
    for trial in trials:
        assert trial.period == ct.season_period(years[0], trial.info["season"])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=0, keepdims=True)


def test_season_checks_on_constructed_fields() -> None:
    rng = np.random.default_rng(0)
    base = {s: rng.normal(size=(8, 4, 4)) for s in ct.SEASONS}
    fields = {(y, s): _unit(base[s] + 0.1 * rng.normal(size=(8, 4, 4))) for y in (2008, 2009) for s in ct.SEASONS}
    checks = ct.season_checks(fields, [])
    assert checks["distinct"] and checks["d_cross_season"] > checks["d_same_season"] > 0
    assert not checks["own_closer"]  # no decoded targets: the decoding check cannot pass


def test_season_contrast_pairs_years_and_seasons() -> None:
    maps = {(2008, "spring"): np.zeros((1, 2, 2)), (2008, "autumn"): np.full((1, 2, 2), 3.0),
            (2009, "spring"): np.ones((1, 2, 2)), (2009, "autumn"): np.full((1, 2, 2), 5.0)}
    cross, same = ct.season_contrast(maps, ct.mean_abs_difference)
    assert cross == pytest.approx((3.0 + 4.0) / 2) and same == pytest.approx((1.0 + 2.0) / 2)
    cross, same = ct.season_contrast({(2008, "spring"): maps[(2008, "spring")]}, ct.mean_abs_difference)
    assert np.isnan(cross) and np.isnan(same)


def test_median_composite_uses_clear_inputs_only(landsat: Sample) -> None:
    period = ct.season_period(ct.season_years(landsat, min_frames=1)[0], "autumn")
    picks = ct.choose_inputs(landsat, period)
    values, mask, _ = ct.pooled_inputs(landsat, picks, "landsat5")
    comp = ct.median_composite(landsat, picks, "landsat5")
    assert comp.shape == values.shape[1:]
    seen = mask.any(axis=0)
    assert np.isfinite(comp[:, seen]).all() and np.isnan(comp[:, ~seen]).all()
    r, c = np.argwhere(seen)[0]
    expected = np.median(values[mask[:, r, c], :, r, c], axis=0)
    np.testing.assert_allclose(comp[:, r, c], expected)


def test_change_agreement_ranks_the_changed_pixels_first() -> None:
    h = w = 10
    a = np.zeros((4, h, w))
    a[0] = 1.0
    change = np.linspace(0.0, 1.0, h * w).reshape(h, w)  # angle grows with the NDVI change
    b = np.stack([np.cos(change), np.sin(change), np.zeros((h, w)), np.zeros((h, w))])
    ndvi_a, ndvi_b = np.full((h, w), 0.3), 0.3 + change
    ndvi_b[0, 0] = np.nan
    res = ct.change_agreement(a, b, ndvi_a, ndvi_b)
    assert res["spearman"] == pytest.approx(1.0) and res["auc"] == 1.0 and res["n_pixels"] == h * w - 1
    flipped = ct.change_agreement(a, b, ndvi_a, 0.3 + change[::-1, ::-1])
    assert flipped["spearman"] == pytest.approx(-1.0) and flipped["auc"] == 0.0
    with pytest.raises(ValueError, match="top_fraction"):
        ct.change_agreement(a, b, ndvi_a, ndvi_b, top_fraction=1.0)


def test_summer_ndvi_is_bounded_and_nan_without_clear_data(landsat: Sample) -> None:
    ndvi = ct.summer_ndvi(landsat, 2011)
    assert ndvi.shape == (32, 32) and np.nanmin(ndvi) >= -1 and np.nanmax(ndvi) <= 1 and np.isfinite(ndvi).mean() > 0.9
    assert np.isnan(ct.summer_ndvi(landsat, 2005)).all()


def test_period_steering_embeds_the_same_inputs_for_the_other_periods(model: AEFModel, landsat: Sample) -> None:
    own = ct.season_period(2010, "spring")
    picks = {(2010, "spring"): ct.choose_inputs(landsat, own, max_frames=4)}
    fields = {k: ct.embed_period(model, landsat, p, own) for k, p in picks.items()}
    moves = ct.period_steering(model, landsat, picks, fields)
    assert set(moves) == {"next_year", "other_season"}
    later = ct.embed_period(model, landsat, picks[(2010, "spring")], ct.season_period(2011, "spring"), support=False)
    assert moves["next_year"] == pytest.approx(ct.mean_cosine_distance(fields[(2010, "spring")], later))
    assert 0 < moves["next_year"] < 2 and 0 < moves["other_season"] < 2  # another period moves the field
    # without support=False the next year's window would drop these inputs: no field at all
    assert np.isnan(ct.embed_period(model, landsat, picks[(2010, "spring")], (own[0] + 730, own[1] + 730))).all()
