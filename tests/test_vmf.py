"""Tests for the vMF bottleneck (paper S2.2.3): sampler correctness, gradients, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aef_lite.vmf import (
    EMBED_DIM,
    KAPPA,
    VMFBottleneck,
    sample_vmf,
    sample_vmf_cosine,
    vmf_mean_cosine,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit(*shape: int, dim: int = -1, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=_gen(seed), dtype=dtype), dim=dim)


def _exact_cdf(kappa: float, d: int, w: np.ndarray) -> np.ndarray:
    """CDF of the vMF cosine, density ~ exp(kappa w) (1 - w^2)^((d-3)/2) on [-1, 1]."""
    lo = max(-1.0, 1.0 - 60.0 * (d + 10) / kappa) if kappa > 100 else -1.0
    grid = np.linspace(lo, 1.0, 400_001)
    logp = kappa * (grid - 1.0)
    if d != 3:
        with np.errstate(divide="ignore"):
            logp = logp + 0.5 * (d - 3) * np.log1p(-grid * grid)
    p = np.exp(logp - logp[np.isfinite(logp)].max())
    p[~np.isfinite(p)] = 0.0
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(grid))])
    return np.interp(w, grid, cdf / cdf[-1])


def test_constants() -> None:
    assert KAPPA == 8000.0
    assert EMBED_DIM == 64


def test_samples_are_unit_norm_and_keep_shape_dtype() -> None:
    mu = _unit(2, 64, 7, 9, dim=1)
    x = sample_vmf(mu, KAPPA, _gen(1), dim=1)
    assert x.shape == mu.shape and x.dtype == mu.dtype
    assert (x.norm(dim=1) - 1).abs().max() < 1e-5
    mu64 = _unit(100, 64, dtype=torch.float64)
    x64 = sample_vmf(mu64, 10.0, _gen(1), dim=-1)
    assert x64.dtype == torch.float64
    assert (x64.norm(dim=-1) - 1).abs().max() < 1e-12


def test_dim_axis_handling_matches_channels_last() -> None:
    mu = _unit(2, 64, 3, 4, dim=1)
    a = sample_vmf(mu, KAPPA, _gen(5), dim=1)
    b = sample_vmf(mu.permute(0, 2, 3, 1), KAPPA, _gen(5), dim=-1)
    torch.testing.assert_close(a.permute(0, 2, 3, 1), b, rtol=0, atol=0)


@pytest.mark.parametrize(("d", "kappa"), [(64, KAPPA), (64, 10.0), (3, 10.0), (2, 1.0)])
def test_empirical_moments_match_exact(d: int, kappa: float) -> None:
    n = 40_000
    mu = _unit(n, d, seed=d, dtype=torch.float64)
    x = sample_vmf(mu, kappa, _gen(7), dim=-1)
    w = (x * mu).sum(-1).numpy()
    a = vmf_mean_cosine(kappa, d)
    se = w.std() / math.sqrt(n)
    assert abs(w.mean() - a) < 5 * se, (w.mean(), a, se)
    # Second moment identity for the vMF: E[w^2] = 1 - (d - 1) A_d(kappa) / kappa.
    w2 = w * w
    assert abs(w2.mean() - (1 - (d - 1) * a / kappa)) < 5 * w2.std() / math.sqrt(n)


def test_mean_cosine_test_is_sharp_enough_for_kappa_8000() -> None:
    # A sampler off by one in the dimension (mean 1 - d/(2k) instead of 1 - (d-1)/(2k)) is
    # ~18 standard errors away with 40k samples, so the moment test above would catch it.
    w = sample_vmf_cosine(40_000, KAPPA, 64, generator=_gen(3)).numpy()
    se = w.std() / math.sqrt(len(w))
    assert 1 / (2 * KAPPA) > 10 * se
    assert 0.9955 < w.mean() < 0.9965 and w.max() < 1.0


@pytest.mark.parametrize(("d", "kappa"), [(3, 10.0), (64, 10.0), (64, KAPPA)])
def test_cosine_distribution_kolmogorov_smirnov(d: int, kappa: float) -> None:
    n = 40_000
    w = np.sort(sample_vmf_cosine(n, kappa, d, generator=_gen(11)).numpy())
    cdf = _exact_cdf(kappa, d, w)
    ecdf_hi = np.arange(1, n + 1) / n
    ecdf_lo = np.arange(0, n) / n
    ks = max(np.abs(ecdf_hi - cdf).max(), np.abs(cdf - ecdf_lo).max())
    assert ks < 1.95 / math.sqrt(n)  # 0.1% critical value


def test_d3_cdf_closed_form_sanity() -> None:
    # In d = 3 the cosine has density ~ exp(kappa w): check the numeric CDF helper against it.
    k = 10.0
    w = np.linspace(-1, 1, 11)
    exact = (np.exp(k * (w - 1)) - np.exp(-2 * k)) / (1 - np.exp(-2 * k))
    np.testing.assert_allclose(_exact_cdf(k, 3, w), exact, atol=1e-6)


def test_tangent_component_is_isotropic() -> None:
    d, n = 64, 20_000
    mu1 = _unit(1, d, seed=42, dtype=torch.float64)
    mu = mu1.expand(n, d).contiguous()
    x = sample_vmf(mu, KAPPA, _gen(9), dim=-1)
    w = (x * mu).sum(-1, keepdim=True)
    v = (x - w * mu) / (1 - w * w).sqrt()
    assert (v.norm(dim=-1) - 1).abs().max() < 1e-6
    assert (v @ mu1.T).abs().max() < 1e-6  # orthogonal to mu
    assert v.mean(0).norm() < 4 / math.sqrt(n)  # no preferred tangent direction
    cov = v.T @ v / n
    expected = (torch.eye(d, dtype=torch.float64) - mu1.T @ mu1) / (d - 1)
    assert (cov - expected).abs().max() < 2e-3


def test_gradient_reaches_mu() -> None:
    mu = _unit(4, 64, 2, 2, dim=1).requires_grad_(True)
    x = sample_vmf(mu, KAPPA, _gen(0), dim=1)
    target = torch.randn(4, 64, 2, 2, generator=_gen(1))
    (x * target).sum().backward()
    assert mu.grad is not None and torch.isfinite(mu.grad).all()
    assert mu.grad.abs().sum() > 0

    # Exact gradient check (float64): with a fixed generator seed the sample is a smooth
    # function of mu (the cosine w does not depend on mu).
    mu0 = _unit(3, 5, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: sample_vmf(m, 20.0, _gen(4), dim=-1), (mu0,))


def test_reproducible_with_generator_and_global_seed() -> None:
    mu = _unit(3, 64, 4, 4, dim=1)
    a = sample_vmf(mu, KAPPA, _gen(123))
    b = sample_vmf(mu, KAPPA, _gen(123))
    c = sample_vmf(mu, KAPPA, _gen(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(5)
    d1 = sample_vmf(mu, KAPPA)
    torch.manual_seed(5)
    d2 = sample_vmf(mu, KAPPA)
    assert torch.equal(d1, d2)


def test_bottleneck_train_samples_eval_is_identity() -> None:
    mu = _unit(2, 64, 8, 8, dim=1)
    bottleneck = VMFBottleneck()
    assert bottleneck.kappa == KAPPA
    assert len(list(bottleneck.parameters())) == 0  # kappa is fixed, not learned

    bottleneck.eval()
    out = bottleneck(mu)
    assert out is mu  # deterministic: the embedding is mu itself
    assert torch.equal(bottleneck(mu), bottleneck(mu))

    bottleneck.train()
    x = bottleneck(mu, generator=_gen(0))
    assert x.shape == mu.shape
    assert not torch.allclose(x, mu, atol=1e-3)
    cos = (x * mu).sum(1)
    assert 0.99 < cos.mean().item() < 0.999  # close to mu: E[cos] = A_64(8000) ~ 0.99607
    assert bottleneck(mu, sample=False) is mu

    bottleneck.eval()
    assert not torch.equal(bottleneck(mu, sample=True, generator=_gen(0)), mu)


def test_vmf_mean_cosine_values() -> None:
    for k in [1e-3, 0.1, 1.0, 3.0, 10.0, 100.0, 700.0]:
        closed = 1 / math.tanh(k) - 1 / k  # d = 3: coth(k) - 1/k
        assert vmf_mean_cosine(k, 3) == pytest.approx(closed, rel=1e-9, abs=1e-12)
    assert vmf_mean_cosine(8000.0, 3) == pytest.approx(1 - 1 / 8000.0, abs=1e-15)
    # d = 2: I_1(1) / I_0(1) = 0.565159103992485 / 1.266065877752008
    assert vmf_mean_cosine(1.0, 2) == pytest.approx(0.565159103992485 / 1.266065877752008, rel=1e-12)
    # Large kappa: A ~ 1 - (d-1)/(2k) + (d-1)(d-3)/(8k^2) + O(k^-3).
    k, d = KAPPA, 64
    a = vmf_mean_cosine(k, d)
    assert a == pytest.approx(1 - (d - 1) / (2 * k) + (d - 1) * (d - 3) / (8 * k * k), abs=1e-9)
    assert a == pytest.approx(0.99607, abs=5e-6)
    # Small kappa: A ~ k / d.
    assert vmf_mean_cosine(1e-4, 64) == pytest.approx(1e-4 / 64, rel=1e-6)
    assert vmf_mean_cosine(0.0, 64) == 0.0


def test_errors() -> None:
    mu = _unit(4, 64)
    with pytest.raises(ValueError, match="unit norm"):
        sample_vmf(mu * 1.01, KAPPA, dim=-1)
    with pytest.raises(ValueError, match="kappa"):
        sample_vmf(mu, 0.0, dim=-1)
    with pytest.raises(ValueError, match="kappa"):
        sample_vmf(mu, -5.0, dim=-1)
    with pytest.raises(ValueError, match="kappa"):
        sample_vmf(mu, float("nan"), dim=-1)
    bad = mu.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        sample_vmf(bad, KAPPA, dim=-1)
    with pytest.raises(ValueError, match="floating"):
        sample_vmf(torch.ones(4, 64, dtype=torch.int64), KAPPA, dim=-1)
    with pytest.raises(ValueError, match="kappa"):
        vmf_mean_cosine(-1.0, 64)
    with pytest.raises(ValueError, match="dim"):
        vmf_mean_cosine(1.0, 1)
    with pytest.raises(ValueError, match="kappa"):
        VMFBottleneck(kappa=0.0)
