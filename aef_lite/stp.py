"""The STP encoder and the time-conditioned summary (paper S2.2.1, S2.4).

Data flow for a batch with sources ``{name: (B, T_n, C_n, L, L)}``:

1. Per-source input projectors ("H" in the paper): 2x2 patch projection of ``[values * mask,
   mask]`` to D_P at 1/2 L, plus a learned source embedding (sensors with the same bands may share
   one projector: ``AEFConfig.shared_inputs``). Sources are then concatenated
   along time (asynchronous frames, each with its own timestamp): ``(B, T, D_P, L/2, L/2)``
   with ``T = sum_n T_n``.
2. Initial time and space states by learned downsampling; ``n_blocks`` STP blocks (space, time
   and precision operators in parallel, then the pyramid exchange); a final learned resampling
   of all three states to 1/2 L.
3. :class:`SummaryPooling`: a single query built from the valid period's timecodes attends over
   the T frames of every 1/2 L cell, then learned upsampling to L, plus a full-resolution pixel
   skip (:class:`PixelComposite`: the frames' pixels mixed by the same attention weights), and a
   projection to the 64-d mean direction ``mu`` on S^63.

Masks: invalid pixels (clouds, no data, held-out patches) are zeroed and flagged by the mask
channel of the input projector, so their values never enter. A frame with no valid pixel in
the tile (padding, a dropped or held-out frame) is excluded as a key from time attention and
from the summary everywhere, and operators act per frame elsewhere, so such a frame has no
influence at all on the output. A frame that is valid somewhere in the tile takes part at every
cell: where it saw nothing (a cloud, a held-out patch) its state holds only what the space and
precision operators brought from the neighbourhood. So a hole is embedded from its spatial
context by the same operators that embed visible pixels, which is what makes spatial in-painting
of single-date sources learnable and trains the function used at inference (our choice; the
paper masks nothing at the input and uses validity masks only in the loss). The first design
excluded a frame at every cell it did not observe: a hole then pooled nothing, its embedding was
the valid-period query alone, and about 80% of the in-painting loss pixels did not depend on
any input value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from aef_lite.config import AEFConfig
from aef_lite.data import Batch
from aef_lite.operators import ChannelNorm, PrecisionOperator, SpaceOperator, TimeOperator, attention_weights
from aef_lite.pyramid import Down, PyramidExchange, Up, _per_frame
from aef_lite.timecode import timecode, timecode_periods


def downsample_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A cell is valid if any of its pixels is: ``(B, T, H, W) -> (B, T, H/f, W/f)`` bool."""
    b = mask.shape[0]
    pooled = F.max_pool2d(rearrange(mask.float(), "b t h w -> (b t) h w"), factor)
    return rearrange(pooled, "(b t) h w -> b t h w", b=b) > 0


