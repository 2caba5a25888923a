"""Held-out reconstruction targets and perturbed student views (paper S2.2.2, S2.2.4).

Both functions take a :class:`~aef_lite.data.Batch` and a ``torch.Generator`` and return new
batches that share the value tensors with the input but carry new masks: the model guarantees
that a masked pixel or frame has no influence on its output (see :mod:`aef_lite.stp`), so
removing data is done by masking, never by zero-filling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aef_lite.data import Batch, SourceBatch

PATCH = 8
"""Side in pixels of the patches held out from single-frame sources."""

PATCH_FRACTION = 0.5
"""Fraction of a single-frame source's valid patches held out as the reconstruction target."""

HALF_YEAR_DAYS = 365.25 / 2

STRATEGIES = ("frames", "last6", "first6")
"""Student perturbations (paper S2.2.4): random frame drop, drop the last / first six months."""


@dataclass
class HeldOutTarget:
    """The reconstruction target of one source for a batch.

    days:   (B,) float64 acquisition day of the target frame.
    values: (B, C, L, L) float32 its normalised bands.
    mask:   (B, L, L) bool, True where the loss is computed (valid pixels of the target frame).
    hidden: (B, L, L) bool, the part of ``mask`` hidden from the input (the held-out pixels; all
            of ``mask`` when the whole frame is held out).
    """

    days: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    hidden: torch.Tensor


def _with_masks(batch: Batch, masks: dict[str, torch.Tensor]) -> Batch:
    """A batch sharing ``batch``'s values and days with new masks ``name -> (B, T, L, L)``."""
    return Batch(
        sources={n: SourceBatch(s.values, s.days, masks[n]) for n, s in batch.sources.items()},
        period=batch.period,
    )


