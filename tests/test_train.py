"""Training on real samples: loss falls, exact resume, checkpoints, deterministic data, cache."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aef_lite import AEFConfig
from aef_lite.checkpoints import load_checkpoint, models_from_checkpoint
from aef_lite.config import TrainConfig
from aef_lite.data import default_data_dir
from aef_lite.sampling import load_sites, step_batch
from aef_lite.train import lr_at, main, train


def _cfg(tmp_path: Path | None, **overrides: object) -> TrainConfig:
    base = dict(steps=6, batch_size=4, max_frames=4, log_every=1, val_every=1000, ckpt_every=3,
                out_dir=str(tmp_path) if tmp_path is not None else None, progress=False)
    return TrainConfig(**{**base, **overrides})


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_lr_schedule_warmup_then_linear_decay() -> None:
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_fraction=0.1)
    lrs = np.array([lr_at(s, cfg) for s in range(100)])
    assert lrs[0] < 0.2e-3 and lrs.max() <= 1e-3 and lrs.max() >= 0.95e-3
    assert (np.diff(lrs[:10]) > 0).all() and (np.diff(lrs[10:]) < 0).all()
    assert lrs[-1] < 0.02e-3


def test_step_batch_is_a_pure_function_of_seed_step_rank() -> None:
    cfg = _cfg(None)
    sites = load_sites(cfg.sites, cfg.tile, cfg.frames_window_days)
    a, cap_a = step_batch(sites, cfg, step=4, rank=0)
    b, cap_b = step_batch(sites, cfg, step=4, rank=0)
    assert cap_a == cap_b
    for name, src in a.sources.items():
        assert torch.equal(src.values, b.sources[name].values) and torch.equal(src.mask, b.sources[name].mask)
    other, _ = step_batch(sites, cfg, step=4, rank=1, world_size=2)
    assert set(other.sources) != set(a.sources) or not torch.equal(other.period, a.period)
    assert set(step_batch(sites, cfg, 0)[0].sources) == {"landsat5", "landsat7"}
    assert set(step_batch(sites, cfg, 1)[0].sources) == {"s2"}


def test_validation_blocks_are_disjoint_from_training() -> None:
    sites = {s.name: s for s in load_sites(("s2_brandenburg", "landsat_colorado"), 32, 365.0)}
    b = sites["s2_brandenburg"]
    assert b.train.height + b.val.height == 512
    assert b.train.transform[5] == b.val.transform[5] - 10.0 * b.val.height  # val block lies north
    c = sites["landsat_colorado"]
    last_train = max(s.days.max() for s in c.train.sources.values() if s.num_frames)
    first_val = min(s.days.min() for s in c.val.sources.values() if s.num_frames)
    assert last_train < first_val


def _full_extent_copy(folder: Path, blank_rows: int, shift_m: float = 0.0) -> Path:
    """The shipped ``s2_brandenburg`` written as a "full extent" into ``folder``: same grid, its
    first ``blank_rows`` rows set to no data, its transform shifted east by ``shift_m``."""
    src = Path(default_data_dir())
    meta = json.loads((src / "s2_brandenburg.json").read_text())
    meta = {**meta, "labels": {}, "transform": [*meta["transform"][:2], meta["transform"][2] + shift_m,
                                                 *meta["transform"][3:]]}
    with np.load(src / "s2_brandenburg.npz") as npz:
        refl = npz["reflectance"].copy()
    refl[..., :blank_rows, :] = 0
    folder.mkdir(exist_ok=True)
    np.savez(folder / "s2_brandenburg.npz", reflectance=refl)
    (folder / "s2_brandenburg.json").write_text(json.dumps(meta))
    return folder


def test_full_extent_sites_train_on_the_whole_scene_and_keep_their_validation(tmp_path: Path) -> None:
    names = ("s2_brandenburg", "landsat_colorado")
    plain = {s.name: s for s in load_sites(names, 32, 365.0)}
    full = {s.name: s for s in load_sites(names, 32, 365.0, _full_extent_copy(tmp_path / "ok", 128))}
    assert full["s2_brandenburg"].train.height == 512 and plain["s2_brandenburg"].train.height == 384
    val, plain_val = full["s2_brandenburg"].val, plain["s2_brandenburg"].val
    assert val.transform == plain_val.transform
    np.testing.assert_array_equal(val.sources["s2"].values, plain_val.sources["s2"].values)
    assert full["landsat_colorado"].train.sources.keys() == plain["landsat_colorado"].train.sources.keys()
    cfg = _cfg(None, sites=names, full_extent_dir=str(tmp_path / "ok"))
    assert set(step_batch(list(full.values()), cfg, 0)[0].sources) == {"s2"}


@pytest.mark.parametrize(("blank_rows", "shift_m", "error"), [
    (100, 0.0, "valid pixels inside the validation block"),  # 28 validation rows would leak
    (128, 5.0, "does not line up"),
])
def test_a_full_extent_that_would_leak_or_misalign_is_refused(tmp_path: Path, blank_rows: int,
                                                              shift_m: float, error: str) -> None:
    folder = _full_extent_copy(tmp_path, blank_rows, shift_m)
    with pytest.raises(ValueError, match=error):
        load_sites(("s2_brandenburg",), 32, 365.0, folder)
    with pytest.raises(FileNotFoundError, match="prepare.py --full-extent"):
        load_sites(("s2_brandenburg",), 32, 365.0, tmp_path / "missing")


def test_total_loss_falls_on_real_data() -> None:
    result = train(AEFConfig.tiny(), _cfg(None, steps=40, lr=2e-3, sites=("s2_brandenburg",)))
    totals = np.array([h["total"] for h in result.history])
    assert len(totals) == 40 and np.isfinite(totals).all()
    assert totals[-10:].mean() < totals[:10].mean() - 0.02, totals.round(3)
    assert "val_reconstruction" in result.history[-1]


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    full = train(AEFConfig.tiny(), _cfg(tmp_path / "a"))
    assert sorted(p.name for p in (tmp_path / "a").glob("ckpt_*.pt")) == ["ckpt_000003.pt", "ckpt_000006.pt"]
    assert len(full.history) == 6
    (tmp_path / "a" / "ckpt_000006.pt").rename(tmp_path / "ckpt_000006.pt")  # "interrupted" after step 3
    resumed = train(None, _cfg(tmp_path / "b"), resume=tmp_path / "a")  # a folder: its latest checkpoint
    _assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    _assert_same_state(full.text_tower.state_dict(), resumed.text_tower.state_dict())
    keys = ("total", "reconstruction", "clip")
    assert [[h[k] for k in keys] for h in full.history] == [[h[k] for k in keys] for h in resumed.history]


def test_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    result = train(AEFConfig.tiny(), _cfg(tmp_path, steps=2, ckpt_every=100))
    path = result.checkpoint
    assert path == tmp_path / "ckpt_000002.pt"
    raw = torch.load(path, weights_only=True)  # plain tensors, dicts, lists, numbers: safe to load
    assert raw["step"] == 2 and raw["config"] == AEFConfig.tiny().to_dict()
    model, tower = models_from_checkpoint(load_checkpoint(path, AEFConfig.tiny()))
    _assert_same_state(model.state_dict(), result.model.state_dict())
    _assert_same_state(tower.state_dict(), result.text_tower.state_dict())

    with pytest.raises(ValueError, match="was written for a model with tile_size=32"):
        load_checkpoint(path, AEFConfig.tiny(tile_size=64))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
    torch.save([1, 2, 3], bad)
    with pytest.raises(ValueError, match="not an aef-lite checkpoint"):
        load_checkpoint(bad)
    raw["model"]["summary.query.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="was written for a model with"):
        models_from_checkpoint(raw)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_main_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--steps", "2", "--batch-size", "2", "--out", str(tmp_path), "--no-progress", "--ckpt-every", "1"])
    assert (tmp_path / "ckpt_000001.pt").exists() and (tmp_path / "ckpt_000002.pt").exists()
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1
    assert '"step": 2' in capsys.readouterr().out


def test_compile_switch_wraps_the_step_and_is_off_by_default(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    wrapped: list[torch.nn.Module] = []

    def fake_compile(module: torch.nn.Module) -> torch.nn.Module:  # records, runs eagerly (no compiler here)
        wrapped.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(AEFConfig.tiny(), _cfg(None, steps=1))
    assert wrapped == []
    result = train(AEFConfig.tiny(), _cfg(None, steps=2, compile=True))
    assert [type(m).__name__ for m in wrapped] == ["AEFObjective"]
    assert wrapped[0].model is result.model and len(result.history) == 2
    main(["--steps", "1", "--batch-size", "2", "--out", str(tmp_path), "--no-progress", "--compile"])
    assert len(wrapped) == 2 and load_checkpoint(tmp_path / "ckpt_000001.pt")["train_config"]["compile"] is True


def test_samples_smaller_than_the_tile_are_skipped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="skipping landsat_colorado"):
        sites = load_sites(["landsat_colorado", "s2_virginia"], tile=64, window_days=365.0)
    assert [s.name for s in sites] == ["s2_virginia"]
    with pytest.raises(ValueError, match="smaller tile"), pytest.warns(UserWarning):
        load_sites(["landsat_colorado"], tile=64, window_days=365.0)


@pytest.fixture(scope="module")
def saved_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 1-step checkpoint."""
    out = tmp_path_factory.mktemp("ckpt")
    return train(AEFConfig.tiny(), _cfg(out, steps=1, batch_size=2, sites=("s2_virginia",))).checkpoint


