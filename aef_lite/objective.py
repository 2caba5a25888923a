"""The training objective of one step (paper S2.2) and the validation loss.

One optimisation step (:class:`AEFObjective`):

1. hold out one target frame per source and row (or half of the patches of a single-date
   source) from the input (:func:`aef_lite.perturb.hold_out_targets`);
2. the teacher encodes the rest once; the row's valid period gives ``mu (B, 64, L, L)``, and
   every reconstructed source gets its own summary period around its target
   (:func:`summary_periods`) with its own embedding; the decoders reconstruct the held-out
   targets from a vMF sample of that embedding at the targets' instants (L1, S2.2.2-S2.2.3);
3. batch uniformity across the batch (S2.2.4);
4. the student encodes a perturbed view (:func:`aef_lite.perturb.student_view`); consistency
   ``1 - u . u_s`` (S2.2.4);
5. CLIP loss between tile-mean embeddings and the tiles' captions (S2.2.5, :mod:`aef_lite.text`);
6. ``total = a * recon + b * uniformity + c * consistency + d * clip``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aef_lite.data import Batch
from aef_lite.losses import (
    LossWeights,
    batch_uniformity_loss,
    clip_loss,
    consistency_loss,
    reconstruction_loss,
    total_loss,
)
from aef_lite.model import AEFModel, check_batch
from aef_lite.perturb import hold_out_targets, student_view
from aef_lite.sampling import VAL_STREAM, step_seed
from aef_lite.text import TextTower
from aef_lite.vmf import unit


def tile_means(mu: torch.Tensor) -> torch.Tensor:
    """Unit tile-mean embeddings: ``(B, E, L, L) -> (B, E)``."""
    return F.normalize(mu.mean(dim=(2, 3)), dim=-1)


def float_unit(mu: torch.Tensor) -> torch.Tensor:
    """Float32 unit embeddings ``(B, E, L, L)``: ``mu`` itself when the model already returned float32
    unit vectors (:meth:`AEFModel.summarise`), re-normalised after the cast otherwise (bf16)."""
    return mu if mu.dtype == torch.float32 else unit(mu.float(), dim=1)


MIN_SUMMARY_DAYS, MAX_SUMMARY_DAYS = 8.0, 730.0
"""Range of the random per-source summary periods (paper S2.2.3: longer than 4 days)."""

VISIBLE_WEIGHT = 0.25
"""Weight of the reconstruction of a single-date frame's visible pixels, relative to its hidden ones
(our choice). With weight 1 the in-scene embeddings drifted towards the raw bands as training went
on (osm kNN-1 at 10 labels: 0.366 after 400 steps, 0.355 after 1500, raw bands 0.354), while a model
trained without that scene reached 0.394: reconstructing visible pixels rewards copying them.
With weight 0 the field lost spectral detail (participation ratio 1.69 vs 1.95 for raw bands).
Re-measured with D_P = 32 on the model without the pixel skip of :mod:`aef_lite.stp`: weight 0
gave osm kNN-1 0.364 and a water/land kNN-1 of 0.76, weight 0.25 gave 0.361 and 0.92."""

P_ROW_PERIOD = 0.5
"""Probability that a source's summary period is the row's own valid period (the kind of period
embedded at inference) rather than a random one."""


def summary_periods(target_days: torch.Tensor, row_period: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-source summary periods ``(B, 2)`` around the targets' days ``(B,)`` (paper S2.2.3).

    With probability :data:`P_ROW_PERIOD` a row keeps its valid period ``row_period (B, 2)``;
    otherwise the length is log-uniform in [:data:`MIN_SUMMARY_DAYS`, :data:`MAX_SUMMARY_DAYS`]
    and the target falls at a uniform position inside, so short (sub-annual) periods, periods
    with no input inside them (interpolation) and beyond the inputs (extrapolation) are trained.
    The paper gives no distribution; this one is our choice.
    """
    b = target_days.shape[0]
    keep = torch.rand(b, generator=generator) < P_ROW_PERIOD
    log_len = torch.rand(b, generator=generator, dtype=torch.float64)
    length = torch.exp(math.log(MIN_SUMMARY_DAYS) + log_len * math.log(MAX_SUMMARY_DAYS / MIN_SUMMARY_DAYS))
    start = target_days.cpu() - torch.rand(b, generator=generator, dtype=torch.float64) * length
    random = torch.stack([start, start + length], dim=1).to(row_period.device)
    return torch.where(keep.to(row_period.device)[:, None], row_period, random)


