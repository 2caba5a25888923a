"""Training: the full AEF objective on the shipped real samples, checkpoints, resume, DDP.

One optimisation step (paper S2.2, :class:`AEFObjective`):

1. hold out one target frame per source and row (or half of the patches of a single-date
   source) from the input (:func:`aef_lite.perturb.hold_out_targets`);
2. the teacher encodes the rest: ``mu (B, 64, L, L)``; the decoders reconstruct the held-out
   targets from a vMF sample of ``mu`` at the targets' instants (L1, S2.2.2);
3. batch uniformity across the batch (S2.2.4);
4. the student encodes a perturbed view (:func:`aef_lite.perturb.student_view`); consistency
   ``1 - u . u_s`` (S2.2.4);
5. CLIP loss between tile-mean embeddings and the tiles' captions (S2.2.5, :mod:`aef_lite.text`);
6. ``total = a * recon + b * uniformity + c * consistency + d * clip``.

Data order is a pure function of ``(seed, step, rank)``: the batch of step k on rank r comes
from a generator seeded with those numbers, cycling over the sites (one site per batch because
their sources differ). So a run resumed from a checkpoint is bit-identical to an uninterrupted
one, and DDP ranks see different data. Validation uses held-out parts of every scene: the
northern quarter of each single-date Sentinel-2 scene (a spatial block) and the last 365 days
of the Landsat series (a temporal block; its 61 x 61 px grid is too small to split in space).

Run ``python -m aef_lite.train --steps 400 --out runs/tiny`` on one process, or the same under
``torchrun --nproc_per_node 2 -m aef_lite.train ...`` for distributed data parallel training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm  # the terminal bar: tqdm.auto warns on stderr in Jupyter without ipywidgets

from aef_lite.config import AEFConfig
from aef_lite.data import Batch, Sample, SourceBatch, SourceSeries, cut_tile, default_data_dir, load_sample, make_batch
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
from aef_lite.text import TextTower, caption_for_tile

SITES = ("landsat_colorado", "s2_brandenburg", "s2_virginia")
CACHE_ENV = "AEF_LITE_CACHE"
VAL_STREAM = 1_000_003
"""Seed-sequence tag of the validation batches (disjoint from every training step)."""
LOSS_KEYS = ("total", "reconstruction", "uniformity", "consistency", "clip")
_CKPT_KEYS = ("config", "train_config", "model", "text", "optimizer", "step", "history", "version")


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (the paper's recipe scaled to a CPU run).

    ``lr`` peaks after a linear warmup over ``warmup_fraction`` of the steps and decays linearly
    to 0 at the last step (paper: 0 -> 1e-4 over 1k steps, to 0 at 100k). ``max_frames`` caps the
    frames per source and tile (evenly spread); ``frames_window_days`` is the valid period of
    each row. ``ckpt_every`` writes ``ckpt_<step>.pt`` (and always at the last step); with
    ``out_dir=None`` nothing is written. ``device`` is ``"cpu"`` or ``"cuda"`` (falls back to
    CPU when CUDA is not available); ``bf16`` enables bf16 autocast on CUDA only.

    ``threads``: torch intra-op CPU threads while training (restored afterwards; None leaves the
    current setting). Default 1: the tiny model runs thousands of small ops per step, and when
    other processes share the cores OpenMP's spin-waiting made 2 threads about 10x *slower* than
    1 on the 2-core development machine; 1 also makes the result independent of the core count.
    """

    steps: int = 400
    batch_size: int = 8
    tile: int = 32
    frames_window_days: float = 365.0
    max_frames: int = 8
    lr: float = 1e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    loss_weights: LossWeights = field(default_factory=LossWeights)
    p_drop_source: float = 0.3
    sites: tuple[str, ...] = SITES
    val_batches: int = 1
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1
    bf16: bool = False
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


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained modules (unwrapped, on the training device), the
    history (one dict of floats per logged step) and the last checkpoint (None if not saved)."""

    model: AEFModel
    text_tower: TextTower
    history: list[dict[str, float]]
    checkpoint: Path | None
    out_dir: Path | None


# ----------------------------------------------------------------------------------------------
# Objective
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


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


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(
        sources={n: SourceBatch(s.values.to(device), s.days.to(device), s.mask.to(device))
                 for n, s in batch.sources.items()},
        period=batch.period.to(device),
    )


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


# ----------------------------------------------------------------------------------------------
# Schedule, checkpoints
# ----------------------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of (0-based) ``step``: linear warmup from 0 to ``cfg.lr``, then linear decay
    reaching 0 after the last step."""
    warmup = max(1, round(cfg.warmup_fraction * cfg.steps))
    if step < warmup:
        return cfg.lr * (step + 1) / (warmup + 1)
    return cfg.lr * (cfg.steps - step) / max(1, cfg.steps - warmup + 1)


