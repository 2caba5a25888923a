"""The embedding's neighbourhood group: part of the 64 channels averaged over a few pixels.

A per-pixel embedding is compared by distance (kNN, clustering, similarity search). Raw bands
smoothed by a Gaussian of 2-3 px beat raw bands on sparse labels, because a land-cover class is
a property of a neighbourhood, not of one pixel. :func:`context_unit` gives the embedding that
property by construction: its first ``n`` channels are smoothed by a Gaussian of ``sigma`` px,
the rest keep the pixel's own detail, and each group is made unit and weighted by its share of
the channels::

    e = [ sqrt(n / E) * unit(G_sigma * r[:n]),  sqrt(1 - n / E) * unit(r[n:]) ]     |e| = 1

so the squared distance between two embeddings is ``n / E`` times the neighbourhood groups'
plus ``1 - n / E`` times the pixel groups'. The paper (S2.2) is silent on this: its embedding
gets context from the space operator alone; the neighbourhood group is this project's choice,
measured in ``benchmarks/README.md`` (quality).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aef_lite.vmf import unit


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth every channel of ``x (B, C, H, W)`` by a Gaussian of ``sigma`` px: same shape.

    Separable kernel truncated at 3 sigma and normalised to sum 1, edges reflected (the same
    filter as :func:`aef_lite.evaluate.smoothed_features`). Needs 3 sigma < H and < W."""
    radius = max(1, math.ceil(3 * sigma))
    if x.ndim != 4 or min(x.shape[-2:]) <= radius:
        raise ValueError(f"gaussian_blur needs (B, C, H, W) with H, W > {radius} px (3 sigma), got {tuple(x.shape)}")
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                    groups=c)


def context_unit(raw: torch.Tensor, n_context: int, sigma: float) -> torch.Tensor:
    """Unit embedding ``(B, E, H, W)`` of the summary's output ``raw (B, E, H, W)`` with a
    neighbourhood group of ``n_context`` channels smoothed at ``sigma`` px (module docstring).
    ``n_context = 0`` is the plain ``unit(raw)``."""
    if n_context == 0:
        return unit(raw, dim=1)
    share = n_context / raw.shape[1]
    context = unit(gaussian_blur(raw[:, :n_context], sigma), dim=1)
    return torch.cat([math.sqrt(share) * context, math.sqrt(1 - share) * unit(raw[:, n_context:], dim=1)], dim=1)
