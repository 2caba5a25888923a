"""Model behaviour on small synthetic tensors: shapes, masks, time handling, gradients, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from aef_lite import AEFConfig, AEFModel, Batch, SourceBatch
from aef_lite.operators import PrecisionOperator, SpaceOperator, TimeOperator, attention_weights
from aef_lite.pyramid import PyramidExchange

B, L = 2, 32


def _source(t: int, c: int, gen: torch.Generator, start: float = 17000.0) -> SourceBatch:
    days = start + torch.sort(torch.rand(B, t, generator=gen, dtype=torch.float64) * 365, dim=1).values
    return SourceBatch(
        values=torch.randn(B, t, c, L, L, generator=gen),
        days=days,
        mask=torch.rand(B, t, L, L, generator=gen) > 0.3,
    )


@pytest.fixture()
def batch() -> Batch:
    gen = torch.Generator().manual_seed(0)
    return Batch(
        sources={"landsat5": _source(5, 3, gen), "landsat7": _source(4, 3, gen), "s2": _source(2, 13, gen)},
        period=torch.tensor([[17000.0, 17365.0]] * B, dtype=torch.float64),
    )


@pytest.fixture()
def model() -> AEFModel:
    torch.manual_seed(0)
    return AEFModel(AEFConfig.tiny()).eval()


def _clone(batch: Batch) -> Batch:
    return copy.deepcopy(batch)


def test_shapes_and_unit_norm(model: AEFModel, batch: Batch) -> None:
    emb = model.embed(batch)
    assert emb.shape == (B, 64, L, L)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(B, L, L))


def test_embed_is_deterministic_even_in_train_mode(model: AEFModel, batch: Batch) -> None:
    model.train()
    torch.testing.assert_close(model.embed(batch), model.embed(batch), rtol=0, atol=0)
    mu = model.encode(batch)
    assert not torch.allclose(model.sample(mu), mu), "training must decode from a vMF sample"
    model.eval()
    assert torch.equal(model.sample(mu), mu), "inference must use mu itself"


def test_masked_frame_has_no_influence(model: AEFModel, batch: Batch) -> None:
    ref = model.embed(batch)
    other = _clone(batch)
    src = other.sources["landsat5"]
    src.mask[:, 2] = False
    masked_ref = model.embed(other)
    src.values[:, 2] = 1000.0 * torch.randn_like(src.values[:, 2])
    src.days[:, 2] += 123.4  # not even its timestamp matters
    torch.testing.assert_close(model.embed(other), masked_ref, rtol=0, atol=1e-6)
    assert not torch.allclose(masked_ref, ref, atol=1e-4), "masking a frame should change the output"


def test_masked_pixels_have_no_influence(model: AEFModel, batch: Batch) -> None:
    ref = model.embed(batch)
    other = _clone(batch)
    for src in other.sources.values():
        invalid = ~src.mask.unsqueeze(2).expand_as(src.values)
        src.values[invalid] = float("nan")  # even NaN in masked pixels is ignored
    torch.testing.assert_close(model.embed(other), ref, rtol=0, atol=1e-6)


def test_frame_order_does_not_matter(model: AEFModel, batch: Batch) -> None:
    ref = model.embed(batch)
    other = _clone(batch)
    src = other.sources["landsat5"]
    perm = torch.tensor([3, 0, 4, 1, 2])
    src.values, src.days, src.mask = src.values[:, perm], src.days[:, perm], src.mask[:, perm]
    torch.testing.assert_close(model.embed(other), ref, rtol=1e-4, atol=1e-5)


def test_time_operator_never_mixes_cells() -> None:
    """Catches the (B,T,H,W,C) -> (B*H*W,T,C) view-without-permute bug: time attention must
    only mix frames of the same cell."""
    torch.manual_seed(0)
    op = TimeOperator(dim=8, heads=2, mlp_ratio=2, code_dim=4)
    x = torch.randn(2, 5, 8, 4, 4)
    codes, valid = torch.randn(2, 5, 4), torch.ones(2, 5, 4, 4, dtype=torch.bool)
    y = op(x, codes, valid)
    x2 = x.clone()
    x2[1, 3, :, 2, 1] += 5.0 * torch.randn(8)
    changed = (op(x2, codes, valid) - y).abs().amax(dim=2) > 1e-6  # (B, T, h, w)
    expected = torch.zeros_like(changed)
    expected[1, :, 2, 1] = True
    assert torch.equal(changed, expected)


def test_space_and_precision_operators_stay_within_a_frame() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 4, 4)
    x2 = x.clone()
    x2[0, 1, :, 0, 0] += 5.0 * torch.randn(8)
    for op in (SpaceOperator(8, 2, 2), PrecisionOperator(8, 2)):
        changed = (op(x2) - op(x)).abs().flatten(2).amax(dim=2) > 1e-6  # (B, T)
        expected = torch.zeros_like(changed)
        expected[0, 1] = True
        assert torch.equal(changed, expected), type(op).__name__


def test_space_operator_knows_positions() -> None:
    torch.manual_seed(0)
    op = SpaceOperator(8, 2, 2)
    x = torch.randn(8).expand(1, 1, 4, 4, 8).permute(0, 1, 4, 2, 3).contiguous()  # same token everywhere
    y = op(x)
    assert (y[..., 0, 0] - y[..., 3, 3]).abs().max() > 1e-3, "identical tokens must differ by position"


def test_time_operator_with_all_frames_masked_is_finite() -> None:
    op = TimeOperator(dim=8, heads=2, mlp_ratio=2, code_dim=4)
    x = torch.randn(1, 3, 8, 2, 2)
    valid = torch.zeros(1, 3, 2, 2, dtype=torch.bool)
    assert torch.isfinite(op(x, torch.randn(1, 3, 4), valid)).all()


def test_exchange_shapes() -> None:
    ex = PyramidExchange(4, 8, 16)
    p, t, s = torch.randn(2, 3, 4, 16, 16), torch.randn(2, 3, 8, 4, 4), torch.randn(2, 3, 16, 2, 2)
    outs = ex(p, t, s)
    assert [o.shape for o in outs] == [p.shape, t.shape, s.shape]


def test_valid_period_changes_embedding(model: AEFModel, batch: Batch) -> None:
    ref = model.embed(batch)
    other = _clone(batch)
    other.period = torch.tensor([[17100.0, 17200.0]] * B, dtype=torch.float64)
    assert (model.embed(other) - ref).abs().max() > 1e-4


@pytest.mark.parametrize("period", [(16000.0, 16365.0), (17150.0, 17151.0), (18000.0, 18365.0)])
def test_interpolation_and_extrapolation_periods(model: AEFModel, batch: Batch, period: tuple) -> None:
    batch.period = torch.tensor([period] * B, dtype=torch.float64)
    emb = model.embed(batch)
    assert torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(B, L, L))


def test_any_subset_of_sources(model: AEFModel, batch: Batch) -> None:
    only_s2 = Batch({"s2": batch.sources["s2"]}, batch.period)
    assert model.embed(only_s2).shape == (B, 64, L, L)


def test_gradients_reach_every_parameter(batch: Batch) -> None:
    torch.manual_seed(0)
    model = AEFModel(AEFConfig.tiny()).train()
    mu = model.encode(batch)
    z = model.sample(mu)
    loss = sum(
        model.decode(z, name, src.days[:, 0], batch.period).abs().mean()
        for name, src in batch.sources.items()
    )
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_tiny_forward_backward_on_cpu_batch_of_8() -> None:
    torch.manual_seed(0)
    cfg = AEFConfig.tiny()
    model = AEFModel(cfg).train()
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    gen = torch.Generator().manual_seed(1)
    days = 17000 + torch.sort(torch.rand(8, 16, generator=gen, dtype=torch.float64) * 365, 1).values
    src = SourceBatch(torch.randn(8, 16, 3, 64, 64), days, torch.ones(8, 16, 64, 64, dtype=torch.bool))
    batch = Batch({"landsat7": src}, torch.tensor([[17000.0, 17365.0]] * 8, dtype=torch.float64))
    mu = model.encode(batch)
    out = model.decode(model.sample(mu), "landsat7", days[:, 3], batch.period)
    out.square().mean().backward()
    assert out.shape == (8, 3, 64, 64)


def test_paper_config_instantiates_on_meta() -> None:
    with torch.device("meta"):
        model = AEFModel(AEFConfig.paper())
    n = sum(p.numel() for p in model.parameters())
    assert 1e8 < n < 1e9, n
    assert model.config.dim_precision == 128 and model.config.n_blocks == 15


def test_bad_inputs_raise_clear_errors(model: AEFModel, batch: Batch) -> None:
    with pytest.raises(ValueError, match="no source"):
        model.embed(Batch({}, batch.period))
    with pytest.raises(ValueError, match="unknown source"):
        model.embed(Batch({"sentinel1": batch.sources["s2"]}, batch.period))
    with pytest.raises(ValueError, match="expected 13 bands"):
        model.embed(Batch({"s2": batch.sources["landsat5"]}, batch.period))
    bad = _clone(batch)
    src = bad.sources["landsat5"]
    src.values, src.mask = src.values[..., :24, :24], src.mask[..., :24, :24]
    with pytest.raises(ValueError, match="divisible by 16"):
        model.embed(Batch({"landsat5": src}, batch.period))
    bad = _clone(batch)
    bad.sources["landsat5"].mask = bad.sources["landsat5"].mask[:, :3]
    with pytest.raises(ValueError, match="mask must be"):
        model.embed(bad)
    bad = _clone(batch)
    bad.sources["landsat5"].values[bad.sources["landsat5"].mask.unsqueeze(2).expand(-1, -1, 3, -1, -1)] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.embed(bad)
    bad = _clone(batch)
    for src in bad.sources.values():
        src.mask[1] = False
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        model.embed(bad)
    with pytest.raises(ValueError, match="t_end > t_start"):
        model.embed(Batch(batch.sources, batch.period.flip(1)))
    with pytest.raises(ValueError, match="divisible by 16"):
        AEFConfig(tile_size=40)



class TestPeriodPixelSkip:
    """The full-resolution skip is averaged with the summary's own attention weights."""

    def test_attention_weights_are_a_distribution_over_valid_keys(self) -> None:
        gen = torch.Generator().manual_seed(1)
        q, k = torch.randn(5, 2, 1, 8, generator=gen), torch.randn(5, 2, 6, 8, generator=gen)
        valid = torch.rand(5, 6, generator=gen) < 0.6
        valid[0], valid[1] = False, True
        w = attention_weights(q, k, valid)
        assert w.shape == (5, 2, 1, 6)
        assert bool((w[0] == 0).all())  # every key masked: no weight at all
        assert bool((w[~valid[:, None, None, :].expand_as(w)] == 0).all())
        torch.testing.assert_close(w[1:].sum(-1), torch.ones(4, 2, 1))

    def test_skip_follows_the_summary_period(self, model: AEFModel) -> None:
        """Two frames valid everywhere: the skip is their mix by the summary's weights, which
        sum to 1 and depend on the period, so two periods give two different skips."""
        gen = torch.Generator().manual_seed(2)
        values = torch.randn(1, 2, 3, L, L, generator=gen)
        days = torch.tensor([[17050.0, 17250.0]], dtype=torch.float64)
        batch = Batch({"landsat5": SourceBatch(values, days, torch.ones(1, 2, L, L, dtype=torch.bool))},
                      torch.tensor([[17000.0, 17365.0]], dtype=torch.float64))
        summary = model.summary
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        original = summary.skip

        def recording_skip(weights: torch.Tensor, pixels: tuple[torch.Tensor, torch.Tensor], b: int,
                           h: int) -> torch.Tensor:
            seen.append((weights, original(weights, pixels, b, h)))
            return seen[-1][1]

        summary.skip = recording_skip
        try:
            encoded = model.encoder(batch)
            for period in ([[17000.0, 17100.0]], [[17200.0, 17300.0]]):
                model.summarise(encoded, torch.tensor(period, dtype=torch.float64))
        finally:
            del summary.skip
        (w_a, skip_a), (w_b, skip_b) = seen
        torch.testing.assert_close(w_a.sum(-1), torch.ones_like(w_a.sum(-1)))
        assert (w_a - w_b).abs().max().item() > 1e-4
        assert (skip_a - skip_b).abs().max().item() > 1e-4
        comp = model.encoder.composites["landsat5"]  # the skip lies between the two frames' projections
        frames = [comp(values, batch.sources["landsat5"].mask, torch.eye(2)[i].view(1, 2, 1, 1).expand(1, 2, L, L))
                  for i in range(2)]
        lo, hi = torch.minimum(*frames)[0], torch.maximum(*frames)[0]
        composite = skip_a[0] - summary.coverage(torch.ones(1, 1, L, L))[0]
        assert bool(((composite >= lo - 1e-5) & (composite <= hi + 1e-5)).all())

    def test_composite_mixes_then_projects_like_projecting_every_frame(self, model: AEFModel) -> None:
        """Mixing the frames first and projecting once equals the weighted sum of per-frame projections."""
        gen = torch.Generator().manual_seed(3)
        values = torch.randn(2, 4, 3, L, L, generator=gen)
        mask = torch.rand(2, 4, L, L, generator=gen) > 0.4
        weights = torch.rand(2, 4, L, L, generator=gen)
        comp = model.encoder.composites["landsat5"]
        per_frame = torch.stack([comp.proj(torch.where(mask[:, t, None], values[:, t], 0.0)) for t in range(4)], 1)
        expected = (weights * mask)[:, :, None].mul(per_frame).sum(1)
        torch.testing.assert_close(comp(values, mask, weights), expected, atol=1e-5, rtol=1e-5)

    def test_hidden_pixels_never_enter_the_skip(self, model: AEFModel, batch: Batch) -> None:
        hidden = _clone(batch)
        for src in hidden.sources.values():
            src.mask[:, :, 4:12, 4:12] = False
        changed = _clone(hidden)
        for src in changed.sources.values():
            src.values[:, :, :, 4:12, 4:12] = 1e3
        weights = torch.rand(B, sum(s.mask.shape[1] for s in batch.sources.values()), L, L)
        mixed_a, mixed_b = model.encoder(hidden)[3].mix(weights), model.encoder(changed)[3].mix(weights)
        torch.testing.assert_close(mixed_a, mixed_b)


