"""Embedding quality: does the trained field beat the pixels it came from? (paper S3-S6, mini scale)

Protocol (:mod:`aef_lite.evaluate`), on ``s2_brandenburg`` (the only shipped scene with labels:
``osm``, 8 OpenStreetMap land-use classes, and ``water_land``):

* **in-scene**: the shipped reference model (:func:`aef_lite.pretrained`), whose pretraining saw
  the scene's pixels but never its labels;
* **leave-one-site-out (LOSO)**: the reference recipe retrained without ``s2_brandenburg``, for
  several training seeds, so the scored scene is one the model never saw;
* baselines on the same splits: raw bands, raw bands smoothed by a Gaussian of 1, 2 and 3 px,
  PCA-6 of the raw bands, the untrained encoder (for a single-date scene the median composite
  *is* the raw bands); every embedding also after the 64-byte int8 round trip;
* 1 and 10 labels per class; random and spatial splits (64 px blocks, 16 px gap); kNN (k = 1, 3)
  and the least-squares linear probe; balanced accuracy, mean ± std over label draws.

``GOAL`` lines at the end:

* ``heldout_recon``: held-out reconstruction beats the tile-mean baseline on every site;
* ``inscene_knn`` / ``inscene_linear``: osm, 10 labels, random and spatial splits: kNN1 and kNN3
  beat raw bands and every smoothed baseline; the linear probe at least ties the best smoothed
  baseline within one standard deviation;
* ``water_land``: kNN1 and kNN3 stay >= 0.98;
* ``loso_knn1``: LOSO kNN1 at 10 labels beats raw bands on osm (spatial and random splits);
* ``participation``: the field's participation ratio is at least that of the raw bands;
* ``int8``: int8 costs < 0.5 points on every kNN probe;
* ``grid``: neighbour differences across 8 / 16 px lines vs elsewhere <= 1.15.

``--quick`` uses 20-step models, one seed, 5000 test pixels and one LOSO seed: a smoke test, not a
result. ``--loso-models DIR [DIR ...]`` scores LOSO models saved earlier (model folders whose
``config.json`` holds the ``train_config`` they were trained with, which must be the recipe's
without ``s2_brandenburg``) instead of training them (about 25 min each). Run
``python benchmarks/quality.py [--quick] [--seeds N] [--loso-seeds N | --loso-models DIR ...]``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import torch
from common import machine_info, print_machine, torch_threads

from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.data import load_sample
from aef_lite.diagnostics import grid_line_ratio, participation_ratio
from aef_lite.embed import embed_scene
from aef_lite.evaluate import (
    evaluate_features,
    format_table,
    pca_features,
    raw_band_features,
    smoothed_features,
    summarise,
)
from aef_lite.hub import load_pretrained
from aef_lite.model import AEFModel
from aef_lite.quantization import dequantize, quantize
from aef_lite.reference import reference_configs, site_validation
from aef_lite.shipped import pretrained
from aef_lite.train import train

SCENE = "s2_brandenburg"
SIGMAS = (1.0, 2.0, 3.0)
RAW, MODEL, LOSO, UNTRAINED = "raw bands", "reference", "LOSO", "untrained"
SMOOTHED = [f"raw bands sigma={s:g}" for s in SIGMAS]
QUANT_POINTS, GRID_MAX, WATER_MIN = 0.5, 1.15, 0.98


def _int8(emb: np.ndarray) -> np.ndarray:
    return dequantize(quantize(emb, dim=0, valid=np.isfinite(emb).all(axis=0)))


def recipe(quick: bool, sites: tuple[str, ...] | None = None, seed: int = 0) -> tuple[AEFConfig, TrainConfig]:
    model_cfg, train_cfg = reference_configs()
    train_cfg = replace(train_cfg, out_dir=None, progress=False, seed=seed, steps=20 if quick else train_cfg.steps,
                        sites=sites or train_cfg.sites)
    return model_cfg, train_cfg


def baselines(sample) -> dict[str, np.ndarray]:
    raw = raw_band_features(sample)
    out = {RAW: raw, **{name: smoothed_features(raw, s) for name, s in zip(SMOOTHED, SIGMAS, strict=True)},
           "PCA-6 of raw bands": pca_features(raw, 6)}
    torch.manual_seed(0)
    out[UNTRAINED] = embed_scene(AEFModel(reference_configs()[0]).eval(), sample).emb
    return out


def _mean(summary: list[dict]) -> dict[tuple[str, str, int], tuple[float, float]]:
    return {(s["method"], s["probe"], s["n_per_class"]): (s["mean"], s["std"]) for s in summary}


def goal(name: str, met: bool, detail: str) -> bool:
    print(f"GOAL {name}: {'met' if met else 'not met'} ({detail})")
    return met


def saved_loso_model(path: str, quick: bool) -> AEFModel:
    """A LOSO model saved by :func:`aef_lite.hub.save_pretrained` with ``extra={"train_config": ...}``;
    ``SystemExit`` (one line) if its model or training config is not the recipe's without :data:`SCENE`."""
    model, _, config = load_pretrained(path)
    model_cfg, train_cfg = recipe(quick)
    trained = config.get("train_config") or {}
    expected = recipe(quick, tuple(s for s in train_cfg.sites if s != SCENE), trained.get("seed", 0))[1].to_dict()
    expected = json.loads(json.dumps(expected))  # as stored in config.json (tuples become lists)
    differ = sorted(k for k in expected if k not in ("out_dir", "progress") and trained.get(k) != expected[k])
    if model.config != model_cfg or differ:
        raise SystemExit(f"{path}: not a LOSO model of this recipe (differs in: {', '.join(differ) or 'model_config'})")
    return model


