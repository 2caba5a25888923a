"""Every user error of the ``aef-lite`` command line ends in one line on stderr and exit code 2.

Each case runs ``python -m aef_lite.cli ...`` in a subprocess (this worktree on ``PYTHONPATH``),
all cases concurrently, and none trains: every error must be found before any work starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from aef_lite import AEFConfig, AEFModel
from aef_lite.checkpoints import save_checkpoint
from aef_lite.config import TrainConfig
from aef_lite.data import default_data_dir
from aef_lite.fileio import folder_lock
from aef_lite.text import TextTower

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _data_dir(root: Path, damage: str) -> Path:
    """A copy of the landsat_colorado sample with one kind of damage."""
    folder = root / f"data-{damage}"
    folder.mkdir()
    src = default_data_dir()
    meta = json.loads((src / "landsat_colorado.json").read_text())
    npz = (src / "landsat_colorado.npz").read_bytes()
    if damage == "truncated":
        npz = npz[: len(npz) // 3]
    elif damage == "missing-key":
        del meta["sources"]
    elif damage == "frame-count":
        meta["frames"] = meta["frames"][:-2]
    (folder / "landsat_colorado.json").write_text(json.dumps(meta))
    (folder / "landsat_colorado.npz").write_bytes(npz)
    return folder


def _checkpoints(root: Path) -> dict[str, Path]:
    """Small crafted checkpoints: NaN weights, an unknown config field, one at the end of its run."""
    torch.manual_seed(0)
    cfg = AEFConfig.tiny()
    model, tower = AEFModel(cfg), TextTower(cfg)
    paths = {"done": save_checkpoint(root / "done" / "ckpt_000400.pt", model, tower, None, 400, TrainConfig(), [])}
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    paths["nan"] = save_checkpoint(root / "nan.pt", model, tower, None, 1, TrainConfig(), [])
    state = torch.load(paths["done"], weights_only=True)
    state["config"]["not_a_field"] = 3
    paths["crafted"] = root / "crafted.pt"
    torch.save(state, paths["crafted"])
    return paths


def _cases(root: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (arguments, extra environment, text the message must contain)."""
    a_file = root / "a-file"
    a_file.write_text("not a folder")
    ckpt = _checkpoints(root)
    fake = root / "no-rasterio" / "rasterio"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named rasterio')\n")
    locked = root / "locked"
    read_only = root / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    out = str(root / "out")
    bad_env = {"AEF_LITE_DATA_DIR": str(root / "no-such-folder")}
    cases: dict[str, tuple[list[str], dict[str, str], str]] = {
        "train-steps": (["train", "--steps", "-5"], {}, "steps=-5"),
        "train-batch": (["train", "--batch-size", "1"], {}, "batch_size=1"),
        "train-ckpt-every": (["train", "--ckpt-every", "0"], {}, "ckpt_every must be >= 1"),
        "train-threads": (["train", "--threads", "-1"], {}, "--threads must be >= 0"),
        "train-full-extent-missing": (["train", "--steps", "1", "--out", str(root / "fe"), "--full-extent-dir",
                                       str(root / "no_cache")], {}, "no full-extent folder"),
        "train-not-a-number": (["train", "--steps", "many"], {}, "invalid int value: 'many'"),
        "train-out-file": (["train", "--steps", "1", "--out", str(a_file)], {}, "is a file, not a folder"),
        "train-locked": (["train", "--steps", "1", "--out", str(locked)], {}, f"{locked} is in use"),
        "train-resume-done": (["train", "--resume", str(ckpt["done"].parent)], {}, "already at or past the end"),
        "train-resume-missing": (["train", "--resume", str(root / "nothing.pt")], {}, "no checkpoint at"),
        "embed-out-file": (["embed", "--sample", "landsat_colorado", "--out", str(a_file)], {}, "is a file"),
        "embed-out-under-file": (["embed", "--sample", "landsat_colorado", "--out", str(a_file / "x")], {},
                                 "cannot write in the output folder"),
        "embed-unknown-sample": (["embed", "--sample", "mars", "--out", out], {}, "no sample 'mars'"),
        "embed-nan-checkpoint": (["embed", "--checkpoint", str(ckpt["nan"]), "--sample", "landsat_colorado",
                                  "--out", out], {}, "holds NaN or inf values"),
        "embed-crafted-config": (["embed", "--checkpoint", str(ckpt["crafted"]), "--out", out], {},
                                 "is not a valid AEFConfig"),
        "embed-tile": (["embed", "--tile", "24", "--sample", "landsat_colorado", "--out", out], {},
                       "must be a positive multiple of 16"),
        "embed-truncated-npz": (["embed", "--sample", "landsat_colorado", "--out", out],
                                {"AEF_LITE_DATA_DIR": str(_data_dir(root, "truncated"))},
                                "landsat_colorado.npz is truncated or not a valid .npz"),
        "embed-missing-key": (["embed", "--sample", "landsat_colorado", "--out", out],
                              {"AEF_LITE_DATA_DIR": str(_data_dir(root, "missing-key"))}, "key 'sources' is missing"),
        "embed-frame-count": (["embed", "--sample", "landsat_colorado", "--out", out],
                              {"AEF_LITE_DATA_DIR": str(_data_dir(root, "frame-count"))},
                              "holds 105 frames but the metadata lists 103"),
        "embed-bad-data-dir": (["embed", "--out", out], bad_env, "sample data folder"),
        "evaluate-seeds": (["evaluate", "--seeds", "0"], {}, "--seeds must be >= 1"),
        "evaluate-n-per-class": (["evaluate", "--n-per-class", "1", "0"], {}, "--n-per-class must be >= 1"),
        "demo-seeds": (["demo", "--seeds", "0", "--out", out], {}, "--seeds must be >= 1"),
        "demo-steps": (["demo", "--steps", "0", "--out", out], {}, "--steps must be >= 1"),
        "demo-threads": (["demo", "--threads", "-1", "--out", out], {}, "--threads must be >= 0"),
        "demo-threads-env": (["demo", "--out", out], {"AEF_LITE_THREADS": "two"},
                             "AEF_LITE_THREADS must be a whole number >= 1, got 'two'"),
        "demo-geotiff": (["demo", "--geotiff", "--out", out], {"PYTHONPATH": str(fake.parent)},
                         "--geotiff needs rasterio"),
        "demo-out-file": (["demo", "--out", str(a_file)], {}, "is a file, not a folder"),
        "unknown-command": (["fly"], {}, "invalid choice: 'fly'"),
    }
    if not IS_ROOT:  # root writes into read-only folders
        cases["embed-out-read-only"] = (["embed", "--sample", "landsat_colorado", "--out", str(read_only / "x")],
                                        {}, "cannot write in the output folder")
        cases["train-out-read-only"] = (["train", "--steps", "1", "--out", str(read_only / "x")], {},
                                        "cannot create the folder")
    return cases


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
    return subprocess.run([sys.executable, "-m", "aef_lite.cli", *args], capture_output=True, text=True,
                          env=full, timeout=120, cwd=ROOT)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cli-errors")
    cases = _cases(root)
    with folder_lock(root / "locked"), ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_run, args, env) for name, (args, env, _) in cases.items()}
        done = {name: (f.result(), cases[name][2]) for name, f in futures.items()}
    (root / "read-only").chmod(0o755)
    return done


def test_every_user_error_is_one_line_and_exit_code_2(outcomes: dict[str, Any]) -> None:
    wrong = {}
    for case, (proc, expected) in outcomes.items():
        lines = proc.stderr.splitlines()
        ok = (proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 1
              and lines[0].startswith("aef-lite") and ": error: " in lines[0] and expected in lines[0])
        if not ok:
            wrong[case] = (proc.returncode, expected, proc.stderr[-1500:])
    assert not wrong, "\n\n".join(f"{k}: exit {rc}, wanted {exp!r}, stderr:\n{err}"
                                   for k, (rc, exp, err) in wrong.items())
    assert len(outcomes) >= 27


def test_help_works_with_a_wrong_data_dir(tmp_path: Path) -> None:
    proc = _run(["--help"], {"AEF_LITE_DATA_DIR": str(tmp_path / "missing")})
    assert proc.returncode == 0 and "embed" in proc.stdout and not proc.stderr
    proc = _run(["embed", "--help"], {"AEF_LITE_DATA_DIR": str(tmp_path / "missing")})
    assert proc.returncode == 0 and "--sample" in proc.stdout
