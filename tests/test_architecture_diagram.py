"""aef_lite.viz.architecture_diagram: a boxes-and-arrows figure labelled from the config."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from aef_lite import AEFConfig, viz  # noqa: E402


def _texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_default_is_tiny_and_labels_its_widths() -> None:
    fig = viz.architecture_diagram()
    try:
        assert isinstance(fig, Figure)
        text = _texts(fig)
        tiny = AEFConfig.tiny()
        for label in (f"D_P = {tiny.dim_precision}", f"D_T = {tiny.dim_time}", f"D_S = {tiny.dim_space}",
                      f"STP block x {tiny.n_blocks}", f"L = {tiny.tile_size} px", "1/2 L", "1/8 L", "1/16 L"):
            assert label in text, label
        for term in ("reconstruction", "batch uniformity", "consistency", "CLIP"):
            assert term in text
        assert all(name in text for name in tiny.sources)
    finally:
        plt.close(fig)


def test_labels_follow_the_config_passed() -> None:
    cfg = AEFConfig.paper(sources={"s2": 13, "sentinel1": 2})
    fig = viz.architecture_diagram(cfg)
    try:
        text = _texts(fig)
        assert "D_P = 128" in text and "D_T = 512" in text and "D_S = 1024" in text
        assert "STP block x 15" in text and "1/16 L = 8 x 8" in text and "sentinel1: 2 bands" in text
        assert "D_T = 32" not in text  # nothing left over from the tiny default
        fig.canvas.draw()  # renders without error
    finally:
        plt.close(fig)


def test_closes_cleanly() -> None:
    before = set(plt.get_fignums())
    fig = viz.architecture_diagram(AEFConfig.small())
    assert fig.number in plt.get_fignums()
    plt.close(fig)
    assert set(plt.get_fignums()) == before


@pytest.mark.parametrize("bad", [{"dim_time": 32}, "tiny", 3])
def test_bad_config_type_is_a_clear_error(bad: object) -> None:
    before = set(plt.get_fignums())
    with pytest.raises(TypeError, match="AEFConfig"):
        viz.architecture_diagram(bad)  # type: ignore[arg-type]
    assert set(plt.get_fignums()) == before  # no figure left open