class TestSharedInputs:
    """``AEFConfig.shared_inputs``: sensors with the same bands share one input projector and pixel skip."""

    @pytest.fixture()
    def shared(self) -> AEFModel:
        torch.manual_seed(0)
        return AEFModel(AEFConfig.tiny(shared_inputs={"landsat7": "landsat5"})).eval()

    def test_one_projector_and_skip_for_both_sensors(self, shared: AEFModel) -> None:
        keys = shared.state_dict().keys()
        assert not any(".landsat7." in k for k in keys if k.startswith("encoder."))
        assert any(k.startswith("decoders.landsat7.") for k in keys)  # decoders stay per source
        enc = shared.encoder
        assert enc.projector("landsat7") is enc.projector("landsat5")
        assert enc.composite("landsat7") is enc.composite("landsat5")
        plain = AEFModel(AEFConfig.tiny())
        n = sum(p.numel() for p in plain.encoder.projectors["landsat7"].parameters())
        n += sum(p.numel() for p in plain.encoder.composites["landsat7"].parameters())
        assert sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in shared.parameters()) == n

    def test_the_same_frame_embeds_alike_from_either_sensor(self, shared: AEFModel, model: AEFModel,
                                                            batch: Batch) -> None:
        src = batch.sources["landsat5"]
        period = batch.period
        as_l5 = Batch(sources={"landsat5": src}, period=period)
        as_l7 = Batch(sources={"landsat7": src}, period=period)
        torch.testing.assert_close(shared.embed(as_l5), shared.embed(as_l7))
        assert (model.embed(as_l5) - model.embed(as_l7)).abs().max().item() > 1e-3  # separate projectors differ

    def test_gradients_reach_the_shared_projector_from_both_sensors(self, batch: Batch) -> None:
        torch.manual_seed(0)
        m = AEFModel(AEFConfig.tiny(shared_inputs={"landsat7": "landsat5"}))
        weight = m.encoder.projector("landsat5").patch.weight
        grads = []
        for name in ("landsat5", "landsat7"):
            m.zero_grad()
            m.encode(Batch(sources={name: batch.sources["landsat5"]}, period=batch.period)).sum().backward()
            grads.append(weight.grad.clone())
        assert all(g.abs().sum().item() > 0 for g in grads)
        torch.testing.assert_close(grads[0], grads[1])

    def test_round_trip_through_safetensors(self, shared: AEFModel, batch: Batch, tmp_path: Path) -> None:
        from aef_lite.hub import load_pretrained, save_pretrained

        save_pretrained(tmp_path / "m", shared)
        loaded = load_pretrained(tmp_path / "m")[0].eval()
        assert loaded.config.shared_inputs == {"landsat7": "landsat5"}
        torch.testing.assert_close(loaded.embed(batch), shared.embed(batch))

    @pytest.mark.parametrize(("shared", "match"), [
        ({"landsat8": "landsat5"}, "names a source not in"),
        ({"landsat7": "landsat5", "landsat5": "landsat7"}, "must own its projector"),
        ({"landsat7": "landsat7"}, "must own its projector"),
        ({"landsat7": "s2"}, "3 vs 13 bands"),
    ])
    def test_bad_sharing_raises(self, shared: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            AEFConfig.tiny(shared_inputs=shared)


class TestNeighbourhoodGroup:
    """``AEFConfig.context_channels``: the first channels of the embedding are a Gaussian-smoothed group."""

    @pytest.fixture()
    def ctx(self) -> AEFModel:
        torch.manual_seed(0)
        return AEFModel(AEFConfig.tiny(context_channels=32, context_sigma=3.0)).eval()

    def test_each_group_has_its_share_of_the_unit_norm(self, ctx: AEFModel, batch: Batch) -> None:
        emb = ctx.embed(batch)
        assert emb.shape == (B, 64, L, L)
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(B, L, L))
        torch.testing.assert_close(emb[:, :32].norm(dim=1), torch.full((B, L, L), 0.5 ** 0.5))

    def test_the_context_group_is_smoother_than_the_pixel_group(self, ctx: AEFModel, batch: Batch) -> None:
        emb = ctx.embed(batch)

        def step(x: torch.Tensor) -> float:  # mean |difference| of horizontal neighbours, per unit of norm
            return ((x[..., 1:] - x[..., :-1]).norm(dim=1) / x.norm(dim=1)[..., 1:]).mean().item()

        assert step(emb[:, :32]) < 0.5 * step(emb[:, 32:])

    def test_gradients_reach_the_summary_head_through_both_groups(self, batch: Batch) -> None:
        torch.manual_seed(0)
        m = AEFModel(AEFConfig.tiny(context_channels=32))
        out = m.summary.head[-1].weight  # (E, D, 1, 1): rows 0-31 feed the context group
        for group in (slice(0, 32), slice(32, 64)):
            m.zero_grad()
            (m.encode(batch)[:, group] * torch.randn(B, 32, L, L)).sum().backward()
            assert out.grad[group].abs().sum().item() > 0

    def test_round_trip_through_safetensors(self, ctx: AEFModel, batch: Batch, tmp_path: Path) -> None:
        from aef_lite.hub import load_pretrained, save_pretrained

        save_pretrained(tmp_path / "m", ctx)
        loaded = load_pretrained(tmp_path / "m")[0].eval()
        assert (loaded.config.context_channels, loaded.config.context_sigma) == (32, 3.0)
        torch.testing.assert_close(loaded.embed(batch), ctx.embed(batch))

    @pytest.mark.parametrize(("overrides", "match"), [
        ({"context_channels": 64}, "context_channels must be in"),
        ({"context_channels": -1}, "context_channels must be in"),
        ({"context_channels": 8, "context_sigma": 0.0}, "context_sigma must be > 0"),
        ({"context_channels": 8, "context_sigma": 11.0}, "3 sigma < tile_size"),
    ])
    def test_bad_settings_raise(self, overrides: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            AEFConfig.tiny(**overrides)
