"""Packaging: version, environment.yml in sync with pyproject.toml, console script declared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import aef_lite

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_semver() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", aef_lite.__version__)


def test_environment_yml_matches_pyproject() -> None:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = set(project["dependencies"]) | set(extras["dev"]) | set(extras["geo"])  # geo: the GIS tests run too
    env_lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_reqs = {line.strip()[2:] for line in env_lines if line.strip().startswith("- ") and ">=" in line}
    assert pip_reqs == wanted, f"only in pyproject: {wanted - pip_reqs}; only in environment.yml: {pip_reqs - wanted}"
    assert any(line.strip() == "- -e ." for line in env_lines), "environment.yml must install the project itself"


def test_console_script_points_at_cli_main() -> None:
    assert _pyproject()["project"]["scripts"]["aef-lite"] == "aef_lite.cli:main"
