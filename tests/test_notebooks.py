"""Every notebook is committed as one clean top-to-bottom run (nbval compares its outputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_series_exists_and_is_numbered_in_order() -> None:
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(len(numbers))), f"notebooks must be numbered 00..NN without gaps: {numbers}"
    assert len(numbers) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_outputs_in_order(path: Path) -> None:
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts}, rerun top to bottom"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output"
    assert any("assert " in "".join(c["source"]) for c in code), f"{path.name} asserts nothing"
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# ") and "What you will learn" in "".join(
        "".join(c["source"]) for c in nb["cells"][:2]
    ), f"{path.name} must open with a title and 'What you will learn'"
