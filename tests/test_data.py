"""aef_lite.data on the shipped real samples (and synthetic series for bad inputs)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest
import torch

from aef_lite.data import (
    CLIP_SIGMA,
    NORM_STATS,
    TIME_ORIGIN,
    Sample,
    SourceSeries,
    annual_period,
    compute_norm_stats,
    cut_tile,
    days_since_origin,
    default_data_dir,
    denormalise,
    load_sample,
    make_batch,
    normalise,
    random_batches,
    tile_grid,
    to_iso,
    validate_series,
)

SeriesFactory = Callable[..., SourceSeries]

EXPECTED = {  # name -> {source: (T, C, H, W)}
    "landsat_colorado": {"landsat5": (44, 3, 61, 61), "landsat7": (61, 3, 61, 61)},
    "s2_brandenburg": {"s2": (1, 13, 512, 512)},
    "s2_virginia": {"s2": (1, 13, 384, 384)},
}


# ---------------------------------------------------------------------------------------------
# Time and data folder
# ---------------------------------------------------------------------------------------------


def test_days_since_origin_and_to_iso() -> None:
    days = days_since_origin([TIME_ORIGIN, "1970-01-02", "2017-02-16T12:00:00Z"])
    assert days.dtype == np.float64
    np.testing.assert_allclose(days, [0.0, 1.0, 17213.5])
    assert to_iso(days[:2]) == ["1970-01-01", "1970-01-02"]
    assert to_iso(torch.tensor(17213.5, dtype=torch.float64)) == ["2017-02-16T12:00:00"]


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("AEF_LITE_DATA_DIR", raising=False)
    assert (default_data_dir() / "landsat_colorado.npz").exists()
    monkeypatch.setenv("AEF_LITE_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.setenv("AEF_LITE_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="AEF_LITE_DATA_DIR"):
        default_data_dir()


def test_load_unknown_sample() -> None:
    with pytest.raises(FileNotFoundError, match="available: .*s2_virginia"):
        load_sample("nope")


# ---------------------------------------------------------------------------------------------
# Shipped samples
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_arrays(samples: dict[str, Sample], name: str) -> None:
    sample = samples[name]
    assert set(sample.sources) == set(EXPECTED[name])
    for source, series in sample.sources.items():
        t, c, h, w = EXPECTED[name][source]
        assert series.values.shape == (t, c, h, w) and series.values.dtype == np.float32
        assert series.mask.shape == (t, h, w) and series.mask.dtype == np.bool_
        assert series.days.shape == (t,) and series.days.dtype == np.float64
        assert np.all(np.diff(series.days) > 0)
        assert series.sensor == source and len(series.bands) == len(NORM_STATS[source][0]) == c
        assert len(series.wavelengths_nm) == c and np.all(np.diff(series.wavelengths_nm) > 0)
        assert np.isfinite(series.values).all()
        assert np.all(series.values[np.broadcast_to(~series.mask[:, None], series.values.shape)]
                      == 0)
        valid = np.moveaxis(series.values, 1, -1)[series.mask]
        assert 0.0 <= valid.min() and np.median(valid) < 0.5  # reflectance, not x 1e4
    assert (sample.height, sample.width) == (h, w)
    assert len(sample.transform) == 6 and sample.transform[0] == sample.pixel_size_m
    assert sample.crs.startswith("EPSG:326")
    for key in ("licence", "attribution", "place", "center_lonlat", "provenance"):
        assert sample.meta[key]


def test_landsat_time_axis_and_masks(samples: dict[str, Sample]) -> None:
    sample = samples["landsat_colorado"]
    l5, l7 = sample.sources["landsat5"], sample.sources["landsat7"]
    assert to_iso(l5.days[[0, -1]]) == ["2008-04-19", "2011-10-21"]
    assert to_iso(l7.days[[0, -1]]) == ["2008-04-27", "2013-05-27"]
    frames = sample.meta["frames"]
    assert [f["source"] for f in frames].count("landsat5") == 44
    assert all(f["scene_id"].startswith({"landsat5": "LT5", "landsat7": "LE7"}[f["source"]])
               for f in frames)
    clear = np.concatenate([l5.mask.ravel(), l7.mask.ravel()]).mean()
    assert 0.4 < clear < 0.6  # about half the pixels are clear
    assert 0.3 < l7.mask.mean() < l5.mask.mean()  # SLC-off stripes on Landsat 7


def test_s2_samples(samples: dict[str, Sample]) -> None:
    brandenburg, virginia = samples["s2_brandenburg"], samples["s2_virginia"]
    assert to_iso(brandenburg.sources["s2"].days) == ["2017-02-16"]
    assert brandenburg.sources["s2"].bands[8] == "B8A"
    frame = virginia.meta["frames"][0]
    assert frame["date"] is None and to_iso(virginia.sources["s2"].days) == [frame["nominal_date"]]
    assert "nominal" in virginia.meta["date_note"]
    for sample in (brandenburg, virginia):
        assert sample.sources["s2"].mask.mean() > 0.99
    lon, lat = brandenburg.meta["center_lonlat"]
    assert 12 < lon < 13 and 52 < lat < 53


def test_labels(samples: dict[str, Sample]) -> None:
    labels = samples["s2_brandenburg"].labels
    assert labels["water_land"].class_names == ["unlabelled", "water", "land"]
    assert labels["osm"].class_names == ["unlabelled", "meadow", "wetland", "farm", "scrub",
                                         "forest", "water", "residential", "grass"]
    for label in labels.values():
        assert label.ids.shape == (512, 512)
        assert len(label.colors) == len(label.class_names)
        assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in label.colors)
        counts = np.bincount(label.ids.ravel(), minlength=len(label.class_names))
        assert len(counts) == len(label.class_names) and np.all(counts > 0)
    assert samples["s2_virginia"].labels == {}


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def test_norm_stats_match_data(samples: dict[str, Sample]) -> None:
    by_source: dict[str, list[SourceSeries]] = {}
    for sample in samples.values():
        for source, series in sample.sources.items():
            by_source.setdefault(source, []).append(series)
    assert set(by_source) == set(NORM_STATS)
    for source, series_list in by_source.items():
        mean, std = compute_norm_stats(series_list)
        np.testing.assert_allclose(mean, NORM_STATS[source][0], atol=1e-4)
        np.testing.assert_allclose(std, NORM_STATS[source][1], atol=1e-4)
        z = np.concatenate([np.moveaxis(normalise(s.values, source), 1, -1)[s.mask]
                            for s in series_list])
        np.testing.assert_allclose(z.mean(0), 0, atol=0.02)
        np.testing.assert_allclose(z.std(0), 1, atol=0.03)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_normalise_round_trip(samples: dict[str, Sample], name: str) -> None:
    for source, series in samples[name].sources.items():
        x = series.values[:8]
        valid = np.broadcast_to(series.mask[:8, None], x.shape)
        z = normalise(x, source)
        assert isinstance(z, np.ndarray) and z.shape == x.shape and z.dtype == np.float32
        inside = (np.abs(z) < CLIP_SIGMA) & valid
        assert inside.sum() > 0.99 * valid.sum()
        back = denormalise(z, source)
        np.testing.assert_allclose(back[inside], x[inside], rtol=1e-4, atol=2e-5)


def test_normalise_clips_masks_and_keeps_type() -> None:
    x = torch.tensor([0.0, 0.1, 50.0]).repeat(3, 1)[:, :, None].expand(3, 3, 2)  # (C, H, W)
    z = normalise(x, "landsat5")
    assert isinstance(z, torch.Tensor)
    assert z[:, 0].eq(-CLIP_SIGMA).all() and z[:, 2].eq(CLIP_SIGMA).all()
    assert z[:, 1].abs().lt(CLIP_SIGMA).all()
    mask = torch.tensor([[True, False]] * 3)
    zm = normalise(x, "landsat5", mask)
    assert zm[:, :, 1].eq(0).all() and torch.equal(zm[:, :, 0], z[:, :, 0])
    with pytest.raises(ValueError, match="no normalisation statistics for source 'sentinel1'"):
        normalise(x, "sentinel1")
    with pytest.raises(ValueError, match=r"s2 expects values shaped \(\.\.\., C=13"):
        normalise(x, "s2")


# ---------------------------------------------------------------------------------------------
# Validation of bad inputs
# ---------------------------------------------------------------------------------------------


def test_validate_accepts_good_series(make_series: SeriesFactory) -> None:
    validate_series(make_series())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: replace(s, sensor="modis"), "unknown source kind 'modis'"),
        (lambda s: replace(s, values=s.values[:, :2]), "wrong band count: needs 3 bands"),
        (lambda s: replace(s, bands=["red"]), "wrong band count"),
        (lambda s: replace(s, values=s.values[0]), r"must be \(T, C, H, W\)"),
        (lambda s: replace(s, values=s.values[:0], days=s.days[:0], mask=s.mask[:0]),
         r"empty time series \(T == 0\)"),
        (lambda s: replace(s, days=s.days[:3]), "shape mismatch"),
        (lambda s: replace(s, mask=s.mask[:, :8]), "shape mismatch"),
        (lambda s: replace(s, mask=s.mask.astype(np.uint8)), "mask must be bool"),
        (lambda s: replace(s, values=np.where(s.values > 0.4, np.nan, s.values)),
         "NaN/inf entries. Set invalid pixels to 0.0"),
        (lambda s: replace(s, values=np.full_like(s.values, np.inf)), "NaN/inf"),
        (lambda s: replace(s, days=s.days[::-1].copy()), "unsorted timestamps"),
        (lambda s: replace(s, days=np.array([1.0, 2.0, 2.0, 3.0])), "duplicate timestamps"),
        (lambda s: replace(s, days=np.array([1.0, np.nan, 2.0, 3.0])), "days contain NaN"),
        (lambda s: replace(s, mask=np.zeros_like(s.mask)), "all frames are fully masked"),
    ],
)
def test_validate_rejects(make_series: SeriesFactory, change: Callable, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_series(change(make_series()))


# ---------------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "tile", "overlap"),
                         [(512, 512, 128, 0), (384, 384, 128, 32), (61, 61, 48, 0), (100, 70, 32, 8)])
def test_tile_grid_covers_scene(h: int, w: int, tile: int, overlap: int) -> None:
    grid = tile_grid(h, w, tile, overlap)
    cover = np.zeros((h, w), dtype=int)
    for r, c in grid:
        assert 0 <= r <= h - tile and 0 <= c <= w - tile
        cover[r:r + tile, c:c + tile] += 1
    assert cover.min() >= 1
    assert max(r for r, _ in grid) == h - tile and max(c for _, c in grid) == w - tile
    assert len(grid) == len(set(grid))


def test_tile_grid_errors() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        tile_grid(512, 512, 100)
    with pytest.raises(ValueError, match="larger than the scene"):
        tile_grid(61, 61, 64)
    with pytest.raises(ValueError, match="overlap"):
        tile_grid(512, 512, 128, overlap=128)


def test_cut_tile(samples: dict[str, Sample]) -> None:
    sample = samples["s2_brandenburg"]
    tile = cut_tile(sample, 16, 32, 64)
    assert (tile.height, tile.width) == (64, 64)
    np.testing.assert_array_equal(tile.sources["s2"].values,
                                  sample.sources["s2"].values[:, :, 16:80, 32:96])
    np.testing.assert_array_equal(tile.labels["osm"].ids, sample.labels["osm"].ids[16:80, 32:96])
    a, _, c, _, e, f = sample.transform
    assert tile.transform[2] == c + 32 * a and tile.transform[5] == f + 16 * e
    assert tile.meta["tile"] == {"row": 16, "col": 32, "size": 64} and "tile" not in sample.meta
    with pytest.raises(ValueError, match="leaves the"):
        cut_tile(sample, 480, 0, 64)
    with pytest.raises(ValueError, match="multiple of 16"):
        cut_tile(sample, 0, 0, 60)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def test_make_batch_shapes_and_default_period(samples: dict[str, Sample]) -> None:
    sample = samples["landsat_colorado"]
    tiles = [cut_tile(sample, r, c, 48) for r, c in tile_grid(61, 61, 48)]
    batch = make_batch(tiles)
    b = len(tiles)
    for name, t in (("landsat5", 44), ("landsat7", 61)):
        sb = batch.sources[name]
        assert sb.values.shape == (b, t, 3, 48, 48) and sb.values.dtype == torch.float32
        assert sb.days.shape == (b, t) and sb.days.dtype == torch.float64
        assert sb.mask.shape == (b, t, 48, 48) and sb.mask.dtype == torch.bool
        assert sb.values[~sb.mask.unsqueeze(2).expand_as(sb.values)].eq(0).all()
    first, last = days_since_origin(["2008-04-19", "2013-05-27"])
    assert batch.period.dtype == torch.float64
    assert torch.equal(batch.period, torch.tensor([[first, last + 1]] * b, dtype=torch.float64))


def test_make_batch_pads_short_rows(samples: dict[str, Sample]) -> None:
    tile = cut_tile(samples["landsat_colorado"], 0, 0, 32)
    l7 = tile.sources["landsat7"]
    short = replace(tile, sources={**tile.sources, "landsat7": replace(
        l7, values=l7.values[:5], days=l7.days[:5], mask=l7.mask[:5])})
    batch = make_batch([tile, short], period=[14000.0, 14400.0], max_frames=20)
    sb = batch.sources["landsat7"]
    assert sb.values.shape[1] == 20
    assert not sb.mask[1, 5:].any() and sb.values[1, 5:].eq(0).all()
    assert torch.all(sb.days[1, 5:] == float(l7.days[4]))
    assert sb.days[0, 0] == l7.days[0] and sb.days[0, -1] == l7.days[-1]  # ends kept
    assert torch.all(sb.days[0].diff() > 0)
    assert torch.equal(batch.period, torch.tensor([[14000.0, 14400.0]] * 2, dtype=torch.float64))
    expected = normalise(torch.from_numpy(l7.values[:5]).float(), "landsat7", torch.from_numpy(l7.mask[:5]))
    torch.testing.assert_close(sb.values[1, :5], expected, rtol=0, atol=1e-6)  # stacked, then normalised
    assert expected.abs().max() > 0


def test_make_batch_errors(samples: dict[str, Sample]) -> None:
    landsat, s2 = samples["landsat_colorado"], samples["s2_virginia"]
    with pytest.raises(ValueError, match="at least one tile"):
        make_batch([])
    with pytest.raises(ValueError, match="same sources"):
        make_batch([cut_tile(landsat, 0, 0, 32), cut_tile(s2, 0, 0, 32)])
    with pytest.raises(ValueError, match="same size"):
        make_batch([cut_tile(s2, 0, 0, 32), cut_tile(s2, 0, 0, 64)])
    with pytest.raises(ValueError, match="square"):
        make_batch([landsat])
    with pytest.raises(ValueError, match="t_s < t_e"):
        make_batch([cut_tile(s2, 0, 0, 32)], period=[5.0, 5.0])
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        make_batch([cut_tile(s2, 0, 0, 32)], max_frames=0)


def test_random_batches_seeded_windows(samples: dict[str, Sample]) -> None:
    sample = samples["landsat_colorado"]
    run = lambda seed: list(islice(random_batches(sample, 3, 32, seed, 365.0, max_frames=12), 3))
    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.period, b.period)
        assert torch.equal(a.sources["landsat7"].values, b.sources["landsat7"].values)
    assert not all(torch.equal(a.period, b.period) for a, b in zip(first, other, strict=True))
    for batch in first:
        assert torch.all(batch.period[:, 1] - batch.period[:, 0] == 365.0)
        for sb in batch.sources.values():
            assert sb.values.shape[0] == 3 and sb.values.shape[1] <= 12
            assert sb.values.shape[-2:] == (32, 32)
            real = sb.mask.flatten(2).any(-1)
            inside = (sb.days >= batch.period[:, :1]) & (sb.days < batch.period[:, 1:])
            assert torch.all(inside[real])


def test_random_batches_dropped_source(samples: dict[str, Sample]) -> None:
    """A window after Landsat 5's last frame leaves landsat5 as one all-masked padding frame."""
    tile = cut_tile(samples["landsat_colorado"], 0, 0, 32)
    l5 = tile.sources["landsat5"]
    empty = replace(l5, values=l5.values[:0], days=l5.days[:0], mask=l5.mask[:0])
    batch = make_batch([replace(tile, sources={**tile.sources, "landsat5": empty})],
                       period=[15500.0, 15865.0])
    sb = batch.sources["landsat5"]
    assert sb.values.shape == (1, 1, 3, 32, 32) and not sb.mask.any()
    assert sb.days.item() == 15500.0


