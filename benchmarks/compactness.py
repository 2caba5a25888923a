"""Compactness: bytes per pixel of the 64-byte embedding vs the input it summarises, as ratios.

The embedding stores one 64-d vector per 10 m pixel and year as 64 int8 bytes (the released
dataset's encoding, :func:`aef_lite.quantization.bytes_per_pixel`). The inputs are the shipped
samples as stored (uncompressed: the arrays' own dtypes, per frame the bands plus a 1-byte
quality/mask layer where the sample has one):

* ``landsat_colorado``: 105 Landsat 5/7 frames x 3 bands int16 + Fmask uint8, 30 m pixels,
  2008-04 to 2013-05: the whole series, and per calendar year (the embedding is annual);
* ``s2_brandenburg``: one Sentinel-2 L1C date, 13 bands uint16, 10 m pixels (no mask layer).

Ratios are given per input pixel and per unit area (a 30 m Landsat pixel covers nine 10 m
embedding pixels, so per area the embedding costs 9 x 64 bytes per Landsat pixel). A last,
nominal line (arithmetic, not shipped data) is a year of Sentinel-2 every 5 days, closer to the
paper's input volume. Runs in well under a second; ``--quick`` is accepted for uniformity.

Run ``python benchmarks/compactness.py``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from common import machine_info, print_machine

from aef_lite.data import days_since_origin, default_data_dir, to_iso
from aef_lite.quantization import bytes_per_pixel

EMBED_PIXEL_M = 10.0
S2_REVISIT_DAYS = 5


def stored_bytes_per_frame_pixel(name: str) -> tuple[float, np.ndarray, float]:
    """(bytes per frame and pixel as stored, frame days, pixel size in m) of a shipped sample:
    the ``nbytes`` of every array with a time axis (bands, quality mask), over frames and pixels."""
    root = default_data_dir()
    meta = json.loads((root / f"{name}.json").read_text(encoding="utf-8"))
    with np.load(root / f"{name}.npz", allow_pickle=False) as npz:
        per_frame = sum(npz[key].nbytes for key, spec in meta["arrays"].items() if "time" in spec["dims"])
    n_frames, pixels = len(meta["frames"]), meta["height"] * meta["width"]
    days = days_since_origin([f["date"] or meta["nominal_date"] for f in meta["frames"]])
    return per_frame / (n_frames * pixels), days, float(meta["pixel_size_m"])


def row(name: str, input_bytes: float, pixel_m: float, embed_bytes: int) -> dict:
    """Input bytes per input pixel vs embedding bytes, per pixel and per unit area."""
    embed_per_input_pixel = embed_bytes * (pixel_m / EMBED_PIXEL_M) ** 2
    return {"input": name, "input_bytes_per_px": input_bytes, "input_pixel_m": pixel_m,
            "ratio_per_pixel": input_bytes / embed_bytes, "ratio_per_area": input_bytes / embed_per_input_pixel}


def main(quick: bool = False) -> dict:
    """Compute, print and return the ratios (``quick`` changes nothing: it is already instant)."""
    info = machine_info()
    print_machine(info)
    emb = bytes_per_pixel()
    rows = []
    per_frame, days, pixel_m = stored_bytes_per_frame_pixel("landsat_colorado")
    years = np.array([int(d[:4]) for d in to_iso(days)])
    rows.append(row(f"landsat_colorado, all {len(days)} frames ({years.min()}-{years.max()})",
                    per_frame * len(days), pixel_m, emb))
    full_years = [y for y in np.unique(years) if y not in (years.min(), years.max())]  # first/last are partial
    per_year = [per_frame * int((years == y).sum()) for y in full_years]
    rows.append(row(f"landsat_colorado, per full year (mean of {full_years[0]}-{full_years[-1]}, "
                    f"{np.mean(per_year) / per_frame:.1f} frames/yr)", float(np.mean(per_year)), pixel_m, emb))
    per_frame, days, pixel_m = stored_bytes_per_frame_pixel("s2_brandenburg")
    rows.append(row("s2_brandenburg, one date", per_frame * len(days), pixel_m, emb))
    rows.append(row(f"nominal: one year of S2 every {S2_REVISIT_DAYS} days (not shipped)",
                    per_frame * (365 // S2_REVISIT_DAYS), pixel_m, emb))
    print(f"embedding: {emb} bytes per {EMBED_PIXEL_M:.0f} m pixel and year (int8)")
    print(f"{'input':72} {'B/px':>6} {'px m':>4} {'input/emb per px':>16} {'per area':>8}")
    for r in rows:
        print(f"{r['input']:72} {r['input_bytes_per_px']:6.0f} {r['input_pixel_m']:4.0f} "
              f"{r['ratio_per_pixel']:16.2f} {r['ratio_per_area']:8.2f}")
    return {"machine": info, "embedding_bytes_per_px": emb, "rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for uniformity; changes nothing")
    args = parser.parse_args()
    main(args.quick)
