"""Map coordinates without pyproj: WGS84 UTM <-> longitude/latitude and pixel-grid bounds.

The samples (``aef_lite.data``) live on UTM grids (``EPSG:326zz`` north, ``EPSG:327zz`` south);
web maps (folium / Leaflet) and Earth Engine points want longitude/latitude. The transverse
Mercator projection is evaluated with Krueger's series in the third flattening n, as written by
Karney (2011, "Transverse Mercator with an accuracy of a few nanometers", J. Geodesy 85) and in
the NGA/Wikipedia UTM formulas. The series to n^3 is accurate to about a millimetre within a UTM
zone (and still sub-metre several degrees outside it), which is far below the 10 m pixel.

Conventions: longitudes and latitudes in degrees (east, north positive); easting/northing in
metres with the UTM false easting 500 km and, in the southern hemisphere, false northing 10 000 km.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

WGS84_A = 6378137.0
"""Semi-major axis of the WGS84 ellipsoid (m)."""
WGS84_F = 1 / 298.257223563
"""Flattening of the WGS84 ellipsoid."""
UTM_K0 = 0.9996
"""UTM scale factor on the central meridian."""
UTM_FALSE_EASTING = 500_000.0
UTM_FALSE_NORTHING_SOUTH = 10_000_000.0

_N = WGS84_F / (2 - WGS84_F)  # third flattening
_A = WGS84_A / (1 + _N) * (1 + _N**2 / 4 + _N**4 / 64)  # rectifying radius
# Krueger series coefficients (j = 1, 2, 3): alpha forward, beta and delta inverse.
_ALPHA = (_N / 2 - 2 * _N**2 / 3 + 5 * _N**3 / 16, 13 * _N**2 / 48 - 3 * _N**3 / 5, 61 * _N**3 / 240)
_BETA = (_N / 2 - 2 * _N**2 / 3 + 37 * _N**3 / 96, _N**2 / 48 + _N**3 / 15, 17 * _N**3 / 480)
_DELTA = (2 * _N - 2 * _N**2 / 3 - 2 * _N**3, 7 * _N**2 / 3 - 8 * _N**3 / 5, 56 * _N**3 / 15)
_J2 = 2 * np.arange(1, 4, dtype=np.float64)  # 2j for j = 1, 2, 3

_UTM_EPSG = re.compile(r"^EPSG:32(?P<hemi>[67])(?P<zone>\d{2})$")


def central_meridian(zone: int) -> float:
    """Longitude (degrees) of the central meridian of UTM ``zone`` (1..60)."""
    if not 1 <= zone <= 60:
        raise ValueError(f"UTM zone must be in 1..60, got {zone}")
    return 6.0 * zone - 183.0


def utm_zone_for(lon: float) -> int:
    """The standard UTM zone (1..60) containing longitude ``lon`` (degrees).

    The Norway / Svalbard exceptions are not applied: any zone works for computing, the standard
    one just keeps the grid convergence small.
    """
    return int(np.floor(((lon + 180.0) % 360.0) / 6.0)) % 60 + 1


def epsg_to_utm_zone(crs: str) -> tuple[int, bool]:
    """``"EPSG:32633"`` -> ``(33, True)``; ``"EPSG:32718"`` -> ``(18, False)`` (WGS84 / UTM only).

    Raises ValueError for any other CRS (e.g. ``"EPSG:4326"``, ETRS89 / UTM ``"EPSG:25833"``).
    """
    match = _UTM_EPSG.match(crs.strip().upper())
    if match is None or not 1 <= int(match["zone"]) <= 60:
        raise ValueError(f"{crs!r} is not a WGS84 / UTM CRS: expected 'EPSG:326zz' (north) or "
                         "'EPSG:327zz' (south) with zone zz in 01..60. Reproject the data to UTM "
                         "first (the samples and Earth Engine requests here all use WGS84 / UTM).")
    return int(match["zone"]), match["hemi"] == "6"


def utm_epsg(zone: int, north: bool = True) -> str:
    """The WGS84 / UTM EPSG code string, e.g. ``utm_epsg(33) == "EPSG:32633"``."""
    central_meridian(zone)  # validates the zone
    return f"EPSG:{(32600 if north else 32700) + zone}"


def utm_to_lonlat(easting: float | np.ndarray, northing: float | np.ndarray, zone: int,
                  north: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """UTM (metres, any matching shapes) -> (lon, lat) in degrees, arrays of the broadcast shape.

    Krueger series inverse: xi, eta are the normalised northing / easting on the conformal
    sphere, the beta terms undo the ellipsoidal correction, and the delta series converts the
    conformal latitude chi back to the geodetic latitude.
    """
    x = np.asarray(easting, dtype=np.float64) - UTM_FALSE_EASTING
    y = np.asarray(northing, dtype=np.float64) - (0.0 if north else UTM_FALSE_NORTHING_SOUTH)
    xi = y / (UTM_K0 * _A)
    eta = x / (UTM_K0 * _A)
    xi_p, eta_p = xi.copy(), eta.copy()
    for b, j2 in zip(_BETA, _J2, strict=True):
        xi_p = xi_p - b * np.sin(j2 * xi) * np.cosh(j2 * eta)
        eta_p = eta_p - b * np.cos(j2 * xi) * np.sinh(j2 * eta)
    chi = np.arcsin(np.sin(xi_p) / np.cosh(eta_p))
    lat = chi.copy()
    for d, j2 in zip(_DELTA, _J2, strict=True):
        lat = lat + d * np.sin(j2 * chi)
    lon = central_meridian(zone) + np.degrees(np.arctan2(np.sinh(eta_p), np.cos(xi_p)))
    return lon, np.degrees(lat)


def lonlat_to_utm(lon: float | np.ndarray, lat: float | np.ndarray, zone: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(lon, lat) degrees -> (easting, northing, zone, north) in WGS84 / UTM.

    ``zone`` defaults to the standard zone of the first longitude; the hemisphere (false northing)
    follows the sign of the first latitude, so all points are expressed in one CRS
    (``utm_epsg(zone, north)``). Krueger series forward, the inverse of :func:`utm_to_lonlat`.
    """
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    zone = utm_zone_for(float(lon_a.flat[0])) if zone is None else zone
    north = bool(lat_a.flat[0] >= 0)
    phi = np.radians(lat_a)
    lam = np.radians(lon_a - central_meridian(zone))
    c = 2 * np.sqrt(_N) / (1 + _N)
    t = np.sinh(np.arctanh(np.sin(phi)) - c * np.arctanh(c * np.sin(phi)))
    xi_p = np.arctan2(t, np.cos(lam))
    eta_p = np.arctanh(np.sin(lam) / np.sqrt(1 + t**2))
    xi, eta = xi_p.copy(), eta_p.copy()
    for a, j2 in zip(_ALPHA, _J2, strict=True):
        xi = xi + a * np.sin(j2 * xi_p) * np.cosh(j2 * eta_p)
        eta = eta + a * np.cos(j2 * xi_p) * np.sinh(j2 * eta_p)
    easting = UTM_FALSE_EASTING + UTM_K0 * _A * eta
    northing = UTM_K0 * _A * xi + (0.0 if north else UTM_FALSE_NORTHING_SOUTH)
    return easting, northing, zone, north


