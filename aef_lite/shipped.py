"""The pretrained reference model: shipped with the package, or retrained locally on demand.

:func:`pretrained` returns the reference model in seconds from the weights shipped inside the
package (``aef_lite/reference/``: ``config.json``, ``model.safetensors``, ``README.md``, in
Hugging Face layout, see :mod:`aef_lite.hub`), with no training and no pickle. The weights
were made by the recipe in :mod:`aef_lite.reference` (``python -m aef_lite.reference``), whose
model card lists data, steps, seeds and metrics.

``pretrained(retrain=True)`` reruns that recipe on this machine instead and caches the result
in ``$AEF_LITE_CACHE`` (default ``~/.cache/aef-lite``) under a key that hashes the recipe, the
package source and the sample files, so a changed recipe or code retrains. Concurrent callers
wait on a lock file and train only once; a cached folder that does not load is reported, never
deleted, and work folders left by a killed run are removed by the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from aef_lite.data import default_data_dir
from aef_lite.fileio import exclusive_lock, remove_abandoned_scratch, scratch_dir
from aef_lite.hub import load_pretrained
from aef_lite.model import AEFModel
from aef_lite.text import TextTower

CACHE_ENV = "AEF_LITE_CACHE"
SCRATCH_PREFIX = ".run-"
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
"""The shipped reference model folder (package data)."""


def default_cache_dir() -> Path:
    """``$AEF_LITE_CACHE`` if set, else ``~/.cache/aef-lite``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "aef-lite"


def _cache_key() -> str:
    """Hash of the recipe, the package version and source, and the sample files."""
    from aef_lite import __version__
    from aef_lite.reference import reference_configs

    model_cfg, train_cfg = reference_configs()
    run = {k: v for k, v in train_cfg.to_dict().items() if k not in ("out_dir", "progress")}
    h = hashlib.sha256(json.dumps([model_cfg.to_dict(), run, __version__], sort_keys=True).encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):  # any code change retrains
        h.update(source.read_bytes())
    root = default_data_dir()
    for name in train_cfg.sites:
        for suffix in (".json", ".npz"):
            h.update((root / f"{name}{suffix}").read_bytes())
    return h.hexdigest()[:16]


def _load(folder: Path, cached: bool = False) -> tuple[AEFModel, TextTower, list[dict[str, float]]]:
    try:
        model, tower, config = load_pretrained(folder)
    except ValueError as err:
        hint = f"; delete {folder} to retrain it" if cached else ""
        raise ValueError(f"{err}{hint}") from err
    if tower is None:
        raise ValueError(f"{folder}: the reference model folder has no text tower")
    return model, tower, list(config.get("history", []))


def pretrained(retrain: bool = False, cache_dir: str | os.PathLike[str] | None = None
               ) -> tuple[AEFModel, TextTower, list[dict[str, float]]]:
    """The reference model: ``(model, text_tower, history)``, eval mode, CPU.

    Args:
        retrain: False (default) loads the weights shipped with the package. True reruns the
            reference recipe (:func:`aef_lite.reference.train_reference`) here, once, and caches
            the model folder under ``cache_dir``; later calls with ``retrain=True`` load it.
        cache_dir: where retrained models are cached (default :func:`default_cache_dir`).

    Returns:
        The model, its text tower and the training history (one dict per logged step).
    """
    if not retrain:
        return _load(REFERENCE_DIR)
    from aef_lite.reference import export_reference

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"reference-{_cache_key()}"
    if (folder / "config.json").is_file():
        return _load(folder, cached=True)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder.with_suffix(".lock"), wait=True):
        if not (folder / "config.json").is_file():  # another process may have trained it meanwhile
            remove_abandoned_scratch(root, SCRATCH_PREFIX)  # left by a killed earlier call
            with scratch_dir(root, SCRATCH_PREFIX) as work:
                export_reference(work / "model", metrics=False)
                os.replace(work / "model", folder)
    return _load(folder, cached=True)
