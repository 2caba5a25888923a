"""The ``aef-lite`` command line: ``demo`` (the README's main job), ``train``, ``embed``, ``evaluate``.

``aef-lite demo`` trains the tiny model on the shipped real samples, embeds every scene, and
writes PNG maps (PCA-to-RGB of the embeddings beside true colour), a folium HTML map, the
embedding fields in the released dataset's int8 format, and ``report.md`` with losses,
sparse-label scores and text-query scores, all into one folder that it prints at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aef_lite.checkpoints import load_checkpoint, models_from_checkpoint
from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.data import list_samples, load_sample
from aef_lite.embed import EmbeddingField, embed_scene, save_field, save_geotiff
from aef_lite.evaluate import evaluate_features, format_table, standard_features, summarise
from aef_lite.hub import load_pretrained
from aef_lite.model import AEFModel
from aef_lite.repro import seed_everything
from aef_lite.shipped import pretrained
from aef_lite.text import TextTower, encode_text, text_query_auc
from aef_lite.train import main as train_main
from aef_lite.train import train

TEXT_QUERIES = {"water": ("osm", "water"), "forest": ("osm", "forest"), "residential": ("osm", "residential")}
"""Text query -> (label map, class) of ``s2_brandenburg`` used to score it."""


def _write_text(path: Path, text: str) -> None:
    """Atomic text write (write a temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _load_models(checkpoint: str | None) -> tuple[AEFModel, TextTower]:
    """The shipped reference model (``None``), a model folder (``aef_lite.hub`` layout) or a
    training checkpoint ``ckpt_<step>.pt``."""
    if checkpoint is None:
        model, tower, _ = pretrained()
        return model, tower
    if Path(checkpoint).is_dir():
        model, tower, _ = load_pretrained(checkpoint)
        if tower is None:
            raise ValueError(f"{checkpoint}: the model folder has no text tower")
        return model, tower
    return models_from_checkpoint(load_checkpoint(checkpoint), checkpoint)


def text_query_scores(model: AEFModel, tower: TextTower, field: EmbeddingField, query: str) -> np.ndarray:
    """``(H, W)`` dot product of every pixel embedding with the text embedding of ``query``."""
    period = torch.as_tensor(field.period, dtype=torch.float64)[None]
    with torch.no_grad():
        text = encode_text(model, tower, [query], period)[0].numpy()
    return np.einsum("ehw,e->hw", field.emb, text)


def _save_scene_maps(field: EmbeddingField, sample_name: str, out: Path) -> list[Path]:
    """PNG of true colour (or false colour) beside the PCA-RGB of the field; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aef_lite.viz import false_color, pca_rgb, show_images, true_color

    sample = load_sample(sample_name)
    try:
        image, title = true_color(sample), "true colour"
    except ValueError:  # Landsat sample without blue/green bands
        frame = int(next(iter(sample.sources.values())).mask.mean(axis=(1, 2)).argmax())
        image, title = false_color(sample, frame=frame), "false colour (clearest frame)"
    fig = show_images({f"{sample_name}: {title}": image, "embedding field, PCA to RGB": pca_rgb(field.emb)}, ncols=2)
    path = out / f"{sample_name}_maps.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [path]


def _folium(field: EmbeddingField, out: Path) -> Path:
    from aef_lite.viz import folium_overlay, pca_rgb, save_map, true_color

    sample = load_sample(field.name)
    m = folium_overlay(pca_rgb(field.emb), sample, name="aef-lite embedding (PCA RGB)",
                       extra_layers={"Sentinel-2 true colour": true_color(sample)})
    return save_map(m, out / f"{field.name}_map.html")


def _sparse_label_report(trained: EmbeddingField, untrained: AEFModel, seeds: int) -> str:
    sample = load_sample("s2_brandenburg")
    fields = {"aef-lite (trained)": trained.emb, "untrained encoder": embed_scene(untrained, sample).emb}
    features = standard_features(sample, fields)
    lines = []
    for labels in ("water_land", "osm"):
        rows = evaluate_features(features, sample.labels[labels], n_per_class=(1, 10), seeds=range(seeds))
        lines += [f"### s2_brandenburg / {labels} (balanced accuracy, mean±std over {seeds} seeds)", "",
                  "```", format_table(summarise(rows)), "```", ""]
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> Path:
    seed_everything(args.seed, threads=args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = AEFConfig.small() if args.preset == "small" else AEFConfig.tiny()
    train_cfg = TrainConfig(steps=args.steps, seed=args.seed, tile=model_cfg.tile_size, out_dir=str(out / "train"),
                            ckpt_every=args.steps, val_every=max(args.steps // 4, 1), progress=not args.no_progress)
    print(f"[1/4] training the {args.preset} model for {args.steps} steps on the shipped samples ...")
    result = train(model_cfg, train_cfg)
    model, tower, history = result.model.cpu(), result.text_tower.cpu(), result.history
    torch.manual_seed(args.seed)
    untrained = AEFModel(model_cfg).eval()

    print("[2/4] embedding the scenes ...")
    fields, files = {}, []
    for name in list_samples():
        field = embed_scene(model, load_sample(name))
        fields[name] = field
        files.append(save_field(field, out / f"{name}_embedding.npz"))
        if args.geotiff:
            files.append(save_geotiff(field, out / f"{name}_embedding.tif"))
        files += _save_scene_maps(field, name, out)
    files.append(_folium(fields["s2_brandenburg"], out))

    print("[3/4] sparse-label evaluation and text queries ...")
    labels = load_sample("s2_brandenburg").labels
    text_lines = []
    for query, (label_name, cls) in TEXT_QUERIES.items():
        scores = text_query_scores(model, tower, fields["s2_brandenburg"], query)
        auc = text_query_auc(scores, labels[label_name].ids, labels[label_name].class_names.index(cls))
        text_lines.append(f"| {query!r} | {label_name}:{cls} | {auc:.3f} |")
    sparse = _sparse_label_report(fields["s2_brandenburg"], untrained, args.seeds)

    print("[4/4] writing the report ...")
    first, last = history[0], history[-1]
    loss_rows = [f"| {k} | {first[k]:.4f} | {last[k]:.4f} |" for k in ("total", "reconstruction", "uniformity",
                                                                      "consistency", "clip") if k in last]
    report = "\n".join([
        "# aef-lite demo report", "",
        f"Model: `{args.preset}` ({sum(p.numel() for p in model.parameters()):,} parameters), "
        f"{args.steps} training steps, seed {args.seed}.", "",
        "## Training losses (first vs last logged step)", "", "| loss | first | last |", "|---|---|---|",
        *loss_rows, "",
        f"Validation reconstruction (held-out frames): {last.get('val_reconstruction', float('nan')):.4f}", "",
        "## Sparse-label evaluation", "", sparse,
        "## Text queries on s2_brandenburg (ROC AUC of pixel scores vs the label map; 0.5 = chance)", "",
        "| query | label | AUC |", "|---|---|---|", *text_lines, "",
        "## Files", "", *[f"- `{p.relative_to(out)}`" for p in files], "",
    ])
    _write_text(out / "report.md", report)
    print(report)
    print(f"\nAll outputs are in: {out}")
    return out


def cmd_embed(args: argparse.Namespace) -> None:
    model, _ = _load_models(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.sample or list_samples():
        field = embed_scene(model, load_sample(name), tile=args.tile, overlap=args.overlap)
        paths = [save_field(field, out / f"{name}_embedding.npz")]
        if args.geotiff:
            paths.append(save_geotiff(field, out / f"{name}_embedding.tif"))
        print(json.dumps({"sample": name, "shape": list(field.emb.shape), "files": [str(p) for p in paths]}))


def cmd_evaluate(args: argparse.Namespace) -> None:
    sample = load_sample(args.sample)
    if args.labels not in sample.labels:
        raise ValueError(f"{args.sample} has no label map {args.labels!r}; it has {sorted(sample.labels) or 'none'}")
    model, _ = _load_models(args.checkpoint)
    torch.manual_seed(0)
    untrained = AEFModel(model.config).eval()
    fields = {"aef-lite": embed_scene(model, sample).emb, "untrained encoder": embed_scene(untrained, sample).emb}
    features = standard_features(sample, fields)
    rows = evaluate_features(features, sample.labels[args.labels], n_per_class=args.n_per_class,
                             seeds=range(args.seeds))
    print(format_table(summarise(rows)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aef-lite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train the tiny model, embed the scenes, write maps and a report")
    demo.add_argument("--out", default="aef-lite-demo", help="output folder (default: ./aef-lite-demo)")
    demo.add_argument("--preset", choices=["tiny", "small"], default="tiny")
    demo.add_argument("--steps", type=int, default=TrainConfig().steps)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--seeds", type=int, default=3, help="evaluation seeds")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    demo.add_argument("--geotiff", action="store_true", help="also write GeoTIFFs (needs rasterio)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("train", help="train a model (all options: aef-lite train --help)", add_help=False)

    emb = sub.add_parser("embed", help="embed whole sample scenes with the reference model or a checkpoint")
    emb.add_argument("--checkpoint", default=None,
                     help="ckpt_<step>.pt or model folder (default: the shipped reference model)")
    emb.add_argument("--sample", action="append", choices=list_samples(), help="repeatable; default: all")
    emb.add_argument("--tile", type=int, default=None)
    emb.add_argument("--overlap", type=int, default=16)
    emb.add_argument("--out", default="aef-lite-embeddings")
    emb.add_argument("--geotiff", action="store_true", help="also write GeoTIFFs (needs rasterio)")
    emb.set_defaults(func=cmd_embed)

    ev = sub.add_parser("evaluate", help="sparse-label evaluation of a checkpoint against baselines")
    ev.add_argument("--checkpoint", default=None,
                    help="ckpt_<step>.pt or model folder (default: the shipped reference model)")
    ev.add_argument("--sample", default="s2_brandenburg")
    ev.add_argument("--labels", default="osm")
    ev.add_argument("--n-per-class", type=int, nargs="+", default=[1, 10])
    ev.add_argument("--seeds", type=int, default=5)
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        train_main(argv[1:])
        return
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"aef-lite {args.command}: error: {err}") from err


if __name__ == "__main__":
    main()