def test_random_batches_s2_full_period(samples: dict[str, Sample]) -> None:
    batch = next(random_batches(samples["s2_brandenburg"], 4, 128, seed=0))
    assert batch.sources["s2"].values.shape == (4, 1, 13, 128, 128)
    day = days_since_origin(["2017-02-16"])[0]
    assert torch.equal(batch.period, torch.tensor([[day, day + 1]] * 4, dtype=torch.float64))
    assert batch.sources["s2"].mask.all()


def test_annual_period_is_the_calendar_year_of_the_median_day() -> None:
    for name, year in (("landsat_colorado", "2010"), ("s2_brandenburg", "2017"), ("s2_virginia", "2016")):
        period = annual_period(load_sample(name))
        assert to_iso(period) == [f"{year}-01-01", f"{int(year) + 1}-01-01"], name


# ---------------------------------------------------------------------------------------------
# Silent garbage becomes a clear error
# ---------------------------------------------------------------------------------------------


def _tile_sample(series: SourceSeries, name: str = "synthetic") -> Sample:
    return Sample(name=name, sources={series.sensor: series}, labels={}, crs="EPSG:32613",
                  transform=[30.0, 0.0, 0.0, 0.0, -30.0, 0.0], pixel_size_m=30.0, meta={})


def test_normalise_checks_finiteness_before_the_clip() -> None:
    x = torch.full((3, 2, 2), 0.1)
    x[0, 0, 0] = float("inf")  # the 6 sigma clip would have made this +6
    with pytest.raises(ValueError, match="1 NaN/inf values at valid pixels"):
        normalise(x, "landsat5")
    mask = torch.ones(2, 2, dtype=torch.bool)
    mask[0, 0] = False
    x[1, 0, 0] = float("nan")
    z = normalise(x, "landsat5", mask)  # invalid pixels may hold anything: they become 0
    assert torch.isfinite(z).all() and z[:, 0, 0].eq(0).all()


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_make_batch_refuses_non_finite_days(make_series: SeriesFactory, bad: float) -> None:
    days = 15000.0 + 16.0 * np.arange(4)
    days[2] = bad
    tile = _tile_sample(make_series(days=days))
    with pytest.raises(ValueError, match="days contain NaN/inf"):
        make_batch([tile])
    with pytest.raises(ValueError, match="period must be finite"):
        make_batch([_tile_sample(make_series())], period=[15000.0, bad])