def test_unreadable_checkpoint_is_not_called_corrupt(saved_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(saved_ckpt))

    monkeypatch.setattr(torch, "load", denied)  # e.g. EIO or EACCES while reading
    with pytest.raises(PermissionError, match="Permission denied"):
        load_checkpoint(saved_ckpt)
    monkeypatch.setattr("aef_lite.checkpoints.open", denied, raising=False)
    with pytest.raises(PermissionError):
        load_checkpoint(saved_ckpt)
    assert saved_ckpt.is_file()


def test_nan_weights_and_crafted_configs_are_refused(saved_ckpt: Path, tmp_path: Path) -> None:
    raw = torch.load(saved_ckpt, weights_only=True)
    bad = tmp_path / "bad.pt"
    nan = {**raw, "model": {**raw["model"]}}
    name = next(iter(nan["model"]))
    nan["model"][name] = torch.full_like(nan["model"][name], float("nan"))
    torch.save(nan, bad)
    with pytest.raises(ValueError, match=f"tensor model.{re.escape(name)} holds NaN or inf"):
        load_checkpoint(bad)
    torch.save({**raw, "config": {**raw["config"], "bogus": 1}}, bad)
    with pytest.raises(ValueError, match="its 'config' is not a valid AEFConfig"):
        load_checkpoint(bad)
    torch.save({**raw, "train_config": {**raw["train_config"], "batch_size": 1}}, bad)
    with pytest.raises(ValueError, match="its 'train_config' is not a valid TrainConfig"):
        load_checkpoint(bad)
    torch.save({**raw, "config": [1, 2]}, bad)
    with pytest.raises(ValueError, match="expected a dict"):
        load_checkpoint(bad)
    torch.save({**raw, "step": -3}, bad)
    with pytest.raises(ValueError, match="'step' must be a non-negative int"):
        load_checkpoint(bad)