class InputProjector(nn.Module):
    """Source -> shared width at 1/2 L: ``values (B, T, C, L, L), mask (B, T, L, L) -> (B, T, D_P, L/2, L/2)``."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.patch = nn.Conv2d(channels + 1, dim, kernel_size=2, stride=2)
        self.source_embedding = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(2)
        x = torch.cat([torch.where(m, values, 0.0), m.to(values.dtype)], dim=2)  # masked values never enter
        return _per_frame(self.patch, x) + self.source_embedding[:, None, None]


class PixelComposite(nn.Module):
    """Full-resolution skip of one source: ``values (B, T, C, L, L), mask (B, T, L, L)`` and per-pixel
    frame weights ``(B, T, L, L)`` -> ``sum_t w_t * proj(x_t)``, ``(B, D, L, L)``.

    ``proj`` is a 1x1 convolution of a frame's pixels (masked pixels zeroed, and also given no
    weight). :class:`SummaryPooling` passes its own time-conditioned attention weights, upsampled
    from the 1/2 L cells to the pixels and renormalised over the frames valid at each pixel, so the
    skip is a full-resolution composite *of the summarised period*, not of every input frame. The
    projection is linear, so the frames are mixed first and projected once (``C`` channels per
    pixel instead of ``D`` per frame); the result is the same. The input projectors work on 2x2
    patches at 1/2 L (paper S2.4), so without a skip no pixel could be told from its patch
    neighbours: the field was too smooth for small features (a water/land kNN probe fell to 0.70,
    below the raw bands' 0.98). A pixel hidden in every frame gets no weight, so the skip never
    carries held-out values.

    The paper has no such path (our choice). It is what transfers to a scene the model never saw:
    trained without ``s2_brandenburg``, the recipe with a skip beat raw bands there (osm kNN-1
    0.370 vs 0.354), the same model without one collapsed (0.315, participation ratio 1.37). A
    first version averaged all frames uniformly, which bypassed the time-conditioned summary:
    held-out Landsat frames then decoded no better than a tile mean (L1 0.607 vs 0.603), and
    extrapolated dates worse than carrying the last observation forward (MAE ratio 1.17). With
    the summary's weights (same recipe, 1500 steps): 0.406 vs 0.603, and 0.92 of carry-forward;
    at 3000 steps (the shipped recipe) 0.464 vs 0.603, and 0.89;
    in-scene kNN is unchanged (see ``benchmarks/README.md``). For a single-date source the two
    versions are the same.
    """

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, 1)

    def forward(self, values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        w = weights * mask.to(weights.dtype)  # (B, T, L, L): no weight where a frame saw nothing
        mixed = torch.einsum("bthw,btchw->bchw", w, torch.where(mask.unsqueeze(2), values, 0.0))  # (B, C, L, L)
        return self.proj(mixed) + (w.sum(dim=1, keepdim=True) - 1) * self.proj.bias[:, None, None]


@dataclass
class PixelFrames:
    """The sources' full-resolution frames for the pixel skip, in the frame order of the encoder's
    features: per source its :class:`PixelComposite`, ``values (B, T_n, C_n, L, L)`` and
    ``mask (B, T_n, L, L)``."""

    composites: list[PixelComposite]
    values: list[torch.Tensor]
    masks: list[torch.Tensor]

    @property
    def mask(self) -> torch.Tensor:
        """``(B, T, L, L)`` bool: every source's pixel masks, concatenated along time."""
        return torch.cat(self.masks, dim=1)

    def mix(self, weights: torch.Tensor) -> torch.Tensor:
        """``sum_t w_t * proj_n(t)(x_t)`` over all frames: weights ``(B, T, L, L)`` -> ``(B, D, L, L)``."""
        parts = weights.split([m.shape[1] for m in self.masks], dim=1)
        return sum(c(v, m, w) for c, v, m, w in zip(self.composites, self.values, self.masks, parts, strict=True))


class STPBlock(nn.Module):
    """One STP block: the three operators run side by side, then exchange across scales."""

    def __init__(self, cfg: AEFConfig, code_dim: int) -> None:
        super().__init__()
        self.space = SpaceOperator(cfg.dim_space, cfg.heads_space, cfg.mlp_ratio)
        self.time = TimeOperator(cfg.dim_time, cfg.heads_time, cfg.mlp_ratio, code_dim)
        self.precision = PrecisionOperator(cfg.dim_precision, cfg.mlp_ratio)
        self.exchange = PyramidExchange(cfg.dim_precision, cfg.dim_time, cfg.dim_space)

    def forward(
        self, p: torch.Tensor, t: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, valid_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p: ``(B,T,D_P,L/2,L/2)``, t: ``(B,T,D_T,L/8,L/8)``, s: ``(B,T,D_S,L/16,L/16)``,
        codes: ``(B,T,2P)`` timecodes, valid_t: ``(B,T,L/8,L/8)`` bool."""
        return self.exchange(self.precision(p), self.time(t, codes, valid_t), self.space(s))


class STPEncoder(nn.Module):
    """Batch -> per-frame features at 1/2 L, ``(B, T, D_P, L/2, L/2)`` (see module docstring)."""

    def __init__(self, cfg: AEFConfig) -> None:
        super().__init__()
        self.periods = timecode_periods(cfg.n_periods, cfg.min_period_days, cfg.max_period_days).tolist()
        code_dim = 2 * cfg.n_periods
        dp, dt, ds = cfg.dim_precision, cfg.dim_time, cfg.dim_space
        self.sources = list(cfg.sources)
        self.owner = {n: cfg.input_owner(n) for n in cfg.sources}
        owners = {n: c for n, c in cfg.sources.items() if n not in cfg.shared_inputs}
        self.projectors = nn.ModuleDict({n: InputProjector(c, dp) for n, c in owners.items()})
        self.composites = nn.ModuleDict({n: PixelComposite(c, dp) for n, c in owners.items()})
        self.init_t, self.init_s = Down(dp, dt, 4), Down(dp, ds, 8)
        self.blocks = nn.ModuleList([STPBlock(cfg, code_dim) for _ in range(cfg.n_blocks)])
        self.final_t, self.final_s = Up(dt, dp, 4), Up(ds, dp, 8)

    def projector(self, source: str) -> InputProjector:
        """The input projector of ``source`` (shared with another source, see ``AEFConfig.shared_inputs``)."""
        return self.projectors[self.owner[source]]

    def composite(self, source: str) -> PixelComposite:
        """The pixel-skip projection of ``source`` (shared like its projector)."""
        return self.composites[self.owner[source]]

    def codes(self, days: torch.Tensor) -> torch.Tensor:
        """Timecodes of absolute days: ``(...) -> (..., 2P)``."""
        return timecode(days, torch.tensor(self.periods, dtype=torch.float64, device=days.device))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``features (B, T, D_P, L/2, L/2)``, ``codes (B, T, 2P)``, ``valid (B, T, L/2, L/2)``
        (the frame-level validity broadcast to the cells, see the module docstring) and the
        full-resolution frames of the pixel skip (:class:`PixelFrames`)."""
        names = [n for n in self.sources if n in batch.sources]  # fixed order
        srcs = [batch.sources[n] for n in names]
        # concatenated as (B, T, h, w, D), so every frame of the precision state is channels-last, the
        # layout its convolutions return and ChannelNorm reads: no layout copies between them
        p = torch.cat([self.projector(n)(s.values, s.mask).movedim(2, -1) for n, s in zip(names, srcs, strict=True)],
                      dim=1).movedim(-1, 2)
        days = torch.cat([s.days for s in srcs], dim=1)
        mask = torch.cat([s.mask for s in srcs], dim=1)
        codes = self.codes(days)
        frame_valid = mask.flatten(2).any(dim=2)  # (B, T): the frame saw something in the tile
        h = mask.shape[-1]
        t, s = _per_frame(self.init_t, p), _per_frame(self.init_s, p)
        for block in self.blocks:
            p, t, s = block(p, t, s, codes, frame_valid[:, :, None, None].expand(-1, -1, h // 8, h // 8))
        p = p + _per_frame(self.final_t, t) + _per_frame(self.final_s, s)
        pixels = PixelFrames([self.composite(n) for n in names], [x.values for x in srcs], [x.mask for x in srcs])
        return p, codes, frame_valid[:, :, None, None].expand(-1, -1, h // 2, h // 2), pixels


class SummaryPooling(nn.Module):
    """Time-conditioned summary (paper S2.2.1): one query from the valid period pools the frames.

    ``features (B, T, D, h, w)``, ``codes (B, T, 2P)``, ``valid (B, T, h, w)``, period timecodes
    ``(B, 2, 2P)``, durations ``(B,)`` and the sources' full-resolution frames (:class:`PixelFrames`)
    -> unnormalised ``(B, E, 2h, 2w)``:
    pooled cells, bilinear upsampling to L, plus the pixel skip averaged over the frames with the
    same attention weights (mean over heads, upsampled bilinearly to the pixels, renormalised over
    the frames valid at each pixel) and a projection of the attention mass those frames hold at the
    pixel; then a 3x3 convolution and the projection to E.

    The query is an MLP of ``[timecode(t_s), timecode(t_e), log(1 + duration / 1 year)]``, so a
    period with no input frames inside it (interpolation) or beyond the inputs (extrapolation)
    still gets a well-defined summary. The query is also added to the pooled value, so the
    embedding always knows which period it summarises.
    """

    def __init__(self, dim: int, heads: int, code_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Sequential(nn.Linear(2 * code_dim + 1, dim), nn.GELU(), nn.Linear(dim, dim))
        self.key_time = nn.Linear(code_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.coverage = nn.Conv2d(1, dim, 1)  # attention mass on the frames valid at the pixel
        self.head = nn.Sequential(  # after adding the pixel skip: a 3x3 conv, then the 64-d projection
            ChannelNorm(dim),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(dim, embed_dim, 1),
        )

    def forward(
        self,
        features: torch.Tensor,
        codes: torch.Tensor,
        valid: torch.Tensor,
        period_codes: torch.Tensor,
        duration_days: torch.Tensor,
        pixels: PixelFrames,
    ) -> torch.Tensor:
        b, _, _, h, w = features.shape
        span = torch.log1p(duration_days / 365.25).to(features.dtype).unsqueeze(-1)
        query = self.query(torch.cat([period_codes.flatten(1), span], dim=-1))  # (B, D)
        tokens = self.norm(rearrange(features, "b t d h w -> (b h w) t d"))
        keys = self.to_k(tokens + repeat(self.key_time(codes), "b t d -> (b h w) t d", h=h, w=w))
        q = repeat(self.to_q(query), "b d -> (b h w) 1 d", h=h, w=w)
        split = "n t (h d) -> n h t d"
        weights = attention_weights(rearrange(q, split, h=self.heads), rearrange(keys, split, h=self.heads),
                                    rearrange(valid, "b t h w -> (b h w) t"))  # (N, heads, 1, T)
        pooled = weights @ rearrange(self.to_v(tokens), split, h=self.heads)
        pooled = self.proj(rearrange(pooled, "n h 1 d -> n (h d)"))
        pooled = rearrange(pooled, "(b h w) d -> b d h w", b=b, h=h) + query[:, :, None, None]
        return self.head(self.upsample(pooled) + self.skip(weights, pixels, b, h))

    def skip(self, weights: torch.Tensor, pixels: PixelFrames, b: int, h: int) -> torch.Tensor:
        """The pixel skip of the summarised period: ``(B, D, 2h, 2w)`` from the attention weights
        ``(B*h*w, heads, 1, T)`` and the frames (see the class docstring)."""
        cell = rearrange(weights.mean(dim=1), "(b h w) 1 t -> b t h w", b=b, h=h)
        at_pixel = self.upsample(cell) * pixels.mask.to(cell.dtype)  # (B, T, 2h, 2w)
        mass = at_pixel.sum(dim=1, keepdim=True)  # (B, 1, 2h, 2w), in [0, 1]
        return pixels.mix(at_pixel / mass.clamp_min(1e-3)) + self.coverage(mass)
