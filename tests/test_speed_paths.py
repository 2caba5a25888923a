"""The fast paths equal the reference math (same weights, same outputs within float32 rounding).

Reference = the textbook implementations the fast paths replace: ``F.scaled_dot_product_attention``
for every sequence length, ``F.normalize`` and the plain depthwise convolution of :class:`Down`.
Tolerances: attention and unit vectors 1e-5 (values and gradients); resampler gradients 1e-5
relative; model embeddings max |diff| <= 1e-4; losses relative 1e-4.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import aef_lite.neighbourhood
import aef_lite.operators
from aef_lite import AEFConfig, AEFModel, Batch, SourceBatch
from aef_lite.model import check_batch
from aef_lite.objective import AEFObjective
from aef_lite.operators import masked_attention
from aef_lite.pyramid import WINDOW_GRAD_MIN_FACTOR, Down, window_weight_grad
from aef_lite.text import TextTower
from aef_lite.vmf import unit


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None):
    """The fused-kernel implementation for every length (the code before the fast paths)."""
    if key_valid is None:
        return F.scaled_dot_product_attention(q, k, v)
    any_valid = key_valid.any(dim=-1)
    allowed = key_valid | ~any_valid[:, None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, None, :])
    return out * any_valid[:, None, None, None].to(out.dtype)


@pytest.mark.parametrize("tq,tk", [(1, 1), (3, 1), (2, 2), (16, 16), (1, 5), (20, 20)])
@pytest.mark.parametrize("masked", [False, True])
def test_masked_attention_equals_fused_kernel(tq: int, tk: int, masked: bool) -> None:
    gen = torch.Generator().manual_seed(tq * 100 + tk)
    q, k, v = (torch.randn(6, 2, t, 8, generator=gen, requires_grad=True) for t in (tq, tk, tk))
    valid = None
    if masked:
        valid = torch.rand(6, tk, generator=gen) < 0.6
        valid[0] = False  # a row with every key masked: exactly zero
        valid[1] = True
    out, ref = masked_attention(q, k, v, valid), reference_attention(q, k, v, valid)
    assert out.shape == (6, 2, tq, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    if masked:
        assert bool((out[0] == 0).all())
    g = torch.randn(out.shape, generator=gen)
    grads = torch.autograd.grad(out, (q, k, v), g, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g, allow_unused=True)
    for a, b in zip(grads, ref_grads, strict=True):
        a = torch.zeros_like(b) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_unit_equals_normalize() -> None:
    x = torch.randn(3, 64, 5, 5, dtype=torch.float32, requires_grad=True)
    with torch.no_grad():
        x[0, :, 0, 0] = 0.0  # the eps branch: a zero vector stays zero, like F.normalize
    y, ref = unit(x, dim=1), F.normalize(x, dim=1)
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=1e-6)
    assert bool((y[0, :, 0, 0] == 0).all())
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factor,size", [(8, 16), (8, 32), (16, 32), (4, 16), (2, 8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_down_gradients_equal_plain_convolution(factor: int, size: int, channels_last: bool) -> None:
    torch.manual_seed(factor + size)
    down = Down(6, 5, factor)
    x = torch.randn(3, 6, size, size)
    if channels_last:  # the layout the encoder's frames have
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = down(x)
    assert out.shape == (3, 5, size // factor, size // factor)
    g = torch.randn_like(out)
    params = [x, *down.parameters()]
    grads = torch.autograd.grad(out, params, g)
    norm, filt, mix = down.net
    ref = mix(filt(norm(x)))  # the plain modules: torch's own convolution backward
    torch.testing.assert_close(out, ref, atol=0, rtol=0)  # the forward is the same call
    for a, b in zip(grads, torch.autograd.grad(ref, params, g), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5 * float(b.abs().max()), rtol=1e-5)
    if factor >= WINDOW_GRAD_MIN_FACTOR:  # the custom weight gradient was the one used
        assert out.grad_fn.next_functions[0][0].name().startswith("_WindowConv")


def test_window_weight_grad_is_the_filter_gradient() -> None:
    """Against the definition: d/dw of sum(g * conv(x, w)) for a 2f x 2f filter at stride f."""
    gen = torch.Generator().manual_seed(0)
    f, c = 4, 3
    x, w = torch.randn(2, c, 8, 12, generator=gen), torch.randn(c, 1, 2 * f, 2 * f, generator=gen, requires_grad=True)
    out = F.conv2d(x, w, stride=f, padding=f // 2, groups=c)
    assert out.shape == (2, c, 2, 3)
    g = torch.randn(out.shape, generator=gen)
    (ref,) = torch.autograd.grad(out, w, g)
    torch.testing.assert_close(window_weight_grad(g, x, f), ref, atol=1e-5, rtol=1e-5)


def _batch(b: int = 4, size: int = 32) -> Batch:
    gen = torch.Generator().manual_seed(0)

    def source(t: int, c: int) -> SourceBatch:
        mask = torch.rand(b, t, size, size, generator=gen) > 0.2
        if t > 1:
            mask[1, 0] = False  # a frame that saw nothing (padding)
        days = 17000.0 + torch.sort(torch.rand(b, t, generator=gen, dtype=torch.float64) * 300).values
        return SourceBatch(torch.randn(b, t, c, size, size, generator=gen), days, mask)

    return Batch({"s2": source(1, 13), "landsat5": source(5, 3)},
                 torch.tensor([[17000.0, 17365.0]] * b, dtype=torch.float64))


@pytest.fixture
def reference_math(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aef_lite.operators, "masked_attention", reference_attention)
    monkeypatch.setattr(aef_lite.neighbourhood, "unit", lambda x, dim=1: F.normalize(x, dim=dim))


def _outputs(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    torch.manual_seed(0)
    cfg = AEFConfig.tiny()
    model, tower = AEFModel(cfg).eval(), TextTower(cfg)
    emb = model.embed(batch)
    objective = AEFObjective(model, tower).train()
    losses = objective(batch, tower.tokens(["water near a forest"] * batch.period.shape[0]),
                       torch.Generator().manual_seed(3))
    return emb, {k: float(v.detach()) for k, v in losses.items()}


def test_model_outputs_equal_reference_math(request: pytest.FixtureRequest) -> None:
    batch = _batch()
    emb, losses = _outputs(batch)
    request.getfixturevalue("reference_math")
    ref_emb, ref_losses = _outputs(batch)
    assert (emb - ref_emb).abs().max().item() <= 1e-4
    assert losses.keys() == ref_losses.keys()
    for name, value in losses.items():
        assert value == pytest.approx(ref_losses[name], rel=1e-4, abs=1e-7), name


def test_precision_state_frames_are_channels_last() -> None:
    """The layout the convolutions return and ChannelNorm reads, so no copies between them."""
    torch.manual_seed(0)
    features = AEFModel(AEFConfig.tiny()).encoder(_batch())[0]  # (B, T, D_P, L/2, L/2)
    assert features.shape == (4, 6, AEFConfig.tiny().dim_precision, 16, 16)
    assert features.movedim(2, -1).is_contiguous()


def test_check_batch_still_rejects_nan_in_valid_pixels() -> None:
    batch = _batch(b=2)
    cfg = AEFConfig.tiny()
    batch.sources["s2"].values[0, 0, 0, 3, 3] = float("nan")
    batch.sources["s2"].mask[0, 0, 3, 3] = False
    check_batch(batch, cfg)  # NaN at an invalid pixel is allowed
    batch.sources["s2"].mask[0, 0, 3, 3] = True
    with pytest.raises(ValueError, match="NaN or inf in valid pixels"):
        check_batch(batch, cfg)
