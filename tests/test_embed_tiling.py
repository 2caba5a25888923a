"""embed_scene's tiling: reflection padding, blended overlaps, support window, small scenes."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
import torch

from aef_lite import AEFConfig, AEFModel
from aef_lite.data import Sample, annual_period, cut_tile, make_batch
from aef_lite.diagnostics import grid_line_ratio
from aef_lite.embed import EMBED_BATCH_PIXELS, EMBED_TILE, blend_window, embed_scene, pad_indices, reflect_pad
from aef_lite.support import MAX_FRAMES, support_of, support_window


@pytest.fixture(scope="module")
def model() -> AEFModel:
    torch.manual_seed(0)
    return AEFModel(AEFConfig.tiny()).eval()


def test_blend_window_is_one_inside_and_ramps_to_the_borders() -> None:
    w = blend_window(64, 16)
    assert w.shape == (64,) and (w > 0).all() and (w <= 1).all()
    assert np.allclose(w, w[::-1]) and (w[16:48] == 1.0).all() and w[0] < 0.05
    assert (np.diff(w[:16]) > 0).all()
    tent = blend_window(32, 16)  # overlap = half a tile: a tent, highest in the middle
    assert tent.argmax() in (15, 16) and (tent > 0).all()


def test_reflect_pad_mirrors_values_and_masks(samples: dict[str, Sample]) -> None:
    scene = cut_tile(samples["s2_brandenburg"], 100, 100, 32)
    padded, top, left = reflect_pad(scene, 8, 64)
    s, p = scene.sources["s2"], padded.sources["s2"]
    assert (padded.height, padded.width) == (64, 64) and (top, left) == (8, 8)
    np.testing.assert_array_equal(p.values[..., 8:40, 8:40], s.values)
    np.testing.assert_array_equal(p.values[..., 7, 8:40], s.values[..., 1, :])  # mirrored, edge not repeated
    np.testing.assert_array_equal(p.mask[..., 8:40, 8:40], s.mask)
    assert padded.transform[2] == pytest.approx(scene.transform[2] - 8 * scene.transform[0])


@pytest.mark.parametrize(("h", "w", "margin", "min_size"), [(40, 50, 8, 32), (10, 30, 8, 32), (3, 3, 8, 32)])
def test_pad_indices_are_numpys_padding(h: int, w: int, margin: int, min_size: int) -> None:
    a = np.random.default_rng(0).normal(size=(2, h, w))
    rows, cols = pad_indices(h, w, margin, min_size)
    extra = (max(0, min_size - h - 2 * margin), max(0, min_size - w - 2 * margin))
    mode = "reflect" if (h, w) == (40, 50) else "symmetric"
    expected = np.pad(a, [(0, 0), (margin, margin + extra[0]), (margin, margin + extra[1])], mode=mode)
    np.testing.assert_array_equal(a[:, rows[:, None], cols[None, :]], expected)


def test_embedding_a_scene_never_copies_it(model: AEFModel, samples: dict[str, Sample]) -> None:
    scene = samples["s2_brandenburg"]  # 512 x 512 px, 13 bands: 14 MB; a batch of 8 tiles: 0.4 MB
    s2 = scene.sources["s2"]
    scene_bytes = s2.values.nbytes + s2.mask.nbytes
    tracemalloc.start()  # numpy's allocations are traced (torch's are not)
    try:
        field = embed_scene(model, scene, batch_size=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - field.emb.nbytes < 0.5 * scene_bytes, (peak, field.emb.nbytes, scene_bytes)


def test_one_tile_without_overlap_equals_the_direct_embedding(model: AEFModel, samples: dict[str, Sample]) -> None:
    scene = cut_tile(samples["s2_brandenburg"], 200, 300, 32)
    field = embed_scene(model, scene, tile=32, overlap=0)
    direct = model.embed(make_batch([scene], period=field.period, max_frames=MAX_FRAMES))[0].numpy()
    np.testing.assert_allclose(field.emb, direct, atol=1e-5)


def test_field_is_unit_norm_and_independent_of_batch_size(model: AEFModel, samples: dict[str, Sample]) -> None:
    scene = samples["landsat_colorado"]
    field = embed_scene(model, scene)
    assert field.emb.shape == (64, 61, 61) and field.valid.all()
    np.testing.assert_allclose(np.linalg.norm(field.emb, axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(embed_scene(model, scene, batch_size=3).emb, field.emb, atol=1e-5)
    np.testing.assert_array_equal(field.period, annual_period(scene))


def test_scene_smaller_than_the_tile_is_embedded(model: AEFModel, samples: dict[str, Sample]) -> None:
    field = embed_scene(model, samples["landsat_colorado"], tile=64)  # 61 px < 64 px
    assert field.emb.shape == (64, 61, 61) and field.valid.all()


@pytest.mark.parametrize(("tile", "stride"), [(32, 16), (None, EMBED_TILE - 16)])
def test_blending_leaves_no_tile_seams(model: AEFModel, samples: dict[str, Sample], tile: int | None,
                                       stride: int) -> None:
    scene = cut_tile(samples["s2_brandenburg"], 0, 0, 192)
    blended = embed_scene(model, scene, tile=tile)
    assert grid_line_ratio(blended.emb, periods=(stride,)) < 1.15


def test_tiles_without_valid_input_are_no_data(model: AEFModel, samples: dict[str, Sample]) -> None:
    scene = cut_tile(samples["s2_brandenburg"], 0, 0, 96)
    s2 = scene.sources["s2"]
    mask = s2.mask.copy()
    mask[..., 48:] = False
    scene = replace(scene, sources={"s2": replace(s2, values=np.where(mask[:, None], s2.values, 0.0), mask=mask)})
    field = embed_scene(model, scene, tile=32)
    assert field.valid[:, :40].all() and not field.valid[:, 90:].any()


def test_support_window_is_the_period_or_a_year_around_it(samples: dict[str, Sample]) -> None:
    assert support_window((0.0, 400.0)) == (0.0, 400.0)
    assert support_window((100.0, 190.0)) == pytest.approx((145.0 - 182.5, 145.0 + 182.5))
    with pytest.raises(ValueError, match="finite"):
        support_window((0.0, float("nan")))
    scene = samples["landsat_colorado"]
    year = annual_period(scene)
    kept = support_of(scene, year)
    for series in kept.sources.values():
        assert ((series.days >= year[0]) & (series.days < year[1])).all()
    assert sum(s.num_frames for s in kept.sources.values()) < sum(s.num_frames for s in scene.sources.values())


def test_support_false_gives_every_frame_whatever_the_period(model: AEFModel, samples: dict[str, Sample]) -> None:
    scene = cut_tile(samples["landsat_colorado"], 0, 0, 32)
    last = max(float(s.days.max()) for s in scene.sources.values())
    far = np.array([last + 1000.0, last + 1090.0])  # its support window holds no frame
    assert not embed_scene(model, scene, tile=32, overlap=0, period=far).valid.any()
    field = embed_scene(model, scene, tile=32, overlap=0, period=far, support=False)
    assert field.valid.all()
    with torch.no_grad():  # one tile, no padding: the direct embedding of all frames for that period
        direct = model.embed(make_batch([scene], period=far, max_frames=MAX_FRAMES))[0].numpy()
    np.testing.assert_allclose(field.emb, direct, atol=1e-5)


def test_default_tile_is_the_larger_of_embed_tile_and_the_training_tile(samples: dict[str, Sample]) -> None:
    scene = cut_tile(samples["s2_brandenburg"], 0, 0, 256)
    for tile_size, expected in ((32, EMBED_TILE), (128, 128)):
        torch.manual_seed(0)
        net = AEFModel(replace(AEFConfig.tiny(), tile_size=tile_size)).eval()
        seen: list[tuple[int, int]] = []
        forward = net.embed

        def spy(batch, forward=forward, seen=seen):  # noqa: ANN001, ANN202
            seen.append((batch.period.shape[0], next(iter(batch.sources.values())).values.shape[-1]))
            return forward(batch)

        net.embed = spy  # type: ignore[method-assign]
        embed_scene(net, scene)
        assert {h for _, h in seen} == {expected}
        assert max(b for b, _ in seen) == max(1, EMBED_BATCH_PIXELS // expected**2)


def test_default_tile_changes_the_field_less_than_a_shift_of_the_32px_grid(samples: dict[str, Sample]) -> None:
    """The shipped reference model: a 64 px tile gives the field of 32 px tiles within the change
    that moving the 32 px grid by 8 px already causes (interior pixels, away from the reflection)."""
    from aef_lite.shipped import pretrained

    net = pretrained()[0].eval()
    scene = cut_tile(samples["s2_brandenburg"], 0, 0, 208)
    shifted = cut_tile(samples["s2_brandenburg"], 8, 8, 192)
    base = embed_scene(net, scene, tile=32).emb[:, 8:200, 8:200]
    grid_shift = np.abs(embed_scene(net, shifted, tile=32).emb - base)[:, 24:-24, 24:-24].max()
    default = np.abs(embed_scene(net, scene).emb[:, 8:200, 8:200] - base)[:, 24:-24, 24:-24].max()
    assert default <= grid_shift, (default, grid_shift)
