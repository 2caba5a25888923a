"""The ``aef-lite`` command line, end to end on the shipped data with a tiny number of steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aef_lite.cli import main
from aef_lite.quantization import band_names


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    main(["demo", "--steps", "3", "--seeds", "1", "--out", str(out), "--no-progress"])
    return out


def test_demo_writes_report_maps_fields_and_checkpoint(demo_dir: Path, capsys: pytest.CaptureFixture) -> None:
    report = (demo_dir / "report.md").read_text()
    for section in ("Training losses", "Sparse-label evaluation", "Text queries", "water_land", "osm"):
        assert section in report
    for scene in ("s2_brandenburg", "s2_virginia", "landsat_colorado"):
        assert (demo_dir / f"{scene}_maps.png").stat().st_size > 10_000
        with np.load(demo_dir / f"{scene}_embedding.npz") as npz:
            assert npz["emb"].dtype == np.int8 and npz["emb"].shape[0] == 64
            assert list(npz["bands"]) == band_names()
    html = (demo_dir / "s2_brandenburg_map.html").read_text()
    assert "leaflet" in html.lower() and "data:image/png;base64" in html
    assert list((demo_dir / "train").glob("ckpt_*.pt"))


def test_embed_and_evaluate_from_a_checkpoint(demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = str(sorted((demo_dir / "train").glob("ckpt_*.pt"))[-1])
    main(["embed", "--checkpoint", ckpt, "--sample", "landsat_colorado", "--out", str(tmp_path)])
    assert (tmp_path / "landsat_colorado_embedding.npz").is_file()
    main(["evaluate", "--checkpoint", ckpt, "--labels", "water_land", "--seeds", "1", "--n-per-class", "1"])
    out = capsys.readouterr().out
    assert "raw bands" in out and "aef-lite" in out and "knn1 n=1" in out


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as info:
        main(["embed", "--checkpoint", str(bad), "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("aef-lite embed: error: checkpoint") and "corrupt" in err and "weights_only" not in err
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(bad), "--sample", "s2_virginia"])
    assert "no label map" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    done = subprocess.run([sys.executable, "-m", "aef_lite.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "train", "embed", "evaluate"):
        assert command in done.stdout


def test_demo_trains_with_the_threads_it_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--threads`` reaches the training loop (TrainConfig.threads), not only the embedding."""
    import aef_lite.cli as cli

    seen: list[int | None] = []

    class Stop(Exception):
        pass

    def fake_train(model_cfg: object, train_cfg: cli.TrainConfig) -> None:
        seen.append(train_cfg.threads)
        raise Stop

    before = torch.get_num_threads()
    monkeypatch.setattr(cli, "train", fake_train)
    try:
        with pytest.raises(Stop):
            main(["demo", "--steps", "2", "--threads", "2", "--out", str(tmp_path / "d"), "--no-progress"])
    finally:
        torch.set_num_threads(before)
    assert seen == [2]
