"""Speed of this checkout against an earlier revision, measured in one run: embedding, training, demo.

The issue targets are ratios against "the same run before the change", and absolute times drift
on shared machines, so both versions run here, alternately, each probe in a fresh subprocess:

* the earlier revision's ``aef_lite`` (and ``benchmarks``) are exported with ``git archive`` into
  a temporary folder and put first on ``PYTHONPATH`` (the samples are linked from this checkout);
* ``embed``: :func:`aef_lite.embed.embed_scene` with its default arguments on the 256 x 256 px
  top-left crop of the real ``s2_brandenburg`` scene, the untrained tiny model (seed 0), median
  of 3 calls after a warm-up. The two versions' fields are compared (max |diff|);
* ``step``: one tiny training step of ``benchmarks/train_speed.py`` (median over two passes of 6
  steps after a warm-up), inside ``aef_lite.cpu_memory.reuse_freed_memory`` where the version has
  it, as its ``train()`` runs;
* ``demo`` (with ``--demo``; about 2 minutes per run): the wall time of ``aef-lite demo`` with
  its defaults, as a user runs it.

Prints the median times, the median over rounds of the paired ratio old/new (each round times both
versions back to back, so a change of the machine's load between rounds cancels) and, with
``--demo``, the ``GOAL`` line of the demo under 90 s. The inference goal (km^2/s per core at the same
embeddings within a stated tolerance) is measured by ``inference_scale.py``, inside one version.

The embeddings can only be the same where both versions have the same architecture and tiling; a
change of the model itself is timed the same way, and its max |diff| is then large by design.

Run ``python benchmarks/speedup.py --baseline REV [--new REV] [--rounds N] [--demo]`` from a git
checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine_info, median, print_machine

ROOT = Path(__file__).resolve().parents[1]
DEMO_GOAL_S = 90.0

EMBED_PROBE = """
import json, sys, time, numpy as np, torch
from aef_lite.config import AEFConfig
from aef_lite.data import cut_tile, load_sample
from aef_lite.embed import embed_scene
from aef_lite.model import AEFModel
torch.set_num_threads(1)
torch.manual_seed(0)
model = AEFModel(AEFConfig.tiny()).eval()
scene = cut_tile(load_sample("s2_brandenburg"), 0, 0, 256)
field = embed_scene(model, scene)
times = []
for _ in range(3):
    start = time.perf_counter()
    field = embed_scene(model, scene)
    times.append(time.perf_counter() - start)
np.save(sys.argv[1], field.emb)
print(json.dumps(sorted(times)[1]))
"""

STEP_PROBE = """
import json, time, torch
import train_speed as ts
from aef_lite.config import AEFConfig, TrainConfig
torch.set_num_threads(1)
try:  # a version whose train() keeps freed memory for reuse is timed the same way
    from aef_lite.cpu_memory import reuse_freed_memory
    reuse_freed_memory().__enter__()
except ImportError:
    pass
cfg = AEFConfig.tiny()
trainer = ts.Trainer(cfg, TrainConfig(tile=cfg.tile_size, out_dir=None, progress=False))
steps, _, _ = ts.prepare_steps(trainer, 6)
for step in steps[:3]:
    trainer.step(step)
passes = []
for _ in range(2):
    start = time.perf_counter()
    for step in steps:
        trainer.step(step)
    passes.append((time.perf_counter() - start) / len(steps))
print(json.dumps(min(passes)))
"""


def export_revision(rev: str, dest: Path) -> Path:
    """``aef_lite`` and ``benchmarks`` of git revision ``rev`` under ``dest``, with this checkout's
    samples linked in; returns ``dest``. Raises ``SystemExit`` with a one-line reason on failure."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "aef_lite", "benchmarks"],
                             capture_output=True)
    if archive.returncode:
        raise SystemExit(f"cannot export revision {rev!r}: {archive.stderr.decode().strip()}")
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    (dest / "data_samples").symlink_to(ROOT / "data_samples")
    return dest


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'benchmarks'}", "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore"}


def run_probe(tree: Path, probe: str, *args: str) -> float:
    """Seconds printed by ``probe`` run with ``tree`` first on the path (from a neutral folder)."""
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([sys.executable, "-c", probe, *args], env=_env(tree), cwd=cwd,
                              capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"probe failed in {tree}: {proc.stderr.strip().splitlines()[-1:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1]))


def run_demo(tree: Path) -> float:
    """Wall seconds of ``aef-lite demo`` (defaults, no progress bars) with ``tree`` on the path."""
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "aef_lite.cli", "demo", "--out", "demo", "--no-progress"],
                              env=_env(tree), cwd=cwd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"demo failed in {tree}: {proc.stderr.strip().splitlines()[-1:]}")
    return seconds


def main(baseline: str, rounds: int = 2, demo: bool = False, new: str | None = None) -> dict:
    """Alternate the two versions (``baseline`` and ``new``, default this checkout) ``rounds`` times
    per probe; print and return times and ratios."""
    print_machine({**machine_info(), "torch_threads": 1})
    results: dict = {"baseline": baseline, "new": new or "checkout"}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"old": export_revision(baseline, Path(tmp) / "old"),
                 "new": ROOT if new is None else export_revision(new, Path(tmp) / "new")}
        times: dict[str, dict[str, list[float]]] = {p: {"old": [], "new": []} for p in ("embed", "step", "demo")}
        for _ in range(rounds):
            for version, tree in trees.items():
                times["embed"][version].append(run_probe(tree, EMBED_PROBE, str(Path(tmp) / f"{version}.npy")))
                times["step"][version].append(run_probe(tree, STEP_PROBE))
        if demo:
            for version, tree in trees.items():
                times["demo"][version].append(run_demo(tree))
        diff = float(np.nanmax(np.abs(np.load(Path(tmp) / "old.npy") - np.load(Path(tmp) / "new.npy"))))
    print(f"{'probe':>6} {'old s':>8} {'new s':>8} {'old/new':>8}")
    for probe, t in times.items():
        if t["new"]:
            old, new = median(t["old"]), median(t["new"])
            paired = median([o / n for o, n in zip(t["old"], t["new"], strict=True)])  # robust to load drift
            results[probe] = {"old_s": old, "new_s": new, "speedup": paired}
            print(f"{probe:>6} {old:8.3f} {new:8.3f} {paired:8.2f}")
    results["embed_max_abs_diff"] = diff
    print(f"embed: {results['embed']['speedup']:.2f}x, {results['new']} vs {baseline}, max |diff| {diff:.1e}")
    if demo:
        new, ratio = results["demo"]["new_s"], results["demo"]["speedup"]
        print(f"GOAL demo_under_90s: {'met' if new < DEMO_GOAL_S else 'not met'} ({new:.0f} s, "
              f"{ratio:.2f}x faster than {baseline}'s {results['demo']['old_s']:.0f} s)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. a tag or commit)")
    parser.add_argument("--new", default=None, help="git revision to time instead of this checkout")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the embed and step probes")
    parser.add_argument("--demo", action="store_true", help="also time one full demo run of each version")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    main(args.baseline, args.rounds, args.demo, args.new)
