"""Training data: sites, their train/validation split, and the batch of every step.

Data order is a pure function of ``(seed, step, rank)``: the batch of step k on rank r comes
from a generator seeded with those numbers, cycling over the sites; the rows of a batch come
from every scene with the same sources (the two Sentinel-2 scenes mix; the Landsat series has
other sources and batches of its own). So a run resumed from a checkpoint is bit-identical to an uninterrupted
one, and DDP ranks see different data. Validation uses held-out parts of every scene: the
northern quarter of each single-date Sentinel-2 scene (a spatial block) and the last 365 days
of the Landsat series (a temporal block; its 61 x 61 px grid is too small to split in space).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aef_lite.config import TrainConfig
from aef_lite.data import Batch, Sample, cut_tile, load_sample, make_batch
from aef_lite.support import frames_in, support_of
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


def _with_frames(sample: Sample, start: float, end: float) -> Sample:
    return replace(sample, sources={k: frames_in(s, start, end) for k, s in sample.sources.items()})


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


def _offset_in(outer: Sample, inner: Sample) -> tuple[int, int]:
    """``(row, col)`` of ``inner``'s top-left pixel in ``outer``'s grid (same CRS and pixel size,
    north-up); ValueError if the grids do not line up or ``inner`` leaves ``outer``."""
    a, _, c, _, e, f = outer.transform
    a2, _, c2, _, e2, f2 = inner.transform
    col, row = (c2 - c) / a, (f2 - f) / e
    if (outer.crs != inner.crs or (a, e) != (a2, e2) or abs(col - round(col)) > 1e-6
            or abs(row - round(row)) > 1e-6):
        raise ValueError(f"{inner.name}: its grid does not line up with {outer.name}'s")
    row, col = round(row), round(col)
    if not (0 <= row <= outer.height - inner.height and 0 <= col <= outer.width - inner.width):
        raise ValueError(f"{inner.name}: it is not inside {outer.name}'s extent")
    return row, col


def with_full_extent(site: Site, directory: Path | str) -> Site:
    """``site`` trained on the whole scene it was cut from, if ``directory`` holds it.

    ``directory`` is a cache written by ``python data_samples/prepare.py --full-extent``: one file
    pair per Sentinel-2 sample under the sample's own name, covering the whole source scene with the
    shipped sample's validation block set to no data. The site keeps its validation part (from the
    shipped sample), so validation numbers stay comparable with a run on the shipped samples alone.
    A sample without a file there is returned unchanged.

    Raises:
        ValueError: the file does not line up with the shipped sample, has other sources, or holds
            a valid pixel inside the site's validation block (it would leak validation into
            training).
    """
    path = Path(directory)
    if not (path / f"{site.name}.json").exists():
        return site
    full = load_sample(site.name, path)
    if list(full.sources) != list(site.val.sources):
        raise ValueError(f"{path / site.name}: sources {list(full.sources)} differ from the shipped "
                         f"sample's {list(site.val.sources)}")
    row, col = _offset_in(full, site.val)
    block = (slice(row, row + site.val.height), slice(col, col + site.val.width))
    if any(bool(s.mask[..., block[0], block[1]].any()) for s in full.sources.values()):
        raise ValueError(f"{path / site.name}: has valid pixels inside the validation block of "
                         f"{site.name}; rebuild it with `python data_samples/prepare.py --full-extent`")
    return Site(site.name, train=full, val=site.val)


def load_sites(names: Sequence[str], tile: int, window_days: float,
               full_extent_dir: Path | str | None = None) -> list[Site]:
    """Load and split the named samples; samples smaller than the tile are skipped with a warning
    (e.g. the 61 px Landsat scene with the small preset's 64 px tiles). With ``full_extent_dir``,
    sites whose whole scene is cached there train on it (:func:`with_full_extent`)."""
    samples = [load_sample(n) for n in names]
    fits = [s for s in samples if min(s.height, s.width) >= tile]
    for s in samples:
        if s not in fits:
            warnings.warn(f"skipping {s.name}: {s.height}x{s.width} px is smaller than the {tile} px tile",
                          stacklevel=2)
    if not fits:
        raise ValueError(f"no training sample is at least {tile} px on a side: choose a smaller tile")
    sites = [split_site(s, tile, window_days) for s in fits]
    if full_extent_dir is None:
        return sites
    if not Path(full_extent_dir).is_dir():
        raise FileNotFoundError(f"no full-extent folder {full_extent_dir}; write it with "
                                "`python data_samples/prepare.py --full-extent --out DIR`")
    return [with_full_extent(site, full_extent_dir) for site in sites]


def _has_valid(tile: Sample) -> bool:
    return any(bool(s.mask.any()) for s in tile.sources.values())


def draw_batch(samples: Sample | Sequence[Sample], rng: np.random.Generator, cfg: TrainConfig
               ) -> tuple[Batch, list[str]]:
    """``cfg.batch_size`` random tiles of ``samples`` (one scene, or several with the same sources,
    each row drawn from a random one of them) with their captions.

    Each row: a random ``cfg.tile`` px crop and a valid period of ``cfg.frames_window_days``
    whole days, placed inside the time span for long series and around the date(s) for short
    ones (so a single-date row sees its frame anywhere in the period); only the frames inside
    the period are kept. Rows without any valid pixel are redrawn (up to 50 times).
    """
    pool = [samples] if isinstance(samples, Sample) else list(samples)
    if len({tuple(s.sources) for s in pool}) != 1:
        raise ValueError(f"the scenes of one batch need the same sources, got {[list(s.sources) for s in pool]}")
    tiles, periods = [], []
    for _ in range(cfg.batch_size):
        sample = pool[int(rng.integers(len(pool)))] if len(pool) > 1 else pool[0]
        tile, period = _draw_row(sample, rng, cfg)
        tiles.append(tile)
        periods.append(period)
    batch = make_batch(tiles, period=np.array(periods), max_frames=cfg.max_frames)
    return batch, [caption_for_tile(t, p) for t, p in zip(tiles, periods, strict=True)]


def _draw_row(sample: Sample, rng: np.random.Generator, cfg: TrainConfig) -> tuple[Sample, tuple[float, float]]:
    """One random tile of ``sample`` with its frames inside a random valid period, and the period."""
    days = np.concatenate([s.days for s in sample.sources.values()])
    first, end, window = float(days.min()), float(days.max()) + 1.0, cfg.frames_window_days
    lo, hi = sorted((first, end - window))
    for _attempt in range(50):
        r = int(rng.integers(0, sample.height - cfg.tile + 1))
        c = int(rng.integers(0, sample.width - cfg.tile + 1))
        t0 = lo + float(rng.integers(0, int(hi - lo) + 1))
        tile = support_of(cut_tile(sample, r, c, cfg.tile), (t0, t0 + window))
        if _has_valid(tile):
            return tile, (t0, t0 + window)
    raise ValueError(f"{sample.name}: found no tile with a valid pixel in 50 draws")


def step_seed(*numbers: int) -> int:
    """A 63-bit seed that is a pure function of ``numbers`` (e.g. ``seed, step, rank``)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def step_batch(sites: Sequence[Site], cfg: TrainConfig, step: int, rank: int = 0,
               world_size: int = 1) -> tuple[Batch, list[str]]:
    """The training batch of ``step`` on ``rank``: a pure function of ``(seed, step, rank)``.

    Sites cycle over ``step * world_size + rank``; the batch of a site mixes rows of every site
    with the same sources (the two Sentinel-2 scenes), so batch uniformity compares pixels of
    different scenes, not only of one. In one step the ranks see different tiles.
    """
    site = sites[(step * world_size + rank) % len(sites)]
    group = [s.train for s in sites if list(s.train.sources) == list(site.train.sources)]
    return draw_batch(group, np.random.default_rng(step_seed(cfg.seed, step, rank)), cfg)