def test_a_second_run_in_a_locked_folder_is_refused(tmp_path: Path) -> None:
    from aef_lite.fileio import FolderLocked, folder_lock

    with folder_lock(tmp_path), pytest.raises(FolderLocked, match=f"{tmp_path} is in use by another aef-lite"):
        train(AEFConfig.tiny(), _cfg(tmp_path, steps=1, batch_size=2))
    assert not list(tmp_path.glob("ckpt_*.pt")) and not (tmp_path / "history.jsonl").exists()


def test_a_run_removes_what_a_killed_save_left(tmp_path: Path) -> None:
    from aef_lite.fileio import _temporary

    fd, leftover = _temporary(tmp_path / "ckpt_000003.pt", ".tmp")  # the temp file of a save killed midway
    os.close(fd)
    (tmp_path / ".notes.tmp").write_text("the user's")
    train(AEFConfig.tiny(), _cfg(tmp_path, steps=1, batch_size=2, sites=("s2_virginia",)))
    assert not Path(leftover).exists() and (tmp_path / ".notes.tmp").read_text() == "the user's"


def test_resume_rewrites_history_and_refuses_a_changed_recipe(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, batch_size=2, sites=("s2_virginia",))
    train(AEFConfig.tiny(), cfg)
    (tmp_path / "ckpt_000006.pt").unlink()  # killed after logging steps 4-6, before their checkpoint
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 6
    for change, match in ((dict(lr=2e-3), f"lr={TrainConfig().lr} \\(requested 0.002\\)"), (dict(seed=1), "seed=0"),
                          (dict(batch_size=4), "batch_size=2"), (dict(ckpt_every=2), "ckpt_every=3")):
        with pytest.raises(ValueError, match=f"cannot resume .*ckpt_000003.pt with a different recipe: {match}"):
            train(None, replace(cfg, **change), resume=tmp_path)
    result = train(None, cfg, resume=tmp_path)
    steps = [json.loads(line)["step"] for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert steps == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] == [h["step"] for h in result.history]
    with pytest.raises(ValueError, match="at step 6, already at or past the end of the run \\(steps=6\\)"):
        train(None, cfg, resume=tmp_path)


def test_cli_resume_keeps_the_run_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--steps", "2", "--batch-size", "2", "--lr", "2e-3", "--out", str(tmp_path), "--no-progress",
          "--ckpt-every", "1"])
    (tmp_path / "ckpt_000002.pt").unlink()
    main(["--resume", str(tmp_path), "--no-progress"])  # no need to repeat --batch-size, --lr, --out
    assert load_checkpoint(tmp_path / "ckpt_000002.pt")["train_config"]["lr"] == 2e-3
    with pytest.raises(SystemExit) as info:
        main(["--resume", str(tmp_path), "--steps", "3", "--lr", "1e-3", "--no-progress"])
    assert info.value.code == 2 and "lr=0.002 (requested 0.001)" in capsys.readouterr().err
