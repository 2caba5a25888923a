"""Smoke test of the benchmark scripts: ``benchmarks/run_all.py --quick`` runs end to end.

Asserts on the structure of the results (keys present, numbers finite, ratios positive), never
on timings: the development machine is shared and its speed varies from minute to minute.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aef_lite import AEFConfig, AEFModel
from aef_lite.data import Sample

ROOT = Path(__file__).resolve().parents[1]


def _numbers(tree: object) -> list[float]:
    """Every int/float in a nested dict/list (booleans excluded)."""
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _numbers(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in _numbers(v)]
    return [float(tree)] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def test_run_all_quick(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res) == {"seconds", "train_speed", "inference_scale", "quality", "compactness", "continuous_time"}
    assert all(math.isfinite(x) for x in _numbers(res))

    for config in ("tiny", "small"):
        speed = res["train_speed"][config]
        for key in ("pixels_per_s", "frame_pixels_per_s", "gflops_per_step", "matmul_gflops_per_s", "utilisation"):
            assert speed[key] > 0, (config, key)
    assert res["train_speed"]["small"]["gflops_per_step"] > res["train_speed"]["tiny"]["gflops_per_step"]

    sizes = res["inference_scale"]["sizes"]
    assert [r["size_px"] for r in sizes] == sorted(r["size_px"] for r in sizes) and len(sizes) >= 3
    for r in sizes:
        assert r["km2_per_s"] > 0 and r["time_per_km2_ratio"] > 0 and r["rss_peak_mib"] > 0
    goal = res["inference_scale"]["speedup"]
    assert goal["speedup"] > 0 and goal["km2_per_s"] > 0 and 0 < goal["tolerance"] < 1 and goal["max_abs_diff"] >= 0

    quality = res["quality"]
    assert set(quality["tables"]) == {f"{m}/{s}" for m in ("osm", "water_land") for s in ("random", "spatial")}
    methods = {s["method"] for s in quality["tables"]["osm/spatial"]}
    assert {"reference", "reference int8", "raw bands", "raw bands sigma=2", "untrained"} <= methods
    assert all(0.0 <= s["mean"] <= 1.0 for rows in quality["tables"].values() for s in rows)
    assert set(quality["goals"]) == {"heldout_recon", "inscene_knn", "inscene_linear", "water_land", "loso_knn1",
                                     "participation", "int8", "grid"}
    assert all(isinstance(v, bool) for v in quality["goals"].values())

    compact = res["compactness"]
    assert compact["embedding_bytes_per_px"] == 64
    assert all(r["ratio_per_pixel"] > 0 and r["ratio_per_area"] > 0 for r in compact["rows"])

    cont = res["continuous_time"]
    assert set(cont["goals"]) == {"interpolation_beats_nearest", "interpolation_beats_linear",
                                  "extrapolation_beats_carry", "seasons_distinct", "seasons_decode_own"}


def test_continuous_time_measure_on_an_untrained_model(samples: dict[str, Sample], capsys, monkeypatch) -> None:
    """The core of ``benchmarks/continuous_time.py`` in its quickest setting: report structure and numbers."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = importlib.import_module("continuous_time")
    torch.manual_seed(0)
    model = AEFModel(AEFConfig.tiny()).eval()
    res = bench.measure(model, samples["landsat_colorado"], seeds=1, per_case=1, change_pairs=1, season_years=2)
    printed = capsys.readouterr().out
    assert printed.count("GOAL ") == 5 and printed.count("STRETCH ") == 3
    assert all(line.split(": ", 1)[1].startswith(("met (", "not met (")) for line in printed.splitlines()
               if line.startswith(("GOAL ", "STRETCH ")))
    for setting, baselines in (("interpolation", {"nearest", "linear", "harmonic"}),
                               ("extrapolation", {"carry", "harmonic"})):
        summary = res[setting]["all"]
        assert summary["n_targets"] >= 1 and set(summary["ratio"]) == baselines
        assert all(math.isfinite(v["mean"]) and v["mean"] > 0 for v in summary["mae"].values())
        assert all(math.isfinite(r) and r > 0 for r in summary["ratio"].values())
    assert set(res["interpolation"]["by_gap"]) == {"0", "60", "120"}
    seasons = res["seasons"]
    assert 0 <= seasons["d_same_season"] <= 2 and 0 <= seasons["d_cross_season"] <= 2
    assert all(0 < d < 1 for d in seasons["composite"].values())  # reflectance differences
    assert all(0 <= d <= 2 for d in seasons["same_support"].values()) and "support window as input" in printed
    assert set(seasons["decode_baselines"]) == {"nearest", "linear", "harmonic"}
    assert all(d["n"] >= 1 and math.isfinite(d["own"]) for d in seasons["decode"].values())
    (change,) = res["change"].values()
    assert -1 <= change["spearman"] <= 1 and 0 <= change["auc"] <= 1 and change["n_pixels"] > 0
    assert all(isinstance(v, bool) for v in res["goals"].values())


