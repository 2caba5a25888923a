"""Training data: sites, their train/validation split, and the batch of every step.

Data order is a pure function of ``(seed, step, rank)``: the batch of step k on rank r comes
from a generator seeded with those numbers, cycling over the sites (one site per batch because
their sources differ). So a run resumed from a checkpoint is bit-identical to an uninterrupted
one, and DDP ranks see different data. Validation uses held-out parts of every scene: the
northern quarter of each single-date Sentinel-2 scene (a spatial block) and the last 365 days
of the Landsat series (a temporal block; its 61 x 61 px grid is too small to split in space).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from aef_lite.config import TrainConfig
from aef_lite.data import Batch, Sample, SourceSeries, cut_tile, load_sample, make_batch
from aef_lite.text import caption_for_tile

VAL_STREAM = 1_000_003
"""Seed-sequence tag of the validation batches (disjoint from every training step)."""


@dataclass
class Site:
    """A training site: its training part and its held-out validation part."""

    name: str
    train: Sample
    val: Sample


def _crop_rows(sample: Sample, start: int, stop: int) -> Sample:
    """Rows ``[start, stop)`` of every source and label map (transform shifted)."""
    rows = slice(start, stop)
    sources = {k: replace(s, values=s.values[..., rows, :], mask=s.mask[..., rows, :])
               for k, s in sample.sources.items()}
    labels = {k: replace(m, ids=m.ids[rows]) for k, m in sample.labels.items()}
    a, b, c, d, e, f = sample.transform
    return replace(sample, sources=sources, labels=labels, transform=[a, b, c + b * start, d, e, f + e * start])


def _frames_in(series: SourceSeries, start: float, end: float) -> SourceSeries:
    """The frames with ``start <= day < end`` (possibly none)."""
    keep = (series.days >= start) & (series.days < end)
    return replace(series, values=series.values[keep], days=series.days[keep], mask=series.mask[keep])


def _with_frames(sample: Sample, start: float, end: float) -> Sample:
    return replace(sample, sources={k: _frames_in(s, start, end) for k, s in sample.sources.items()})


def split_site(sample: Sample, tile: int, window_days: float) -> Site:
    """Split a scene into training and validation parts (no pixel-date in both).

    Scenes at least ``4 * tile`` px high give their northern quarter (at least one tile) to
    validation; smaller scenes with a long time series give their last ``window_days`` days.
    """
    if sample.height >= 4 * tile:
        cut = max(tile, sample.height // 4)
        return Site(sample.name, train=_crop_rows(sample, cut, sample.height), val=_crop_rows(sample, 0, cut))
    days = np.concatenate([s.days for s in sample.sources.values()])
    cut = float(days.max()) + 1.0 - window_days
    if cut <= days.min():
        raise ValueError(f"{sample.name}: {sample.height} px is too small for a spatial validation block "
                         f"(needs {4 * tile}) and its time span is too short for a temporal one")
    return Site(sample.name, train=_with_frames(sample, -math.inf, cut), val=_with_frames(sample, cut, math.inf))


def load_sites(names: Sequence[str], tile: int, window_days: float) -> list[Site]:
    """Load and split the named samples; samples smaller than the tile are skipped with a warning
    (e.g. the 61 px Landsat scene with the small preset's 64 px tiles)."""
    samples = [load_sample(n) for n in names]
    fits = [s for s in samples if min(s.height, s.width) >= tile]
    for s in samples:
        if s not in fits:
            warnings.warn(f"skipping {s.name}: {s.height}x{s.width} px is smaller than the {tile} px tile",
                          stacklevel=2)
    if not fits:
        raise ValueError(f"no training sample is at least {tile} px on a side: choose a smaller tile")
    return [split_site(s, tile, window_days) for s in fits]


def _has_valid(tile: Sample) -> bool:
    return any(bool(s.mask.any()) for s in tile.sources.values())


def draw_batch(sample: Sample, rng: np.random.Generator, cfg: TrainConfig) -> tuple[Batch, list[str]]:
    """``cfg.batch_size`` random tiles of ``sample`` with their captions.

    Each row: a random ``cfg.tile`` px crop and a valid period of ``cfg.frames_window_days``
    whole days, placed inside the time span for long series and around the date(s) for short
    ones (so a single-date row sees its frame anywhere in the period); only the frames inside
    the period are kept. Rows without any valid pixel are redrawn (up to 50 times).
    """
    days = np.concatenate([s.days for s in sample.sources.values()])
    first, end, window = float(days.min()), float(days.max()) + 1.0, cfg.frames_window_days
    lo, hi = sorted((first, end - window))
    tiles, periods = [], []
    for _ in range(cfg.batch_size):
        for _attempt in range(50):
            r = int(rng.integers(0, sample.height - cfg.tile + 1))
            c = int(rng.integers(0, sample.width - cfg.tile + 1))
            t0 = lo + float(rng.integers(0, int(hi - lo) + 1))
            tile = _with_frames(cut_tile(sample, r, c, cfg.tile), t0, t0 + window)
            if _has_valid(tile):
                break
        else:
            raise ValueError(f"{sample.name}: found no tile with a valid pixel in 50 draws")
        tiles.append(tile)
        periods.append((t0, t0 + window))
    batch = make_batch(tiles, period=np.array(periods), max_frames=cfg.max_frames)
    return batch, [caption_for_tile(t, p) for t, p in zip(tiles, periods, strict=True)]


def step_seed(*numbers: int) -> int:
    """A 63-bit seed that is a pure function of ``numbers`` (e.g. ``seed, step, rank``)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def step_batch(sites: Sequence[Site], cfg: TrainConfig, step: int, rank: int = 0,
               world_size: int = 1) -> tuple[Batch, list[str]]:
    """The training batch of ``step`` on ``rank``: a pure function of ``(seed, step, rank)``.

    Sites cycle over ``step * world_size + rank``, so in one step the ranks see different sites
    (when there are several) and, always, different tiles.
    """
    site = sites[(step * world_size + rank) % len(sites)]
    return draw_batch(site.train, np.random.default_rng(step_seed(cfg.seed, step, rank)), cfg)
