"""The training losses of AlphaEarth Foundations (paper S2.2.2-S2.2.5).

The total objective (paper S2.2) is::

    L = a * mean_i(w_i * L_recon_i) + b * L_uniformity + c * L_consistency + d * L_clip

with ``a = 1, b = 0.05, c = 0.02, d = 0.001``. Every function here returns a scalar tensor that
is differentiable w.r.t. its inputs (except where a stop-gradient is stated).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weight: float = 1.0
) -> torch.Tensor:
    """Masked L1 reconstruction loss for a continuous source (paper S2.2.2).

    ``L = w * sum_{b,c,y,x} m_{b,y,x} |pred - target| / (C * sum m)``: the mean absolute error
    over valid pixels and all bands, times the per-source weight ``w``.

    Args:
        pred: ``(B, C, L, L)`` decoded (normalised) bands.
        target: ``(B, C, L, L)`` held-out bands; values at invalid pixels are ignored (may be NaN).
        valid: ``(B, L, L)`` bool, True where the target pixel counts (held out and cloud-free).
        weight: per-source weight ``w_i``.

    Returns:
        Scalar tensor; exactly 0 (with a zero gradient, no NaN) when no pixel is valid.
    """
    m = valid.unsqueeze(1).expand_as(pred)
    err = torch.where(m, pred - target, 0.0).abs()  # where() also blocks NaN at invalid pixels
    return weight * err.sum() / m.sum().clamp_min(1)


def categorical_reconstruction_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weight: float = 1.0
) -> torch.Tensor:
    """Masked cross-entropy for a categorical target (paper S2.2.2), e.g. a land-cover map.

    ``L = -w * sum_{b,y,x} m_{b,y,x} log softmax(logits)_{target} / sum m``.

    Args:
        logits: ``(B, K, L, L)`` unnormalised class scores.
        target: ``(B, L, L)`` int64 class ids in ``[0, K)``; ids at invalid pixels are ignored.
        valid: ``(B, L, L)`` bool.
        weight: per-source weight ``w_i``.

    Returns:
        Scalar tensor; 0 when no pixel is valid.
    """
    safe = torch.where(valid, target.long(), 0)
    ce = F.cross_entropy(logits, safe, reduction="none")  # (B, L, L)
    return weight * torch.where(valid, ce, 0.0).sum() / valid.sum().clamp_min(1)


def batch_uniformity_loss(u: torch.Tensor) -> torch.Tensor:
    """Batch uniformity (paper S2.2.4): embeddings of different tiles should be spread out.

    Rotate the batch by one (``u'_b = u_{b-1}``, ``torch.roll`` along dim 0) and minimise
    ``mean |u . u'|``: random directions on a sphere are orthogonal on average, so this pushes
    the embedding distribution towards uniform on S^63 without a contrastive softmax. The
    pairing is *across the batch*, pixel (y, x) of tile b with pixel (y, x) of tile b-1 -- not
    neighbouring pixels of one image, which would penalise spatial smoothness (a known mistake).

    Args:
        u: ``(B, E, L, L)`` per-pixel unit embeddings or ``(B, E)`` vectors; B >= 2.

    Returns:
        Scalar in ``[0, 1]`` for unit vectors: 1 if all tiles share one direction, 0 if orthogonal.
    """
    if u.shape[0] < 2:
        raise ValueError(f"batch uniformity compares different tiles: it needs batch size >= 2, got {u.shape[0]}")
    rolled = torch.roll(u, shifts=1, dims=0)
    return (u * rolled).sum(dim=1).abs().mean()


def consistency_loss(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Teacher-student consistency (paper S2.2.4): ``mean(1 - u . u_s)`` over tiles and pixels.

    The student embeds a perturbed view of the teacher's input (see :mod:`aef_lite.perturb`).
    The paper shares all parameters between the two and does not state a stop-gradient; here the
    teacher is *detached* (our choice, as in BYOL/DINO-style self-distillation): the student is
    pulled towards the embedding of the fuller view, not the other way round.

    Args:
        teacher: ``(B, E, L, L)`` unit embeddings of the full view (gradient is stopped).
        student: ``(B, E, L, L)`` unit embeddings of the perturbed view.

    Returns:
        Scalar in ``[0, 2]``: 0 for identical directions, 1 for orthogonal ones.
    """
    return (1.0 - (teacher.detach() * student).sum(dim=1)).mean()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric CLIP loss (Radford et al. 2021) for text alignment (paper S2.2.5).

    ``S = exp(s) * I T^T`` with unit rows ``I, T``; the loss is
    ``(CE(S, arange(B)) + CE(S^T, arange(B))) / 2``: each tile must pick its own caption
    among the batch's captions and vice versa.

    Args:
        image_emb: ``(B, E)`` tile embeddings (normalised here).
        text_emb: ``(B, E)`` caption embeddings (normalised here).
        logit_scale: log of the softmax temperature's inverse, ``s`` (a learnable scalar).

    Returns:
        Scalar tensor; ``log B`` for random, near 0 for perfectly aligned, distinct pairs.
    """
    image = F.normalize(image_emb, dim=-1)
    text = F.normalize(text_emb, dim=-1)
    scale = torch.as_tensor(logit_scale, dtype=image.dtype, device=image.device).exp()
    logits = scale * image @ text.T
    labels = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@dataclass
class LossWeights:
    """Weights of the total loss (paper S2.2): a (reconstruction), b (uniformity), c
    (consistency), d (CLIP text alignment). The paper found b = 0.005 best in a sweep but trains
    with 0.05. ``sources`` holds optional per-source reconstruction weights ``w_i`` (default 1)."""

    reconstruction: float = 1.0
    uniformity: float = 0.05
    consistency: float = 0.02
    clip: float = 0.001
    sources: dict[str, float] | None = None

    def source_weight(self, name: str) -> float:
        """``w_i`` of source ``name``."""
        return 1.0 if self.sources is None else float(self.sources.get(name, 1.0))

    def to_dict(self) -> dict:
        """Plain-dict form (for checkpoints)."""
        return asdict(self)


def total_loss(
    reconstruction: dict[str, torch.Tensor] | torch.Tensor,
    uniformity: torch.Tensor,
    consistency: torch.Tensor,
    clip: torch.Tensor,
    weights: LossWeights | None = None,
) -> torch.Tensor:
    """``a * mean_i(w_i * L_recon_i) + b * L_unif + c * L_cons + d * L_clip`` (paper S2.2).

    ``reconstruction`` is either a dict source -> unweighted loss (weighted by
    ``weights.source_weight``, then averaged over sources) or an already reduced scalar.
    """
    w = weights or LossWeights()
    if isinstance(reconstruction, dict):
        if not reconstruction:
            raise ValueError("total_loss needs at least one reconstruction term")
        recon = torch.stack([w.source_weight(n) * v for n, v in reconstruction.items()]).mean()
    else:
        recon = reconstruction
    return w.reconstruction * recon + w.uniformity * uniformity + w.consistency * consistency + w.clip * clip
