"""Run every benchmark: training speed, inference scale, embedding quality, compactness, continuous time.

``python benchmarks/run_all.py`` gives the figures quoted in ``benchmarks/README.md`` (about
5-10 minutes on 2 cores, plus ~1.5 minutes the first time, to train and cache the model that
``quality.py`` and ``continuous_time.py`` evaluate); ``--quick`` is a smoke test of all five
scripts (about a minute on a quiet machine); ``--json PATH`` also writes every returned number
to ``PATH``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import compactness
import continuous_time
import inference_scale
import quality
import train_speed

BENCHMARKS = {
    "train_speed": train_speed.main,
    "inference_scale": inference_scale.main,
    "quality": quality.main,
    "compactness": compactness.main,
    "continuous_time": continuous_time.main,
}


def main(quick: bool = False) -> dict:
    """Run each benchmark's ``main(quick)``; returns ``{name: result}`` plus ``seconds`` per benchmark."""
    results: dict = {"seconds": {}}
    for name, run in BENCHMARKS.items():
        print(f"\n=== {name}{' (quick)' if quick else ''} ===")
        start = time.perf_counter()
        results[name] = run(quick=quick)
        results["seconds"][name] = time.perf_counter() - start
    print("\n" + ", ".join(f"{name} {s:.0f} s" for name, s in results["seconds"].items()))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    out = main(args.quick)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
