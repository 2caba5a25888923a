"""Embedding quality: sparse-label transfer on the real label maps (paper S3-S6, mini scale).

The protocol of :mod:`aef_lite.evaluate` on the ``s2_brandenburg`` scene and both of its label
maps (``water_land``: 2 classes; ``osm``: 8 OpenStreetMap land-use classes): spatially separated
train/test splits (64 px blocks, 16 px buffer), 1 and 10 labels per class, kNN (k = 1, 3) and a
least-squares linear probe, balanced accuracy, mean and standard deviation over seeds.

Methods: the trained tiny model (:func:`aef_lite.train.pretrained`, trained once and cached),
the same architecture untrained, the raw bands, PCA-6 of the raw bands; each embedding also
after the released dataset's 64-byte int8 round trip. Goal checks printed at the end:

* "trained beats every baseline at 10 labels per class", per label map and probe;
* "quantization costs < 0.5 points" of balanced accuracy: max and mean of float - int8.

``--quick`` trains for 20 steps instead of loading the cached model (which trains for about 1.5
minutes on first use), uses one seed and at most 5000 test pixels: a smoke test, not a result.

Run ``python benchmarks/quality.py [--quick] [--seeds N]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import machine_info, print_machine, torch_threads

from aef_lite.config import AEFConfig
from aef_lite.data import load_sample
from aef_lite.embed import embed_scene
from aef_lite.evaluate import evaluate_features, format_table, standard_features, summarise
from aef_lite.model import AEFModel
from aef_lite.train import TrainConfig, pretrained, train

SCENE = "s2_brandenburg"
LABEL_MAPS = ("water_land", "osm")
TRAINED, UNTRAINED = "trained", "untrained"
BASELINES = ("raw bands", "PCA-6 of raw bands", UNTRAINED)
GOAL_LABELS = 10
QUANT_GOAL_POINTS = 0.5


def models(quick: bool) -> tuple[AEFModel, AEFModel]:
    """(trained, untrained) tiny models in eval mode; quick: a 20-step run instead of the cached one."""
    if quick:
        trained = train(AEFConfig.tiny(), TrainConfig(steps=20, out_dir=None, progress=False)).model
    else:
        trained = pretrained()[0]
    torch.manual_seed(0)
    return trained.eval(), AEFModel(AEFConfig.tiny()).eval()


def goal_checks(summary: list[dict], label_map: str) -> tuple[list[dict], list[dict]]:
    """Per probe at 10 labels per class: does the trained model beat every baseline? And per
    (probe, labels per class): the float - int8 difference of the trained model, in points."""
    mean = {(s["method"], s["probe"], s["n_per_class"]): s["mean"] for s in summary}
    beats, quant = [], []
    for probe, n in dict.fromkeys((s["probe"], s["n_per_class"]) for s in summary):
        trained = mean[(TRAINED, probe, n)]
        if n == GOAL_LABELS:
            best = max(BASELINES, key=lambda m: mean[(m, probe, n)])
            beats.append({"label_map": label_map, "probe": probe, "trained": trained, "best_baseline": best,
                          "baseline": mean[(best, probe, n)], "beats": bool(trained > mean[(best, probe, n)])})
        quant.append({"label_map": label_map, "probe": probe, "n_per_class": n,
                      "float_minus_int8_points": 100.0 * (trained - mean[(f"{TRAINED} int8", probe, n)])})
    return beats, quant


def main(quick: bool = False, seeds: int = 5, threads: int = 1) -> dict:
    """Evaluate every method on both label maps; print tables and goal checks; return them."""
    with torch_threads(threads):
        info = machine_info()
        print_machine(info)
        sample = load_sample(SCENE)
        trained, untrained = models(quick)
        embeddings = {name: embed_scene(m, sample).emb for name, m in ((TRAINED, trained), (UNTRAINED, untrained))}
    features = standard_features(sample, embeddings)
    n_seeds = 1 if quick else seeds
    results: dict = {"machine": info, "seeds": n_seeds, "label_maps": {}, "beats": [], "quantization": []}
    for label_map in LABEL_MAPS:
        rows = evaluate_features(features, sample.labels[label_map], seeds=range(n_seeds),
                                 max_test=5000 if quick else None)
        summary = summarise(rows)
        print(f"\n{SCENE} / {label_map}: balanced accuracy, mean±std over {n_seeds} seed(s) "
              f"({rows[0]['n_classes']} classes, chance {1 / rows[0]['n_classes']:.3f})")
        print(format_table(summary))
        beats, quant = goal_checks(summary, label_map)
        results["label_maps"][label_map] = summary
        results["beats"] += beats
        results["quantization"] += quant
    print(f"\nGoal: trained beats every baseline at {GOAL_LABELS} labels per class")
    for b in results["beats"]:
        print(f"  {b['label_map']:10} {b['probe']:6} {'yes' if b['beats'] else 'no ':3}  trained {b['trained']:.3f}"
              f" vs best baseline {b['baseline']:.3f} ({b['best_baseline']})")
    diffs = np.array([q["float_minus_int8_points"] for q in results["quantization"]])
    results["quant_max_abs_points"] = float(np.abs(diffs).max())
    results["quant_mean_points"] = float(diffs.mean())
    ok = results["quant_max_abs_points"] < QUANT_GOAL_POINTS
    print(f"Goal: quantization costs < {QUANT_GOAL_POINTS} points: {'yes' if ok else 'no'} (float - int8 over "
          f"{len(diffs)} map/probe/label settings: max |diff| {results['quant_max_abs_points']:.2f}, "
          f"mean {results['quant_mean_points']:+.2f} points)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20-step model, one seed, 5000 test pixels")
    parser.add_argument("--seeds", type=int, default=5, help="seeds (splits) per setting (full mode)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    main(args.quick, args.seeds, args.threads)
