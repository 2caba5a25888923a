"""Losses (paper S2.2.2-S2.2.5) on hand-made cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aef_lite.losses import (
    LossWeights,
    batch_uniformity_loss,
    categorical_reconstruction_loss,
    clip_loss,
    consistency_loss,
    reconstruction_loss,
    total_loss,
)


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_reconstruction_is_masked_mean_absolute_error() -> None:
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.ones(2, 3, 4, 4)
    target[1] = 3.0
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    valid[0, :2] = True  # 8 pixels with error 1
    valid[1, 0, 0] = True  # 1 pixel with error 3
    expected = (8 * 3 * 1.0 + 1 * 3 * 3.0) / (9 * 3)
    assert reconstruction_loss(pred, target, valid).item() == pytest.approx(expected)
    assert reconstruction_loss(pred, target, valid, weight=0.5).item() == pytest.approx(0.5 * expected)


def test_reconstruction_ignores_masked_target_pixels() -> None:
    pred = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randn(2, 3, 8, 8)
    valid = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5
    ref = reconstruction_loss(pred, target, valid)
    masked = ~valid.unsqueeze(1).expand_as(target)
    changed = target.clone()
    changed[masked] = 1e6
    changed[:, 0][~valid] = float("nan")  # even NaN at a masked pixel changes nothing
    out = reconstruction_loss(pred, changed, valid)
    assert out.item() == ref.item()
    out.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[masked] == 0).all()


def test_reconstruction_without_valid_pixel_is_zero_not_nan() -> None:
    pred = torch.randn(1, 2, 4, 4, requires_grad=True)
    out = reconstruction_loss(pred, torch.full((1, 2, 4, 4), float("nan")), torch.zeros(1, 4, 4, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert (pred.grad == 0).all()


def test_categorical_reconstruction() -> None:
    logits = torch.zeros(1, 4, 2, 2)  # uniform over K = 4 classes
    target = torch.tensor([[[0, 1], [2, 3]]])
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    assert categorical_reconstruction_loss(logits, target, valid).item() == pytest.approx(math.log(4))
    logits[0, 0, 0, 0] = 100.0  # the only valid pixel is predicted perfectly
    valid[:] = False
    valid[0, 0, 0] = True
    assert categorical_reconstruction_loss(logits, target, valid).item() == pytest.approx(0.0, abs=1e-6)
    target[0, 1, 1] = 99  # an out-of-range id at a masked pixel is ignored
    assert categorical_reconstruction_loss(logits, target, valid).item() == pytest.approx(0.0, abs=1e-6)
    assert categorical_reconstruction_loss(logits, target, torch.zeros_like(valid)).item() == 0.0


def test_uniformity_identical_vs_orthogonal() -> None:
    same = _unit(1, 8, 4, 4).expand(3, -1, -1, -1)
    assert batch_uniformity_loss(same).item() == pytest.approx(1.0)
    eye = torch.eye(4)  # (B=4, E=4): orthogonal tiles
    assert batch_uniformity_loss(eye).item() == pytest.approx(0.0)
    assert batch_uniformity_loss(-eye.roll(1, 0) + 0 * eye).item() == pytest.approx(0.0)


def test_uniformity_pairs_tiles_across_the_batch_not_neighbouring_pixels() -> None:
    # every tile is spatially constant (neighbouring pixels identical) but tiles are orthogonal
    tiles = torch.eye(4)[:, :, None, None].expand(4, 4, 8, 8)
    assert batch_uniformity_loss(tiles).item() == pytest.approx(0.0)
    # pixels vary inside each tile, but every tile is the same image: tiles fully aligned
    one = _unit(1, 16, 8, 8)
    assert batch_uniformity_loss(one.repeat(4, 1, 1, 1)).item() == pytest.approx(1.0)


def test_uniformity_needs_two_tiles() -> None:
    with pytest.raises(ValueError, match="batch size >= 2"):
        batch_uniformity_loss(_unit(1, 8, 4, 4))


def test_consistency_known_values_and_stop_gradient() -> None:
    u = _unit(2, 8, 4, 4)
    assert consistency_loss(u, u).item() == pytest.approx(0.0, abs=1e-6)
    assert consistency_loss(u, -u).item() == pytest.approx(2.0)
    e = torch.eye(2)[:, :, None, None].expand(2, 2, 3, 3)
    assert consistency_loss(e, e.flip(0)).item() == pytest.approx(1.0)
    teacher = u.clone().requires_grad_(True)
    student = _unit(2, 8, 4, 4, seed=1).requires_grad_(True)
    consistency_loss(teacher, student).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_clip_aligned_vs_shuffled() -> None:
    emb = torch.eye(6, 64)
    scale = torch.tensor(math.log(100.0))
    aligned = clip_loss(emb, emb, scale).item()
    shuffled = clip_loss(emb, emb.roll(1, 0), scale).item()
    assert aligned < 1e-3
    assert shuffled > 50.0
    uniform = clip_loss(emb, emb, torch.tensor(-50.0)).item()  # scale ~ 0: every pair alike
    assert uniform == pytest.approx(math.log(6), rel=1e-4)
    a, b = torch.randn(5, 16), torch.randn(5, 16)
    assert clip_loss(a, b, 2.0).item() == pytest.approx(clip_loss(b, a, 2.0).item(), rel=1e-6)


def test_total_loss_uses_paper_weights() -> None:
    w = LossWeights()
    assert (w.reconstruction, w.uniformity, w.consistency, w.clip) == (1.0, 0.05, 0.02, 0.001)
    one = torch.tensor(1.0)
    out = total_loss({"s2": torch.tensor(2.0), "landsat5": torch.tensor(4.0)}, one, one, one)
    assert out.item() == pytest.approx(3.0 + 0.05 + 0.02 + 0.001)
    weighted = LossWeights(sources={"s2": 0.0})
    assert total_loss({"s2": torch.tensor(2.0), "landsat5": torch.tensor(4.0)}, one, one, one,
                      weighted).item() == pytest.approx(2.0 + 0.071)
    assert total_loss(torch.tensor(0.5), one, one, one).item() == pytest.approx(0.571)
