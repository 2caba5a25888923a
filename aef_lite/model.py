"""The AlphaEarth Foundations model: STP encoder -> summary -> vMF embedding -> implicit decoders.

``AEFModel(cfg).embed(batch)`` returns the embedding field: a unit 64-d vector per pixel
``(B, 64, L, L)``, the mean direction ``mu`` of a von Mises-Fisher distribution on S^63
(paper S2.2.3). It is deterministic: noise (a vMF sample) is only drawn for the decoders
during training, through :meth:`AEFModel.sample`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from aef_lite.config import AEFConfig
from aef_lite.data import Batch
from aef_lite.decoders import ImplicitDecoder
from aef_lite.neighbourhood import context_unit
from aef_lite.stp import STPEncoder, SummaryPooling
from aef_lite.timecode import period_position
from aef_lite.vmf import VMFBottleneck


def check_batch(batch: Batch, cfg: AEFConfig) -> None:
    """Raise a clear ``ValueError`` if ``batch`` does not fit the model (shapes, names, NaNs, masks)."""
    if not batch.sources:
        raise ValueError("the batch has no source: give at least one of " + ", ".join(cfg.sources))
    period = batch.period
    if period.ndim != 2 or period.shape[1] != 2:
        raise ValueError(f"period must have shape (B, 2) = [t_start, t_end), got {tuple(period.shape)}")
    if not bool((period[:, 1] > period[:, 0]).all()):
        raise ValueError("every valid period needs t_end > t_start (days since the time origin)")
    size = None
    any_valid = torch.zeros(period.shape[0], dtype=torch.bool, device=period.device)
    for name, src in batch.sources.items():
        if name not in cfg.sources:
            raise ValueError(f"unknown source {name!r}; this model was built for {sorted(cfg.sources)}")
        if src.values.ndim != 5:
            raise ValueError(f"{name}: values must be (B, T, C, L, L), got shape {tuple(src.values.shape)}")
        b, t, c, h, w = src.values.shape
        if c != cfg.sources[name]:
            raise ValueError(f"{name}: expected {cfg.sources[name]} bands, got {c}")
        if h != w or h % 16:
            raise ValueError(f"{name}: tiles must be square with L divisible by 16, got {h}x{w}")
        if size not in (None, h):
            raise ValueError(f"all sources must share the tile size L, got {size} and {h}")
        size = h
        if b != period.shape[0]:
            raise ValueError(f"{name}: batch size {b} differs from period's {period.shape[0]}")
        if tuple(src.mask.shape) != (b, t, h, w) or src.mask.dtype != torch.bool:
            got = f"{src.mask.dtype} {tuple(src.mask.shape)}"
            raise ValueError(f"{name}: mask must be bool (B, T, L, L) = {(b, t, h, w)}, got {got}")
        if tuple(src.days.shape) != (b, t):
            raise ValueError(f"{name}: days must be (B, T) = {(b, t)}, got {tuple(src.days.shape)}")
        if not bool((torch.isfinite(src.values) | ~src.mask.unsqueeze(2)).all()):  # no boolean indexing (slow)
            raise ValueError(f"{name}: NaN or inf in valid pixels; mark such pixels invalid in the mask")
        any_valid |= src.mask.flatten(1).any(dim=1)
    if not bool(any_valid.all()):
        rows = (~any_valid).nonzero().flatten().tolist()
        raise ValueError(f"batch rows {rows} have every frame of every source masked: nothing to embed")


class AEFModel(nn.Module):
    """Mini AlphaEarth Foundations (paper S2). See :class:`aef_lite.AEFConfig` for sizes."""

    def __init__(self, config: AEFConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = STPEncoder(config)
        self.summary = SummaryPooling(
            config.dim_precision, config.heads_summary, 2 * config.n_periods, config.embed_dim
        )
        self.bottleneck = VMFBottleneck(kappa=config.kappa)
        self.decoders = nn.ModuleDict(
            {
                name: ImplicitDecoder(config.embed_dim, channels, config.decoder_hidden, config.meta_dims.get(name, 0))
                for name, channels in config.sources.items()
            }
        )

    def encode(self, batch: Batch) -> torch.Tensor:
        """Mean directions ``mu``: ``(B, E, L, L)``, unit norm along dim 1 (differentiable)."""
        check_batch(batch, self.config)
        return self.summarise(self.encoder(batch), batch.period)

    def summarise(self, encoded: tuple[torch.Tensor, ...], period: torch.Tensor) -> torch.Tensor:
        """Unit ``mu (B, E, L, L)`` of the encoder output ``encoded`` (features, codes, valid, pixels; see
        :class:`~aef_lite.stp.STPEncoder`) for valid periods ``period (B, 2)``.

        The encoder runs once per input; each valid period costs one summary (paper S2.2.3: one
        embedding per reconstructed source, each for its own summary period). With
        ``config.context_channels`` the first channels are the neighbourhood group
        (:func:`aef_lite.neighbourhood.context_unit`)."""
        features, codes, valid, pixels = encoded
        duration = (period[:, 1] - period[:, 0]).to(torch.float64)
        raw = self.summary(features, codes, valid, self.encoder.codes(period), duration, pixels)
        return context_unit(raw, self.config.context_channels, self.config.context_sigma)

    forward = encode

    @torch.no_grad()
    def embed(self, batch: Batch) -> torch.Tensor:
        """The embedding field ``(B, E, L, L)``: deterministic unit vectors (no vMF noise)."""
        return self.encode(batch)

    def sample(self, mu: torch.Tensor) -> torch.Tensor:
        """vMF(mu, kappa) sample in training mode, ``mu`` itself in eval mode: ``(B, E, L, L)``."""
        return self.bottleneck(mu)

    def decode(
        self, z: torch.Tensor, source: str, days: torch.Tensor, period: torch.Tensor, meta: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reconstruct ``source`` at instants ``days (B,)`` in ``period (B, 2)``: ``(B, C, L, L)``."""
        if source not in self.decoders:
            raise ValueError(f"no decoder for source {source!r}; known: {sorted(self.decoders)}")
        return self.decoders[source](z, period_position(days, period), meta)

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Write this model to a folder in Hugging Face layout (see :mod:`aef_lite.hub`)."""
        from aef_lite.hub import save_pretrained

        return save_pretrained(path, self)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike[str], revision: str | None = None) -> AEFModel:
        """Load a model folder or Hugging Face Hub repository id (see :mod:`aef_lite.hub`); eval mode."""
        from aef_lite.hub import load_pretrained

        return load_pretrained(path_or_repo_id, revision)[0]
