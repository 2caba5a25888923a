"""Scene-scale inference: km^2 per second and peak memory of :func:`aef_lite.embed.embed_scene`.

Square crops of the real ``s2_brandenburg`` scene (10 m pixels) growing 4x in area per step:
64^2, 128^2, 256^2, 512^2 px (0.41 to 26 km^2), and 1024^2 px made by mirroring the 512^2 scene
(the scene is only 512 px wide; the mirrored copies are real pixels, so the work per tile is
realistic). Each size runs in a fresh process, so the peak memory of one size cannot hide the
next one's:

* time: median of repeated ``embed_scene`` calls (its defaults: tile 64, overlap 16, batches of
  8 tiles; the tiny model, untrained, since speed does not depend on the weights), after one
  untimed call. The
  ratios to the smallest size are measured *within* each process, alternating calls on the
  size and on the smallest scene, so that load changes between processes cancel out;
* peak memory: the kernel's peak resident set size during the first call minus the resident
  set size just before it (torch and numpy allocations alike; the peak mark is reset first
  through ``/proc/self/clear_refs``, so an earlier, higher peak, e.g. from loading the scene,
  cannot hide it; Linux only), and the ``tracemalloc`` peak of a separate call (numpy's
  allocations only; torch's allocator is invisible to tracemalloc). Both include the
  (64, H, W) float32 output array; "working" memory is the rest.

A second table measures the memory of the whole export path, embedding and then writing the
int8 file (:func:`aef_lite.embed.save_field`, and :func:`aef_lite.embed.save_geotiff` when
rasterio is installed), one fresh process per size up to 2048^2 px (the 512^2 scene mirrored
twice; 42 km^2, a 1 GiB float32 field): the peak RSS above the RSS before each step (the peak
mark reset as above), and the process's lifetime peak from ``resource.getrusage`` (``ru_maxrss``;
it includes loading the scene).

A last, fresh process measures the goal of the inference path: km^2/s per core of the defaults
against the tiling of the release before (tile 32, overlap 16, batches of 32 tiles), timed
alternately on the 512^2 scene, and how far the default field of the shipped reference model is
from that tiling's field: at most as far as moving the 32 px tile grid by 8 px moves it (the
tolerance, measured in the same run on interior pixels).

Expected: time per km^2 and per tile stay flat (time linear in area), working memory stays
flat (tiles are streamed), and the export's extra memory stays flat (codes are quantised and
written block by block; before, ``quantize`` made float64 copies of the whole field, ~2.7 KB per
pixel). Time per km^2 rises a little at small sizes because every scene is
covered by whole overlapping tiles of the padded scene: the tile pixels computed per scene pixel
(``overcompute``) grow towards (64 / 48)^2 = 1.78 (stride 48 of a 64 px tile; 4 for 32 px tiles).

Run ``python benchmarks/inference_scale.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from common import machine_info, median, print_machine

from aef_lite.config import AEFConfig
from aef_lite.data import Sample, cut_tile, load_sample, tile_grid
from aef_lite.embed import EMBED_BATCH_PIXELS, EMBED_TILE, embed_scene, pad_indices, save_field, save_geotiff
from aef_lite.model import AEFModel
from aef_lite.shipped import pretrained

SCENE = "s2_brandenburg"
TILE, OVERLAP, BATCH = EMBED_TILE, 16, EMBED_BATCH_PIXELS // EMBED_TILE**2
BEFORE = {"tile": 32, "overlap": 16, "batch_size": 32}
"""``embed_scene``'s tiling of the release before this one."""
SPEEDUP_GOAL = 1.5
GOAL_SIZE = 512
PIXEL_KM2 = 1e-4  # one 10 m x 10 m pixel


def mirrored(sample: Sample) -> Sample:
    """A 2H x 2W scene: the sample and its mirror images (left-right, top-bottom); no labels."""

    def grow(a: np.ndarray) -> np.ndarray:
        top = np.concatenate([a, a[..., ::-1]], axis=-1)
        return np.concatenate([top, top[..., ::-1, :]], axis=-2)

    sources = {k: replace(s, values=grow(s.values), mask=grow(s.mask)) for k, s in sample.sources.items()}
    return replace(sample, sources=sources, labels={})


def scene(size: int) -> Sample:
    """The ``size`` x ``size`` px crop of the scene (top-left), mirrored when larger than it."""
    sample = load_sample(SCENE)
    while size > sample.height:
        sample = mirrored(sample)
    return cut_tile(sample, 0, 0, size)


def _status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status``, in KiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); returns the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")
    return 1024 * _status_kib("VmRSS")


