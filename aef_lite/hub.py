"""Model folders in Hugging Face layout: ``config.json``, ``model.safetensors``, ``README.md``.

A folder written by :func:`save_pretrained` holds

* ``config.json``: ``{"architecture": "AEFModel", "aef_lite_version", "model_config": {...},
  "text_tower": true|false, ...extra}`` (plain JSON, the :class:`~aef_lite.AEFConfig` fields);
* ``model.safetensors``: every tensor of the model under ``model.<name>`` and, when given, of
  the text tower under ``text.<name>`` (safetensors: no pickle, nothing executed on load);
* ``README.md``: the model card (free text, written by the caller).

:func:`load_pretrained` reads such a folder, or a Hugging Face Hub repository id through the
optional ``huggingface_hub`` package (``pip install "aef-lite[hub]"``), and loads the weights
*strictly*: a missing, unexpected or mis-shaped tensor is an error, never silently skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from aef_lite.config import AEFConfig
from aef_lite.fileio import atomic_path, read_json, write_text
from aef_lite.model import AEFModel
from aef_lite.text import TextTower

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"


def _package_version() -> str:
    from aef_lite import __version__

    return __version__


def save_pretrained(path: str | os.PathLike[str], model: AEFModel, text_tower: TextTower | None = None,
                    card: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and ``text_tower``) to the folder ``path`` in Hugging Face layout.

    Each file is written atomically. ``extra`` adds JSON-serialisable entries to
    ``config.json`` (e.g. the training recipe and its metrics). Returns the folder.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if text_tower is not None:
        tensors.update({f"text.{k}": v.detach().cpu().contiguous() for k, v in text_tower.state_dict().items()})
    with atomic_path(root / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "aef_lite_version": _package_version()})
    config = {"architecture": "AEFModel", "aef_lite_version": _package_version(),
              "model_config": model.config.to_dict(), "text_tower": text_tower is not None, **(extra or {})}
    write_text(root / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if card is not None:
        write_text(root / CARD_NAME, card)
    return root


def _resolve(path_or_repo_id: str | os.PathLike[str], revision: str | None) -> Path:
    """A local folder as is; otherwise download a Hub repository (needs ``huggingface_hub``)."""
    local = Path(path_or_repo_id)
    if local.is_dir():
        return local
    if local.exists() or str(path_or_repo_id).count("/") != 1:
        raise FileNotFoundError(f"{path_or_repo_id}: not a model folder (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        from huggingface_hub import snapshot_download
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"{path_or_repo_id} is not a local folder, and reading it from the Hugging Face "
                                  'Hub needs huggingface_hub: pip install "aef-lite[hub]"') from err
    return Path(snapshot_download(str(path_or_repo_id), revision=revision,
                                  allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME]))


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a model folder, checked to describe an aef-lite model."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; not an aef-lite model folder")
    config = read_json(file)
    if not isinstance(config, dict) or config.get("architecture") != "AEFModel" or "model_config" not in config:
        raise ValueError(f"{file} does not describe an aef-lite AEFModel (needs 'architecture' and 'model_config')")
    return config


def _strict_load(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, where: Path) -> None:
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{where}: the weights do not fit the configuration in {CONFIG_NAME}: {err}") from err
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{where}: tensor {prefix}{name} holds NaN or inf values")


def load_pretrained(path_or_repo_id: str | os.PathLike[str], revision: str | None = None
                    ) -> tuple[AEFModel, TextTower | None, dict[str, Any]]:
    """Load a model folder (or Hub repository id): ``(model, text_tower or None, config)``.

    Modules are in eval mode on the CPU. Raises ``FileNotFoundError`` for a missing folder or
    file and ``ValueError`` for a config or weights that do not fit (strict load, finite values).
    """
    root = _resolve(path_or_repo_id, revision)
    config = read_config(root)
    weights = root / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{root}: no {WEIGHTS_NAME}")
    try:
        cfg = AEFConfig(**config["model_config"])
    except TypeError as err:
        raise ValueError(f"{root / CONFIG_NAME}: model_config has unknown or missing fields ({err})") from err
    with open(weights, "rb"):  # unreadable (e.g. PermissionError) is not corrupt: OSError propagates
        pass
    try:
        tensors = load_file(str(weights))
    except OSError:
        raise
    except Exception as err:  # safetensors raises its own error type for damaged files
        raise ValueError(f"{weights} is not a readable safetensors file ({type(err).__name__}: {err})") from err
    model = AEFModel(cfg)
    _strict_load(model, tensors, "model.", weights)
    tower = None
    if config.get("text_tower"):
        tower = TextTower(cfg)
        _strict_load(tower, tensors, "text.", weights)
        tower.eval()
    unknown = {k.split(".", 1)[0] for k in tensors} - {"model", "text"}
    if unknown:
        raise ValueError(f"{weights}: unexpected tensor groups {sorted(unknown)}")
    return model.eval(), tower, config
