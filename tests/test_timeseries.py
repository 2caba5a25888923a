"""Per-pixel time-series baselines, NDVI and rank metrics on small synthetic arrays (exact cases)."""

from __future__ import annotations

import numpy as np
import pytest

from aef_lite.timeseries import (
    YEAR_DAYS,
    average_ranks,
    carry_observation,
    clear_ndvi,
    harmonic_fit,
    linear_interpolation,
    masked_mae,
    nearest_observation,
    roc_auc,
    seasonal_ndvi,
    spearman,
)

DAYS = np.array([0.0, 10.0, 30.0, 60.0, 100.0])


def _series(fn, days: np.ndarray = DAYS, h: int = 2, w: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """values (T, 2, h, w) = fn(day) in band 0 and 2 * fn(day) in band 1, all clear."""
    v = fn(days)[:, None, None, None] * np.array([1.0, 2.0])[None, :, None, None]
    return np.broadcast_to(v, (len(days), 2, h, w)).copy(), np.ones((len(days), h, w), dtype=bool)


def test_linear_interpolation_of_a_line_is_exact_and_flat_beyond_the_ends() -> None:
    values, mask = _series(lambda d: 0.1 + 0.002 * d)
    mask[2, 0, 0] = False  # a cloud: pixel (0, 0) interpolates across it
    targets = np.array([5.0, 30.0, 45.0, 99.0, -20.0, 150.0])
    pred = linear_interpolation(values, mask, DAYS, targets)
    assert pred.shape == (6, 2, 2, 3)
    expect = 0.1 + 0.002 * np.clip(targets, 0, 100)
    np.testing.assert_allclose(pred[:, 0], np.broadcast_to(expect[:, None, None], (6, 2, 3)), atol=1e-12)
    np.testing.assert_allclose(pred[:, 1], 2 * pred[:, 0])


def test_nearest_and_carry_pick_the_right_frames() -> None:
    values, mask = _series(lambda d: d)  # value = acquisition day
    mask[1, 1, 2] = False
    targets = np.array([12.0, 21.0, 40.0, 120.0, -5.0])
    near = nearest_observation(values, mask, DAYS, targets)[:, 0]
    fwd = carry_observation(values, mask, DAYS, targets, "forward")[:, 0]
    bwd = carry_observation(values, mask, DAYS, targets, "backward")[:, 0]
    np.testing.assert_array_equal(near[:, 0, 0], [10, 30, 30, 100, 0])
    np.testing.assert_array_equal(near[:, 1, 2], [0, 30, 30, 100, 0])  # day 10 is cloudy there
    np.testing.assert_array_equal(fwd[:, 0, 0], [10, 10, 30, 100, np.nan])
    np.testing.assert_array_equal(fwd[:, 1, 2], [0, 0, 30, 100, np.nan])
    np.testing.assert_array_equal(bwd[:, 0, 0], [30, 30, 60, np.nan, 0])


def test_pixel_without_clear_observation_predicts_nan() -> None:
    values, mask = _series(lambda d: d)
    mask[:, 0, 1] = False
    for pred in (nearest_observation(values, mask, DAYS, [20.0]), linear_interpolation(values, mask, DAYS, [20.0]),
                 harmonic_fit(values, mask, DAYS, [20.0])):
        assert np.isnan(pred[0, :, 0, 1]).all() and np.isfinite(pred[0, :, 1, 1]).all()


def test_harmonic_fit_recovers_a_pure_sinusoid() -> None:
    days = np.sort(np.random.default_rng(0).uniform(0, 3 * YEAR_DAYS, 30))
    curve = lambda d: 0.3 + 0.1 * np.sin(2 * np.pi * d / YEAR_DAYS + 0.7) + 0.03 * np.cos(4 * np.pi * d / YEAR_DAYS)
    values, mask = _series(curve, days)
    targets = np.array([17.0, 400.0, 1500.0])
    pred = harmonic_fit(values, mask, days, targets, ridge=0.0)
    np.testing.assert_allclose(pred[:, 0, 0, 0], curve(targets), atol=1e-9)
    trend = harmonic_fit(values + 0.01 * (days / YEAR_DAYS)[:, None, None, None], mask, days, targets,
                         trend=True, ridge=0.0)
    np.testing.assert_allclose(trend[:, 0, 0, 0], curve(targets) + 0.01 * targets / YEAR_DAYS, atol=1e-9)


def test_harmonic_fit_falls_back_to_the_clear_mean_with_few_observations() -> None:
    values, mask = _series(lambda d: 0.1 + d / 100)  # 5 clear dates < 2 * 5 coefficients
    pred = harmonic_fit(values, mask, DAYS, [0.0, 500.0])
    np.testing.assert_allclose(pred[:, 0], np.mean(0.1 + DAYS / 100))
    with pytest.raises(ValueError, match="ridge"):
        harmonic_fit(values, mask, DAYS, [0.0], ridge=-1.0)


def test_shape_errors_are_clear() -> None:
    values, mask = _series(lambda d: d)
    with pytest.raises(ValueError, match="mask must be bool"):
        nearest_observation(values, mask.astype(np.uint8), DAYS, [1.0])
    with pytest.raises(ValueError, match="sorted"):
        linear_interpolation(values, mask, DAYS[::-1].copy(), [1.0])
    with pytest.raises(ValueError, match="direction"):
        carry_observation(values, mask, DAYS, [1.0], "sideways")


def test_ndvi_and_seasonal_median() -> None:
    values = np.zeros((3, 3, 1, 2))
    values[:, 0] = 0.1  # red
    values[:, 1] = np.array([0.3, 0.5, 0.9])[:, None, None]  # nir
    mask = np.ones((3, 1, 2), dtype=bool)
    mask[1, 0, 1] = False
    ndvi = clear_ndvi(values, mask)
    np.testing.assert_allclose(ndvi[:, 0, 0], [0.5, 4 / 6, 0.8])
    assert np.isnan(ndvi[1, 0, 1])
    season = seasonal_ndvi(values, mask, np.array([0.0, 10.0, 20.0]), 0.0, 15.0)
    np.testing.assert_allclose(season[0], [np.median([0.5, 4 / 6]), 0.5])
    assert np.isnan(seasonal_ndvi(values, mask, np.array([0.0, 10.0, 20.0]), 30.0, 40.0)).all()


def test_masked_mae_per_band() -> None:
    pred, target = np.zeros((2, 4, 4)), np.ones((2, 4, 4)) * np.array([1.0, 3.0])[:, None, None]
    mask = np.zeros((4, 4), dtype=bool)
    mask[0] = True
    np.testing.assert_allclose(masked_mae(pred, target, mask), [1.0, 3.0])
    assert np.isnan(masked_mae(pred, target, np.zeros((4, 4), dtype=bool))).all()


def test_ranks_spearman_and_auc() -> None:
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones(10)))
    labels = x >= 7
    assert roc_auc(x, labels) == 1.0
    assert roc_auc(-x, labels) == 0.0
    assert roc_auc(np.ones(10), labels) == 0.5
    # 2 positives, 2 negatives, one of 4 pairs wrongly ordered -> 0.75
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    assert np.isnan(roc_auc(x, np.zeros(10, dtype=bool)))
    with pytest.raises(ValueError, match="bool"):
        roc_auc(x, labels.astype(int))
