"""The ``aef-lite`` command line: ``demo`` (the README's main job), ``train``, ``embed``, ``evaluate``.

``aef-lite demo`` trains the tiny model on the shipped real samples, embeds every scene, and
writes PNG maps (PCA-to-RGB of the embeddings beside true colour), a folium HTML map, the
embedding fields in the released dataset's int8 format, and ``report.md`` with losses,
sparse-label scores and text-query scores, all into one folder that it prints at the end.

Every user error (bad option, missing or damaged file, unwritable folder, folder in use) ends
in one line on stderr, ``aef-lite <command>: error: ...``, and exit code 2; options are checked
before any work starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from aef_lite.checkpoints import load_checkpoint, models_from_checkpoint
from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.data import list_samples, load_sample
from aef_lite.embed import EmbeddingField, embed_scene, save_field, save_geotiff
from aef_lite.evaluate import evaluate_features, format_table, standard_features, summarise
from aef_lite.fileio import FolderLocked, atomic_write, folder_lock, write_text
from aef_lite.hub import load_pretrained
from aef_lite.model import AEFModel
from aef_lite.repro import env_threads, idle_threads, seed_everything
from aef_lite.shipped import pretrained
from aef_lite.text import TextTower, encode_text, spectral_index, text_query_auc
from aef_lite.train import main as train_main
from aef_lite.train import train

TEXT_QUERIES = {"open water": ("osm", "water", "ndwi"), "dense green vegetation": ("osm", "forest", "ndvi")}
"""Text query -> (label map, class, spectral-index baseline) on ``s2_brandenburg``. Captions carry no
label-map classes (see :func:`aef_lite.text.caption_for_tile`), only spectral statistics, so each
query is scored beside the index its words come from."""
"""Text query -> (label map, class) of ``s2_brandenburg`` used to score it."""


PRESETS: dict[str, Callable[[], AEFConfig]] = {"tiny": AEFConfig.tiny, "small": AEFConfig.small}
"""Model sizes of ``--preset``."""

USER_ERRORS = (ValueError, OSError, ImportError, FolderLocked)
"""Exceptions that mean bad input or environment: reported in one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (and exit code 2), like every
    other user error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_command(prog: str, work: Callable[[], object]) -> None:
    """Run ``work``; a :data:`USER_ERRORS` exception becomes ``<prog>: error: <message>`` on one
    line of stderr and exit code 2 (no traceback)."""
    try:
        work()
    except USER_ERRORS as err:
        message = " ".join(str(err).split()) or type(err).__name__
        sys.stderr.write(f"{prog}: error: {message}\n")
        raise SystemExit(2) from None


