"""The shipped reference model and the Hugging Face-layout model folders (aef_lite.hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aef_lite import AEFConfig, AEFModel
from aef_lite.config import TrainConfig
from aef_lite.hub import CONFIG_NAME, WEIGHTS_NAME, load_pretrained, save_pretrained
from aef_lite.reference import METRIC_TOLERANCE, reference_metrics
from aef_lite.shipped import REFERENCE_DIR, pretrained
from aef_lite.text import TextTower


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TestShippedReference:
    def test_loads_strictly_with_finite_values(self) -> None:
        assert (REFERENCE_DIR / WEIGHTS_NAME).is_file() and (REFERENCE_DIR / "README.md").is_file()
        model, tower, history = pretrained()
        assert not model.training and not tower.training
        for name, value in [*model.state_dict().items(), *tower.state_dict().items()]:
            assert torch.isfinite(value).all(), name
        assert history and history[-1]["step"] == json.loads((REFERENCE_DIR / CONFIG_NAME).read_text())[
            "train_config"]["steps"]

    def test_reproduces_the_model_card_metrics(self) -> None:
        config = json.loads((REFERENCE_DIR / CONFIG_NAME).read_text())
        model, _, _ = pretrained()
        torch.set_num_threads(1)
        found = reference_metrics(model, TrainConfig(**config["train_config"]))
        card = config["metrics"]
        assert config["metric_tolerance"] == METRIC_TOLERANCE
        for site, values in card["val_reconstruction"].items():
            for method, value in values.items():
                assert found["val_reconstruction"][site][method] == pytest.approx(value, abs=METRIC_TOLERANCE), site
        for labels, table in card["sparse_labels"].items():
            for method, probes in table.items():
                for probe, stats in probes.items():
                    got = found["sparse_labels"][labels][method][probe]["mean"]
                    assert got == pytest.approx(stats["mean"], abs=METRIC_TOLERANCE), (labels, method, probe)


class TestHubLayout:
    def test_round_trip_is_bit_exact(self, tmp_path: Path) -> None:
        torch.manual_seed(3)
        cfg = AEFConfig.tiny()
        model, tower = AEFModel(cfg), TextTower(cfg)
        folder = save_pretrained(tmp_path / "m", model, tower, card="# card\n", extra={"note": 1})
        assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
        again, tower_again, config = load_pretrained(folder)
        assert _same_state(model.state_dict(), again.state_dict())
        assert _same_state(tower.state_dict(), tower_again.state_dict())
        assert config["note"] == 1 and AEFConfig(**config["model_config"]) == cfg

    def test_model_methods(self, tmp_path: Path) -> None:
        model = AEFModel(AEFConfig.tiny())
        model.save_pretrained(tmp_path / "m")
        again = AEFModel.from_pretrained(tmp_path / "m")
        assert _same_state(model.state_dict(), again.state_dict())

    def test_bad_folders_raise_clear_errors(self, tmp_path: Path) -> None:
        model = AEFModel(AEFConfig.tiny())
        folder = save_pretrained(tmp_path / "m", model)
        with pytest.raises(FileNotFoundError, match="not a model folder"):
            load_pretrained(tmp_path / "missing" / "deeper")
        (folder / WEIGHTS_NAME).write_bytes(b"garbage")
        with pytest.raises(ValueError, match="not a readable safetensors"):
            load_pretrained(folder)
        other = save_pretrained(tmp_path / "o", AEFModel(AEFConfig.tiny(dim_precision=32, heads_summary=2)))
        (folder / WEIGHTS_NAME).write_bytes((other / WEIGHTS_NAME).read_bytes())
        with pytest.raises(ValueError, match="do not fit"):
            load_pretrained(folder)
        (folder / CONFIG_NAME).write_text('{"architecture": "Other"}')
        with pytest.raises(ValueError, match="does not describe"):
            load_pretrained(folder)

    def test_non_finite_weights_are_refused(self, tmp_path: Path) -> None:
        model = AEFModel(AEFConfig.tiny())
        with torch.no_grad():
            next(model.parameters())[0] = float("nan")
        folder = save_pretrained(tmp_path / "m", model)
        with pytest.raises(ValueError, match="NaN or inf"):
            load_pretrained(folder)


def test_retrain_trains_once_then_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick = TrainConfig(steps=2, batch_size=2, max_frames=2, log_every=1, out_dir=None, progress=False)
    monkeypatch.setattr("aef_lite.reference.reference_configs", lambda: (AEFConfig.tiny(), quick))
    model, tower, history = pretrained(retrain=True, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("reference-*/model.safetensors"))) == 1 and len(history) == 2
    assert not list(tmp_path.glob(".run-*")), "the temporary run folder is removed"

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("pretrained(retrain=True) retrained instead of using its cache")

    monkeypatch.setattr("aef_lite.reference.train", no_training)
    again, tower_again, history_again = pretrained(retrain=True, cache_dir=tmp_path)
    assert _same_state(model.state_dict(), again.state_dict())
    assert _same_state(tower.state_dict(), tower_again.state_dict())
    assert history_again == history


def test_unreadable_weights_are_not_reported_as_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_pretrained(tmp_path / "m", AEFModel(AEFConfig.tiny()))
    import aef_lite.hub as hub

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(folder / WEIGHTS_NAME))

    monkeypatch.setattr(hub, "load_file", denied)  # an I/O error inside the reader
    with pytest.raises(PermissionError):
        load_pretrained(folder)
    (folder / WEIGHTS_NAME).write_bytes(b"")  # an empty file is corrupt: a clear ValueError, nothing deleted
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_pretrained(folder)
    assert (folder / WEIGHTS_NAME).is_file()
