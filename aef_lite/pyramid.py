"""Learned pyramid exchange between the three STP operators (paper S2.2.1, "STP block").

After each block every operator passes its state to every operator of the next block, across
scales, in the spirit of HRNet with learned (Laplacian-pyramid style) resampling. The three
states live at 1/2 L (precision, D_P), 1/8 L (time, D_T) and 1/16 L (space, D_S).

Resamplers are deliberately light (our choice; the paper gives no details): a per-channel
(depthwise) learned filter does the change of scale and a 1x1 convolution the change of width.
A single dense strided convolution would cost ``D_in * D_out * f^2`` weights (8M for the
paper's 1/2 L -> 1/16 L link) and dominate the model (a bug seen elsewhere); ours costs
``D_in * 4 f^2 + D_in * D_out``.

Both directions overlap neighbouring cells, so no block edges are imprinted on the field:
:class:`Down` filters with a ``2f x 2f`` window at stride ``f`` (each output cell sees half of
its neighbours' footprints), and :class:`Up` interpolates bilinearly. The first design used
non-overlapping ``f x f`` windows and nearest-neighbour (transposed-convolution) upsampling:
neighbouring pixels then differed about twice as much across the 8 px and 16 px grid lines of
the coarse operators as elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from aef_lite.operators import ChannelNorm


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D module to every frame: ``(B, T, D, h, w) -> (B, T, D', h', w')``."""
    b = x.shape[0]
    out = module(rearrange(x, "b t d h w -> (b t) d h w"))
    return rearrange(out, "(b t) d h w -> b t d h w", b=b)


def window_weight_grad(grad_out: torch.Tensor, x: torch.Tensor, factor: int) -> torch.Tensor:
    """Weight gradient of the depthwise ``2f x 2f`` filter at stride ``f``, padding ``f/2`` that
    :class:`Down` applies: ``grad_out (N, C, h/f, w/f)``, ``x (N, C, h, w)`` -> ``(C, 1, 2f, 2f)``.

    The padded input is cut into ``f x f`` blocks; output cell ``(i, j)`` sees blocks ``(i + a,
    j + b)`` for ``a, b`` in ``{0, 1}``, so each quadrant ``(a, b)`` of the filter is one
    contraction over samples and cells. On CPU this was 1.6-5x faster than oneDNN's depthwise
    weight gradient for 16 x 16 filters on the encoder's shapes (AMD EPYC, torch 2.13;
    ``benchmarks/README.md``) and is equal within float32 rounding (``tests/test_speed_paths.py``)."""
    n, c, h, w = x.shape
    ho, wo = h // factor, w // factor
    pad = factor // 2
    blocks = F.pad(x, (pad, pad, pad, pad)).reshape(n, c, ho + 1, factor, wo + 1, factor)
    rows = [torch.cat([torch.einsum("ncij,nciujv->cuv", grad_out, blocks[:, :, a:a + ho, :, b:b + wo, :])
                       for b in (0, 1)], dim=2) for a in (0, 1)]
    return torch.cat(rows, dim=1).unsqueeze(1)


class _WindowConv(torch.autograd.Function):
    """:func:`F.conv2d` of :class:`Down`'s depthwise filter with :func:`window_weight_grad` as its
    weight gradient (the input gradient from torch's own convolution backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, factor: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.factor = factor
        return F.conv2d(x, weight, bias, stride=factor, padding=factor // 2, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        f, c = ctx.factor, x.shape[1]
        grad_x = None
        if ctx.needs_input_grad[0]:  # input gradient alone: asking oneDNN for the bias too computes the weight's
            grad_x = torch.ops.aten.convolution_backward(grad_out, x, weight, [c], [f, f], [f // 2, f // 2], [1, 1],
                                                         False, [0, 0], c, [True, False, False])[0]
        grad_w = window_weight_grad(grad_out, x, f) if ctx.needs_input_grad[1] else None
        grad_b = grad_out.sum(dim=(0, 2, 3)) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


WINDOW_GRAD_MIN_FACTOR = 8
"""Smallest :class:`Down` factor whose filter's weight gradient :func:`window_weight_grad`
computes on CPU (for 8 x 8 filters and smaller oneDNN's own is faster)."""


class Down(nn.Module):
    """Learned downsampling by an integer ``factor``: ``(N, D_in, h, w) -> (N, D_out, h/f, w/f)``
    (``h`` and ``w`` multiples of ``f``)."""

    def __init__(self, dim_in: int, dim_out: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.net = nn.Sequential(  # norm, depthwise filter (the change of scale), 1x1 mix (of width)
            ChannelNorm(dim_in),
            nn.Conv2d(dim_in, dim_in, 2 * factor, stride=factor, padding=factor // 2, groups=dim_in),
            nn.Conv2d(dim_in, dim_out, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm, filt, mix = self.net
        x = norm(x)
        if x.device.type == "cpu" and self.factor >= WINDOW_GRAD_MIN_FACTOR and torch.is_grad_enabled():
            x = _WindowConv.apply(x, filt.weight, filt.bias, self.factor)
        else:
            x = filt(x)
        return mix(x)


class Up(nn.Module):
    """Learned upsampling by an integer ``factor``: ``(N, D_in, h, w) -> (N, D_out, h*f, w*f)``."""

    def __init__(self, dim_in: int, dim_out: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.net = nn.Sequential(ChannelNorm(dim_in), nn.Conv2d(dim_in, dim_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.net(x), scale_factor=self.factor, mode="bilinear", align_corners=False)


class PyramidExchange(nn.Module):
    """All-to-all exchange between the precision, time and space states.

    Inputs/outputs (per frame, so masked frames stay isolated):
    ``p: (B, T, D_P, L/2, L/2)``, ``t: (B, T, D_T, L/8, L/8)``, ``s: (B, T, D_S, L/16, L/16)``.
    Each new state is its old state plus the resampled other two.
    """

    def __init__(self, dim_p: int, dim_t: int, dim_s: int) -> None:
        super().__init__()
        self.t_to_p, self.s_to_p = Up(dim_t, dim_p, 4), Up(dim_s, dim_p, 8)
        self.p_to_t, self.s_to_t = Down(dim_p, dim_t, 4), Up(dim_s, dim_t, 2)
        self.p_to_s, self.t_to_s = Down(dim_p, dim_s, 8), Down(dim_t, dim_s, 2)

    def forward(
        self, p: torch.Tensor, t: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        new_p = p + _per_frame(self.t_to_p, t) + _per_frame(self.s_to_p, s)
        new_t = t + _per_frame(self.p_to_t, p) + _per_frame(self.s_to_t, s)
        new_s = s + _per_frame(self.p_to_s, p) + _per_frame(self.t_to_s, t)
        return new_p, new_t, new_s