class AEFObjective(nn.Module):
    """The model, the text tower and every loss of one step in a single ``forward`` (so DDP can
    wrap it): ``forward(batch, tokens, generator) -> {"total", "reconstruction", "uniformity",
    "consistency", "clip", "recon_<source>"...}``, scalar tensors.

    Args of ``forward``: ``batch`` (full, targets not yet held out), ``tokens (B, N)`` caption
    token ids, ``generator`` (CPU ``torch.Generator``) for hold-out, student view and vMF noise.
    """

    def __init__(self, model: AEFModel, text_tower: TextTower, weights: LossWeights | None = None,
                 p_drop_source: float = 0.3) -> None:
        super().__init__()
        self.model = model
        self.text_tower = text_tower
        self.weights = weights or LossWeights()
        self.p_drop_source = p_drop_source

    def forward(self, batch: Batch, tokens: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        model = self.model
        inputs, targets = hold_out_targets(batch, generator)
        check_batch(inputs, model.config)
        encoded = model.encoder(inputs)
        mu = float_unit(model.summarise(encoded, inputs.period))
        recon = {}
        for name, target in targets.items():
            if bool(target.mask.any()):
                period = summary_periods(target.days, inputs.period, generator)
                mu_n = float_unit(model.summarise(encoded, period))
                z = model.bottleneck(mu_n, generator=generator)
                pred = model.decode(z, name, target.days, period).float()
                w = self.weights.source_weight(name)
                recon[name] = reconstruction_loss(pred, target.values, target.hidden, w)
                visible = target.mask & ~target.hidden  # single-date rows: the pixels left in the input
                if VISIBLE_WEIGHT and bool(visible.any()):
                    recon[name] = recon[name] + VISIBLE_WEIGHT * reconstruction_loss(pred, target.values, visible, w)
        losses = {f"recon_{n}": v for n, v in recon.items()}
        losses["reconstruction"] = torch.stack(list(recon.values())).mean() if recon else mu.sum() * 0.0
        losses["uniformity"] = batch_uniformity_loss(mu)
        student = student_view(inputs, generator, self.p_drop_source)
        same = all(torch.equal(student.sources[n].mask, s.mask) for n, s in inputs.sources.items())
        mu_s = mu if same else float_unit(model.encode(student))
        losses["consistency"] = consistency_loss(mu, mu_s)
        period = inputs.period
        text = self.text_tower(tokens, model.encoder.codes(period), (period[:, 1] - period[:, 0]).to(torch.float64))
        losses["clip"] = clip_loss(tile_means(mu), text.float(), self.text_tower.aligner.scale())
        losses["total"] = total_loss(losses["reconstruction"], losses["uniformity"], losses["consistency"],
                                     losses["clip"], self.weights)
        return losses


def tile_mean_prediction(inputs: Batch, name: str) -> torch.Tensor:
    """The naive in-painting baseline: each row's per-band mean of the valid input pixels of
    source ``name`` (every input frame), broadcast to the tile: ``(B, C, L, L)`` (0, the
    normalised mean, for a row without valid input)."""
    src = inputs.sources[name]
    m = src.mask.unsqueeze(2).to(src.values.dtype)  # (B, T, 1, L, L)
    total = (torch.where(m > 0, src.values, 0.0)).sum(dim=(1, 3, 4))  # (B, C)
    mean = total / m.sum(dim=(1, 3, 4)).clamp_min(1)
    return mean[:, :, None, None].expand(-1, -1, *src.values.shape[-2:])


@torch.no_grad()
def held_out_errors(model: AEFModel, batches: Sequence[Batch], seed: int) -> dict[str, float]:
    """Mean L1 (normalised units) on the pixels hidden from the input, over fixed validation
    batches: ``{"model": ..., "tile_mean": ...}`` for the decoded reconstruction (eval mode:
    decoders read ``mu`` of the row's valid period) and for :func:`tile_mean_prediction`.
    The hold-out is drawn from a generator fixed by ``seed``."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(step_seed(seed, VAL_STREAM))
    errors: dict[str, list[float]] = {"model": [], "tile_mean": []}
    for batch in batches:
        inputs, targets = hold_out_targets(batch, gen)
        mu = model.embed(inputs).float()
        for name, t in targets.items():
            if bool(t.hidden.any()):
                pred = model.decode(mu, name, t.days, inputs.period).float()
                errors["model"].append(float(reconstruction_loss(pred, t.values, t.hidden)))
                errors["tile_mean"].append(float(reconstruction_loss(tile_mean_prediction(inputs, name), t.values,
                                                                     t.hidden)))
    model.train(was_training)
    return {k: float(np.mean(v)) if v else math.nan for k, v in errors.items()}


def validation_loss(model: AEFModel, batches: Sequence[Batch], seed: int) -> float:
    """Mean L1 reconstruction loss on the held-out (hidden) pixels of fixed validation batches
    (see :func:`held_out_errors`)."""
    return held_out_errors(model, batches, seed)["model"]
