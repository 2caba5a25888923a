"""Text alignment (paper S2.2.5): captions, a tiny tokeniser, a text tower and text queries.

The paper aligns embeddings with text from Wikipedia and GBIF near each site, encoded by a
*frozen* language model and a small MLP decoder conditioned on the summary period, trained
with the CLIP loss (weight d = 0.001). Neither a language model nor that text is available
offline, so we substitute, and say so:

* **Captions** are generated from *real* information about each training tile: the sensor,
  place and date from the sample metadata and two real spectral statistics of the tile
  (clear-sky NDVI level and an NDWI open-water fraction). No placeholder text ("location 17").
  The label maps are never used: they are what the evaluations score (text at a point in the
  paper is independent of the labels it is evaluated on).
* The **text tower** is tiny and trained jointly (not frozen): a lower-case word-level
  tokeniser over a fixed vocabulary, token + position embeddings, one transformer layer, mean
  pooling and an MLP (:class:`TextEncoder`); then :class:`TextAligner`, an MLP conditioned on
  the valid period's timecodes that outputs unit vectors in the 64-d embedding space.

After training, :func:`text_query_map` scores every pixel against a query such as ``"open water"``
and :func:`text_query_auc` measures on a real label map whether the query lights up the right
pixels better than chance (ROC AUC > 0.5), to be compared with the spectral index the captions'
words come from (:func:`spectral_index`: NDWI, NDVI).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aef_lite.config import AEFConfig
from aef_lite.data import Batch, Sample, SourceSeries, to_iso

# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------

SENSOR_NAMES = {"s2": "Sentinel-2", "landsat5": "Landsat 5", "landsat7": "Landsat 7"}
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")
SEASONS = ("winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer", "autumn",
           "autumn", "autumn", "winter")  # by month, northern hemisphere
VEGETATION_LEVELS = ((0.1, "little vegetation"), (0.3, "sparse vegetation"), (0.5, "moderate vegetation"),
                     (math.inf, "dense green vegetation"))
"""Upper NDVI bounds of the vegetation words (median clear-sky NDVI of the tile)."""
VEGETATED_NDVI = 0.3
"""NDVI above which a pixel counts as vegetated."""

_BAND_ALIASES = {"green": ("B03", "green"), "red": ("B04", "red"), "nir": ("B08", "nir"),
                 "swir1": ("B11", "swir1")}


def _band(series: SourceSeries, role: str) -> np.ndarray | None:
    """(T, H, W) reflectance of the band playing ``role`` (green/red/nir/swir1), or None."""
    for alias in _BAND_ALIASES[role]:
        if alias in series.bands:
            return series.values[:, series.bands.index(alias)]
    return None


def _spectral_stats(tile: Sample) -> tuple[float | None, float | None, float | None]:
    """(median clear-sky NDVI, vegetated fraction, open-water fraction) over the valid pixels
    of all frames. Vegetated: NDVI = (nir - red) / (nir + red) > ``VEGETATED_NDVI``.

    Water: NDWI = (green - nir) / (green + nir) > 0 (McFeeters 1996) when a green band exists,
    otherwise nir < 0.06 and swir1 < 0.06 reflectance (water is dark in both).
    """
    ndvi, water = [], []
    for series in tile.sources.values():
        red, nir, green, swir = (_band(series, r) for r in ("red", "nir", "green", "swir1"))
        m = series.mask
        if red is None or nir is None or not m.any():
            continue
        ndvi.append(((nir - red) / np.maximum(nir + red, 1e-6))[m])
        if green is not None:
            water.append((((green - nir) / np.maximum(green + nir, 1e-6)) > 0)[m])
        elif swir is not None:
            water.append(((nir < 0.06) & (swir < 0.06))[m])
    if not ndvi:
        return None, None, None
    all_ndvi = np.concatenate(ndvi)
    frac = float(np.concatenate(water).mean()) if water else None
    return float(np.median(all_ndvi)), float((all_ndvi > VEGETATED_NDVI).mean()), frac


def spectral_index(sample: Sample, index: str) -> np.ndarray:
    """The per-pixel spectral-index baseline of a text query: ``(H, W)`` float64, the median over
    the valid frames of ``"ndwi"`` = (green - nir) / (green + nir) (McFeeters 1996; open water
    > 0) or ``"ndvi"`` = (nir - red) / (nir + red), from the first source that has the bands;
    NaN where no frame is valid. A text query such as "open water" is only worth its training
    if it ranks pixels better than this index does."""
    roles = {"ndwi": ("green", "nir"), "ndvi": ("nir", "red")}
    if index not in roles:
        raise ValueError(f"unknown index {index!r}; choose from {sorted(roles)}")
    for series in sample.sources.values():
        a, b = (_band(series, r) for r in roles[index])
        if a is None or b is None:
            continue
        ratio = np.where(series.mask, (a - b) / np.maximum(a + b, 1e-6), np.nan)
        with np.errstate(all="ignore"):
            return np.nanmedian(ratio, axis=0) if series.num_frames > 1 else ratio[0].astype(np.float64)
    raise ValueError(f"{sample.name} has no source with the bands of {index}")


def _percent(fraction: float) -> int:
    """Fraction -> percent rounded to a multiple of 5 (the tokeniser's vocabulary)."""
    return int(5 * round(20 * fraction))


def _place(tile: Sample) -> str:
    """The sample's place without its parenthetical detail, e.g. ``"Colorado, USA"``."""
    return re.sub(r"\s*\([^)]*\)", "", tile.meta.get("place", tile.name)).strip()


def _when(tile: Sample, period: tuple[float, float] | None) -> str:
    """Season and month of a single date, the month range of a series, or "date not recorded"."""
    if any(f.get("date") is None for f in tile.meta.get("frames", [])):
        return "date not recorded"
    days = np.concatenate([s.days[s.mask.any(axis=(1, 2))] for s in tile.sources.values()])
    if period is None and days.size == 0:
        return "date not recorded"
    south = tile.meta.get("center_lonlat", (0.0, 0.0))[1] < 0
    if days.size == 1:
        year, month = (int(v) for v in to_iso(float(days[0]))[0].split("-")[:2])
        season = SEASONS[(month - 1 + 6 * south) % 12]
        return f"in {season} ({MONTHS[month - 1]} {year})"
    lo, hi = (period[0], period[1] - 1) if period is not None else (days.min(), days.max())
    (y0, m0), (y1, m1) = ((int(v) for v in to_iso(float(d))[0].split("-")[:2]) for d in (lo, hi))
    return f"from {MONTHS[m0 - 1]} {y0} to {MONTHS[m1 - 1]} {y1}"


def caption_for_tile(tile: Sample, period: tuple[float, float] | None = None) -> str:
    """A caption with real information about one tile (our substitute for paper S2.2.5's text).

    Example: ``"Sentinel-2 image over Havel lakes near Brandenburg an der Havel, Germany, in
    winter (february 2017): 35% open water, 20% vegetated, sparse vegetation."``

    Parts: sensor(s) and number of dates with valid pixels; place (sample metadata); season and
    month of a single date, or the month range of the valid ``period`` (days, ``[t_s, t_e)``)
    for a series; the NDWI open-water fraction and a word for the median clear-sky NDVI with the
    vegetated fraction (NDVI > 0.3). Percentages are rounded to multiples of 5.

    The label maps of a tile are deliberately *not* used: they are the labels the sparse-label
    evaluation and the text-query scores are measured on, and captions made from them would turn
    a zero-shot text query into a supervised classifier. So a text query can at best learn what
    the spectral statistics say; compare it with the spectral index itself (NDWI, NDVI).

    Args:
        tile: a tile of a sample (see :func:`aef_lite.data.cut_tile`), sources already limited
            to the frames the model sees.
        period: the valid period the embedding summarises; default: the span of the frames.
    """
    names = [SENSOR_NAMES.get(n, n) for n in tile.sources]
    n_dates = len({float(d) for s in tile.sources.values() for d in s.days[s.mask.any(axis=(1, 2))]})
    kind = "image" if n_dates <= 1 else f"time series of {n_dates} dates"
    head = f"{' and '.join(names)} {kind} over {_place(tile)}, {_when(tile, period)}"
    parts = []
    ndvi, vegetated, water = _spectral_stats(tile)
    if water is not None and _percent(water) > 0:
        parts.append(f"{_percent(water)}% open water")
    if ndvi is not None:
        parts.append(f"{_percent(vegetated)}% vegetated, {next(w for b, w in VEGETATION_LEVELS if ndvi < b)}")
    return f"{head}: {', '.join(parts)}." if parts else f"{head}."


# ----------------------------------------------------------------------------------------------
# Tokeniser
# ----------------------------------------------------------------------------------------------

PAD, UNK = "<pad>", "<unk>"
_TEMPLATE_WORDS = (
    "sentinel landsat image time series of dates over in from to date not recorded open water "
    "little sparse moderate dense green vegetation vegetated and"
)
_CLASS_WORDS = "unlabelled land water meadow wetland farm farmland scrub forest residential grass"
_PLACE_WORDS = (
    "havel lakes near brandenburg an der germany eastern shore virginia usa colorado atlantic coast "
    "north south east west"
)
_TOKEN_RE = re.compile(r"\d+%|[a-z]+|\d+")


def default_vocabulary() -> list[str]:
    """The fixed, deterministic vocabulary: ``<pad>``, ``<unk>``, then template, class, place,
    season and month words, integers 0-100, percentages 0%-100% and years 1980-2035."""
    words = " ".join([_TEMPLATE_WORDS, _CLASS_WORDS, _PLACE_WORDS, " ".join(SEASONS), " ".join(MONTHS)]).split()
    words += [str(i) for i in range(101)] + [f"{i}%" for i in range(101)] + [str(y) for y in range(1980, 2036)]
    return [PAD, UNK, *dict.fromkeys(words)]


class Tokenizer:
    """Lower-case word-level tokeniser: words, integers and percentages (``"40%"``); punctuation
    is dropped; out-of-vocabulary words map to ``<unk>``. Id 0 is padding."""

    def __init__(self, vocabulary: list[str] | None = None) -> None:
        self.vocabulary = vocabulary or default_vocabulary()
        if self.vocabulary[:2] != [PAD, UNK]:
            raise ValueError(f"the vocabulary must start with {PAD!r}, {UNK!r}")
        self.index = {w: i for i, w in enumerate(self.vocabulary)}

    def __len__(self) -> int:
        return len(self.vocabulary)

    @staticmethod
    def words(text: str) -> list[str]:
        """The word sequence of ``text`` (lower case, punctuation dropped)."""
        return _TOKEN_RE.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; an empty text (no words) gives ``[<unk>]`` so it is never empty."""
        return [self.index.get(w, 1) for w in self.words(text)] or [1]

    def decode(self, ids: list[int]) -> str:
        """Space-joined words of ``ids`` (padding skipped)."""
        return " ".join(self.vocabulary[i] for i in ids if i != 0)

    def batch(self, texts: list[str], max_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``(B, N)`` int64 ids, padded with 0 and truncated to ``N <= max_len``."""
        encoded = [self.encode(t)[:max_len] for t in texts]
        out = torch.zeros(len(texts), max(len(e) for e in encoded), dtype=torch.long)
        for i, e in enumerate(encoded):
            out[i, : len(e)] = torch.tensor(e)
        return out.to(device)


# ----------------------------------------------------------------------------------------------
# Text tower
# ----------------------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """Token ids ``(B, N)`` -> text features ``(B, D)``: embeddings + positions, one pre-norm
    transformer layer (padding masked), mean over the real tokens, MLP."""

    def __init__(self, vocab_size: int, dim: int = 64, heads: int = 4, max_len: int = 48) -> None:
        super().__init__()
        self.max_len = max_len
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = ids == 0
        x = self.tokens(ids) + self.position[: ids.shape[1]]
        x = self.layer(x, src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return self.head((x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0))


class TextAligner(nn.Module):
    """Text features ``(B, D)`` + valid period -> unit vectors ``(B, E)`` in the embedding space.

    Conditioned like the summary query (paper S2.2.5: "conditioned on the summary period"): the
    input is ``[features, timecode(t_s), timecode(t_e), log(1 + duration / 1 year)]``. Also holds
    the learnable CLIP logit scale ``s`` (init ``log(1 / 0.07)``, clamped to ``log 100`` in use).
    """

    def __init__(self, text_dim: int, code_dim: int, embed_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(text_dim + 2 * code_dim + 1, hidden), nn.GELU(), nn.Linear(hidden, embed_dim)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, features: torch.Tensor, period_codes: torch.Tensor, duration_days: torch.Tensor) -> torch.Tensor:
        """features ``(B, D)``, period_codes ``(B, 2, 2P)``, duration_days ``(B,)`` -> ``(B, E)``."""
        span = torch.log1p(duration_days / 365.25).to(features.dtype).unsqueeze(-1)
        x = torch.cat([features, period_codes.flatten(1).to(features.dtype), span], dim=-1)
        return F.normalize(self.net(x), dim=-1)

    def scale(self) -> torch.Tensor:
        """The CLIP logit scale ``s`` (log of the inverse temperature), clamped to ``[0, log 100]``."""
        return self.logit_scale.clamp(0.0, math.log(100.0))


class TextTower(nn.Module):
    """Tokeniser + :class:`TextEncoder` + :class:`TextAligner` for a model configuration."""

    def __init__(self, cfg: AEFConfig, dim: int = 64, max_len: int = 48) -> None:
        super().__init__()
        self.tokenizer = Tokenizer()
        self.max_len = max_len
        self.encoder = TextEncoder(len(self.tokenizer), dim, max_len=max_len)
        self.aligner = TextAligner(dim, 2 * cfg.n_periods, cfg.embed_dim)

    def tokens(self, texts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """``(B, N)`` token ids of ``texts``."""
        return self.tokenizer.batch(texts, self.max_len, device)

    def forward(self, ids: torch.Tensor, period_codes: torch.Tensor, duration_days: torch.Tensor) -> torch.Tensor:
        """ids ``(B, N)``, period_codes ``(B, 2, 2P)``, duration_days ``(B,)`` -> unit ``(B, E)``."""
        return self.aligner(self.encoder(ids), period_codes, duration_days)


def encode_text(model: nn.Module, text_tower: TextTower, texts: list[str], period: torch.Tensor) -> torch.Tensor:
    """Unit text embeddings ``(B, E)`` of ``texts`` (B strings) for valid periods ``(B, 2)``,
    using ``model.encoder.codes`` for the period's timecodes."""
    codes = model.encoder.codes(period)
    ids = text_tower.tokens(texts, period.device)
    return text_tower(ids, codes, (period[:, 1] - period[:, 0]).to(torch.float64))


@torch.no_grad()
def text_query_map(model: nn.Module, text_tower: TextTower, query: str, batch: Batch) -> torch.Tensor:
    """Per-pixel score of ``query``: ``(B, L, L)`` dot products of each pixel's embedding
    (``model.embed``) with the query's text embedding for that row's valid period."""
    emb = model.embed(batch)
    text = encode_text(model, text_tower, [query] * emb.shape[0], batch.period)
    return torch.einsum("behw,be->bhw", emb, text.to(emb.dtype))


def text_query_auc(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, positive_class: int, ignore: int | None = 0
) -> float:
    """ROC AUC of ``scores`` for pixels of ``positive_class`` against all other labelled pixels.

    Mann-Whitney form ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with average ranks
    for ties (so a constant score gives exactly 0.5). ``labels`` has the shape of ``scores``;
    pixels labelled ``ignore`` (default 0 = unlabelled) are left out. Raises ``ValueError`` when
    either class is empty.
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).ravel()
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels need the same number of pixels, got {s.size} and {y.size}")
    keep = np.ones_like(y, dtype=bool) if ignore is None else y != ignore
    s, pos = s[keep], y[keep] == positive_class
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes: {n_pos} positive and {n_neg} negative labelled pixels")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty_like(s)
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0  # average 1-based rank of each tie group
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
