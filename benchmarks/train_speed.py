"""Training speed of the full AEF objective on CPU, as throughput and as a utilisation ratio.

One step is exactly what :func:`aef_lite.train.train` does per step on real batches from
:func:`aef_lite.sampling.step_batch` (the three shipped sites in turn): hold-out, teacher encode,
vMF sample, decoders, uniformity, student encode, consistency, text tower and CLIP, backward,
gradient clipping, AdamW step. Batches are drawn before timing (their cost is reported
separately, as a fraction of the step).

Reported per config (tiny, small):

* pixels per second (``B * L * L`` per step) and frame-pixels per second (``B * T * L * L``,
  T = all frames of all sources);
* model FLOPs per step, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
  convolutions and attention, forward and backward; elementwise work is not counted);
* utilisation = model FLOP/s / dense float32 matmul FLOP/s, the latter measured by
  :func:`common.matmul_flops_per_s` right before each timed pass at the same thread count.

``--compile`` measures instead what ``TrainConfig(compile=True)`` buys on the tiny config: the
first pass over 12 steps through ``torch.compile`` (compilation and recompiles included), then the
compiled step time against the eager one, and the number of steps after which compiling pays.

Run ``python benchmarks/train_speed.py [--quick] [--threads N] [--profile | --compile]``.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass

import torch
from common import machine_info, matmul_flops_per_s, median, print_machine, torch_threads
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.cpu_memory import reuse_freed_memory
from aef_lite.data import Batch
from aef_lite.model import AEFModel
from aef_lite.objective import AEFObjective
from aef_lite.reference import reference_configs
from aef_lite.sampling import load_sites, step_batch, step_seed
from aef_lite.text import TextTower
from aef_lite.train import _optimizer

CONFIGS = ("tiny", "small")
UTILISATION_GOALS = {"tiny": 0.25, "small": 0.35}
"""Utilisation goals per config (median of the timed passes)."""


def _cpu_attention_flops(query: torch.Size, key: torch.Size, value: torch.Size, *args: object,
                         **kwargs: object) -> int:
    """FLOPs of torch's CPU flash attention (not in the counter's registry as of torch 2.13)."""
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(grad_out: torch.Size, query: torch.Size, key: torch.Size, value: torch.Size,
                                  *args: object, **kwargs: object) -> int:
    """Backward FLOPs of torch's CPU flash attention."""
    return sdpa_backward_flop_count(grad_out, query, key, value)


CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
}


@dataclass
class Step:
    """One prepared training step: batch, caption tokens, generator seed and its sizes."""

    batch: Batch
    tokens: torch.Tensor
    seed: int
    pixels: int
    frame_pixels: int


class Trainer:
    """The model, text tower, objective and optimizer of one config, and a ``step`` method."""

    def __init__(self, model_cfg: AEFConfig, train_cfg: TrainConfig) -> None:
        torch.manual_seed(0)
        self.cfg = train_cfg
        self.objective = AEFObjective(AEFModel(model_cfg), TextTower(model_cfg), train_cfg.loss_weights,
                                      train_cfg.p_drop_source).train()
        self.optimizer = _optimizer(self.objective, train_cfg)

    def step(self, step: Step) -> None:
        """One optimisation step, exactly as in :func:`aef_lite.train.train` (fixed learning rate)."""
        gen = torch.Generator().manual_seed(step.seed)
        losses = self.objective(step.batch, step.tokens, gen)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.cfg.grad_clip)
        self.optimizer.step()


