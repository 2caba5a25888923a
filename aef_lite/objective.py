"""The training objective of one step (paper S2.2) and the validation loss.

One optimisation step (:class:`AEFObjective`):

1. hold out one target frame per source and row (or half of the patches of a single-date
   source) from the input (:func:`aef_lite.perturb.hold_out_targets`);
2. the teacher encodes the rest: ``mu (B, 64, L, L)``; the decoders reconstruct the held-out
   targets from a vMF sample of ``mu`` at the targets' instants (L1, S2.2.2);
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
from aef_lite.model import AEFModel
from aef_lite.perturb import hold_out_targets, student_view
from aef_lite.sampling import VAL_STREAM, step_seed
from aef_lite.text import TextTower


def tile_means(mu: torch.Tensor) -> torch.Tensor:
    """Unit tile-mean embeddings: ``(B, E, L, L) -> (B, E)``."""
    return F.normalize(mu.mean(dim=(2, 3)), dim=-1)


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
        mu = F.normalize(model.encode(inputs).float(), dim=1)  # float32 unit vectors (also under bf16)
        z = model.bottleneck(mu, generator=generator)
        recon = {}
        for name, target in targets.items():
            if bool(target.mask.any()):
                pred = model.decode(z, name, target.days, inputs.period).float()
                recon[name] = reconstruction_loss(pred, target.values, target.mask, self.weights.source_weight(name))
        losses = {f"recon_{n}": v for n, v in recon.items()}
        losses["reconstruction"] = torch.stack(list(recon.values())).mean() if recon else mu.sum() * 0.0
        losses["uniformity"] = batch_uniformity_loss(mu)
        student = student_view(inputs, generator, self.p_drop_source)
        same = all(torch.equal(student.sources[n].mask, s.mask) for n, s in inputs.sources.items())
        mu_s = mu if same else F.normalize(model.encode(student).float(), dim=1)
        losses["consistency"] = consistency_loss(mu, mu_s)
        period = inputs.period
        text = self.text_tower(tokens, model.encoder.codes(period), (period[:, 1] - period[:, 0]).to(torch.float64))
        losses["clip"] = clip_loss(tile_means(mu), text.float(), self.text_tower.aligner.scale())
        losses["total"] = total_loss(losses["reconstruction"], losses["uniformity"], losses["consistency"],
                                     losses["clip"], self.weights)
        return losses


@torch.no_grad()
def validation_loss(model: AEFModel, batches: Sequence[Batch], seed: int) -> float:
    """Mean L1 reconstruction loss on held-out targets of fixed validation batches (eval mode:
    decoders read ``mu``; hold-out drawn from a fixed generator)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(step_seed(seed, VAL_STREAM))
    values = []
    for batch in batches:
        inputs, targets = hold_out_targets(batch, gen)
        mu = model.embed(inputs).float()
        for name, t in targets.items():
            if bool(t.mask.any()):
                pred = model.decode(mu, name, t.days, inputs.period).float()
                values.append(float(reconstruction_loss(pred, t.values, t.mask)))
    model.train(was_training)
    return float(np.mean(values)) if values else math.nan
