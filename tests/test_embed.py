"""Scene-scale inference and export on real sample crops with an untrained tiny model."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from aef_lite import AEFConfig, AEFModel
from aef_lite import embed as embed_module
from aef_lite.data import Sample, annual_period, cut_tile, make_batch
from aef_lite.embed import EmbeddingField, embed_scene, load_field, save_field, save_geotiff
from aef_lite.quantization import NODATA, band_names, quant_abs_error_bound, quantize

TILE, OVERLAP = 32, 16


@pytest.fixture(scope="module")
def model() -> AEFModel:
    torch.manual_seed(0)
    return AEFModel(AEFConfig.tiny()).eval()


def _crop(sample: Sample, row: int, col: int, height: int, width: int) -> Sample:
    """A non-square window of ``sample`` (cut_tile only makes square tiles)."""
    ys, xs = slice(row, row + height), slice(col, col + width)
    sources = {k: replace(s, values=s.values[..., ys, xs], mask=s.mask[..., ys, xs])
               for k, s in sample.sources.items()}
    return replace(sample, sources=sources, labels={})


def _direct(model: AEFModel, sample: Sample, row: int, col: int, period: np.ndarray,
            max_frames: int | None = None) -> np.ndarray:
    """Embedding (64, TILE, TILE) of one tile, embedded alone."""
    batch = make_batch([cut_tile(sample, row, col, TILE)], period=period, max_frames=max_frames)
    return model.embed(batch)[0].numpy()


@pytest.fixture(scope="module")
def colorado(model: AEFModel, samples: dict[str, Sample]) -> EmbeddingField:
    """Field of landsat_colorado: 61 x 61 px, two asynchronous sources, 105 dates (8 kept)."""
    return embed_scene(model, samples["landsat_colorado"], tile=TILE, overlap=OVERLAP, max_frames=8)


def test_field_shape_unit_norm_deterministic(model: AEFModel, samples: dict[str, Sample],
                                             colorado: EmbeddingField) -> None:
    scene, field = samples["landsat_colorado"], colorado
    assert field.emb.shape == (64, scene.height, scene.width) and field.emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(field.emb, axis=0), 1.0, atol=1e-5)
    assert field.valid.all()
    again = embed_scene(model, scene, tile=TILE, overlap=OVERLAP, max_frames=8, batch_size=2)
    np.testing.assert_allclose(again.emb, field.emb, atol=1e-5)
    np.testing.assert_array_equal(field.period, annual_period(scene))  # default: a calendar year
    assert (field.crs, field.transform, field.name) == (scene.crs, scene.transform, scene.name)


def test_tiles_without_valid_input_are_left_as_no_data(model: AEFModel, samples: dict[str, Sample]) -> None:
    scene = _crop(samples["s2_brandenburg"], 0, 0, 32, 64)  # tiles at columns 0, 16, 32
    s2 = scene.sources["s2"]
    mask = s2.mask.copy()
    mask[..., 24:] = False  # the last tile sees no valid pixel; its neighbour still does
    scene.sources["s2"] = replace(s2, values=np.where(mask[:, None], s2.values, 0.0), mask=mask)
    field = embed_scene(model, scene, tile=TILE, overlap=OVERLAP)
    # the last tile would write columns [40, 64): the middle of its 24 px overlap with the tile at 16
    assert field.valid[:, :40].all() and not field.valid[:, 40:].any()
    np.testing.assert_allclose(np.linalg.norm(field.emb[:, :, :40], axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_scene_smaller_than_the_tile_is_embedded_whole(samples: dict[str, Sample], preset: str) -> None:
    # landsat_colorado is 61 x 61 px: smaller than the small preset's 64 px tile (and than 64 for tiny)
    scene = samples["landsat_colorado"]
    torch.manual_seed(0)
    cfg = AEFConfig.small() if preset == "small" else AEFConfig.tiny(tile_size=64)
    net = AEFModel(cfg).eval()
    field = embed_scene(net, scene, max_frames=4)
    assert field.emb.shape == (64, 61, 61) and field.valid.all()
    np.testing.assert_allclose(np.linalg.norm(field.emb, axis=0), 1.0, atol=1e-5)
    wide = _crop(samples["s2_brandenburg"], 0, 0, 40, 96)  # smaller than the tile along one axis only
    assert embed_scene(net, wide).emb.shape == (64, 40, 96)


@pytest.fixture()
def field(model: AEFModel, samples: dict[str, Sample]) -> EmbeddingField:
    return embed_scene(model, _crop(samples["s2_brandenburg"], 0, 0, 48, 64), tile=TILE, overlap=OVERLAP)


def test_npz_round_trip_within_quantisation_bound(field: EmbeddingField, tmp_path) -> None:
    field.emb[:, 5, 7] = np.nan  # a no-data pixel
    path = save_field(field, tmp_path / "field.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field.npz"], "no temporary file left"
    with np.load(path, allow_pickle=False) as npz:
        assert npz["emb"].dtype == np.int8 and npz["emb"].shape == field.emb.shape
        assert npz["bands"].tolist() == band_names(64) == [f"A{i:02d}" for i in range(64)]
        assert (npz["emb"][:, 5, 7] == NODATA).all()
    back = load_field(path)
    assert np.isnan(back.emb[:, 5, 7]).all() and not back.valid[5, 7] and back.valid.sum() == 48 * 64 - 1
    ok = field.valid
    err = np.abs(back.emb[:, ok] - field.emb[:, ok])
    assert (err <= quant_abs_error_bound(field.emb[:, ok]) + 1e-6).all()
    np.testing.assert_array_equal(back.period, field.period)
    assert (back.crs, back.transform, back.pixel_size_m, back.name) == (
        field.crs, field.transform, field.pixel_size_m, field.name)


def test_failed_save_keeps_old_file_and_leaves_no_temp(field: EmbeddingField, tmp_path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "field.npz"
    path.write_bytes(b"previous")

    calls = []

    def broken(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        if len(calls) > 3:  # fail in the middle of the stream of blocks
            raise OSError("disk full")
        return quantize(*args, **kwargs)

    monkeypatch.setattr(embed_module, "quantize", broken)
    monkeypatch.setattr(embed_module, "EXPORT_BLOCK_PIXELS", 64 * 16)
    with pytest.raises(OSError, match="disk full"):
        save_field(field, path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["field.npz"]


@pytest.mark.parametrize("block", [1, 100, 64 * 48, 1 << 18])
def test_block_by_block_export_is_bit_identical(field: EmbeddingField, tmp_path, block: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    field.emb[:, 3, 4] = np.nan  # no data
    field.emb[:, 40, :] = np.nan
    whole = quantize(np.nan_to_num(field.emb, nan=0.0), dim=0, valid=np.isfinite(field.emb).all(axis=0))
    monkeypatch.setattr(embed_module, "EXPORT_BLOCK_PIXELS", block)
    with np.load(save_field(field, tmp_path / "f.npz"), allow_pickle=False) as npz:
        assert npz["emb"].dtype == np.int8 and npz["emb"].flags.c_contiguous
        np.testing.assert_array_equal(npz["emb"], whole)
    if block == 100:
        rasterio = pytest.importorskip("rasterio")
        monkeypatch.setattr(embed_module, "GEOTIFF_TILE", 16)  # several tiles and row blocks per band
        with rasterio.open(save_geotiff(field, tmp_path / "f.tif")) as src:
            np.testing.assert_array_equal(src.read(), whole)


def test_damaged_field_file_names_the_file(field: EmbeddingField, tmp_path) -> None:
    path = save_field(field, tmp_path / "f.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"{path} is truncated or not a valid .npz"):
        load_field(path)


def test_geotiff_round_trip(field: EmbeddingField, tmp_path) -> None:
    rasterio = pytest.importorskip("rasterio")
    path = save_geotiff(field, tmp_path / "field.tif")
    assert [p.name for p in tmp_path.iterdir()] == ["field.tif"]
    with rasterio.open(path) as src:
        assert (src.count, src.dtypes[0], src.nodata) == (64, "int8", NODATA)
        assert list(src.descriptions) == band_names(64)
        assert src.crs.to_string() == field.crs
        np.testing.assert_allclose(list(src.transform)[:6], field.transform)
        np.testing.assert_array_equal(src.read(), quantize(field.emb, dim=0))


def test_geotiff_without_rasterio_says_how_to_install(field: EmbeddingField, tmp_path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rasterio", None)  # makes `import rasterio` fail
    with pytest.raises(ImportError, match=r"aef-lite\[prep\]"):
        save_geotiff(field, tmp_path / "field.tif")


@pytest.mark.parametrize(("tile", "overlap", "match"), [
    (24, 8, "multiple of 16"),
    (32, 32, "overlap"),
    (32, 7, "overlap"),
    (32, -2, "overlap"),
])
def test_bad_tiling_raises(model: AEFModel, samples: dict[str, Sample], tile: int, overlap: int,
                           match: str) -> None:
    with pytest.raises(ValueError, match=match):
        embed_scene(model, samples["landsat_colorado"], tile=tile, overlap=overlap)


def test_non_finite_timestamp_is_an_error_not_an_empty_field(model: AEFModel, samples: dict[str, Sample]) -> None:
    scene = cut_tile(samples["landsat_colorado"], 0, 0, TILE)
    l7 = scene.sources["landsat7"]
    days = l7.days.copy()
    days[3] = np.inf
    scene = replace(scene, sources={**scene.sources, "landsat7": replace(l7, days=days)})
    with pytest.raises(ValueError, match="landsat7: days contain NaN/inf"):
        embed_scene(model, scene, period=(14000.0, 14365.0))


def test_export_memory_does_not_grow_with_the_field(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((64, 256, 256), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=0)
    emb[:, :10] = np.nan
    field = EmbeddingField(emb=emb, period=np.array([0.0, 365.0]), crs="EPSG:32633",
                           transform=[10.0, 0.0, 0.0, 0.0, -10.0, 0.0], pixel_size_m=10.0, name="synthetic")
    monkeypatch.setattr(embed_module, "EXPORT_BLOCK_PIXELS", 1 << 14)
    tracemalloc.start()
    try:
        save_field(field, tmp_path / "f.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < emb.nbytes / 8, f"export peak {peak / 2**20:.1f} MiB for a {emb.nbytes / 2**20:.0f} MiB field"