def measure_size(size: int, reference: int, repeats: int, threads: int) -> dict[str, float]:
    """Run in a fresh process: time and peak memory of embedding one ``size``^2 scene, and the
    median ratio of its time to that of the ``reference``^2 scene, timed alternately."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AEFModel(AEFConfig.tiny()).eval()
    sample, ref = scene(size), scene(reference)
    run = lambda s: embed_scene(model, s, tile=TILE, overlap=OVERLAP, batch_size=BATCH)  # noqa: E731
    rss_before = reset_peak_rss()
    field = run(sample)
    rss_peak = 1024 * _status_kib("VmHWM") - rss_before
    del field
    run(ref)
    times: dict[str, list[float]] = {"size": [], "ref": []}
    for _ in range(repeats):
        for key, s in (("size", sample), ("ref", ref)):
            start = time.perf_counter()
            run(s)
            times[key].append(time.perf_counter() - start)
    tracemalloc.start()
    run(sample)
    numpy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ratios = [a / b for a, b in zip(times["size"], times["ref"], strict=True)]
    return {"seconds": median(times["size"]), "over_reference": median(ratios),
            "rss_peak_bytes": float(rss_peak), "numpy_peak_bytes": float(numpy_peak)}


def interior_diff(a: np.ndarray, b: np.ndarray, margin: int = 24) -> float:
    """Max |a - b| of two (E, H, W) fields, ``margin`` px from every edge (away from the padding)."""
    return float(np.abs(a - b)[:, margin:-margin, margin:-margin].max())


def measure_speedup(size: int, repeats: int, threads: int) -> dict[str, float]:
    """Run in a fresh process: the median ratio of :data:`BEFORE`'s time to the defaults' on the
    ``size``^2 scene (tiny model, timed alternately), and the shipped reference model's max
    |diff| between the two fields against the tolerance (module docstring)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AEFModel(AEFConfig.tiny()).eval()
    sample = scene(size + 16)
    inner = cut_tile(sample, 8, 8, size)
    embed_scene(model, inner)
    embed_scene(model, inner, **BEFORE)
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(max(repeats, 3)):
        for key, kwargs in (("before", BEFORE), ("after", {})):
            start = time.perf_counter()
            embed_scene(model, inner, **kwargs)
            times[key].append(time.perf_counter() - start)
    reference = pretrained()[0].eval()
    before = embed_scene(reference, sample, **BEFORE).emb[:, 8:8 + size, 8:8 + size]
    after = embed_scene(reference, sample).emb[:, 8:8 + size, 8:8 + size]
    shifted = embed_scene(reference, inner, **BEFORE).emb
    area = size * size * PIXEL_KM2
    return {"size_px": size, "speedup": median([b / a for b, a in zip(times["before"], times["after"], strict=True)]),
            "km2_per_s_before": area / median(times["before"]), "km2_per_s": area / median(times["after"]),
            "max_abs_diff": interior_diff(after, before), "tolerance": interior_diff(shifted, before)}


def _maxrss_bytes() -> int:
    """Lifetime peak RSS of this process (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else 1024 * peak)


def measure_export_memory(size: int, threads: int) -> dict[str, float]:
    """Run in a fresh process: peak memory of embedding one ``size``^2 scene and of saving it."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AEFModel(AEFConfig.tiny()).eval()
    sample = scene(size)
    rss_before = reset_peak_rss()
    field = embed_scene(model, sample, tile=TILE, overlap=OVERLAP, batch_size=BATCH)
    out = {"embed_peak_bytes": float(1024 * _status_kib("VmHWM") - rss_before)}
    writers = {"npz": (save_field, ".npz")}
    try:
        import rasterio  # noqa: F401

        writers["geotiff"] = (save_geotiff, ".tif")
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        for name, (write, suffix) in writers.items():
            rss_before = reset_peak_rss()
            path = write(field, Path(tmp) / f"field{suffix}")
            out[f"save_{name}_peak_bytes"] = float(1024 * _status_kib("VmHWM") - rss_before)
            out[f"save_{name}_file_bytes"] = float(path.stat().st_size)
    out["maxrss_bytes"] = float(_maxrss_bytes())
    return out