def prepare_steps(trainer: Trainer, n_steps: int) -> tuple[list[Step], float, list[str]]:
    """Draw the batches of steps ``0..n_steps-1`` (the sites in turn). Also returns the mean
    seconds spent drawing one batch (tile cutting, normalisation, captions, tokens) and the
    sites used (:func:`aef_lite.sampling.load_sites` skips scenes smaller than the tile)."""
    cfg = trainer.cfg
    sites = load_sites(cfg.sites, cfg.tile, cfg.frames_window_days)
    steps, start = [], time.perf_counter()
    for i in range(n_steps):
        batch, captions = step_batch(sites, cfg, i)
        b = batch.period.shape[0]
        frames = sum(s.values.shape[1] for s in batch.sources.values())
        pixels = b * cfg.tile * cfg.tile
        steps.append(Step(batch, trainer.objective.text_tower.tokens(captions), step_seed(cfg.seed, i, 0, 1),
                          pixels, pixels * frames))
    return steps, (time.perf_counter() - start) / n_steps, [site.name for site in sites]


def count_flops(trainer: Trainer, steps: list[Step]) -> int:
    """Total model FLOPs (forward + backward) of one pass over ``steps``."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        for step in steps:
            trainer.step(step)
    return int(counter.get_total_flops())


def profile(trainer: Trainer, steps: list[Step], rows: int = 20) -> None:
    """Print the operators that take the most self CPU time over one pass over ``steps``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for step in steps:
            trainer.step(step)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def measure(name: str, quick: bool, show_profile: bool) -> dict:
    """Throughput and utilisation of one config (see the module docstring)."""
    model_cfg = AEFConfig.small() if name == "small" else AEFConfig.tiny()
    train_cfg = TrainConfig(tile=model_cfg.tile_size, out_dir=None, progress=False)
    trainer = Trainer(model_cfg, train_cfg)
    steps, data_s, sites = prepare_steps(trainer, 3 if quick else 6)  # a multiple of the 2 or 3 sites
    for step in steps[:3]:  # warm-up: one batch of each site
        trainer.step(step)
    flops = count_flops(trainer, steps)
    ratios, pass_times, peaks, faults = [], [], [], []
    for _ in range(1 if quick else 5):
        peak = matmul_flops_per_s(repeats=3 if quick else 5)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for step in steps:
            trainer.step(step)
        elapsed = time.perf_counter() - start
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / len(steps))
        ratios.append(flops / elapsed / peak)
        pass_times.append(elapsed)
        peaks.append(peak)
    if show_profile:
        profile(trainer, steps)
    step_s = median(pass_times) / len(steps)
    n_params = sum(p.numel() for p in trainer.objective.model.parameters())
    return {
        "sites": sites,
        "params": float(n_params),
        "step_s": step_s,
        "pixels_per_s": sum(s.pixels for s in steps) / median(pass_times),
        "frame_pixels_per_s": sum(s.frame_pixels for s in steps) / median(pass_times),
        "gflops_per_step": flops / len(steps) / 1e9,
        "matmul_gflops_per_s": median(peaks) / 1e9,
        "utilisation": median(ratios),
        "utilisation_min": min(ratios),
        "utilisation_max": max(ratios),
        "data_over_step": data_s / step_s,
        "page_faults_per_step": median(faults),
    }


DEMO_STEPS, REFERENCE_STEPS = TrainConfig().steps, reference_configs()[1].steps
"""Steps of ``aef-lite demo`` (TrainConfig's default) and of the reference recipe, against which
compiling is weighed."""


def measure_compile(n_steps: int = 12) -> dict:
    """Eager vs ``torch.compile`` on the tiny config: seconds per step (median of 3 passes after
    warm-up), the compiled first pass (compilation included), and the break-even step count."""
    model_cfg = AEFConfig.tiny()
    train_cfg = TrainConfig(tile=model_cfg.tile_size, out_dir=None, progress=False)
    timed = {}
    for mode in ("eager", "compiled"):
        trainer = Trainer(model_cfg, train_cfg)
        steps, _, _ = prepare_steps(trainer, n_steps)
        if mode == "compiled":
            trainer.objective = torch.compile(trainer.objective)
        passes = []
        for _ in range(4):  # the first pass warms up (and compiles)
            start = time.perf_counter()
            for step in steps:
                trainer.step(step)
            passes.append(time.perf_counter() - start)
        timed[mode] = {"first_pass_s": passes[0], "step_s": median(passes[1:]) / n_steps}
    eager, compiled = timed["eager"]["step_s"], timed["compiled"]["step_s"]
    overhead = timed["compiled"]["first_pass_s"] - n_steps * compiled
    return {"eager_step_s": eager, "compiled_step_s": compiled, "compile_overhead_s": overhead,
            "speedup": eager / compiled,
            "break_even_steps": overhead / (eager - compiled) if eager > compiled else float("inf")}


