"""The neighbourhood group's filter and normalisation (:mod:`aef_lite.neighbourhood`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aef_lite.evaluate import smoothed_features
from aef_lite.neighbourhood import context_unit, gaussian_blur
from aef_lite.vmf import unit


def dense_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Reference: ``x (..., H, W)`` convolved with the 2-D Gaussian (not separated) truncated at 3 sigma,
    normalised to sum 1, edges reflected."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k2 = np.outer(k, k) / np.outer(k, k).sum()
    h, w = x.shape[-2:]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)], mode="reflect")
    return sum(k2[i, j] * padded[..., i:i + h, j:j + w] for i in range(2 * r + 1) for j in range(2 * r + 1))


class TestGaussianBlur:
    def test_equals_a_dense_2d_gaussian_with_reflected_edges(self) -> None:
        x = torch.randn(2, 3, 24, 31, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for sigma in (1.0, 2.5):
            np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), dense_gaussian(x.numpy(), sigma), atol=1e-12)

    def test_smoothed_raw_band_baseline_uses_the_same_filter(self) -> None:
        raw = np.random.default_rng(0).standard_normal((4, 20, 26)).astype(np.float32)
        out = smoothed_features(raw, 2.0)
        assert out.dtype == np.float32 and out.shape == raw.shape
        np.testing.assert_allclose(out, dense_gaussian(raw.astype(np.float64), 2.0), atol=1e-6)
        with pytest.raises(ValueError, match="sigma must be > 0"):
            smoothed_features(raw, 0.0)

    def test_keeps_constants_and_lowers_variance(self) -> None:
        const = torch.full((1, 2, 20, 20), 3.0)
        torch.testing.assert_close(gaussian_blur(const, 2.0), const)
        noise = torch.randn(1, 4, 40, 40, generator=torch.Generator().manual_seed(1))
        assert gaussian_blur(noise, 2.0).std().item() < 0.3 * noise.std().item()

    def test_too_small_an_input_raises(self) -> None:
        with pytest.raises(ValueError, match="H, W > 9 px"):
            gaussian_blur(torch.zeros(1, 1, 9, 30), 3.0)
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            gaussian_blur(torch.zeros(1, 30, 30), 3.0)


class TestContextUnit:
    def test_zero_channels_is_the_plain_unit(self) -> None:
        raw = torch.randn(2, 8, 16, 16)
        torch.testing.assert_close(context_unit(raw, 0, 2.0), unit(raw, dim=1), rtol=0, atol=0)

    @pytest.mark.parametrize("n", [4, 16, 24])
    def test_group_norms_follow_their_share(self, n: int) -> None:
        raw = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(n))
        e = context_unit(raw, n, 2.0)
        torch.testing.assert_close(e.norm(dim=1), torch.ones(2, 16, 16))
        torch.testing.assert_close(e[:, :n].norm(dim=1), torch.full((2, 16, 16), (n / 32) ** 0.5))
        torch.testing.assert_close(e[:, n:], (1 - n / 32) ** 0.5 * unit(raw[:, n:], dim=1))  # pixel group untouched

    def test_distance_weighs_the_groups_by_their_share(self) -> None:
        a, b = (context_unit(torch.randn(1, 16, 12, 12, generator=torch.Generator().manual_seed(s)), 4, 1.0)
                for s in (2, 3))
        d2 = ((a - b) ** 2).sum(dim=1)
        ga, gb = a[:, :4] / 0.5, b[:, :4] / 0.5  # unit context groups (share 4/16)
        pa, pb = a[:, 4:] / 0.75 ** 0.5, b[:, 4:] / 0.75 ** 0.5
        torch.testing.assert_close(d2, 0.25 * ((ga - gb) ** 2).sum(1) + 0.75 * ((pa - pb) ** 2).sum(1))
