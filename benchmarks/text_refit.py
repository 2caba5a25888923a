"""Text queries: the jointly trained text tower against one refit alone on the frozen model.

The text tower (paper S2.2.5, :mod:`aef_lite.text`) is trained jointly with the model, against
embeddings that keep changing under it. This script separates what the *embedding* holds from what
the *tower* learned: it freezes the model, reinitialises a :class:`aef_lite.text.TextTower`
(same architecture, conditioned on the period's full timecodes) and trains it alone with the CLIP
loss against the tile-mean embeddings of the recipe's first ``--batches`` training batches and their
captions (the batches :func:`aef_lite.sampling.step_batch` draws in training). AdamW, lr 1e-3 with a
100-step warmup and linear decay to 0.

Both towers then score the text queries on the ``s2_brandenburg`` field for the field's own period
(the calendar year of the scene), and for the same span 365 days earlier: ROC AUC
(:func:`aef_lite.text.text_query_auc`) of "open water" against water on the water/land and osm maps
and of "dense green vegetation" against osm forest, beside the spectral index the captions' words
come from (NDWI, NDVI). No goal: a diagnostic, measured and reported in ``benchmarks/README.md``.

Each refit starts from its own initialisation (``--refit-seeds``, default 3): the outcome varies with it.

Run ``python benchmarks/text_refit.py [--model DIR] [--batches N] [--steps N] [--refit-seeds N]``; default model
:func:`aef_lite.pretrained`.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import machine_info, print_machine, torch_threads

from aef_lite import pretrained
from aef_lite.data import Sample, load_sample
from aef_lite.embed import EmbeddingField, embed_scene
from aef_lite.hub import load_pretrained
from aef_lite.losses import clip_loss
from aef_lite.model import AEFModel
from aef_lite.objective import tile_means
from aef_lite.reference import reference_configs
from aef_lite.sampling import load_sites, step_batch
from aef_lite.text import TextTower, encode_text, spectral_index, text_query_auc

SCENE = "s2_brandenburg"
QUERIES = (("open water", "water_land", "water", "ndwi"), ("open water", "osm", "water", "ndwi"),
           ("dense green vegetation", "osm", "forest", "ndvi"))
LR, WARMUP = 1e-3, 100


def cached_targets(model: AEFModel, n_batches: int) -> list[tuple[torch.Tensor, list[str], torch.Tensor]]:
    """``(tile means (B, E), captions, periods (B, 2))`` of the recipe's first ``n_batches`` steps."""
    _, train_cfg = reference_configs()
    sites = load_sites(train_cfg.sites, train_cfg.tile, train_cfg.frames_window_days)
    out = []
    with torch.no_grad():
        for step in range(n_batches):
            batch, captions = step_batch(sites, train_cfg, step)
            out.append((tile_means(model.encode(batch)).float(), captions, batch.period.clone()))
    return out


def refit_tower(model: AEFModel, targets: list[tuple[torch.Tensor, list[str], torch.Tensor]], steps: int,
                seed: int = 0) -> tuple[TextTower, list[float]]:
    """A fresh tower trained alone on ``targets`` (cycled) for ``steps``; returns it (eval) and the losses."""
    torch.manual_seed(seed)
    tower = TextTower(model.config)
    opt = torch.optim.AdamW(tower.parameters(), lr=LR, weight_decay=0.01)
    losses = []
    for step in range(steps):
        image, captions, period = targets[step % len(targets)]
        for group in opt.param_groups:
            group["lr"] = LR * min(1.0, (step + 1) / WARMUP) * (steps - step) / steps
        text = encode_text(model, tower, captions, period)
        loss = clip_loss(image, text.float(), tower.aligner.scale())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return tower.eval(), losses


def _auc(scores: np.ndarray, sample: Sample, labels: str, cls: str) -> float:
    """ROC AUC of ``scores (H, W)`` for class ``cls`` of the ``labels`` map of ``sample``."""
    label = sample.labels[labels]
    return text_query_auc(scores, label.ids, label.class_names.index(cls))


def query_aucs(model: AEFModel, tower: TextTower, field: EmbeddingField, sample: Sample,
               period: tuple[float, float]) -> list[float]:
    """AUC of each of :data:`QUERIES` on ``field`` (the embedding of ``sample``, whose label maps score it)
    with the query asked for ``period`` (days)."""
    with torch.no_grad():
        texts = encode_text(model, tower, [q for q, *_ in QUERIES],
                            torch.tensor([period] * len(QUERIES), dtype=torch.float64)).numpy()
    return [_auc(np.einsum("ehw,e->hw", field.emb, text), sample, labels, cls)
            for text, (_, labels, cls, _) in zip(texts, QUERIES, strict=True)]


def main(model_dir: str | None = None, n_batches: int = 600, steps: int = 3000, refit_seeds: int = 3,
         threads: int = 1) -> dict:
    """Print the AUC table; return ``{tower: {period: [AUC per query]}}``, the refit losses per seed and the
    spectral indices' AUCs."""
    with torch_threads(threads):
        print_machine(machine_info())
        model, joint = (pretrained()[:2] if model_dir is None else load_pretrained(model_dir)[:2])
        sample = load_sample(SCENE)
        field = embed_scene(model, sample)
        targets = cached_targets(model, n_batches)
        refits = {f"refit seed {s}": refit_tower(model, targets, steps, seed=s) for s in range(refit_seeds)}
        own = (float(field.period[0]), float(field.period[1]))
        periods = {"own period": own, "year before": (own[0] - 365.0, own[1] - 365.0)}
        towers = {**({"joint": joint} if joint is not None else {}), **{k: t for k, (t, _) in refits.items()}}
        table = {name: {p: query_aucs(model, tower, field, sample, span) for p, span in periods.items()}
                 for name, tower in towers.items()}
    head = [f"{q!r} vs {labels}:{cls}" for q, labels, cls, _ in QUERIES]
    for name, (_, losses) in refits.items():
        print(f"{name}: CLIP loss, first 100 steps {np.mean(losses[:100]):.3f}, last 100 {np.mean(losses[-100:]):.3f}")
    print(f"\n| tower | query period | {' | '.join(head)} |\n|---|---|{'---|' * len(QUERIES)}")
    for name, rows in table.items():
        for p, aucs in rows.items():
            print(f"| {name} | {p} | {' | '.join(f'{a:.3f}' for a in aucs)} |")
    index = [_auc(spectral_index(sample, idx), sample, labels, cls) for _, labels, cls, idx in QUERIES]
    cells = [f"{q[3].upper()} {a:.3f}" for q, a in zip(QUERIES, index, strict=True)]
    print(f"| spectral index | - | {' | '.join(cells)} |")
    return {"aucs": table, "losses": {k: losses for k, (_, losses) in refits.items()}, "index": index}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model folder (save_pretrained); default pretrained()")
    parser.add_argument("--batches", type=int, default=600, help="training batches whose embeddings are targets")
    parser.add_argument("--steps", type=int, default=3000, help="refit steps")
    parser.add_argument("--refit-seeds", type=int, default=3, help="refits, each from its own initialisation")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    if min(args.batches, args.steps, args.refit_seeds) < 1:
        parser.error("--batches, --steps and --refit-seeds must be at least 1")
    main(args.model, args.batches, args.steps, args.refit_seeds, args.threads)
