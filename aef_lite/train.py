"""Training: the full AEF objective on the shipped real samples, checkpoints, resume, DDP.

The step's objective is :class:`aef_lite.objective.AEFObjective`, its data
:func:`aef_lite.sampling.step_batch`, its checkpoints :mod:`aef_lite.checkpoints`.

Run ``python -m aef_lite.train --steps 400 --out runs/tiny`` on one process, or the same under
``torchrun --nproc_per_node 2 -m aef_lite.train ...`` for distributed data parallel training.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm  # the terminal bar: tqdm.auto warns on stderr in Jupyter without ipywidgets

from aef_lite.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.data import Batch, SourceBatch
from aef_lite.model import AEFModel
from aef_lite.objective import AEFObjective, validation_loss
from aef_lite.sampling import VAL_STREAM, draw_batch, load_sites, step_batch, step_seed
from aef_lite.text import TextTower

LOSS_KEYS = ("total", "reconstruction", "uniformity", "consistency", "clip")


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained modules (unwrapped, on the training device), the
    history (one dict of floats per logged step) and the last checkpoint (None if not saved)."""

    model: AEFModel
    text_tower: TextTower
    history: list[dict[str, float]]
    checkpoint: Path | None
    out_dir: Path | None



def _to_device(batch: Batch, device: torch.device) -> Batch:
    return Batch(
        sources={n: SourceBatch(s.values.to(device), s.days.to(device), s.mask.to(device))
                 for n, s in batch.sources.items()},
        period=batch.period.to(device),
    )


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