def test_max_frames_picks_frames_by_time_not_position(make_series: SeriesFactory) -> None:
    days = np.array([15030.0, 15000.0, 15020.0, 15010.0])  # unsorted
    series = make_series(days=days)
    batch = make_batch([_tile_sample(series)], max_frames=2)
    sb = batch.sources["landsat7"]
    assert sb.days[0].tolist() == [15000.0, 15030.0]  # first and last in time
    expect = normalise(series.values[[1, 0]], "landsat7", series.mask[[1, 0]])
    np.testing.assert_array_equal(sb.values[0].numpy(), expect)


def test_sources_on_different_grids_are_refused(samples: dict[str, Sample]) -> None:
    scene = samples["landsat_colorado"]
    l7 = scene.sources["landsat7"]
    small = replace(scene, sources={**scene.sources, "landsat7": replace(
        l7, values=l7.values[..., :48, :48], mask=l7.mask[..., :48, :48])})
    with pytest.raises(ValueError, match=r"share one H x W grid; got landsat5 61 x 61, landsat7 48 x 48"):
        make_batch([small])


def _copy_sample(tmp_path, name: str = "landsat_colorado") -> tuple:
    src = default_data_dir()
    for suffix in (".json", ".npz"):
        (tmp_path / f"{name}{suffix}").write_bytes((src / f"{name}{suffix}").read_bytes())
    return tmp_path / f"{name}.json", tmp_path / f"{name}.npz"


