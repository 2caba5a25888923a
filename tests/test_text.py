"""Captions from real tiles, the tokeniser, the text tower and the text-query AUC."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from aef_lite import AEFConfig, AEFModel
from aef_lite.data import cut_tile, make_batch
from aef_lite.text import (
    TextTower,
    Tokenizer,
    caption_for_tile,
    default_vocabulary,
    spectral_index,
    text_query_auc,
    text_query_map,
)

L = 32


def _dominant_tile(sample, label: str = "osm", min_fraction: float = 0.4) -> tuple[int, int, str]:
    """A tile whose most frequent labelled class covers >= min_fraction of it."""
    ids = sample.labels[label].ids
    for r in range(0, sample.height - L + 1, L):
        for c in range(0, sample.width - L + 1, L):
            counts = np.bincount(ids[r:r + L, c:c + L].ravel(), minlength=len(sample.labels[label].class_names))
            counts[0] = 0
            if counts.max() >= min_fraction * L * L:
                return r, c, sample.labels[label].class_names[int(counts.argmax())]
    raise AssertionError("no tile with a dominant class")


def test_captions_never_use_the_scored_label_maps(samples: dict) -> None:
    s = samples["s2_brandenburg"]
    r, c, dominant = _dominant_tile(s)
    tile = cut_tile(s, r, c, L)
    caption = caption_for_tile(tile)
    assert "Brandenburg an der Havel" in caption and "winter" in caption and "2017" in caption
    names = {n for m in s.labels.values() for n in m.class_names} - {"water"}  # "open water" is NDWI
    assert not any(f"% {n}" in caption for n in names), caption
    relabelled = {k: replace(m, ids=np.zeros_like(m.ids)) for k, m in tile.labels.items()}
    assert caption_for_tile(replace(tile, labels=relabelled)) == caption, "labels must not change a caption"


def test_captions_differ_between_tiles_and_carry_statistics(samples: dict) -> None:
    s = samples["s2_brandenburg"]
    captions = {caption_for_tile(cut_tile(s, r, c, L)) for r in range(0, 512, 128) for c in range(0, 512, 128)}
    assert len(captions) >= 8
    assert all("vegetation" in c for c in captions)
    v = samples["s2_virginia"]
    sea = caption_for_tile(cut_tile(v, v.height - L, v.width - L, L))  # Atlantic corner
    field = caption_for_tile(cut_tile(v, 0, 0, L))
    assert "date not recorded" in sea and "Virginia" in sea
    assert "% open water" in sea and sea != field


def test_series_caption_uses_the_period(samples: dict) -> None:
    tile = cut_tile(samples["landsat_colorado"], 0, 0, L)
    caption = caption_for_tile(tile, period=(14000.0, 14400.0))  # 2008-05-01 .. 2009-06-04
    assert "Landsat 5 and Landsat 7 time series" in caption
    assert "from may 2008 to june 2009" in caption


def test_tokeniser_round_trip_unknown_and_empty() -> None:
    tok = Tokenizer()
    text = "Sentinel-2 image over Havel lakes, in winter (february 2017): 40% forest, 35% open water."
    ids = tok.encode(text)
    assert tok.decode(ids) == " ".join(Tokenizer.words(text))
    assert 1 not in ids, "every word of a caption template is in the vocabulary"
    assert tok.encode("zebra forest") == [1, tok.index["forest"]]
    assert tok.encode("") == [1] and tok.encode("!!!") == [1]
    assert Tokenizer().vocabulary == tok.vocabulary == default_vocabulary()
    padded = tok.batch(["water", "40% forest"], max_len=8)
    assert padded.tolist() == [[tok.index["water"], 0], [tok.index["40%"], tok.index["forest"]]]


def test_real_captions_are_in_vocabulary(samples: dict) -> None:
    tok = Tokenizer()
    for s in samples.values():
        caption = caption_for_tile(cut_tile(s, 0, 0, L))
        assert 1 not in tok.encode(caption), caption


def test_text_tower_outputs_unit_vectors() -> None:
    cfg = AEFConfig.tiny()
    torch.manual_seed(0)
    model, tower = AEFModel(cfg), TextTower(cfg)
    period = torch.tensor([[17000.0, 17365.0], [17100.0, 17465.0]], dtype=torch.float64)
    ids = tower.tokens(["water", "40% forest, sparse vegetation"])
    out = tower(ids, model.encoder.codes(period), period[:, 1] - period[:, 0])
    assert out.shape == (2, cfg.embed_dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    assert tower.aligner.scale().item() == pytest.approx(np.log(1 / 0.07), rel=1e-6)


def test_text_query_map_shape(samples: dict) -> None:
    cfg = AEFConfig.tiny()
    torch.manual_seed(0)
    model, tower = AEFModel(cfg).eval(), TextTower(cfg).eval()
    batch = make_batch([cut_tile(samples["s2_brandenburg"], r, 0, L) for r in (0, 32)])
    scores = text_query_map(model, tower, "water", batch)
    assert scores.shape == (2, L, L)
    assert (scores.abs() <= 1 + 1e-5).all()


def _brute_auc(s: np.ndarray, pos: np.ndarray) -> float:
    p, n = s[pos], s[~pos]
    return float(((p[:, None] > n[None]).sum() + 0.5 * (p[:, None] == n[None]).sum()) / (len(p) * len(n)))


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(float)  # many ties
    labels = rng.integers(0, 4, 300)
    auc = text_query_auc(scores, labels, positive_class=2)
    keep = labels != 0
    assert auc == pytest.approx(_brute_auc(scores[keep], labels[keep] == 2))
    assert text_query_auc(np.ones(10), np.array([1, 2] * 5), 2) == 0.5
    assert text_query_auc(torch.arange(4.0), torch.tensor([1, 1, 2, 2]), 2) == 1.0
    assert text_query_auc(-torch.arange(4.0), torch.tensor([1, 1, 2, 2]), 2) == 0.0
    assert text_query_auc(np.arange(4.0), np.array([0, 0, 1, 2]), 2, ignore=None) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        text_query_auc(np.arange(3.0), np.array([0, 1, 1]), 2)


def test_spectral_index_baseline_ranks_osm_water(samples: dict) -> None:
    s = samples["s2_brandenburg"]
    ndwi = spectral_index(s, "ndwi")
    assert ndwi.shape == (s.height, s.width) and np.isfinite(ndwi).all()
    osm = s.labels["osm"]
    assert text_query_auc(ndwi, osm.ids, osm.class_names.index("water")) > 0.9
    with pytest.raises(ValueError, match="unknown index"):
        spectral_index(s, "evi")
