"""Training checkpoints: atomic writes, pickle-free loads (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from aef_lite.config import AEFConfig, TrainConfig
from aef_lite.fileio import atomic_write
from aef_lite.model import AEFModel
from aef_lite.text import TextTower

CKPT_KEYS = ("config", "train_config", "model", "text", "optimizer", "step", "history", "version")


def _package_version() -> str:
    from aef_lite import __version__

    return __version__


def save_checkpoint(path: str | os.PathLike[str], model: AEFModel, text_tower: TextTower,
                    optimizer: torch.optim.Optimizer | None, step: int, train_cfg: TrainConfig,
                    history: list[dict[str, float]]) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder, then ``os.replace``).

    Contents (all ``weights_only``-loadable): ``config`` (model, plain dict), ``train_config``,
    ``model`` and ``text`` state dicts, ``optimizer`` state (or None), ``step`` (steps done),
    ``history``, ``version``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "config": model.config.to_dict(),
        "train_config": train_cfg.to_dict(),
        "model": model.state_dict(),
        "text": text_tower.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "history": history,
        "version": _package_version(),
    }
    with atomic_write(path) as fh:
        torch.save(state, fh)
    return path


def _config_diff(saved: dict, wanted: dict) -> str:
    keys = sorted(set(saved) | set(wanted))
    return ", ".join(f"{k}={saved.get(k)!r} (requested {wanted.get(k)!r})"
                     for k in keys if saved.get(k) != wanted.get(k))


def _check_contents(ckpt: dict, path: Path) -> None:
    """Raise ``ValueError`` unless the checkpoint's configs build and its weights are finite tensors."""
    for key, cls in (("config", AEFConfig), ("train_config", TrainConfig)):
        try:
            if not isinstance(ckpt[key], dict):
                raise TypeError(f"expected a dict, got {type(ckpt[key]).__name__}")
            cls(**ckpt[key])
        except (TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"checkpoint {path}: its {key!r} is not a valid {cls.__name__} ({err})") from err
    for key in ("model", "text"):
        state = ckpt[key]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"checkpoint {path}: {key!r} is not a dict of tensors")
        for name, value in state.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"checkpoint {path}: tensor {key}.{name} holds NaN or inf values "
                                 "(the run diverged or the file was altered); use an earlier checkpoint")
    if isinstance(ckpt["step"], bool) or not isinstance(ckpt["step"], int) or ckpt["step"] < 0:
        raise ValueError(f"checkpoint {path}: 'step' must be a non-negative int, got {ckpt['step']!r}")
    if not isinstance(ckpt["history"], list):
        raise ValueError(f"checkpoint {path}: 'history' must be a list, got {type(ckpt['history']).__name__}")


def _short(err: Exception) -> str:
    """The error's type and the start of its first line. torch's unpickling errors go on for
    lines and suggest ``weights_only=False``, which aef-lite never does: only their type is kept."""
    if isinstance(err, pickle.UnpicklingError):
        return f"{type(err).__name__}: not a weights-only torch file"
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(err).__name__}: {first[:300]}{' ...' if len(first) > 300 else ''}"


def load_checkpoint(path: str | os.PathLike[str], model_cfg: AEFConfig | None = None) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` (no arbitrary code execution).

    Raises:
        FileNotFoundError: no such file.
        OSError: the file exists but cannot be read (e.g. ``PermissionError``): unreadable is
            not corrupt, so callers must not treat it as such.
        ValueError: the file is not a readable aef-lite checkpoint (corrupt, truncated, other
            format, configs that do not build, NaN/inf weights), or it was written for a model
            configuration other than ``model_cfg``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with open(path, "rb") as fh:  # an unreadable file raises OSError here, before any parsing
        try:
            ckpt = torch.load(fh, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as err:  # torch raises several types for corrupt files
            raise ValueError(f"checkpoint {path} is corrupt or not a torch file ({_short(err)})") from err
    if not isinstance(ckpt, dict) or not set(CKPT_KEYS) <= set(ckpt):
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path} is not an aef-lite checkpoint: expected keys {list(CKPT_KEYS)}, "
                         f"found {found}")
    _check_contents(ckpt, path)
    if model_cfg is not None and ckpt["config"] != model_cfg.to_dict():
        diff = _config_diff(ckpt["config"], model_cfg.to_dict())
        raise ValueError(f"checkpoint {path} was written for a model with {diff}")
    return ckpt


def models_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> tuple[AEFModel, TextTower]:
    """Build the model and text tower of a checkpoint read by :func:`load_checkpoint` (eval mode, CPU).

    Raises ``ValueError`` if the stored weights do not fit the stored configuration.
    """
    try:
        cfg = AEFConfig(**ckpt["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: its model config is not a valid AEFConfig ({err})") from err
    model, text_tower = AEFModel(cfg), TextTower(cfg)
    try:
        model.load_state_dict(ckpt["model"])
        text_tower.load_state_dict(ckpt["text"])
    except RuntimeError as err:
        raise ValueError(f"{source} was written for a model with other parameter shapes than its config "
                         f"{ckpt['config']}: {err}") from err
    return model.eval(), text_tower.eval()


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The ``ckpt_<step>.pt`` with the highest step in ``out_dir``, or None."""
    paths = sorted(Path(out_dir).glob("ckpt_*.pt"))
    return paths[-1] if paths else None