def test_text_refit_learns_on_real_batches_and_scores_like_the_cli(samples: dict[str, Sample], monkeypatch) -> None:
    """``benchmarks/text_refit.py``: a tower refit on a frozen model's real batches lowers its CLIP loss, and the
    query AUCs are those of the demo's own scoring path (``text_query_scores`` + ``text_query_auc``)."""
    from aef_lite import pretrained
    from aef_lite.cli import text_query_scores
    from aef_lite.embed import embed_scene
    from aef_lite.text import text_query_auc

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bench = importlib.import_module("text_refit")
    model, joint, _ = pretrained()
    targets = bench.cached_targets(model, 3)
    assert all(img.shape == (len(caps), model.config.embed_dim) and period.shape == (len(caps), 2)
               for img, caps, period in targets)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tower, losses = bench.refit_tower(model, targets, steps=60)
    assert not tower.training and len(losses) == 60 and tower is not joint
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model stays frozen
    field = embed_scene(model, samples["s2_brandenburg"])
    aucs = bench.query_aucs(model, joint, field, samples["s2_brandenburg"], tuple(field.period))
    assert len(aucs) == len(bench.QUERIES) and all(0.0 <= a <= 1.0 for a in aucs)
    for auc, (query, labels, cls, _) in zip(aucs, bench.QUERIES, strict=True):
        label = samples["s2_brandenburg"].labels[labels]
        scores = text_query_scores(model, joint, field, query)
        expected = text_query_auc(scores, label.ids, label.class_names.index(cls))
        assert auc == pytest.approx(expected, abs=1e-6)


def test_speedup_exports_a_revision_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """``speedup.py`` times an earlier revision's package: it must export exactly that tree."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        speedup = importlib.import_module("speedup")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    tree = speedup.export_revision("HEAD", tmp_path / "old")
    assert (tree / "aef_lite" / "model.py").read_text() == subprocess.run(
        ["git", "-C", str(ROOT), "show", "HEAD:aef_lite/model.py"], capture_output=True, text=True).stdout
    assert (tree / "data_samples").resolve() == (ROOT / "data_samples").resolve()
    with pytest.raises(SystemExit, match="cannot export revision"):
        speedup.export_revision("no-such-revision", tmp_path / "bad")


def test_quality_scores_only_saved_loso_models_of_its_recipe(tmp_path: Path, monkeypatch) -> None:
    """``quality.py --loso-models``: a folder trained without the scored scene by the recipe loads; one
    trained on the scene, or with another model config, is refused with a one-line message."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    quality = importlib.import_module("quality")
    from aef_lite.hub import save_pretrained

    model_cfg, train_cfg = quality.recipe(True)
    loso_cfg = quality.recipe(True, tuple(s for s in train_cfg.sites if s != quality.SCENE), 2)[1]
    save_pretrained(tmp_path / "ok", AEFModel(model_cfg), extra={"train_config": loso_cfg.to_dict()})
    assert quality.saved_loso_model(str(tmp_path / "ok"), quick=True).config == model_cfg

    save_pretrained(tmp_path / "saw", AEFModel(model_cfg), extra={"train_config": train_cfg.to_dict()})
    with pytest.raises(SystemExit, match="differs in: sites"):
        quality.saved_loso_model(str(tmp_path / "saw"), quick=True)
    other = AEFConfig.tiny(dim_precision=16)
    save_pretrained(tmp_path / "other", AEFModel(other), extra={"train_config": loso_cfg.to_dict()})
    with pytest.raises(SystemExit, match="model_config"):
        quality.saved_loso_model(str(tmp_path / "other"), quick=True)
