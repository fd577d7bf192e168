"""Map coordinates out of a verdict: where the imagery puts tile B on tile A, in A's CRS, and how far that is from
where B's own georeferencing puts it.

When both tiles are georeferenced rasters (:mod:`siamese_core.data.rasters`), the keypoint transform of
:class:`~siamese_core.judge.geometry.GeoMatch` (B's pixels → A's pixels, in the pixels of the arrays it was given)
and A's geotransform (of the array read, not of the file: the read may be an overview) place B's corners on the map.
Comparing B's centre placed that way with B's centre placed by its own geotransform checks the georeferencing:
"the imagery agrees with the georeferencing within 2 m", or "B lies 31 m east of where its metadata puts it".
Tiles in two CRSs are matched after B is reprojected into A's CRS. Tiles without a CRS get no georef at all.

Pixel conventions: a geotransform maps pixel *corners* (pixel (0, 0) covers [0, 1]²); keypoints, hence GeoMatch's
transform, use pixel *centres* (pixel (0, 0) is the point (0, 0)). Points go through ``x − 0.5`` before the
transform and ``+ 0.5`` after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.rasters import Raster, is_raster, raster_info, read_raster, reproject_raster

EARTH_RADIUS_M = 6_371_008.8
COMPASS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


@dataclass(frozen=True)
class GeoPair:
    """Two georeferenced reads in one CRS (A's): ``b`` is B reprojected when it came in another CRS.
    ``b_corners`` and ``b_centre`` are where B's own georeferencing puts its frame and centre, in that CRS."""

    a: Raster
    b: Raster
    crs: str
    b_corners: np.ndarray   # (4, 2): B's frame (top-left, top-right, bottom-right, bottom-left) by its metadata
    b_centre: tuple         # (x, y): B's centre by its metadata
    reprojected: bool       # B came in another CRS and was warped into A's
    file_shapes: tuple = ()  # (height, width) of A's and B's files (B's: of its reprojected array when reprojected)


def _apply(t, pts: np.ndarray) -> np.ndarray:
    """Affine (a, b, c, d, e, f) applied to (N, 2) points (x = column, y = row)."""
    a, b, c, d, e, f = t
    return np.stack([a * pts[:, 0] + b * pts[:, 1] + c, d * pts[:, 0] + e * pts[:, 1] + f], axis=1)


def _invert(t) -> tuple:
    a, b, c, d, e, f = t
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return ia, ib, -(ia * c + ib * f), id_, ie, -(id_ * c + ie * f)


def is_georeferenced(source, name: str | None = None) -> bool:
    """Is ``source`` (path or bytes) a raster with a CRS and a geotransform? False for plain images, never raises
    for those; a raster that cannot be read raises its ImageError."""
    if not is_raster(source):
        return False
    info = raster_info(source, name)
    return info.crs is not None and info.transform is not None


def read_pair(a, b, name_a: str | None = None, name_b: str | None = None, bands=None,
              out_side: int | None = None) -> GeoPair | None:
    """Both tiles read for matching at ``out_side`` px a side at most, B in A's CRS; None unless both carry a CRS
    and a geotransform."""
    if not (is_georeferenced(a, name_a) and is_georeferenced(b, name_b)):
        return None
    ra = read_raster(a, name=name_a, bands=bands, out_side=out_side)
    rb = read_raster(b, name=name_b, bands=bands, out_side=out_side)
    h, w = rb.image.shape[:2]
    frame = np.float64([[0, 0], [w, 0], [w, h], [0, h]])
    corners = _apply(rb.transform, frame)
    centre = _apply(rb.transform, np.float64([[w / 2, h / 2]]))
    reprojected = not _same_crs(ra.crs, rb.crs)
    if reprojected:
        from rasterio.crs import CRS
        from rasterio.warp import transform as warp_points
        pts = np.vstack([corners, centre])
        xs, ys = warp_points(CRS.from_user_input(rb.crs), CRS.from_user_input(ra.crs), pts[:, 0], pts[:, 1])
        pts = np.stack([xs, ys], axis=1)
        corners, centre = pts[:4], pts[4:]
        rb = reproject_raster(rb, ra.crs)
    ia, ib = raster_info(a, name_a), raster_info(b, name_b)
    shapes = ((ia.height, ia.width), rb.image.shape[:2] if reprojected else (ib.height, ib.width))
    return GeoPair(ra, rb, ra.crs, corners, (float(centre[0, 0]), float(centre[0, 1])), reprojected, shapes)


def in_file_pixels(geo, pair: GeoPair):
    """``geo`` (found between the arrays read, which may be overviews) restated in the pixels of the files:
    transform, shift, scale, points and the polygon on A in A's original pixels (B's reprojected pixels when B
    was reprojected)."""
    if not geo.found:
        return geo
    import dataclasses

    from .geometry import footprint_on_a
    (ha, wa), (hb, wb) = pair.file_shapes
    ka = np.diag([wa / pair.a.image.shape[1], ha / pair.a.image.shape[0], 1.0])
    kb = np.diag([wb / pair.b.image.shape[1], hb / pair.b.image.shape[0], 1.0])
    m = ka @ np.vstack([np.asarray(geo.transform, np.float64), [0, 0, 1]]) @ np.linalg.inv(kb)
    t = tuple(tuple(float(v) for v in row) for row in m[:2])
    poly, overlap = footprint_on_a(t, (ha, wa), (hb, wb))
    return dataclasses.replace(geo, transform=t, shift=(t[0][2], t[1][2]),
                               scale=1.0 / math.sqrt(abs(np.linalg.det(m[:2, :2]))), polygon=poly, overlap=overlap,
                               points_a=(geo.points_a * np.diag(ka)[:2]).astype(np.float32),
                               points_b=(geo.points_b * np.diag(kb)[:2]).astype(np.float32))


def _same_crs(x: str, y: str) -> bool:
    if x == y:
        return True
    from rasterio.crs import CRS
    return CRS.from_user_input(x) == CRS.from_user_input(y)


def _b_to_map(pair: GeoPair, transform, pts_map: np.ndarray) -> np.ndarray:
    """Points placed on the map by B's georeferencing → where the imagery puts them: into B's array pixels
    (corner convention), through the keypoint transform into A's pixels, then A's geotransform."""
    px = _apply(_invert(pair.b.transform), pts_map) - 0.5
    m = np.asarray(transform, np.float64)
    on_a = px @ m[:, :2].T + m[:, 2] + 0.5
    return _apply(pair.a.transform, on_a)


def _metres(pair: GeoPair, dx: float, dy: float, at_y: float) -> tuple[float, float]:
    """A shift in CRS units → (east, north) metres (degrees on a geographic CRS, the CRS's linear unit otherwise)."""
    from rasterio.crs import CRS
    crs = CRS.from_user_input(pair.crs)
    if crs.is_geographic:
        k = math.pi / 180 * EARTH_RADIUS_M
        return dx * k * math.cos(math.radians(at_y)), dy * k
    try:
        unit = float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - a CRS without a known unit: take it as metres
        unit = 1.0
    return dx * unit, dy * unit


def pixel_metres(raster: Raster, crs: str) -> float:
    """The ground size of one pixel of ``raster``'s array, in metres (its longer side)."""
    a, b, _, d, e, f = raster.transform
    probe = GeoPair(raster, raster, crs, np.zeros((4, 2)), (0.0, 0.0), False)
    ex = _metres(probe, a, d, f)
    ey = _metres(probe, b, e, f)
    return max(math.hypot(*ex), math.hypot(*ey))


def georef(pair: GeoPair, geo) -> dict:
    """The ``georef`` object of ``score --json``: crs, footprint (B's frame on A by the imagery: a closed ring of
    (x, y) in ``crs``), metadata_footprint (by B's own geotransform), offset_m (distance between the two placings
    of B's centre), offset_east_m / offset_north_m, and a sentence. Without a geometric match, footprint and
    offset are None and the sentence says so."""
    ring = lambda pts: [[float(x), float(y)] for x, y in np.vstack([pts, pts[:1]])]  # noqa: E731
    out = {"crs": pair.crs, "metadata_footprint": ring(pair.b_corners), "footprint": None, "offset_m": None,
           "offset_east_m": None, "offset_north_m": None, "reprojected": pair.reprojected,
           "pixel_m": round(pixel_metres(pair.a, pair.crs), 3)}
    if not geo.found:
        out["sentence"] = "no geometric match, so the imagery cannot check B's georeferencing"
        return out
    foot = _b_to_map(pair, geo.transform, pair.b_corners)
    seen = _b_to_map(pair, geo.transform, np.float64([pair.b_centre]))[0]
    east, north = _metres(pair, seen[0] - pair.b_centre[0], seen[1] - pair.b_centre[1], pair.b_centre[1])
    dist = math.hypot(east, north)
    out.update(footprint=ring(foot), offset_m=round(dist, 2), offset_east_m=round(east, 2),
               offset_north_m=round(north, 2), sentence=offset_sentence(east, north, 2 * out["pixel_m"]))
    return out


def offset_sentence(east: float, north: float, tolerance: float) -> str:
    """'the imagery agrees with the georeferencing within 2 m' when the shift (``east``, ``north``: imagery minus
    metadata, in metres) is within ``tolerance`` metres (the measurement's own precision), else 'B lies 31 m west of
    where its metadata puts it (its georeferencing is 31 m east of the imagery)': both ways of reading the error."""
    dist = math.hypot(east, north)
    if dist <= tolerance:
        return f"the imagery agrees with the georeferencing within {max(1, math.ceil(dist))} m"
    bearing = math.degrees(math.atan2(east, north)) % 360
    way, back = COMPASS[int((bearing + 22.5) // 45) % 8], COMPASS[int((bearing + 180 + 22.5) // 45) % 8]
    return (f"B lies {dist:.0f} m {way} of where its metadata puts it "
            f"(its georeferencing is {dist:.0f} m {back} of the imagery)")


def footprints_geojson(g: dict, name_a: str = "A", name_b: str = "B") -> dict:
    """The footprints of a ``georef`` object as a GeoJSON FeatureCollection. Coordinates are in ``g['crs']``
    (named in every feature's properties: GeoJSON readers assume WGS 84 unless told)."""
    feats = []
    for kind, ring in (("imagery", g.get("footprint")), ("metadata", g.get("metadata_footprint"))):
        if ring:
            feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                          "properties": {"footprint": kind, "tile": name_b, "on": name_a, "crs": g["crs"],
                                         "offset_m": g.get("offset_m"), "sentence": g.get("sentence")}})
    return {"type": "FeatureCollection", "crs_note": f"coordinates in {g['crs']}", "features": feats}


def judge_georeferenced(scorer, a, b, name_a: str | None = None, name_b: str | None = None, bands=None,
                        threshold: float | None = None):
    """(Judgement, georef dict or None) for two files or uploads: georeferenced rasters are read (B reprojected
    into A's CRS when the CRSs differ) and matched as arrays, so the footprint lands on the map; other files are
    judged as :meth:`Scorer.judge_pair` would (with ``bands`` for rasters without a CRS)."""
    from .geometry import MAX_SIDE
    side = max(scorer.size, MAX_SIDE)
    pair = read_pair(a, b, name_a, name_b, bands, out_side=side)
    if pair is None:
        return scorer.judge([(scorer.prepare(a, name_a, bands), scorer.prepare(b, name_b, bands))], threshold)[0], None
    import dataclasses
    j = scorer.judge([(scorer.prepare(pair.a.image), scorer.prepare(pair.b.image))], threshold)[0]
    return dataclasses.replace(j, geo=in_file_pixels(j.geo, pair)), georef(pair, j.geo)


__all__ = ["GeoPair", "is_georeferenced", "read_pair", "georef", "offset_sentence", "footprints_geojson",
           "judge_georeferenced", "pixel_metres", "in_file_pixels", "COMPASS"]