def _patch_holdout(frame_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pick ``~PATCH_FRACTION`` of each row's valid 8x8 patches: ``(B, L, L) -> (B, L, L)`` bool.

    A row keeps at least one valid patch visible and holds out at least one when it has two or
    more valid patches; a row with fewer holds out nothing (no loss rather than leakage).
    """
    b, h, w = frame_mask.shape
    cells = torch.nn.functional.max_pool2d(frame_mask[:, None].float(), PATCH)[:, 0] > 0  # (B, h/8, w/8)
    flat = cells.flatten(1)
    score = torch.rand(flat.shape, generator=generator).to(flat.device)
    score = torch.where(flat, score, 2.0)  # invalid patches sort last
    rank = score.argsort(dim=1).argsort(dim=1)
    n_valid = flat.sum(dim=1, keepdim=True)
    k = torch.where(n_valid >= 2, (PATCH_FRACTION * n_valid).round().clamp(1, None).minimum(n_valid - 1), 0)
    held = (rank < k) & flat
    held = held.view_as(cells).repeat_interleave(PATCH, dim=1).repeat_interleave(PATCH, dim=2)
    return held & frame_mask


def hold_out_targets(batch: Batch, generator: torch.Generator) -> tuple[Batch, dict[str, HeldOutTarget]]:
    """Choose one reconstruction target per source and row and hide it from the input (S2.2.2).

    For every source and batch row, one target frame is drawn uniformly among the frames with
    at least one valid pixel. Then:

    * if the row has >= 2 such frames, the target frame is removed from the input (its mask set
      to False in a copy): the model must *predict* it from the other frames, i.e. interpolate
      in time;
    * if it has only one (the single-date Sentinel-2 samples), removing the frame would leave
      nothing to reconstruct from, so ~50% of its valid 8x8 patches are hidden instead
      (spatial in-painting: the encoder embeds the holes from their context, see
      :mod:`aef_lite.stp`). The loss mask covers every valid pixel of the frame and
      ``HeldOutTarget.hidden`` the held-out part; the objective weights the visible part by
      :data:`aef_lite.objective.VISIBLE_WEIGHT`. The paper is silent on single-frame sources;
      this is our choice. Measured on ``s2_brandenburg`` (10 labels per class, spatial splits,
      osm kNN-1, raw bands 0.354; ``benchmarks/README.md``): the reference recipe reaches 0.367
      (water/land 1.00). Without the pixel skip of :mod:`aef_lite.stp`, a loss on the hidden
      pixels only gave 0.364 (water/land 0.76), weight 0.25 on the visible ones 0.361 (0.92),
      and 4 x 4 instead of 8 x 8 patches 0.349-0.352.

    For multi-frame rows the target is never visible in the input (the known "plain
    autoencoding" mistake): the target mask and the input mask of the target frame are
    disjoint. For single-frame rows ``HeldOutTarget.hidden`` marks the part of the loss that is
    not in the input; validation scores only that part. A row with no valid frame in a source
    gets an all-False target mask for it (no loss).

    Args:
        batch: the full batch.
        generator: CPU ``torch.Generator`` driving every random choice.

    Returns:
        ``(input_batch, targets)`` with ``targets[name]`` a :class:`HeldOutTarget`.
    """
    masks, targets = {}, {}
    for name, src in batch.sources.items():
        b = src.mask.shape[0]
        rows = torch.arange(b, device=src.mask.device)
        frame_valid = src.mask.flatten(2).any(dim=2)  # (B, T)
        score = torch.rand(frame_valid.shape, generator=generator).to(frame_valid.device)
        pick = torch.where(frame_valid, score, -1.0).argmax(dim=1)  # (B,)
        target_mask = src.mask[rows, pick]  # (B, L, L)
        multi = frame_valid.sum(dim=1) >= 2
        held = torch.where(multi[:, None, None], target_mask, _patch_holdout(target_mask, generator))
        mask = src.mask.clone()
        mask[rows, pick] = target_mask & ~held
        masks[name] = mask
        days = torch.where(frame_valid.any(dim=1), src.days[rows, pick], batch.period[:, 0])
        loss_mask = torch.where(multi[:, None, None], held, target_mask)  # single date: every valid pixel
        targets[name] = HeldOutTarget(days=days, values=src.values[rows, pick], mask=loss_mask, hidden=held)
    return _with_masks(batch, masks), targets


def _row_support(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last day with a valid frame in each row, over all sources: two ``(B,)`` tensors."""
    firsts, lasts = [], []
    for src in batch.sources.values():
        valid = src.mask.flatten(2).any(dim=2)
        firsts.append(torch.where(valid, src.days, torch.inf).amin(dim=1))
        lasts.append(torch.where(valid, src.days, -torch.inf).amax(dim=1))
    return torch.stack(firsts).amin(dim=0), torch.stack(lasts).amax(dim=0)


def student_view(
    batch: Batch,
    generator: torch.Generator,
    p_drop_source: float = 0.3,
    strategies: tuple[str, ...] = STRATEGIES,
) -> Batch:
    """A perturbed copy of the teacher's input for the consistency loss (paper S2.2.4).

    Per row: when the batch has more than one source, each source is dropped entirely with
    probability ``p_drop_source`` (never all of them). Then one strategy drawn uniformly from
    ``strategies`` removes frames:

    * ``"frames"``: drop each frame at random, with probability 0.5 for Sentinel-2 sources
      (names starting with ``"s2"``) and 0.3 for the others (Landsat);
    * ``"last6"``: drop every frame in the last six months of the row's inputs;
    * ``"first6"``: drop every frame in the first six months.

    The valid period stays that of the teacher: the student must summarise the *same* period
    from less data, so dropping the last (first) six months turns the task into extrapolation
    forwards (backwards) in time, and the consistency loss teaches the summary to fill gaps.
    A source left with a single valid frame in a row (a single-date Sentinel-2 row, always)
    also loses about half of that frame's valid 8 x 8 patches, so the student differs from the
    teacher on every row: its holes must be embedded like the teacher embeds the visible pixels
    (our choice: frame drops alone left single-date rows, two thirds of the steps, with a student
    identical to the teacher and a consistency loss of exactly 0). A row left with no valid
    input falls back to the teacher's view.

    Args:
        batch: the teacher's input (already without held-out targets).
        generator: CPU ``torch.Generator``.
        p_drop_source: per-source drop probability.
        strategies: the strategies to draw from (a subset of :data:`STRATEGIES`).

    Returns:
        A :class:`~aef_lite.data.Batch` whose masks are subsets of ``batch``'s masks.
    """
    unknown = set(strategies) - set(STRATEGIES)
    if unknown or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {STRATEGIES}, got {strategies}")
    names = list(batch.sources)
    b = batch.period.shape[0]
    keep_source = torch.ones(len(names), b, dtype=torch.bool)
    if len(names) > 1:
        keep_source = torch.rand(len(names), b, generator=generator) >= p_drop_source
        rescue = torch.randint(len(names), (b,), generator=generator)
        keep_source[rescue, torch.arange(b)] |= ~keep_source.any(dim=0)
    choice = torch.randint(len(strategies), (b,), generator=generator)
    first, last = _row_support(batch)
    masks = {}
    for i, name in enumerate(names):
        src = batch.sources[name]
        device = src.mask.device
        keep = keep_source[i].to(device)[:, None].expand_as(src.days)  # (B, T) frames kept
        p_frame = 0.5 if name.startswith("s2") else 0.3
        frame_keep = (torch.rand(src.days.shape, generator=generator) >= p_frame).to(device)
        for j, strategy in enumerate(strategies):
            rows = (choice == j).to(device)[:, None]
            if strategy == "frames":
                rule = frame_keep
            elif strategy == "last6":
                rule = src.days <= (last.to(device) - HALF_YEAR_DAYS)[:, None]
            else:
                rule = src.days >= (first.to(device) + HALF_YEAR_DAYS)[:, None]
            keep = keep & torch.where(rows, rule, True)
        masks[name] = src.mask & keep[:, :, None, None]
    empty = ~torch.stack([m.flatten(1).any(dim=1) for m in masks.values()]).any(dim=0)  # (B,)
    for name in names:
        masks[name] = torch.where(empty[:, None, None, None], batch.sources[name].mask, masks[name])
    for name in names:  # a single-date row cannot lose frames: it loses half of its patches instead
        mask = masks[name]
        single = mask.flatten(2).any(dim=2).sum(dim=1) == 1  # (B,)
        if bool(single.any()):
            frame = mask.flatten(2).any(dim=2).float().argmax(dim=1)  # (B,) index of the valid frame
            rows = torch.arange(mask.shape[0], device=mask.device)
            dropped = _patch_holdout(mask[rows, frame], generator)
            mask = mask.clone()
            mask[rows, frame] &= ~(dropped & single[:, None, None])
            masks[name] = mask
    return _with_masks(batch, masks)