def export_memory(sizes: tuple[int, ...], threads: int) -> list[dict[str, float]]:
    """:func:`measure_export_memory` per size, each in its own process; prints a table."""
    rows = []
    for size in sizes:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            m = pool.submit(measure_export_memory, size, threads).result()
        output = 4.0 * AEFConfig.tiny().embed_dim * size * size
        row = {"size_px": size, "output_mib": output / 2**20, "embed_peak_mib": m["embed_peak_bytes"] / 2**20,
               "embed_working_mib": (m["embed_peak_bytes"] - output) / 2**20, "maxrss_mib": m["maxrss_bytes"] / 2**20}
        for name in ("npz", "geotiff"):
            if f"save_{name}_peak_bytes" in m:
                row[f"save_{name}_extra_mib"] = m[f"save_{name}_peak_bytes"] / 2**20
                row[f"save_{name}_file_mib"] = m[f"save_{name}_file_bytes"] / 2**20
        rows.append(row)
    print(f"{'size':>9} {'output MiB':>10} {'embed peak-output MiB':>21} {'save npz extra MiB':>18} "
          f"{'save tif extra MiB':>18} {'ru_maxrss MiB':>13}")
    for r in rows:
        tif = f"{r['save_geotiff_extra_mib']:18.1f}" if "save_geotiff_extra_mib" in r else f"{'-':>18}"
        print(f"{r['size_px']:>4}x{r['size_px']:<4} {r['output_mib']:10.1f} {r['embed_working_mib']:21.1f} "
              f"{r['save_npz_extra_mib']:18.1f} {tif} {r['maxrss_mib']:13.1f}")
    return rows


def main(quick: bool = False, threads: int = 1) -> dict:
    """Measure every size in its own process; print a table; return ``{"machine", "sizes": [...]}``."""
    sizes = (64, 128, 256) if quick else (64, 128, 256, 512, 1024)
    repeats = 1 if quick else 3
    info = {**machine_info(), "torch_threads": threads}
    print_machine(info)
    rows = []
    for size in sizes:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            m = pool.submit(measure_size, size, sizes[0], repeats, threads).result()
        area_km2 = size * size * PIXEL_KM2
        padded = len(pad_indices(size, size, OVERLAP // 2, TILE)[0])
        tiles = len(tile_grid(padded, padded, TILE, OVERLAP))
        output = 4.0 * AEFConfig.tiny().embed_dim * size * size
        rows.append({
            "size_px": size, "area_km2": area_km2, "tiles": tiles, "overcompute": tiles * TILE**2 / size**2,
            "seconds": m["seconds"], "over_reference": m["over_reference"], "km2_per_s": area_km2 / m["seconds"],
            "ms_per_tile": 1e3 * m["seconds"] / tiles,
            "output_mib": output / 2**20, "rss_peak_mib": m["rss_peak_bytes"] / 2**20,
            "rss_working_mib": (m["rss_peak_bytes"] - output) / 2**20,
            "numpy_peak_mib": m["numpy_peak_bytes"] / 2**20,
            "numpy_working_mib": (m["numpy_peak_bytes"] - output) / 2**20,
        })
    base = rows[0]
    for r in rows:
        r["time_per_km2_ratio"] = r["over_reference"] * base["area_km2"] / r["area_km2"]
        r["time_per_tile_ratio"] = r["over_reference"] * base["tiles"] / r["tiles"]
    print(f"{'size':>9} {'km2':>6} {'tiles':>5} {'over':>4} {'s':>7} {'km2/s':>6} {'s/km2 ratio':>11} "
          f"{'s/tile ratio':>12} {'output MiB':>10} {'RSS peak-output MiB':>19} {'numpy peak-output MiB':>21}")
    for r in rows:
        print(f"{r['size_px']:>4}x{r['size_px']:<4} {r['area_km2']:6.2f} {r['tiles']:5d} {r['overcompute']:4.2f} "
              f"{r['seconds']:7.2f} {r['km2_per_s']:6.2f} {r['time_per_km2_ratio']:11.2f} "
              f"{r['time_per_tile_ratio']:12.2f} {r['output_mib']:10.1f} {r['rss_working_mib']:19.1f} "
              f"{r['numpy_working_mib']:21.1f}")
    if not quick:
        print("1024x1024 is the 512x512 scene mirrored left-right and top-bottom.")
    print("\nMemory of embed + save (fresh process per size):")
    memory = export_memory((64, 128, 256) if quick else (256, 512, 1024, 2048), threads)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        goal = pool.submit(measure_speedup, 256 if quick else GOAL_SIZE, repeats, threads).result()
    met = goal["speedup"] >= SPEEDUP_GOAL and goal["max_abs_diff"] <= goal["tolerance"]
    print(f"\nDefaults (tile {TILE}, batch {BATCH}) vs the release before (tile {BEFORE['tile']}, batch "
          f"{BEFORE['batch_size']}), {goal['size_px']}^2, alternated: {goal['km2_per_s_before']:.1f} -> "
          f"{goal['km2_per_s']:.1f} km2/s per core")
    print(f"GOAL inference_speedup: {'met' if met else 'not met'} ({goal['speedup']:.2f}x >= {SPEEDUP_GOAL}x, "
          f"reference model max |diff| {goal['max_abs_diff']:.4f} <= {goal['tolerance']:.4f}, the change of "
          f"moving the 32 px grid by 8 px)")
    return {"machine": info, "sizes": rows, "export_memory": memory, "speedup": goal}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 256^2, one repeat (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    main(args.quick, args.threads)
