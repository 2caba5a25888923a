"""The three STP operators: Space, Time, Precision (paper S2.2.1, Fig. 2).

Every operator maps a state of shape ``(B, T, D, h, w)`` (batch, frames, channels, height,
width) to a state of the same shape, with a residual connection:

* :class:`SpaceOperator`  - ViT-like self-attention over the ``h * w`` cells of each frame, run
  at 1/16 L, with 2-D sinusoidal positions (without them attention is blind to layout).
* :class:`TimeOperator`   - time-axial self-attention over the T frames of each cell, run at
  1/8 L; each frame is conditioned on its own timestamp's sinusoidal timecode, and frames that
  are invalid at a cell are removed with a key-padding mask (never fed as zeros).
* :class:`PrecisionOperator` - two 3x3 convolutions per frame at 1/2 L (local detail).

All reshapes go through :func:`einops.rearrange` with named axes, so time and pixels are
never mixed (a ``view`` of ``(B, T, H, W, C)`` into ``(B*H*W, T, C)`` without a permute is a
bug found in other re-implementations).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of a ``(N, D, h, w)`` map, independently per pixel."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


SHORT_ATTENTION = 16
"""Longest key sequence that :func:`masked_attention` computes with an explicit softmax (see there)."""


def attention_weights(q: torch.Tensor, k: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d))`` over the valid keys: ``(N, heads, Tq, Tk)``.

    Args as in :func:`masked_attention`. Rows whose keys are all masked get exactly zero weights.
    """
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (N, heads, Tq, Tk)
    if key_valid is None:
        return scores.softmax(dim=-1)
    any_valid = key_valid.any(dim=-1)  # (N,)
    allowed = key_valid | ~any_valid[:, None]  # all-masked rows attend to anything ...
    weights = scores.masked_fill(~allowed[:, None, None, :], float("-inf")).softmax(dim=-1)
    return weights * any_valid[:, None, None, None].to(weights.dtype)  # ... and are then zeroed


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention with a key-padding mask that is safe when all keys are masked.

    Args:
        q: ``(N, heads, Tq, d)``; k, v: ``(N, heads, Tk, d)``.
        key_valid: ``(N, Tk)`` bool, True = may be attended; ``None`` = all valid.

    Returns:
        ``(N, heads, Tq, d)``. Rows whose keys are all masked get exactly zero (no NaN, and no
        information from masked keys).

    The same math takes the cheapest kernel for the sequence lengths (equal to the fused kernel
    within float32 rounding, ``tests/test_speed_paths.py``): with a single key the softmax is
    exactly 1 and the output is ``v`` itself (single-date inputs: about 300x faster than the fused
    kernel); self-attention over at most :data:`SHORT_ATTENTION` keys uses the explicit
    :func:`attention_weights` ``@ v`` (1.3-4x faster on CPU for 2-16 tokens); longer sequences
    and a single query over many keys use ``F.scaled_dot_product_attention``.
    """
    if q.shape[-2] > 1 and 1 < k.shape[-2] <= SHORT_ATTENTION:
        return attention_weights(q, k, key_valid) @ v
    any_valid = None if key_valid is None else key_valid.any(dim=-1)  # (N,)
    if k.shape[-2] == 1:
        out = v.expand(*q.shape[:-1], v.shape[-1])
    elif key_valid is None:
        return F.scaled_dot_product_attention(q, k, v)
    else:
        allowed = key_valid | ~any_valid[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, None, :])
    if any_valid is None:
        return out
    return out * any_valid[:, None, None, None].to(out.dtype)  # all-masked rows are zeroed


class SelfAttention(nn.Module):
    """Multi-head self-attention over a token axis: ``(N, T, D) -> (N, T, D)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n t (three h d) -> three n h t d", three=3, h=self.heads)
        out = masked_attention(q, k, v, key_valid)
        return self.proj(rearrange(out, "n h t d -> n t (h d)"))


class MLP(nn.Module):
    """Token-wise feed-forward block ``D -> ratio*D -> D`` with GELU."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer; ``cond`` (same shape as x, or broadcastable) is added to the
    normalised tokens before attention (positions for space, timecodes for time)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.mlp = MLP(dim, mlp_ratio)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, key_valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x) + cond, key_valid)
        return x + self.mlp(self.norm2(x))


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sinusoidal positions, ``(h * w, dim)``; half the channels code rows, half columns.

    Fixed rather than learned so that a model trained on one tile size runs on any other.
    """
    if dim % 4:
        raise ValueError(f"2-D sinusoidal positions need dim divisible by 4, got {dim}")
    quarter = dim // 4
    freq = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    ay, ax = ys.reshape(-1, 1) * freq, xs.reshape(-1, 1) * freq
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)


class SpaceOperator(nn.Module):
    """Spatial self-attention within each frame at 1/16 L: ``(B, T, D_S, h, w) -> same``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.layer = TransformerLayer(dim, heads, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d, h, w = x.shape
        tokens = rearrange(x, "b t d h w -> (b t) (h w) d")
        tokens = self.layer(tokens, sincos_2d(h, w, d, device=x.device).to(x.dtype))
        return rearrange(tokens, "(b t) (h w) d -> b t d h w", b=b, h=h)


class TimeOperator(nn.Module):
    """Time-axial self-attention per cell at 1/8 L: ``(B, T, D_T, h, w) -> same``.

    Each frame's tokens get ``Linear(timecode(t_frame))`` added before attention; frames that are
    invalid at a cell are excluded as keys (and contribute nothing to any valid frame).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int, code_dim: int) -> None:
        super().__init__()
        self.time_proj = nn.Linear(code_dim, dim)
        self.layer = TransformerLayer(dim, heads, mlp_ratio)

    def forward(self, x: torch.Tensor, codes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, D, h, w)``; codes: ``(B, T, code_dim)``; valid: ``(B, T, h, w)`` bool."""
        b, t, d, h, w = x.shape
        tokens = rearrange(x, "b t d h w -> (b h w) t d")
        cond = repeat(self.time_proj(codes), "b t d -> (b h w) t d", h=h, w=w)
        key_valid = rearrange(valid, "b t h w -> (b h w) t")
        tokens = self.layer(tokens, cond, key_valid)
        return rearrange(tokens, "(b h w) t d -> b t d h w", b=b, h=h)


class PrecisionOperator(nn.Module):
    """Two 3x3 convolutions per frame at 1/2 L: ``(B, T, D_P, h, w) -> same``."""

    def __init__(self, dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            ChannelNorm(dim),
            nn.Conv2d(dim, mlp_ratio * dim, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(mlp_ratio * dim, dim, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        frames = rearrange(x, "b t d h w -> (b t) d h w")
        return x + rearrange(self.net(frames), "(b t) d h w -> b t d h w", b=b)