def test_damaged_sample_files_give_clear_errors(tmp_path) -> None:
    import json

    json_path, npz_path = _copy_sample(tmp_path)
    data = npz_path.read_bytes()
    npz_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(str(npz_path))} is truncated or not a valid \.npz"):
        load_sample("landsat_colorado", tmp_path)
    npz_path.write_bytes(data)
    meta = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "crs"}))
    with pytest.raises(ValueError, match="key 'crs' is missing"):
        load_sample("landsat_colorado", tmp_path)
    json_path.write_text(json.dumps({**meta, "frames": meta["frames"][:-1]}))
    with pytest.raises(ValueError, match="holds 105 frames but the metadata lists 104"):
        load_sample("landsat_colorado", tmp_path)
    json_path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_sample("landsat_colorado", tmp_path)


def test_batch_to_moves_every_tensor(samples: dict[str, Sample]) -> None:
    batch = make_batch([cut_tile(samples["landsat_colorado"], 0, 0, 32)], max_frames=4)
    moved = batch.to("meta")
    tensors = [moved.period] + [t for s in moved.sources.values() for t in (s.values, s.days, s.mask)]
    assert all(t.device.type == "meta" for t in tensors)
    assert set(moved.sources) == set(batch.sources) and batch.period.device.type == "cpu"  # the original stays
    for name, src in moved.sources.items():
        assert src.values.shape == batch.sources[name].values.shape and src.mask.dtype == torch.bool