def _writable_folder(path: str | Path) -> Path:
    """Create the output folder ``path`` if needed and check that files can be written in it,
    before any work starts; raises a clear ``OSError`` otherwise."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise type(err)(err.errno, f"cannot write in the output folder {out} ({err.strerror})") from err
    return out


def _at_least(name: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


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
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
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


def _need_rasterio() -> None:
    try:
        import rasterio  # noqa: F401
    except ImportError as err:
        raise ImportError("--geotiff needs rasterio: pip install 'aef-lite[prep]' (or leave out --geotiff; the "
                          ".npz files hold the same codes)") from err


def _check_demo(args: argparse.Namespace) -> None:
    """Everything the demo needs, checked before it trains for minutes."""
    _at_least("--steps", args.steps, 1)
    _at_least("--seeds", args.seeds, 1)
    _at_least("--threads", args.threads, 0)
    env_threads()
    if args.geotiff:
        _need_rasterio()
    for name in ("s2_brandenburg", *list_samples()):
        load_sample(name)  # the data folder and every sample are readable


def cmd_demo(args: argparse.Namespace) -> Path:
    _check_demo(args)
    with folder_lock(_writable_folder(args.out).resolve()) as out:
        return _demo(args, out)


def _demo_threads(requested: int | None) -> int:
    """``--threads`` if given (> 0), else ``$AEF_LITE_THREADS``, else the idle cores (at most 2,
    :func:`aef_lite.repro.idle_threads`): the demo's numbers are not compared across machines, so
    unlike the notebooks it may use a second core when one is free."""
    return requested or env_threads() or idle_threads()


def _demo(args: argparse.Namespace, out: Path) -> Path:
    seed_everything(args.seed, threads=_demo_threads(args.threads))
    model_cfg = PRESETS[args.preset]()
    train_cfg = TrainConfig(steps=args.steps, seed=args.seed, tile=model_cfg.tile_size, out_dir=str(out / "train"),
                            ckpt_every=args.steps, val_every=max(args.steps // 4, 1), progress=not args.no_progress,
                            threads=torch.get_num_threads())
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
    for query, (label_name, cls, index) in TEXT_QUERIES.items():
        scores = text_query_scores(model, tower, fields["s2_brandenburg"], query)
        ids, positive = labels[label_name].ids, labels[label_name].class_names.index(cls)
        base = spectral_index(load_sample("s2_brandenburg"), index)
        text_lines.append(f"| {query!r} | {label_name}:{cls} | {text_query_auc(scores, ids, positive):.3f} | "
                          f"{index.upper()} {text_query_auc(base, ids, positive):.3f} |")
    sparse = _sparse_label_report(fields["s2_brandenburg"], untrained, args.seeds)

    print("[4/4] writing the report ...")
    first, last = history[0], history[-1]
    loss_rows = [f"| {k} | {first[k]:.4f} | {last[k]:.4f} |" for k in ("total", "reconstruction", "uniformity",
                                                                      "consistency", "clip") if k in last]
    report = "\n".join([
        "# aef-lite demo report", "",
        f"Model: `{args.preset}` ({sum(p.numel() for p in model.parameters()):,} parameters), "
        f"{args.steps} training steps, seed {args.seed}, {torch.get_num_threads()} torch thread(s).", "",
        "## Training losses (first vs last logged step)", "", "| loss | first | last |", "|---|---|---|",
        *loss_rows, "",
        f"Validation reconstruction (held-out frames): {last.get('val_reconstruction', float('nan')):.4f}", "",
        "## Sparse-label evaluation", "", sparse,
        "## Text queries on s2_brandenburg (ROC AUC of pixel scores vs the label map; 0.5 = chance)", "",
        "| query | label | AUC | spectral-index baseline AUC |", "|---|---|---|---|", *text_lines, "",
        "## Files", "", *[f"- `{p.relative_to(out)}`" for p in files], "",
    ])
    write_text(out / "report.md", report)
    print(report)
    print(f"\nAll outputs are in: {out}")
    return out


def cmd_embed(args: argparse.Namespace) -> None:
    _at_least("--tile", args.tile, 1)
    _at_least("--overlap", args.overlap, 0)
    if args.geotiff:
        _need_rasterio()
    names = args.sample or list_samples()
    samples = {name: load_sample(name) for name in names}  # unknown names fail here, with the list of samples
    out = _writable_folder(args.out)
    model, _ = _load_models(args.checkpoint)
    for name, sample in samples.items():
        field = embed_scene(model, sample, tile=args.tile, overlap=args.overlap)
        paths = [save_field(field, out / f"{name}_embedding.npz")]
        if args.geotiff:
            paths.append(save_geotiff(field, out / f"{name}_embedding.tif"))
        print(json.dumps({"sample": name, "shape": list(field.emb.shape), "files": [str(p) for p in paths]}))


def cmd_evaluate(args: argparse.Namespace) -> None:
    _at_least("--seeds", args.seeds, 1)
    for n in args.n_per_class:
        _at_least("--n-per-class", n, 1)
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
    parser = OneLineParser(prog="aef-lite", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train the tiny model, embed the scenes, write maps and a report")
    demo.add_argument("--out", default="aef-lite-demo", help="output folder (default: ./aef-lite-demo)")
    demo.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    demo.add_argument("--steps", type=int, default=TrainConfig().steps)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--seeds", type=int, default=3, help="evaluation seeds")
    demo.add_argument("--threads", type=int, default=None,
                      help="torch CPU threads for training and embedding (default: $AEF_LITE_THREADS, else "
                           "the idle cores, at most 2, from the machine's current load)")
    demo.add_argument("--geotiff", action="store_true", help="also write GeoTIFFs (needs rasterio)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("train", help="train a model (all options: aef-lite train --help)", add_help=False)

    emb = sub.add_parser("embed", help="embed whole sample scenes with the reference model or a checkpoint")
    emb.add_argument("--checkpoint", default=None,
                     help="ckpt_<step>.pt or model folder (default: the shipped reference model)")
    emb.add_argument("--sample", action="append", help="sample name, repeatable; default: all")
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
        train_main(argv[1:], prog="aef-lite train")
        return
    args = build_parser().parse_args(argv)
    run_command(f"aef-lite {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    main()
