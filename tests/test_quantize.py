"""Tests for the released-dataset int8 quantisation (paper S8.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aef_lite.quantization import (
    NODATA,
    QUANT_MAX_ABS_ERROR,
    band_names,
    bytes_per_pixel,
    dequantize,
    quant_abs_error_bound,
    quant_min_cosine,
    quant_norm_error_bound,
    quantize,
)

F32_SLACK = 1e-7  # dequantize returns float32


def _unit_vectors(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.25, 64),  # sqrt = 0.5 -> 63.75 -> 64
        (-0.25, -64),
        (0.0, 0),
        (0.01, 13),  # sqrt = 0.1 -> 12.75 -> 13
        (0.5, 90),  # sqrt = 0.70711 -> 90.156 -> 90
        (0.125, 45),  # sqrt = 0.35355 -> 45.078 -> 45
        (-1e-4, -1),  # sqrt = 0.01 -> 1.275 -> 1, negative sign
        (1e-6, 0),  # sqrt = 0.001 -> 0.1275 -> 0
        (1.0, 127),  # 127.5 -> 128 (half-even) -> clamped to 127
        (-1.0, -127),  # never the no-data code -128
        (1.0 + 5e-7, 127),  # within the tolerance, clamped
    ],
)
def test_quantize_hand_computed(x: float, expected: int) -> None:
    formula = max(-127, min(127, round(127.5 * math.copysign(1.0, x) * math.sqrt(abs(x)))))
    assert formula == expected
    q = quantize(np.array([[x]]), dim=-1)
    assert q.dtype == np.int8
    assert int(q[0, 0]) == expected
    qt = quantize(torch.tensor([[x]], dtype=torch.float64), dim=-1)
    assert qt.dtype == torch.int8
    assert int(qt[0, 0]) == expected


def test_dequantize_hand_computed() -> None:
    q = np.array([64, -64, 0, 127, -127, 1, NODATA], dtype=np.int8)
    v = dequantize(q)
    assert v.dtype == np.float32
    expected = [
        (64 / 127.5) ** 2,
        -((64 / 127.5) ** 2),
        0.0,
        (127 / 127.5) ** 2,
        -((127 / 127.5) ** 2),
        (1 / 127.5) ** 2,
    ]
    np.testing.assert_allclose(v[:6], np.array(expected, dtype=np.float32), rtol=0, atol=0)
    assert np.isnan(v[6])


def test_dequantize_every_code_in_a_strided_view_matches_the_formula() -> None:
    codes = np.arange(-128, 128, dtype=np.int8)
    grid = np.tile(codes, (3, 2)).reshape(6, 16, 16)[::2, ::-1, 1::3]  # not contiguous
    qf = grid.astype(np.float64)
    expected = np.where(grid == NODATA, np.nan, np.sign(qf) * (qf / 127.5) ** 2).astype(np.float32)
    v = dequantize(grid)
    assert v.shape == grid.shape and v.dtype == np.float32
    np.testing.assert_array_equal(v, expected)  # NaN == NaN for assert_array_equal


def test_all_codes_round_trip_exactly() -> None:
    q = np.arange(-127, 128, dtype=np.int8)
    assert np.array_equal(quantize(dequantize(q), dim=0), q)


def test_bound_values() -> None:
    delta = 1 / 255
    assert QUANT_MAX_ABS_ERROR == pytest.approx(509 / 65025, rel=1e-12)
    assert QUANT_MAX_ABS_ERROR == pytest.approx(2 * delta - delta**2, rel=1e-12)
    assert quant_norm_error_bound(64) == pytest.approx(0.022307, abs=1e-5)
    assert quant_min_cosine(64) == pytest.approx(0.999751, abs=1e-6)


def test_round_trip_within_bound_random_and_edges() -> None:
    x = _unit_vectors(20000)
    edges = np.array([0.0, 1.0, -1.0, 1e-12, -1e-9, 1e-6, 3e-5, 0.999, -0.9999, 0.5, 0.25])
    x = np.concatenate([x.ravel(), edges, np.random.default_rng(1).uniform(-1, 1, 20000)])
    v = dequantize(quantize(x, dim=0)).astype(np.float64)
    err = np.abs(v - x)
    assert err.max() <= QUANT_MAX_ABS_ERROR + F32_SLACK
    assert np.all(err <= quant_abs_error_bound(x) + F32_SLACK)
    # The global bound is tight: attained at x = +-1 (code +-127).
    v_edges = dequantize(quantize(np.array([1.0, -1.0]), dim=0)).astype(np.float64)
    np.testing.assert_allclose(np.abs(v_edges - [1.0, -1.0]), QUANT_MAX_ABS_ERROR, atol=F32_SLACK)
    # Zero and tiny values: exact zero code, error no larger than the value itself.
    tiny = np.array([0.0, 1e-12, -1e-9, 1e-6])
    assert np.all(quantize(tiny, dim=0) == 0)
    assert np.all(dequantize(quantize(tiny, dim=0)) == 0)


def test_unit_vector_cosine_and_norm_error() -> None:
    x = _unit_vectors(20000, seed=2)
    v = dequantize(quantize(x, dim=1)).astype(np.float64)
    norm_err = np.linalg.norm(v - x, axis=1)
    cos = (x * v).sum(1) / np.linalg.norm(v, axis=1)
    assert norm_err.max() <= quant_norm_error_bound(64)
    assert cos.min() >= quant_min_cosine(64)
    assert cos.min() > 0.9998  # measured ~0.99989
    assert cos.mean() > 0.9999  # measured ~0.99994
    assert np.abs((x * v).sum(1) - 1).max() <= quant_norm_error_bound(64)


def test_nodata_mask_torch_bchw() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(2, 64, 5, 6, generator=g), dim=1)
    valid = torch.rand(2, 5, 6, generator=g) > 0.3
    emb[~valid.unsqueeze(1).expand_as(emb)] = float("nan")  # invalid pixels may hold NaN
    q = quantize(emb, dim=1, valid=valid)
    assert q.shape == emb.shape and q.dtype == torch.int8
    inv = ~valid
    assert torch.all(q.permute(0, 2, 3, 1)[inv] == NODATA)
    assert torch.all(q.permute(0, 2, 3, 1)[valid] >= -127)
    v = dequantize(q)
    assert v.dtype == torch.float32
    assert torch.isnan(v.permute(0, 2, 3, 1)[inv]).all()
    assert not torch.isnan(v.permute(0, 2, 3, 1)[valid]).any()
    err = (v - emb).abs().permute(0, 2, 3, 1)[valid]
    assert err.max().item() <= QUANT_MAX_ABS_ERROR + F32_SLACK


def test_numpy_and_torch_agree() -> None:
    x = _unit_vectors(4000, seed=3).astype(np.float32)
    valid = np.random.default_rng(4).random(4000) > 0.1
    q_np = quantize(x, dim=-1, valid=valid)
    q_t = quantize(torch.from_numpy(x), dim=-1, valid=torch.from_numpy(valid))
    assert isinstance(q_np, np.ndarray) and isinstance(q_t, torch.Tensor)
    assert np.array_equal(q_np, q_t.numpy())
    assert np.array_equal(dequantize(q_np), dequantize(q_t).numpy(), equal_nan=True)
    # Band axis position does not matter.
    assert np.array_equal(quantize(x.T.copy(), dim=0).T, quantize(x, dim=1))


def test_band_names_and_bytes() -> None:
    names = band_names()
    assert len(names) == 64 and names[0] == "A00" and names[9] == "A09" and names[-1] == "A63"
    assert band_names(3) == ["A00", "A01", "A02"]
    assert bytes_per_pixel() == 64
    assert quantize(_unit_vectors(1), dim=1).nbytes == bytes_per_pixel()


def test_errors() -> None:
    x = _unit_vectors(3)
    bad = x.copy()
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantize(bad, dim=1)
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.from_numpy(bad), dim=1)
    # ... but fine when the NaN pixel is masked out.
    q = quantize(bad, dim=1, valid=np.array([True, False, True]))
    assert np.all(q[1] == NODATA)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        quantize(np.array([[1.01, 0.0]]), dim=1)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        quantize(np.array([[-1.0 - 1e-5, 0.0]]), dim=1)
    with pytest.raises(ValueError, match="int8"):
        dequantize(np.array([1, 2], dtype=np.int16))
    with pytest.raises(ValueError, match="int8"):
        dequantize(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="int8"):
        dequantize(torch.tensor([1, 2], dtype=torch.uint8))
    with pytest.raises(ValueError, match="floating"):
        quantize(np.array([[1, 0]]), dim=1)
    with pytest.raises(ValueError, match="shape"):
        quantize(x, dim=1, valid=np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        quantize(x, dim=1, valid=np.ones(3))
    with pytest.raises(ValueError, match="out of range"):
        quantize(x, dim=2)
    with pytest.raises(ValueError, match="ndarray"):
        quantize([[0.0, 1.0]], dim=1)  # type: ignore[arg-type]


def _reference_quantize(x: np.ndarray, dim: int, valid: np.ndarray | None) -> np.ndarray:
    """The formula of quantize() applied to the whole array at once."""
    x = x.astype(np.float64)
    vb = None if valid is None else np.expand_dims(valid, dim % x.ndim)
    xv = x if vb is None else np.where(vb, x, 0.0)
    q = np.clip(np.rint(127.5 * np.sign(xv) * np.sqrt(np.abs(xv))), -127, 127).astype(np.int8)
    return q if vb is None else np.where(vb, q, np.int8(NODATA)).astype(np.int8)


@pytest.mark.parametrize("block", [1, 5, 64, 1000, 1 << 20])
def test_block_wise_quantize_is_bit_identical(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import aef_lite.quantization as qmod

    monkeypatch.setattr(qmod, "QUANT_BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 64, 7, 9))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[0, :, 0, 0] = 0.0
    x[0, :3, 1, 1] = [1.0, -1.0, 0.25 / 127.5**2]  # the clamp and tiny values
    valid = rng.random((2, 7, 9)) > 0.2
    x = np.where(valid[:, None], x, np.nan)
    for arr in (x, x.astype(np.float32), x.astype(np.float16)):
        np.testing.assert_array_equal(quantize(arr, dim=1, valid=valid), _reference_quantize(arr, 1, valid))
    ok = np.nan_to_num(x)
    np.testing.assert_array_equal(quantize(ok, dim=1), _reference_quantize(ok, 1, None))
    last = np.moveaxis(ok, 1, -1).copy()  # band axis last, (N, 64)-style
    np.testing.assert_array_equal(quantize(last, dim=-1), _reference_quantize(last, -1, None))
    t = torch.from_numpy(ok.astype(np.float32)).to(torch.bfloat16)
    expect = _reference_quantize(t.float().numpy(), 1, None)
    np.testing.assert_array_equal(quantize(t, dim=1).numpy(), expect)