def main_compile(threads: int = 1) -> dict:
    """Print and return :func:`measure_compile` (see the module docstring)."""
    with torch_threads(threads), reuse_freed_memory():
        print_machine(machine_info())
        r = measure_compile()
    print(f"tiny: eager {r['eager_step_s']:.3f} s/step, compiled {r['compiled_step_s']:.3f} s/step "
          f"(x{r['speedup']:.2f}), compilation {r['compile_overhead_s']:.0f} s")
    for name, steps in (("demo", DEMO_STEPS), ("reference recipe", REFERENCE_STEPS)):
        pays = r["break_even_steps"] <= steps
        print(f"compile pays within the {name} ({steps} steps): {'yes' if pays else 'no'} "
              f"(break-even after {r['break_even_steps']:.0f} steps)")
    return r


def main(quick: bool = False, threads: int = 1, show_profile: bool = False, reuse_memory: bool = True) -> dict:
    """Measure every config; print a table; return ``{"machine": ..., "tiny": {...}, "small": {...}}``.
    ``reuse_memory``: inside :func:`aef_lite.cpu_memory.reuse_freed_memory`, as :func:`aef_lite.train.train`."""
    with torch_threads(threads), reuse_freed_memory(reuse_memory):
        info = machine_info()
        print_machine(info)
        results: dict = {"machine": info}
        for name in CONFIGS:
            results[name] = measure(name, quick, show_profile)
    print(f"{'config':7} {'params':>8} {'step s':>7} {'px/s':>8} {'frame px/s':>10} {'GFLOP/step':>10} "
          f"{'mm GFLOP/s':>10} {'utilisation (min-max)':>22} {'data/step':>9} {'faults/step':>11}")
    for name in CONFIGS:
        r = results[name]
        print(f"{name:7} {r['params'] / 1e6:7.2f}M {r['step_s']:7.3f} {r['pixels_per_s']:8.0f} "
              f"{r['frame_pixels_per_s']:10.0f} {r['gflops_per_step']:10.2f} {r['matmul_gflops_per_s']:10.1f} "
              f"{r['utilisation']:8.3f} ({r['utilisation_min']:.3f}-{r['utilisation_max']:.3f}) "
              f"{r['data_over_step']:9.2f} {r['page_faults_per_step']:11.0f}")
    for name in CONFIGS:
        print(f"{name} sites: {', '.join(results[name]['sites'])}")
    kernels = torch.backends.cpu.get_cpu_capability()
    for name, goal in UTILISATION_GOALS.items():
        value = results[name]["utilisation"]
        print(f"GOAL {name} utilisation >= {goal} ({kernels} kernels): {'met' if value >= goal else 'not met'} "
              f"({value:.3f}; matmul reference {results[name]['matmul_gflops_per_s']:.0f} GFLOP/s)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and repeats (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as in TrainConfig)")
    parser.add_argument("--profile", action="store_true", help="print the top operators by self CPU time")
    parser.add_argument("--compile", action="store_true", help="eager vs torch.compile on tiny (takes minutes)")
    parser.add_argument("--no-reuse-memory", action="store_true",
                        help="leave glibc's malloc thresholds alone (aef_lite.cpu_memory), unlike train()")
    args = parser.parse_args()
    if args.compile:
        main_compile(args.threads)
    else:
        main(args.quick, args.threads, args.profile, not args.no_reuse_memory)