def pixel_to_crs(transform: Sequence[float], row: float | np.ndarray, col: float | np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (row, col) -> map (x, y) with the 6-number affine ``[a, b, c, d, e, f]``
    (x = a*col + b*row + c, y = d*col + e*row + f). Integer (row, col) is a pixel's top-left
    corner; add 0.5 for its centre."""
    a, b, c, d, e, f = (float(v) for v in transform)
    row_a, col_a = np.asarray(row, dtype=np.float64), np.asarray(col, dtype=np.float64)
    return a * col_a + b * row_a + c, d * col_a + e * row_a + f


def pixel_to_lonlat(transform: Sequence[float], crs: str, row: float | np.ndarray,
                    col: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (row, col) of a UTM grid -> (lon, lat) degrees (pixel centre: row + 0.5, col + 0.5)."""
    zone, north = epsg_to_utm_zone(crs)
    return utm_to_lonlat(*pixel_to_crs(transform, row, col), zone, north)


def pixel_bounds_lonlat(transform: Sequence[float], height: int, width: int, crs: str
                        ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Lon/lat bounding box of an H x W UTM pixel grid as ``((south, west), (north, east))``,
    the order folium / Leaflet expect.

    Points along all four edges of the grid (not just the corners) are projected, so the box
    contains the whole grid even though its edges are slightly curved in lon/lat. The UTM grid is
    also rotated by the meridian convergence (up to ~2 degrees at zone edges), so an axis-aligned
    overlay of the image is misplaced by up to ``side * sin(convergence)`` at its corners (about
    18 m for a 512 px, 10 m scene one degree of longitude off its central meridian at 52 N).
    """
    edge = np.linspace(0.0, 1.0, 17)
    rows = np.concatenate([edge * height, edge * height, np.zeros_like(edge), np.full_like(edge, height)])
    cols = np.concatenate([np.zeros_like(edge), np.full_like(edge, width), edge * width, edge * width])
    lon, lat = pixel_to_lonlat(transform, crs, rows, cols)
    return (float(lat.min()), float(lon.min())), (float(lat.max()), float(lon.max()))
