"""Implicit per-pixel decoders (paper S2.2.2).

One small MLP per target source reconstructs that source's bands at any instant inside the
valid period from a (vMF-sampled) embedding. Input per pixel: the 64-d embedding, Fourier
features of the target instant's position in the valid period (normalised to [0, 1)), and an
optional sensor-metadata vector (orbit geometry etc.; the shipped samples have none). Two
hidden layers as in the paper (width 512 there, ``decoder_hidden`` here). The MLP runs per
pixel, implemented as 1x1 convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from aef_lite.timecode import position_features

N_HARMONICS = 4


class ImplicitDecoder(nn.Module):
    """``z (B, E, H, W), position (B,), meta (B, M) | None -> (B, C, H, W)`` predicted bands."""

    def __init__(self, embed_dim: int, out_channels: int, hidden: int, meta_dim: int = 0) -> None:
        super().__init__()
        self.meta_dim = meta_dim
        cond_dim = 1 + 2 * N_HARMONICS + meta_dim
        self.net = nn.Sequential(
            nn.Conv2d(embed_dim + cond_dim, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, z: torch.Tensor, position: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        cond = position_features(position.to(z.dtype), N_HARMONICS)
        if self.meta_dim:
            if meta is None or meta.shape != (z.shape[0], self.meta_dim):
                raise ValueError(f"this decoder needs sensor metadata of shape (B, {self.meta_dim})")
            cond = torch.cat([cond, meta.to(z.dtype)], dim=-1)
        elif meta is not None:
            raise ValueError("this decoder was built with meta_dim=0 but sensor metadata was given")
        h, w = z.shape[-2:]
        cond = cond[:, :, None, None].expand(-1, -1, h, w)
        return self.net(torch.cat([z, cond], dim=1))
