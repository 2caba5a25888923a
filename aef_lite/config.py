"""Configurations: the model (:class:`AEFConfig`, paper S2.4, Table S1) and the training recipe
(:class:`TrainConfig`, paper S2.2 scaled to a CPU run)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from aef_lite.losses import LossWeights
from aef_lite.support import MAX_FRAMES, SUPPORT_DAYS

SITES = ("landsat_colorado", "s2_brandenburg", "s2_virginia")
"""The shipped samples the default recipe trains on."""


def _default_sources() -> dict[str, int]:
    """Channel count per source of the shipped samples (see ``data_samples/README.md``)."""
    return {"s2": 13, "landsat5": 3, "landsat7": 3}


@dataclass
class AEFConfig:
    """Hyper-parameters of :class:`aef_lite.AEFModel`.

    The three STP widths follow the paper's naming: ``dim_precision`` (D_P, 3x3 convs at 1/2 L),
    ``dim_time`` (D_T, time-axial attention at 1/8 L) and ``dim_space`` (D_S, spatial attention
    at 1/16 L). ``sources`` maps each input source name to its channel count. ``meta_dims``
    gives the size of an optional per-frame sensor-metadata vector for a source's decoder
    (0 = none; the shipped samples carry none). ``n_periods``, ``min_period_days`` and
    ``max_period_days`` set the geometric ladder of timecode periods (:mod:`aef_lite.timecode`);
    the default, 1 day to 4 years in 8 rungs, has no rung at one year (``benchmarks/README.md``,
    continuous time, measures a ladder with one).

    ``shared_inputs`` maps a source to another source whose input projector (with its learned
    source embedding) and pixel-skip projection it uses, for sensors that measure the same bands,
    e.g. ``{"landsat7": "landsat5"}``; each source keeps its own decoder. The paper feeds Landsat 8
    and 9 as one input source (S2.1); it has no Landsat 5/7. Default: no sharing, as in the
    reference model. Measured over three training seeds (``benchmarks/README.md``, continuous
    time): sharing Landsat 5/7 cut the gap between the same season embedded from either sensor's
    frames alone from 1 - cos 0.66-0.78 to 0.26-0.42 and improved held-out Landsat in-painting,
    at the same sparse-label scores; not yet adopted for the reference.

    ``context_channels`` of the ``embed_dim`` channels form the embedding's neighbourhood group:
    they are smoothed by a Gaussian of ``context_sigma`` px before the embedding is made unit
    (see :func:`aef_lite.neighbourhood.context_unit`). 0 (the default) gives a plain unit embedding.
    The paper is silent on this; it is this project's choice for the reference model.
    """

    sources: dict[str, int] = field(default_factory=_default_sources)
    tile_size: int = 32
    dim_precision: int = 16
    dim_time: int = 32
    dim_space: int = 64
    n_blocks: int = 2
    heads_time: int = 2
    heads_space: int = 4
    heads_summary: int = 2
    mlp_ratio: int = 2
    embed_dim: int = 64
    n_periods: int = 8
    min_period_days: float = 1.0
    max_period_days: float = 4 * 365.25
    decoder_hidden: int = 64
    kappa: float = 8000.0
    context_channels: int = 0
    context_sigma: float = 3.0
    meta_dims: dict[str, int] = field(default_factory=dict)
    shared_inputs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("AEFConfig.sources is empty: give at least one source, e.g. {'s2': 13}")
        if self.tile_size % 16:
            raise ValueError(f"tile_size must be divisible by 16 (space operator runs at 1/16 L), got {self.tile_size}")
        for name, width, heads in (
            ("dim_time", self.dim_time, self.heads_time),
            ("dim_space", self.dim_space, self.heads_space),
            ("dim_precision", self.dim_precision, self.heads_summary),
        ):
            if width % heads:
                raise ValueError(f"{name}={width} is not divisible by its number of heads ({heads})")
        if not 0 <= self.context_channels < self.embed_dim:
            raise ValueError(f"context_channels must be in [0, embed_dim={self.embed_dim}), "
                             f"got {self.context_channels}")
        if not (0 < self.context_sigma and math.ceil(3 * self.context_sigma) < self.tile_size):
            raise ValueError(f"context_sigma must be > 0 px with 3 sigma < tile_size={self.tile_size}, "
                             f"got {self.context_sigma}")
        unknown = set(self.meta_dims) - set(self.sources)
        if unknown:
            raise ValueError(f"meta_dims names unknown sources {sorted(unknown)}")
        for name, owner in self.shared_inputs.items():
            if name not in self.sources or owner not in self.sources:
                raise ValueError(f"shared_inputs {name!r} -> {owner!r} names a source not in {sorted(self.sources)}")
            if owner in self.shared_inputs or owner == name:
                raise ValueError(f"shared_inputs {name!r} -> {owner!r}: the target must own its projector "
                                 "(no chains, no self-reference)")
            if self.sources[name] != self.sources[owner]:
                raise ValueError(f"shared_inputs {name!r} -> {owner!r}: {self.sources[name]} vs "
                                 f"{self.sources[owner]} bands; only sources with the same bands can share")

    def input_owner(self, source: str) -> str:
        """The source whose input projector and pixel skip ``source`` uses (itself unless shared)."""
        return self.shared_inputs.get(source, source)

    @classmethod
    def tiny(cls, **overrides: object) -> AEFConfig:
        """CPU / CI size: trains in minutes on 2 cores (~0.2M parameters)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides: object) -> AEFConfig:
        """A bigger CPU run (~1.1M parameters, L = 64); minutes per hundred steps on a laptop."""
        base = dict(
            tile_size=64, dim_precision=32, dim_time=64, dim_space=128, n_blocks=4,
            heads_time=4, heads_space=4, heads_summary=4, decoder_hidden=128,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def paper(cls, **overrides: object) -> AEFConfig:
        """The paper's widths (D_P=128, D_T=512, D_S=1024), 15 blocks, L=128, decoders of width 512.

        Instantiate it on the meta device (``with torch.device("meta"): AEFModel(cfg)``) to count
        parameters without allocating memory.
        """
        base = dict(
            tile_size=128, dim_precision=128, dim_time=512, dim_space=1024, n_blocks=15,
            heads_time=8, heads_space=16, heads_summary=8, mlp_ratio=4, decoder_hidden=512,
        )
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        """Plain-dict form, stored in checkpoints."""
        return asdict(self)


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (the paper's recipe scaled to a CPU run).

    ``lr`` peaks after a linear warmup over ``warmup_fraction`` of the steps and decays linearly
    to 0 at the last step (paper: 0 -> 1e-4 over 1k steps, to 0 at 100k). The default peak, 5e-3,
    is the best of those measured for the default 400 steps of the tiny model (3 training seeds,
    ``s2_brandenburg``, 10 labels per class, spatial splits; osm kNN-1 / water-land kNN-1): 1e-3
    0.325 / 0.72, 3e-3 0.345 / 0.83, 5e-3 0.354 / 0.93, 8e-3 (2 seeds) 0.337 / 0.93 (raw bands
    0.354 / 0.98). Longer runs want a lower peak: the 3000-step reference recipe keeps 1e-3
    (:func:`aef_lite.reference.reference_configs`). ``max_frames`` caps the
    frames per source and tile (evenly spread); ``frames_window_days`` is the valid period of
    each row. ``ckpt_every`` writes ``ckpt_<step>.pt`` (and always at the last step); with
    ``out_dir=None`` nothing is written. ``device`` is ``"cpu"`` or ``"cuda"`` (falls back to
    CPU when CUDA is not available); ``bf16`` enables bf16 autocast on CUDA only: on CPU (AMD EPYC
    with AVX512-BF16, torch 2.13) bf16 autocast made the step 2.2x (tiny) and 1.45x (small) slower,
    for embeddings that differ by up to 4e-3 from float32.

    ``full_extent_dir``: a folder written by ``python data_samples/prepare.py --full-extent``; the
    Sentinel-2 sites then train on the whole scenes their shipped samples were cut from (12x
    the pixels), while validation stays on the shipped samples' held-out blocks
    (:func:`aef_lite.sampling.with_full_extent`). None trains on the shipped samples alone.

    ``threads``: torch intra-op CPU threads while training (restored afterwards; None leaves the
    current setting). Default 1: the tiny model runs thousands of small ops per step, and when
    other processes share the cores OpenMP's spin-waiting made 2 threads about 10x *slower* than
    1 on the 2-core development machine; 1 also makes the result independent of the core count.

    ``compile``: run the step's forward through ``torch.compile`` (inductor; needs a C++ compiler
    on CPU). Off by default because it does not pay within the demo: on the 2-core development
    machine the first compilation of the tiny step took 571 s (recompiles included: T differs
    between sites) for a 1.37x faster step, i.e. it breaks even after about 6700 steps; with
    inductor's on-disk cache already filled by an earlier run it took 58 s (break-even about 730
    steps), against 400 steps for the demo and 1500 for the reference recipe
    (``python benchmarks/train_speed.py --compile``).
    """

    steps: int = 400
    batch_size: int = 8
    tile: int = 32
    frames_window_days: float = SUPPORT_DAYS
    max_frames: int = MAX_FRAMES
    lr: float = 5e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    loss_weights: LossWeights = field(default_factory=LossWeights)
    p_drop_source: float = 0.3
    sites: tuple[str, ...] = SITES
    full_extent_dir: str | None = None
    val_batches: int = 1
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    bf16: bool = False
    compile: bool = False
    log_every: int = 10
    val_every: int = 100
    ckpt_every: int = 200
    out_dir: str | None = "runs/aef-lite"
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.loss_weights, dict):
            self.loss_weights = LossWeights(**self.loss_weights)
        self.sites = tuple(self.sites)
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"need steps >= 1 and batch_size >= 2 (uniformity compares tiles), got "
                             f"steps={self.steps}, batch_size={self.batch_size}")
        if min(self.log_every, self.val_every, self.ckpt_every) < 1:
            raise ValueError("log_every, val_every and ckpt_every must be >= 1")

    def to_dict(self) -> dict:
        """Plain-dict form (stored in checkpoints)."""
        return asdict(self)