def main(quick: bool = False, seeds: int = 5, loso_seeds: int = 3, threads: int = 1,
         loso_models: list[str] | None = None) -> dict:
    """Print the tables and GOAL lines; return the numbers."""
    n_seeds, max_test = (1, 5000) if quick else (seeds, None)
    with torch_threads(threads):
        info = machine_info()
        print_machine(info)
        sample = load_sample(SCENE)
        model_cfg, train_cfg = recipe(quick)
        model = train(model_cfg, train_cfg).model if quick else pretrained()[0]
        emb = embed_scene(model, sample).emb
        val = site_validation(model, train_cfg)
        loso = [embed_scene(saved_loso_model(p, quick), sample).emb for p in loso_models or []]
        for seed in range(0 if loso_models else 1 if quick else loso_seeds):
            cfg_m, cfg_t = recipe(quick, tuple(s for s in train_cfg.sites if s != SCENE), seed)
            loso.append(embed_scene(train(cfg_m, cfg_t).model, sample).emb)
        base = baselines(sample)
    features = {MODEL: emb, f"{MODEL} int8": _int8(emb), **base}
    results: dict = {"machine": info, "tables": {}, "goals": {}}
    means = {}
    for labels in ("osm", "water_land"):
        for split in ("random", "spatial"):
            rows = evaluate_features(features, sample.labels[labels], seeds=range(n_seeds), max_test=max_test,
                                     split=split)
            summary = summarise(rows)
            print(f"\nin-scene {SCENE} / {labels} / {split} splits: balanced accuracy, mean±std over {n_seeds} "
                  f"label draw(s) ({rows[0]['n_classes']} classes)")
            print(format_table(summary))
            results["tables"][f"{labels}/{split}"] = summary
            means[(labels, split)] = _mean(summary)
    loso_rows = {}
    for split in ("random", "spatial"):
        rows = []
        for i, field in enumerate(loso):
            feats = {LOSO: field, RAW: base[RAW], SMOOTHED[1]: base[SMOOTHED[1]]}
            rows += [{**r, "seed": r["seed"] + 1000 * i}
                     for r in evaluate_features(feats, sample.labels["osm"], n_per_class=(10,), seeds=range(n_seeds),
                                                max_test=max_test, split=split, probes=("knn1", "knn3", "linear"))]
        summary = summarise(rows)
        print(f"\nLOSO (trained without {SCENE}, {len(loso)} training seed(s)) / osm / {split} splits:")
        print(format_table(summary))
        loso_rows[split] = _mean(summary)

    print()
    goals = results["goals"]
    goals["heldout_recon"] = goal("heldout_recon", all(v["model"] < v["tile_mean"] for v in val.values()),
                                  ", ".join(f"{k}: {v['model']:.3f} vs tile mean {v['tile_mean']:.3f}"
                                            for k, v in val.items()))
    knn_ok, knn_detail, lin_ok, lin_detail = True, [], True, []
    for split in ("random", "spatial"):
        m = means[("osm", split)]
        for probe in ("knn1", "knn3"):
            best = max([RAW, *SMOOTHED], key=lambda b: m[(b, probe, 10)][0])
            ok = m[(MODEL, probe, 10)][0] > m[(best, probe, 10)][0]
            knn_ok &= ok
            knn_detail.append(f"{split} {probe} {m[(MODEL, probe, 10)][0]:.3f} vs {m[(best, probe, 10)][0]:.3f}")
        best = max(SMOOTHED, key=lambda b: m[(b, "linear", 10)][0])
        mean, std = m[(MODEL, "linear", 10)]
        lin_ok &= mean >= m[(best, "linear", 10)][0] - std
        lin_detail.append(f"{split} {mean:.3f}±{std:.3f} vs {m[(best, 'linear', 10)][0]:.3f}")
    goals["inscene_knn"] = goal("inscene_knn", knn_ok, "; ".join(knn_detail) + ", vs best of raw/smoothed")
    goals["inscene_linear"] = goal("inscene_linear", lin_ok, "; ".join(lin_detail) + ", vs best smoothed")
    water = [means[("water_land", s)][(MODEL, p, 10)][0] for s in ("random", "spatial") for p in ("knn1", "knn3")]
    goals["water_land"] = goal("water_land", min(water) >= WATER_MIN, f"min kNN {min(water):.3f} >= {WATER_MIN}")
    loso_detail = [f"{s} {loso_rows[s][(LOSO, 'knn1', 10)][0]:.3f} vs raw {loso_rows[s][(RAW, 'knn1', 10)][0]:.3f}"
                   for s in ("random", "spatial")]
    goals["loso_knn1"] = goal("loso_knn1", all(loso_rows[s][(LOSO, "knn1", 10)][0] > loso_rows[s][(RAW, "knn1", 10)][0]
                                               for s in ("random", "spatial")), "; ".join(loso_detail))
    pr, pr_raw = participation_ratio(emb), participation_ratio(base[RAW])
    goals["participation"] = goal("participation", pr >= pr_raw, f"{pr:.2f} vs raw bands {pr_raw:.2f}")
    quant = [100 * (m[(MODEL, p, n)][0] - m[(f"{MODEL} int8", p, n)][0]) for m in means.values()
             for p in ("knn1", "knn3") for n in (1, 10) if (MODEL, p, n) in m]
    goals["int8"] = goal("int8", max(abs(q) for q in quant) < QUANT_POINTS,
                         f"max |float - int8| {max(abs(q) for q in quant):.2f} points over {len(quant)} kNN settings")
    grid, grid_raw = grid_line_ratio(emb), grid_line_ratio(base[RAW])
    goals["grid"] = goal("grid", grid <= GRID_MAX, f"{grid:.3f} (raw bands {grid_raw:.3f}) <= {GRID_MAX}")
    results.update(val=val, participation=(pr, pr_raw), grid=(grid, grid_raw))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20-step models, one seed, 5000 test pixels")
    parser.add_argument("--seeds", type=int, default=5, help="label draws per setting (full mode)")
    parser.add_argument("--loso-seeds", type=int, default=3, help="training seeds of the LOSO models (full mode)")
    parser.add_argument("--loso-models", nargs="+", metavar="DIR",
                        help="score these saved LOSO model folders instead of training the LOSO models")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    main(args.quick, args.seeds, args.loso_seeds, args.threads, args.loso_models)
