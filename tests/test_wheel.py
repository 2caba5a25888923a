"""A regular (non-editable) install works: build the wheel, install it into a fresh virtual
environment, and run the command line there, outside the source tree (samples and reference
weights must come from the wheel)."""

from __future__ import annotations

import importlib.util
import json
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)


def test_wheel_installs_and_runs_offline(tmp_path: Path) -> None:
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    built = _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", *isolation,
                  "-w", str(tmp_path / "dist")], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("aef_lite-*.whl"))

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    new_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=tmp_path).stdout.strip())
    # The dependencies (torch, numpy, ...) come from this environment's site-packages; its .pth
    # files (and so an editable aef_lite) are not processed there, so aef_lite comes from the wheel.
    parents = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (new_site / "deps.pth").write_text("\n".join(sorted(parents)) + "\n")
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                      str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    where = _run([str(python), "-c", "import aef_lite; print(aef_lite.__file__)"], cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(new_site), where.stdout + where.stderr
    cli = env_dir / ("Scripts/aef-lite.exe" if sys.platform == "win32" else "bin/aef-lite")
    helped = _run([str(cli), "--help"], cwd=tmp_path)
    assert helped.returncode == 0 and "demo" in helped.stdout, helped.stderr
    embedded = _run([str(cli), "embed", "--sample", "landsat_colorado", "--out", str(tmp_path / "out")],
                    cwd=tmp_path, env={"PATH": "", "AEF_LITE_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert embedded.returncode == 0, embedded.stderr
    report = json.loads(embedded.stdout.strip().splitlines()[-1])
    assert report["shape"] == [64, 61, 61] and Path(report["files"][0]).is_file()