def _optimizer(objective: AEFObjective, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and kernels only (not on biases, norm gains, the logit scale)."""
    decay = [p for p in objective.parameters() if p.ndim >= 2]
    rest = [p for p in objective.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def _package_version() -> str:
    from aef_lite import __version__

    return __version__


def save_checkpoint(path: str | os.PathLike[str], model: AEFModel, text_tower: TextTower,
                    optimizer: torch.optim.Optimizer | None, step: int, train_cfg: TrainConfig,
                    history: list[dict[str, float]]) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, then ``os.replace``).

    Contents (all ``weights_only``-loadable): ``config`` (model, plain dict), ``train_config``,
    ``model`` and ``text`` state dicts, ``optimizer`` state (or None), ``step`` (steps done),
    ``history``, ``version``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "config": model.config.to_dict(),
        "train_config": train_cfg.to_dict(),
        "model": model.state_dict(),
        "text": text_tower.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "history": history,
        "version": _package_version(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _config_diff(saved: dict, wanted: dict) -> str:
    keys = sorted(set(saved) | set(wanted))
    return ", ".join(f"{k}={saved.get(k)!r} (requested {wanted.get(k)!r})"
                     for k in keys if saved.get(k) != wanted.get(k))


def load_checkpoint(path: str | os.PathLike[str], model_cfg: AEFConfig | None = None) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (no arbitrary code execution).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable aef-lite checkpoint (corrupt, truncated, other
            format), or it was written for a model configuration other than ``model_cfg``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt files
        raise ValueError(f"checkpoint {path} is corrupt or not a torch file ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or not set(_CKPT_KEYS) <= set(ckpt):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path} is not an aef-lite checkpoint: expected keys {list(_CKPT_KEYS)}, "
                         f"found {found}")
    if model_cfg is not None and ckpt["config"] != model_cfg.to_dict():
        diff = _config_diff(ckpt["config"], model_cfg.to_dict())
        raise ValueError(f"checkpoint {path} was written for a model with {diff}")
    return ckpt


def models_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> tuple[AEFModel, TextTower]:
    """Build the model and text tower of a loaded checkpoint (eval mode, CPU).

    Raises ``ValueError`` if the stored weights do not fit the stored configuration.
    """
    cfg = AEFConfig(**ckpt["config"])
    model, text_tower = AEFModel(cfg), TextTower(cfg)
    try:
        model.load_state_dict(ckpt["model"])
        text_tower.load_state_dict(ckpt["text"])
    except RuntimeError as err:
        raise ValueError(f"{source} was written for a model with other parameter shapes than its config "
                         f"{ckpt['config']}: {err}") from err
    return model.eval(), text_tower.eval()


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The ``ckpt_<step>.pt`` with the highest step in ``out_dir``, or None."""
    paths = sorted(Path(out_dir).glob("ckpt_*.pt"))
    return paths[-1] if paths else None


# ----------------------------------------------------------------------------------------------
# Distributed
# ----------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int
    world_size: int
    local_rank: int
    created_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


@contextmanager
def _distributed(device: torch.device) -> Iterator[_Dist]:
    """Join the process group torchrun describes (env RANK / WORLD_SIZE / LOCAL_RANK), gloo on
    CPU and nccl on CUDA; single process when WORLD_SIZE is unset or 1. Destroys a group it made."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    try:
        yield _Dist(rank, world, local, created)
        if created:
            dist.barrier()  # let every rank finish before the group goes away
    finally:
        if created:
            dist.destroy_process_group()


@contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name.startswith("cuda") and torch.cuda.is_available():
        device = torch.device(name if ":" in name else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------------


class _Meter:
    """Sums and counts of the losses since the last log entry (all-reduced under DDP)."""

    def __init__(self, sources: Sequence[str], device: torch.device) -> None:
        self.device = device  # where the all-reduce runs (nccl needs CUDA tensors)
        self.keys = [*LOSS_KEYS, *(f"recon_{s}" for s in sources)]
        self.sums = torch.zeros(len(self.keys), dtype=torch.float64)
        self.counts = torch.zeros(len(self.keys), dtype=torch.float64)

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for i, k in enumerate(self.keys):
            if k in losses:
                self.sums[i] += float(losses[k].detach())
                self.counts[i] += 1

    def pop(self) -> dict[str, float]:
        if dist.is_initialized():
            both = torch.stack([self.sums, self.counts]).to(self.device)
            dist.all_reduce(both)
            self.sums, self.counts = both[0].cpu(), both[1].cpu()
        out = {k: float(s / c) for k, s, c in zip(self.keys, self.sums, self.counts, strict=True) if c > 0}
        self.sums.zero_()
        self.counts.zero_()
        return out


def train(model_cfg: AEFConfig | None = None, train_cfg: TrainConfig | None = None,
          resume: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train (or resume) a model on the real samples; works alone or under ``torchrun``.

    Args:
        model_cfg: model configuration; default :meth:`AEFConfig.tiny`, or the checkpoint's when
            resuming.
        train_cfg: run configuration; default ``TrainConfig()``, or the checkpoint's when resuming.
        resume: a checkpoint to continue from (model, text tower, optimizer, step, history), or
            a run folder (its latest ``ckpt_<step>.pt``). Continuing to step N with the same
            ``train_cfg`` gives the same weights as an uninterrupted run to N (a different
            ``steps`` changes the learning-rate schedule).

    Returns:
        :class:`TrainResult`. Only rank 0 writes files (checkpoints ``ckpt_<step>.pt`` every
        ``ckpt_every`` steps and at the end, ``history.jsonl``).
    """
    if resume is not None and Path(resume).is_dir():
        found = latest_checkpoint(resume)
        if found is None:
            raise FileNotFoundError(f"no ckpt_<step>.pt in {resume} to resume from")
        resume = found
    ckpt = load_checkpoint(resume, model_cfg) if resume is not None else None
    if model_cfg is None:
        model_cfg = AEFConfig(**ckpt["config"]) if ckpt else AEFConfig.tiny()
    if train_cfg is None:
        train_cfg = TrainConfig(**ckpt["train_config"]) if ckpt else TrainConfig()
    cfg = train_cfg
    use_cuda = cfg.device.startswith("cuda") and torch.cuda.is_available()
    with _distributed(torch.device("cuda" if use_cuda else "cpu")) as env, _cpu_threads(cfg.threads):
        device = _resolve_device(cfg.device, env.local_rank)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model, text_tower = AEFModel(model_cfg), TextTower(model_cfg)
        objective = AEFObjective(model, text_tower, cfg.loss_weights, cfg.p_drop_source).to(device).train()
        optimizer = _optimizer(objective, cfg)
        start, history = 0, []
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            text_tower.load_state_dict(ckpt["text"])
            optimizer.load_state_dict(ckpt["optimizer"])
            start, history = int(ckpt["step"]), list(ckpt["history"])
        step_fn = objective
        if env.world_size > 1:
            ids = [device.index] if device.type == "cuda" else None
            step_fn = nn.parallel.DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)

        sites = load_sites(cfg.sites, cfg.tile, cfg.frames_window_days)
        val = [_to_device(draw_batch(s.val, np.random.default_rng(step_seed(cfg.seed, VAL_STREAM, i)), cfg)[0], device)
               for s in sites for i in range(cfg.val_batches)]
        out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
        writes = env.main and out_dir is not None
        if writes:
            out_dir.mkdir(parents=True, exist_ok=True)
            if start == 0:  # a fresh run starts a fresh log
                (out_dir / "history.jsonl").unlink(missing_ok=True)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and device.type == "cuda"
                    else nullcontext())
        meter, last_ckpt = _Meter(list(model_cfg.sources), device), None
        bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and env.main), desc="train")
        t_start, step_times = time.perf_counter(), 0
        for step in range(start, cfg.steps):
            batch, captions = step_batch(sites, cfg, step, env.rank, env.world_size)
            batch = _to_device(batch, device)
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, env.rank, 1))
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            with autocast:
                losses = step_fn(batch, text_tower.tokens(captions, device), gen)
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # DDP notes a stride mismatch of a size-1 dim: harmless
                warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
                losses["total"].backward()
            nn.utils.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
            optimizer.step()
            meter.add(losses)
            step_times += 1
            done, last = step + 1, step + 1 == cfg.steps
            bar.update(1)
            bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}")
            if done % cfg.log_every == 0 or done % cfg.val_every == 0 or last:
                elapsed = time.perf_counter() - t_start
                entry = {"step": float(done), "lr": lr_at(step, cfg), **meter.pop(),
                         "steps_per_s": step_times / max(elapsed, 1e-9)}
                if done % cfg.val_every == 0 or last:
                    entry["val_reconstruction"] = validation_loss(model, val, cfg.seed)
                history.append(entry)
                if writes:
                    with open(out_dir / "history.jsonl", "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(entry) + "\n")
                t_start, step_times = time.perf_counter(), 0
            if writes and (done % cfg.ckpt_every == 0 or last):
                last_ckpt = save_checkpoint(out_dir / f"ckpt_{done:06d}.pt", model, text_tower, optimizer,
                                            done, cfg, history)
        bar.close()
    return TrainResult(model.eval(), text_tower.eval(), history, last_ckpt, out_dir)


# ----------------------------------------------------------------------------------------------
# Cached default run
# ----------------------------------------------------------------------------------------------


def _cache_key(model_cfg: AEFConfig, train_cfg: TrainConfig) -> str:
    """Hash of the configs (minus output options), the package version and source, and the sample files."""
    run = {k: v for k, v in train_cfg.to_dict().items() if k not in ("out_dir", "progress")}
    h = hashlib.sha256(json.dumps([model_cfg.to_dict(), run, _package_version()], sort_keys=True).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):  # any code change retrains
        h.update(source.read_bytes())
    root = default_data_dir()
    for name in train_cfg.sites:
        for suffix in (".json", ".npz"):
            h.update((root / f"{name}{suffix}").read_bytes())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$AEF_LITE_CACHE`` if set, else ``~/.cache/aef-lite``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "aef-lite"


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (POSIX ``flock``; no-op elsewhere), so
    processes asking for the same cached run wait for one training instead of each training."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_cached(path: Path, model_cfg: AEFConfig) -> tuple[AEFModel, TextTower, list[dict[str, float]]] | None:
    if not path.is_file():
        return None
    try:
        ckpt = load_checkpoint(path, model_cfg)
        return (*models_from_checkpoint(ckpt, str(path)), list(ckpt["history"]))
    except ValueError:  # corrupt or stale: train again
        path.unlink(missing_ok=True)
        return None


def pretrained(model_cfg: AEFConfig | None = None, train_cfg: TrainConfig | None = None,
               cache_dir: str | os.PathLike[str] | None = None) -> tuple[AEFModel, TextTower, list[dict[str, float]]]:
    """The default tiny run, trained once and cached on disk; later calls load it.

    The cache file is ``<cache_dir>/aef-lite-<key>.pt`` with ``key`` a hash of both configs
    (except ``out_dir`` and ``progress``), the package version and the sample files, so a changed
    recipe or dataset retrains. Default configs: :meth:`AEFConfig.tiny` and
    ``TrainConfig(progress=False)`` (quiet, for notebooks). A corrupt cache file is retrained;
    concurrent callers (several notebooks) wait on a lock file and train only once.

    Returns:
        ``(model, text_tower, history)``, modules in eval mode on CPU.
    """
    model_cfg = model_cfg or AEFConfig.tiny()
    train_cfg = train_cfg or TrainConfig(progress=False)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"aef-lite-{_cache_key(model_cfg, train_cfg)}.pt"
    cached = _load_cached(path, model_cfg)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_suffix(".lock")):
        cached = _load_cached(path, model_cfg)  # another process may have trained it meanwhile
        if cached is not None:
            return cached
        work = Path(tempfile.mkdtemp(dir=root, prefix=".run-"))
        try:
            result = train(model_cfg, replace(train_cfg, out_dir=str(work), ckpt_every=train_cfg.steps))
            os.replace(result.checkpoint, path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return result.model.cpu(), result.text_tower.cpu(), result.history


# ----------------------------------------------------------------------------------------------
# Command line (for torchrun)
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m aef_lite.train --steps 400 --out runs/tiny`` (also under ``torchrun``)."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m aef_lite.train", description=main.__doc__)
    parser.add_argument("--preset", choices=["tiny", "small"], default="tiny", help="model size")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument("--val-every", type=int, default=defaults.val_every)
    parser.add_argument("--ckpt-every", type=int, default=defaults.ckpt_every)
    parser.add_argument("--out", default=defaults.out_dir, help="output folder (checkpoints, history.jsonl)")
    parser.add_argument("--resume", default=None, help="checkpoint (or run folder) to continue from")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    model_cfg = AEFConfig.small() if args.preset == "small" else AEFConfig.tiny()
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                      threads=args.threads or None, bf16=args.bf16, log_every=args.log_every, val_every=args.val_every,
                      ckpt_every=args.ckpt_every, out_dir=args.out, progress=not args.no_progress,
                      tile=model_cfg.tile_size)
    result = train(model_cfg, cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0 and result.history:
        last = result.history[-1]
        summary = {k: round(v, 4) for k, v in last.items() if k in ("step", "total", "val_reconstruction")}
        print(json.dumps({**summary, "checkpoint": str(result.checkpoint)}))


if __name__ == "__main__":
    main()
