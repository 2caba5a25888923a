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
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm  # the terminal bar: tqdm.auto warns on stderr in Jupyter without ipywidgets

from aef_lite.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.cpu_memory import reuse_freed_memory
from aef_lite.fileio import folder_lock, remove_stale_temporaries, write_text
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


RESUME_MAY_CHANGE = frozenset({"steps", "out_dir", "progress", "device", "threads", "bf16", "compile", "log_every",
                               "val_every"})
"""TrainConfig fields a resumed run may change; any other change (seed, batch size, lr, ckpt_every,
data, loss weights, ...) would silently make a run that no uninterrupted run matches."""


def resolve_resume(resume: str | os.PathLike[str]) -> Path:
    """A checkpoint file as is; a run folder -> its latest ``ckpt_<step>.pt``."""
    path = Path(resume)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no ckpt_<step>.pt in {path} to resume from")
        return found
    return path


def check_resume(ckpt: dict, cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` if ``cfg`` changes a field outside :data:`RESUME_MAY_CHANGE` of the
    checkpoint's run, or if that run already reached ``cfg.steps``."""
    saved, wanted = TrainConfig(**ckpt["train_config"]).to_dict(), cfg.to_dict()
    changed = [k for k in wanted if k not in RESUME_MAY_CHANGE and saved.get(k) != wanted[k]]
    if changed:
        diff = ", ".join(f"{k}={saved.get(k)!r} (requested {wanted[k]!r})" for k in changed)
        raise ValueError(f"cannot resume {path} with a different recipe: {diff}; resume with the run's own "
                         "settings or start a new run in another folder")
    if int(ckpt["step"]) >= cfg.steps:
        raise ValueError(f"{path} is at step {ckpt['step']}, already at or past the end of the run "
                         f"(steps={cfg.steps}): nothing to resume; pass more steps to train further")


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
            ``steps`` changes the learning-rate schedule). Only the fields in
            :data:`RESUME_MAY_CHANGE` may differ from the checkpoint's run; ``history.jsonl`` is
            rewritten from the checkpoint's history (steps logged after it are dropped).

    Returns:
        :class:`TrainResult`. Only rank 0 writes files (checkpoints ``ckpt_<step>.pt`` every
        ``ckpt_every`` steps and at the end, ``history.jsonl``), holding the folder's lock
        (:func:`aef_lite.fileio.folder_lock`) for the whole run; at the start it removes the
        temporary files a killed run of that folder left. On CPU the loop runs inside
        :func:`aef_lite.cpu_memory.reuse_freed_memory` (freed memory kept for the next step).

    Raises:
        FolderLocked: another process is training into ``train_cfg.out_dir``.
        ValueError: a resume that changes the recipe or is already at ``steps``; a bad checkpoint.
    """
    resume = resolve_resume(resume) if resume is not None else None
    ckpt = load_checkpoint(resume, model_cfg) if resume is not None else None
    if model_cfg is None:
        model_cfg = AEFConfig(**ckpt["config"]) if ckpt else AEFConfig.tiny()
    if train_cfg is None:
        train_cfg = TrainConfig(**ckpt["train_config"]) if ckpt else TrainConfig()
    cfg = train_cfg
    if ckpt is not None:
        check_resume(ckpt, cfg, resume)
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
    use_cuda = cfg.device.startswith("cuda") and torch.cuda.is_available()
    with (_distributed(torch.device("cuda" if use_cuda else "cpu")) as env, _cpu_threads(cfg.threads),
          reuse_freed_memory(enabled=not use_cuda), ExitStack() as held):
        writes = env.main and out_dir is not None
        if writes:  # one run per folder; what a killed run of it left is removed
            held.enter_context(folder_lock(out_dir))
            remove_stale_temporaries(out_dir)
            if ckpt is None:  # a fresh run starts a fresh log
                (out_dir / "history.jsonl").unlink(missing_ok=True)
            else:  # the log of the resumed run up to its checkpoint, not the steps logged after it
                write_text(out_dir / "history.jsonl", "".join(json.dumps(h) + "\n" for h in ckpt["history"]))
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
        if cfg.compile:
            step_fn = torch.compile(step_fn)

        sites = load_sites(cfg.sites, cfg.tile, cfg.frames_window_days, cfg.full_extent_dir)
        val = [draw_batch(s.val, np.random.default_rng(step_seed(cfg.seed, VAL_STREAM, i)), cfg)[0].to(device)
               for s in sites for i in range(cfg.val_batches)]
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and device.type == "cuda"
                    else nullcontext())
        meter, last_ckpt = _Meter(list(model_cfg.sources), device), None
        bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and env.main), desc="train")
        t_start, step_times = time.perf_counter(), 0
        for step in range(start, cfg.steps):
            batch, captions = step_batch(sites, cfg, step, env.rank, env.world_size)
            batch = batch.to(device)
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


TRAIN_OPTIONS = ("steps", "batch_size", "lr", "seed", "device", "log_every", "val_every", "ckpt_every",
                 "full_extent_dir")
"""Command-line options that map one to one onto TrainConfig fields."""


def _configs(args: argparse.Namespace) -> tuple[AEFConfig | None, TrainConfig, Path | None]:
    """(model config or None = the checkpoint's, run config, checkpoint to resume) of the command line.

    Options not given take TrainConfig's defaults, or, with ``--resume``, the resumed run's
    settings (and its folder as ``--out``), so that a resume repeats nothing and any option given
    is checked against the run (:func:`check_resume`).
    """
    given = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    if args.threads is not None:
        if args.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0: leave torch's setting), got {args.threads}")
        given["threads"] = args.threads or None
    if args.bf16:
        given["bf16"] = True
    if args.compile:
        given["compile"] = True
    model_cfg = None if args.preset is None else AEFConfig.small() if args.preset == "small" else AEFConfig.tiny()
    run = {"progress": not args.no_progress, **({"out_dir": args.out} if args.out is not None else {})}
    if args.resume is None:
        model_cfg = model_cfg or AEFConfig.tiny()
        return model_cfg, TrainConfig(**{**given, **run, "tile": model_cfg.tile_size}), None
    resume = resolve_resume(args.resume)
    ckpt = load_checkpoint(resume, model_cfg)
    saved = TrainConfig(**ckpt["train_config"])
    return model_cfg, replace(saved, **{"out_dir": str(resume.parent), **given, **run}), resume


def main(argv: Sequence[str] | None = None, prog: str = "python -m aef_lite.train") -> None:
    """``python -m aef_lite.train --steps 400 --out runs/tiny`` (also under ``torchrun``).

    A bad option, folder or checkpoint ends in one line on stderr and exit code 2.
    """
    from aef_lite.cli import OneLineParser, run_command

    defaults = TrainConfig()
    parser = OneLineParser(prog=prog, description=main.__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "small"], default=None, help="model size (default tiny)")
    parser.add_argument("--steps", type=int, default=None, help=f"total steps (default {defaults.steps})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {defaults.batch_size}")
    parser.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {defaults.lr:g})")
    parser.add_argument("--seed", type=int, default=None, help=f"default {defaults.seed}")
    parser.add_argument("--device", default=None, help=f"cpu or cuda (default {defaults.device})")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads (0: leave as is; default {defaults.threads})")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step (pays only for long "
                        "runs: compiling takes minutes on CPU)")
    parser.add_argument("--full-extent-dir", default=None, help="train the Sentinel-2 sites on their whole scenes, "
                        "cached by `python data_samples/prepare.py --full-extent --out DIR`")
    parser.add_argument("--log-every", type=int, default=None, help=f"default {defaults.log_every}")
    parser.add_argument("--val-every", type=int, default=None, help=f"default {defaults.val_every}")
    parser.add_argument("--ckpt-every", type=int, default=None, help=f"default {defaults.ckpt_every}")
    parser.add_argument("--out", default=None, help=f"output folder (checkpoints, history.jsonl; default "
                        f"{defaults.out_dir}, or the resumed checkpoint's folder)")
    parser.add_argument("--resume", default=None, help="checkpoint (or run folder) to continue from; options "
                        "not given keep the run's settings")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def run() -> None:
        model_cfg, cfg, resume = _configs(args)
        result = train(model_cfg, cfg, resume=resume)
        if int(os.environ.get("RANK", "0")) == 0 and result.history:
            last = result.history[-1]
            summary = {k: round(v, 4) for k, v in last.items() if k in ("step", "total", "val_reconstruction")}
            print(json.dumps({**summary, "checkpoint": str(result.checkpoint)}))

    run_command(prog, run)


if __name__ == "__main__":
    main()
