"""UTM <-> lon/lat without pyproj, checked against published and PROJ-computed coordinates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aef_lite.data import Sample
from aef_lite.geo import (
    epsg_to_utm_zone,
    lonlat_to_utm,
    pixel_bounds_lonlat,
    pixel_to_lonlat,
    utm_epsg,
    utm_to_lonlat,
    utm_zone_for,
)

# (lon, lat, zone, easting, northing). CN Tower: the worked example of the Wikipedia UTM article
# (43 38' 33.24" N, 79 23' 13.7" W -> 17T 630084 E 4833438 N). The others were computed once with
# PROJ 9 (pyproj Transformer EPSG:4326 -> EPSG:326zz / 327zz) and pasted here.
KNOWN = [
    (-(79 + 23 / 60 + 13.7 / 3600), 43 + 38 / 60 + 33.24 / 3600, 17, 630084.3105, 4833438.5488),
    (12.4964, 41.9028, 32, 790023.4812, 4644898.2806),  # Rome in zone 32 (3.5 deg off-meridian)
    (15.0, -33.9249, 33, 500000.0000, 6246170.9106),  # on a central meridian, south
    (179.9, -40.0, 60, 747561.6932, 5568213.7614),  # next to the antimeridian
    (-2.99, 84.0, 30, 500116.7010, 9328093.8407),  # the northern limit of UTM
    (-177.5, 0.0, 1, 444361.8076, 0.0),  # equator
]
METRES_PER_DEG_LAT = 111_000.0


@pytest.mark.parametrize(("lon", "lat", "zone", "easting", "northing"), KNOWN)
def test_known_points_both_directions(lon: float, lat: float, zone: int, easting: float,
                                      northing: float) -> None:
    e, n, z, north = lonlat_to_utm(lon, lat, zone)
    assert z == zone and north == (lat >= 0)
    assert abs(e - easting) < 0.01 and abs(n - northing) < 0.01  # centimetres
    lon2, lat2 = utm_to_lonlat(easting, northing, zone, north)
    err_m = math.hypot((lon2 - lon) * METRES_PER_DEG_LAT * math.cos(math.radians(lat)),
                       (lat2 - lat) * METRES_PER_DEG_LAT)
    assert err_m < 0.01


def test_roundtrip_over_a_zone_is_submillimetre() -> None:
    rng = np.random.default_rng(0)
    lon = 9.0 + rng.uniform(-3.5, 3.5, 500)  # zone 32, slightly beyond its edges
    lat = rng.uniform(-79.0, 83.0, 500)
    for hemisphere in (lat >= 0, lat < 0):
        e, n, zone, north = lonlat_to_utm(lon[hemisphere], lat[hemisphere], 32)
        lon2, lat2 = utm_to_lonlat(e, n, zone, north)
        assert np.max(np.abs(lat2 - lat[hemisphere])) * METRES_PER_DEG_LAT < 1e-3
        assert np.max(np.abs(lon2 - lon[hemisphere])) * METRES_PER_DEG_LAT < 1e-3


def test_sample_centres_match_their_metadata(samples: dict[str, Sample]) -> None:
    """The centre pixel of each shipped sample lands on its recorded centre lon/lat (< 50 m)."""
    for sample in samples.values():
        lon, lat = pixel_to_lonlat(sample.transform, sample.crs, sample.height / 2, sample.width / 2)
        ref_lon, ref_lat = sample.meta["center_lonlat"]
        dist_m = math.hypot((lon - ref_lon) * METRES_PER_DEG_LAT * math.cos(math.radians(lat)),
                            (lat - ref_lat) * METRES_PER_DEG_LAT)
        assert dist_m < 50, (sample.name, dist_m)


def test_epsg_parsing() -> None:
    assert epsg_to_utm_zone("EPSG:32633") == (33, True)
    assert epsg_to_utm_zone("epsg:32718") == (18, False)
    assert utm_epsg(33) == "EPSG:32633" and utm_epsg(1, north=False) == "EPSG:32701"
    for bad in ["EPSG:4326", "EPSG:25833", "EPSG:32661", "EPSG:32600", "EPSG:3857"]:
        with pytest.raises(ValueError, match="not a WGS84 / UTM"):
            epsg_to_utm_zone(bad)


def test_zone_for_longitude() -> None:
    assert [utm_zone_for(v) for v in (-180.0, -177.1, 0.0, 12.68, 179.99, 180.0)] == [1, 1, 31, 33, 60, 1]


def test_pixel_bounds_contain_the_grid(samples: dict[str, Sample]) -> None:
    s = samples["s2_brandenburg"]
    (south, west), (north, east) = pixel_bounds_lonlat(s.transform, s.height, s.width, s.crs)
    # A 5.12 km square at 52.5 N (111.26 km per degree of latitude, 67.8 km per degree of
    # longitude), rotated by the meridian convergence (~1.8 deg, 2.3 deg west of the central
    # meridian), so its box is up to cos + sin = 1.03 times larger.
    for span, km_per_deg in ((north - south, 111.26), (east - west, 111.41 * math.cos(math.radians(52.5)))):
        assert 1.0 < span * km_per_deg / 5.12 < 1.04
    corners = pixel_to_lonlat(s.transform, s.crs, np.array([0, 0, s.height, s.height]),
                              np.array([0, s.width, 0, s.width]))
    assert np.all((corners[0] >= west) & (corners[0] <= east))
    assert np.all((corners[1] >= south) & (corners[1] <= north))
    ref_lon, ref_lat = s.meta["center_lonlat"]
    assert south < ref_lat < north and west < ref_lon < east
