"""Held-out targets never leak into the input; student views follow the drop strategies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aef_lite.data import Batch, SourceBatch, make_batch
from aef_lite.perturb import HALF_YEAR_DAYS, PATCH, hold_out_targets, student_view

B, L = 6, 32


def _source(t: int, c: int, gen: torch.Generator, spacing: float = 30.0) -> SourceBatch:
    days = 17000.0 + spacing * torch.arange(t, dtype=torch.float64).repeat(B, 1)
    days = days + torch.rand(B, 1, generator=gen, dtype=torch.float64)
    return SourceBatch(torch.randn(B, t, c, L, L, generator=gen), days, torch.rand(B, t, L, L, generator=gen) > 0.2)


@pytest.fixture()
def batch() -> Batch:
    gen = torch.Generator().manual_seed(0)
    sources = {"landsat5": _source(6, 3, gen), "landsat7": _source(12, 3, gen), "s2": _source(1, 13, gen)}
    sources["landsat5"].mask[0, 1:] = False  # row 0: a single valid landsat5 frame
    sources["landsat7"].mask[1] = False  # row 1: no valid landsat7 frame at all
    return Batch(sources, torch.tensor([[17000.0, 17365.0]] * B, dtype=torch.float64))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_no_leak(batch: Batch, inputs: Batch, targets: dict) -> None:
    for name, src in batch.sources.items():
        t = targets[name]
        for b in range(B):
            held = t.hidden[b]
            assert not (held & ~t.mask[b]).any(), "hidden pixels are loss pixels"
            if not held.any():
                continue
            # the target frame: the one whose values match the target at its held-out pixels
            frame = [i for i in range(src.values.shape[1]) if torch.equal(src.values[b, i], t.values[b])]
            assert len(frame) == 1
            f = frame[0]
            assert src.days[b, f] == t.days[b]
            assert held[~src.mask[b, f]].sum() == 0, "loss only on originally valid pixels"
            assert not (inputs.sources[name].mask[b, f] & held).any(), f"{name} row {b}: target visible in input"


def test_target_frame_removed_from_multi_frame_rows(batch: Batch) -> None:
    inputs, targets = hold_out_targets(batch, _gen())
    _check_no_leak(batch, inputs, targets)
    for name in ("landsat5", "landsat7"):
        src, inp, t = batch.sources[name], inputs.sources[name], targets[name]
        for b in range(B):
            n_valid = int(src.mask[b].flatten(1).any(1).sum())
            removed = (src.mask[b] & ~inp.mask[b]).flatten(1).any(1)
            if n_valid >= 2:
                assert int(removed.sum()) == 1, "exactly one frame removed"
                f = int(removed.nonzero())
                assert not inp.mask[b, f].any(), "the whole target frame is masked in the input"
                assert torch.equal(t.mask[b], src.mask[b, f])
                others = torch.ones(src.mask.shape[1], dtype=torch.bool)
                others[f] = False
                assert torch.equal(inp.mask[b, others], src.mask[b, others]), "other frames untouched"
    assert not targets["landsat7"].mask[1].any(), "a row with no valid frame has no target"
    assert targets["landsat7"].days[1] == batch.period[1, 0]


def test_single_frame_rows_hold_out_patches(batch: Batch) -> None:
    inputs, targets = hold_out_targets(batch, _gen(3))
    _check_no_leak(batch, inputs, targets)
    for name, rows in (("s2", range(B)), ("landsat5", [0])):
        for b in rows:
            orig = batch.sources[name].mask[b]
            f = int(orig.flatten(1).any(1).nonzero()[0])
            held, kept = targets[name].hidden[b], inputs.sources[name].mask[b, f]
            assert not (held & kept).any()
            assert torch.equal(held | kept, orig[f]), "every valid pixel is either input or hidden"
            assert torch.equal(targets[name].mask[b], orig[f]), "the loss covers every valid pixel"
            grid = (L // PATCH, PATCH, L // PATCH, PATCH)
            cells = held.view(grid).any(dim=(1, 3))
            assert int(cells.sum()) == (L // PATCH) ** 2 // 2, "half of the valid 8x8 patches"
            whole = held.view(grid) | ~orig[f].view(grid)
            assert whole.all(dim=(1, 3))[cells].all(), "held-out patches are held out whole"


def test_hold_out_is_seeded(batch: Batch) -> None:
    a_in, a_t = hold_out_targets(batch, _gen(5))
    b_in, b_t = hold_out_targets(batch, _gen(5))
    c_in, _ = hold_out_targets(batch, _gen(6))
    assert all(torch.equal(a_in.sources[n].mask, b_in.sources[n].mask) for n in batch.sources)
    assert all(torch.equal(a_t[n].mask, b_t[n].mask) for n in batch.sources)
    assert not all(torch.equal(a_in.sources[n].mask, c_in.sources[n].mask) for n in batch.sources)


def test_hold_out_on_real_tiles(samples: dict) -> None:
    from aef_lite.data import cut_tile

    for name in ("landsat_colorado", "s2_brandenburg"):
        tiles = [cut_tile(samples[name], r, r, L) for r in (0, 16, 29)]
        real = make_batch(tiles, max_frames=6)
        inputs, targets = hold_out_targets(real, _gen())
        for src_name, t in targets.items():
            assert t.mask.any(dim=(1, 2)).all(), f"{name}/{src_name}: every row has a target"
            src = real.sources[src_name]
            picked = torch.stack([(src.days[b] == t.days[b]).nonzero()[0, 0] for b in range(len(tiles))])
            vis = inputs.sources[src_name].mask[torch.arange(len(tiles)), picked]
            assert t.hidden.any(dim=(1, 2)).all() and not (vis & t.hidden).any()


def _strategy_batch() -> Batch:
    gen = torch.Generator().manual_seed(1)
    sources = {"landsat5": _source(24, 3, gen, spacing=15.0), "landsat7": _source(20, 3, gen, spacing=18.0)}
    return Batch(sources, torch.tensor([[17000.0, 17365.0]] * B, dtype=torch.float64))


def _row_span(batch: Batch, b: int) -> tuple[float, float]:
    days = torch.cat([s.days[b][s.mask[b].flatten(1).any(1)] for s in batch.sources.values()])
    return float(days.min()), float(days.max())


@pytest.mark.parametrize("strategy", ["last6", "first6"])
def test_student_drops_six_months(strategy: str) -> None:
    teacher = _strategy_batch()
    student = student_view(teacher, _gen(), p_drop_source=0.0, strategies=(strategy,))
    assert torch.equal(student.period, teacher.period), "the valid period stays the teacher's"
    for b in range(B):
        first, last = _row_span(teacher, b)
        for name, src in student.sources.items():
            kept = src.mask[b].flatten(1).any(1)
            days = src.days[b][kept]
            assert len(days) > 0
            if strategy == "last6":
                assert (days <= last - HALF_YEAR_DAYS).all()
            else:
                assert (days >= first + HALF_YEAR_DAYS).all()
            teacher_kept = teacher.sources[name].mask[b].flatten(1).any(1)
            d = src.days[b]
            rule = (d <= last - HALF_YEAR_DAYS) if strategy == "last6" else (d >= first + HALF_YEAR_DAYS)
            assert torch.equal(kept, teacher_kept & rule), "exactly the frames in the other half-year stay"


def test_student_frame_drop_rates_and_whole_frames() -> None:
    teacher = _strategy_batch()
    dropped, total = 0, 0
    for seed in range(10):
        student = student_view(teacher, _gen(seed), p_drop_source=0.0, strategies=("frames",))
        for name, src in student.sources.items():
            tm = teacher.sources[name].mask
            assert not (src.mask & ~tm).any(), "the student never gains pixels"
            per_frame = (src.mask == tm).flatten(2).all(2) | ~src.mask.flatten(2).any(2)
            assert per_frame.all(), "frames are kept or dropped whole"
            kept = src.mask.flatten(2).any(2)
            had = tm.flatten(2).any(2)
            dropped += int((had & ~kept).sum())
            total += int(had.sum())
    assert 0.25 < dropped / total < 0.35, "Landsat frames dropped with p = 0.3"


def test_student_source_drop_never_removes_all() -> None:
    teacher = _strategy_batch()
    for seed in range(10):
        student = student_view(teacher, _gen(seed), p_drop_source=1.0, strategies=("frames",))
        present = torch.stack([s.mask.flatten(1).any(1) for s in student.sources.values()])  # (S, B)
        assert (present.sum(0) == 1).all(), "with p = 1 every row keeps exactly one source"


def test_student_never_empty_falls_back_to_teacher() -> None:
    gen = torch.Generator().manual_seed(2)
    teacher = Batch({"s2": _source(1, 13, gen)}, torch.tensor([[17000.0, 17365.0]] * B, dtype=torch.float64))
    student = student_view(teacher, _gen(), strategies=("last6",))  # would drop the only frame
    s, t = student.sources["s2"].mask, teacher.sources["s2"].mask
    assert not (s & ~t).any() and s.flatten(1).any(1).all(), "the frame is kept (a subset of the teacher's)"
    for seed in range(5):
        student = student_view(teacher, _gen(seed))
        assert student.sources["s2"].mask.flatten(1).any(1).all()


def test_single_date_student_differs_from_the_teacher_on_every_row() -> None:
    gen = torch.Generator().manual_seed(2)
    teacher = Batch({"s2": _source(1, 13, gen)}, torch.tensor([[17000.0, 17365.0]] * B, dtype=torch.float64))
    for seed in range(3):
        s, t = student_view(teacher, _gen(seed)).sources["s2"].mask, teacher.sources["s2"].mask
        dropped = (t & ~s).flatten(1).sum(1).float() / t.flatten(1).sum(1)
        assert ((dropped > 0.3) & (dropped < 0.7)).all(), "about half of the patches are dropped on every row"


def test_student_view_rejects_unknown_strategy(batch: Batch) -> None:
    with pytest.raises(ValueError, match="strategies"):
        student_view(batch, _gen(), strategies=("rotate",))


def test_student_view_on_real_series(samples: dict) -> None:
    from aef_lite.data import cut_tile

    tiles = [cut_tile(samples["landsat_colorado"], r, 0, L) for r in (0, 10, 20, 29)]
    teacher = make_batch(tiles, max_frames=20)
    for seed in range(4):
        student = student_view(teacher, _gen(seed))
        any_valid = torch.stack([s.mask.flatten(1).any(1) for s in student.sources.values()]).any(0)
        assert any_valid.all()
        assert all(not (student.sources[n].mask & ~s.mask).any() for n, s in teacher.sources.items())
    assert np.isfinite(teacher.period.numpy()).all()
