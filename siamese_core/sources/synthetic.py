"""Procedural aerial-looking RGB tiles: the embedded, offline default data source.

Why this exists: the tool must train, test and demo without network access, API keys or a
downloaded dataset, so it needs a source of tiles that is always there, costs nothing to store,
and is reproducible byte for byte.  This module draws such tiles from a seed: agricultural
parcels with crop-row textures, hedgerows, woodland, meadows, lakes, meandering rivers, straight
and curved roads, and clusters of buildings with roofs and shadows, under a per-tile seasonal
palette with a little sensor noise and optical blur.  Every tile is different and full of
non-symmetric structure up to its edges, so a matcher cannot tell two tiles (or a rotated copy of
a tile) apart by colour statistics alone.

Layout is drawn in unit coordinates from a random stream that never depends on ``size``, so the
same ``(index, seed)`` gives the same scene at every resolution; only fine texture noise (drawn
from a second stream) is resolution-specific.  Only numpy and OpenCV are used, with vectorised
array maths and cv2 drawing primitives, so one core renders several hundred 128 px tiles a second.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator

import cv2
import numpy as np

from siamese_core.errors import SiameseError

__all__ = ["synthetic_tile", "iter_synthetic"]

MIN_SIZE = 16
MAX_SIZE = 2048

_SHIFT = 4  # cv2 sub-pixel bits for polygon / polyline coordinates
_ONE = float(1 << _SHIFT)

# Per-season palettes (RGB).  "fields" are crop/parcel colours; the rest are land-cover colours.
_SEASONS: tuple[dict, ...] = (
    {  # spring
        "fields": [(96, 140, 62), (122, 158, 72), (146, 122, 92), (158, 132, 100), (172, 168, 96),
                   (84, 122, 54), (138, 150, 84)],
        "forest": (46, 78, 42), "grass": (112, 142, 72), "soil": (150, 124, 94),
        "hedge": (52, 80, 44),
    },
    {  # summer
        "fields": [(92, 122, 56), (204, 188, 124), (184, 162, 98), (122, 142, 66), (152, 122, 86),
                   (72, 106, 46), (212, 200, 146), (168, 160, 90)],
        "forest": (36, 62, 32), "grass": (102, 126, 62), "soil": (158, 130, 96),
        "hedge": (40, 66, 36),
    },
    {  # autumn
        "fields": [(152, 122, 86), (132, 102, 72), (172, 152, 104), (112, 118, 62), (192, 172, 122),
                   (120, 96, 70), (98, 112, 60)],
        "forest": (74, 70, 40), "grass": (122, 122, 72), "soil": (128, 100, 74),
        "hedge": (80, 70, 42),
    },
    {  # winter
        "fields": [(192, 192, 188), (162, 152, 140), (142, 132, 116), (206, 206, 204), (122, 116, 100),
                   (176, 170, 158)],
        "forest": (52, 60, 52), "grass": (150, 146, 126), "soil": (126, 114, 98),
        "hedge": (70, 72, 64),
    },
    {  # arid
        "fields": [(192, 168, 128), (172, 146, 112), (112, 128, 72), (204, 184, 144), (152, 152, 92),
                   (90, 118, 58), (182, 158, 118)],
        "forest": (82, 92, 56), "grass": (176, 156, 116), "soil": (196, 170, 130),
        "hedge": (110, 110, 74),
    },
)
_SEASON_P = np.array([0.2, 0.32, 0.2, 0.1, 0.18])

_WATER = np.array([(40, 70, 86), (56, 92, 82), (82, 92, 74), (30, 56, 80), (64, 96, 104), (48, 78, 66)],
                  dtype=np.float64)
_ROOFS = np.array([(172, 82, 62), (134, 62, 52), (122, 122, 126), (82, 82, 88), (204, 202, 196),
                   (142, 112, 92), (102, 112, 124), (186, 120, 88), (160, 150, 140)], dtype=np.float64)

# Tile archetypes: (weight, forest fraction range, n road range, village range, farmstead range,
#                   river probability, lake probability, suburb probability)
_TYPES = (
    (0.40, (0.0, 0.25), (1, 3), (0, 2), (0, 3), 0.25, 0.15, 0.0),   # farmland
    (0.18, (0.35, 0.75), (0, 2), (0, 1), (0, 1), 0.25, 0.25, 0.0),  # woodland
    (0.22, (0.0, 0.2), (2, 4), (1, 3), (0, 2), 0.15, 0.1, 0.7),     # suburban / village
    (0.20, (0.05, 0.35), (0, 2), (0, 1), (0, 2), 0.85, 0.45, 0.0),  # river / wetland
)
_TYPE_P = np.array([t[0] for t in _TYPES])


def _check_int(name: str, value, lo: int | None, hi: int | None, fix: str) -> int:
    if isinstance(value, bool):
        raise SiameseError(f"{name}={value!r} is not an integer; {fix}")
    try:
        v = operator.index(value)
    except TypeError:
        raise SiameseError(f"{name}={value!r} is not an integer; {fix}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise SiameseError(f"{name}={v} is out of range; {fix}")
    return v


def _check_size(size) -> int:
    return _check_int("size", size, MIN_SIZE, MAX_SIZE,
                      f"pass a tile size between {MIN_SIZE} and {MAX_SIZE} pixels (e.g. size=128)")


def _check_seed(seed) -> int:
    return _check_int("seed", seed, 0, None, "pass a non-negative integer seed (e.g. seed=0)")


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in unit square, shape (size, size) float32, read-only."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    x = np.broadcast_to(c[None, :], (size, size))
    y = np.broadcast_to(c[:, None], (size, size))
    return x, y


def _upsample(small: np.ndarray, size: int, cubic: bool = True) -> np.ndarray:
    interp = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    return cv2.resize(small.astype(np.float32), (size, size), interpolation=interp)


def _px(points: np.ndarray, size: int) -> np.ndarray:
    """Unit coordinates (N, 2) -> cv2 fixed-point int32 pixel coordinates."""
    return np.round(points * (size * _ONE) - 0.5 * _ONE).astype(np.int32)


def _thick(w_unit: float, size: int) -> int:
    return max(1, int(round(w_unit * size)))


def _col(c) -> tuple[float, float, float]:
    c = np.clip(c, 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _bezier(p: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2]
            + t ** 3 * p[3])


def _edge_point(rng: np.random.Generator, side: int) -> np.ndarray:
    s = rng.uniform(0.05, 0.95)
    return np.array([(-0.08, s), (1.08, s), (s, -0.08), (s, 1.08)][side])


# --------------------------------------------------------------------------------------------
# raster layers (vectorised)
# --------------------------------------------------------------------------------------------

def _fields(lr, tr, size, pal, gang, fine, mid):
    """Parcel mosaic with crop-row textures, mottling and hedgerows -> float32 (H, W, 3)."""
    X, Y = _grid(size)
    warp = lr.uniform(0.0, 0.035) if lr.random() < 0.6 else 0.0
    wx = lr.standard_normal((4, 4))
    wy = lr.standard_normal((4, 4))
    ca, sa = np.cos(gang), np.sin(gang)
    cx, cy = 0.5 + lr.uniform(-0.2, 0.2, 2)
    dx = X - np.float32(cx)
    dy = Y - np.float32(cy)
    if warp > 0:
        dx = dx + np.float32(warp) * _upsample(wx, size)
        dy = dy + np.float32(warp) * _upsample(wy, size)
    u = dx * np.float32(ca) + dy * np.float32(sa)
    v = dy * np.float32(ca) - dx * np.float32(sa)

    # rows of random heights along v; inside each row, columns of random widths along u
    R = 0.95
    hmean = np.exp(lr.uniform(np.log(0.08), np.log(0.3)))
    aspect = np.exp(lr.uniform(np.log(0.35), np.log(3.0)))
    wmean = float(np.clip(hmean * aspect, 0.05, 0.6))
    heights = lr.uniform(0.5, 1.5, 64) * hmean
    row_edges = -R - lr.uniform(0, hmean) + np.cumsum(heights)
    row_edges = row_edges[: int(np.searchsorted(row_edges, R)) + 1]
    nrows = len(row_edges) + 1
    BIG = 8.0
    ncol_max = int(2 * R / (0.4 * wmean)) + 3
    widths = lr.uniform(0.4, 1.6, (nrows, ncol_max)) * wmean
    col_edges = -R - lr.uniform(0, wmean, (nrows, 1)) + np.cumsum(widths, axis=1)
    col_edges = np.minimum(col_edges, R + 0.5)  # keep every row inside its BIG slot
    all_edges = (col_edges + BIG * np.arange(nrows)[:, None]).ravel()
    row = np.searchsorted(row_edges, v)
    lab = np.searchsorted(all_edges, u + np.float32(BIG) * row.astype(np.float32))
    n = len(all_edges) + 1

    # per-parcel attributes
    fcols = np.array(pal["fields"], dtype=np.float64)
    base = fcols[lr.integers(0, len(fcols), n)]
    base = base * lr.uniform(0.88, 1.12, (n, 1)) + lr.normal(0, 7, (n, 3))
    kind = lr.choice(3, n, p=[0.35, 0.45, 0.2])  # pasture, crop rows, plowed soil
    soil = np.array(pal["soil"], dtype=np.float64)
    base[kind == 2] = soil * lr.uniform(0.8, 1.15, ((kind == 2).sum(), 1)) + lr.normal(
        0, 6, ((kind == 2).sum(), 3))
    amp = np.where(kind == 0, 0.0, lr.uniform(0.05, 0.2, n))
    mottle = np.where(kind == 0, lr.uniform(0.05, 0.14, n), lr.uniform(0.01, 0.05, n))

    # stripe patterns: mostly parallel / perpendicular to the parcel grid
    npat = 3
    pats = np.empty((npat, size, size), np.float32)
    for k in range(npat):
        r = lr.random()
        a = gang + (0.0 if r < 0.45 else np.pi / 2 if r < 0.8 else lr.uniform(0, np.pi))
        period = max(lr.uniform(0.014, 0.04), 2.3 / size)
        ph = lr.uniform(0, 2 * np.pi)
        arg = (X * np.float32(np.cos(a) * 2 * np.pi / period)
               + Y * np.float32(np.sin(a) * 2 * np.pi / period) + np.float32(ph))
        pats[k] = np.sin(arg)
    pidx = lr.integers(0, npat, n)
    orchard = lr.random() < 0.3
    if orchard:  # a few parcels become orchards / vineyards: rows of dots
        a = gang
        period = max(lr.uniform(0.02, 0.035), 3.0 / size)
        s1 = np.sin((X * np.float32(np.cos(a)) + Y * np.float32(np.sin(a))) * np.float32(2 * np.pi / period))
        s2 = np.sin((Y * np.float32(np.cos(a)) - X * np.float32(np.sin(a))) * np.float32(2 * np.pi / period))
        dots = np.clip((s1 * s2) * 2.0 - 0.6, -1.0, 1.0)
        pats = np.concatenate([pats, (-dots)[None]], axis=0)
        is_orch = lr.random(n) < 0.12
        pidx = np.where(is_orch, npat, pidx)
        amp = np.where(is_orch, lr.uniform(0.25, 0.4, n), amp)
        grass = np.array(pal["grass"], dtype=np.float64)
        base[is_orch] = grass * lr.uniform(0.85, 1.1, (is_orch.sum(), 1))

    # woodlots that follow parcel boundaries
    wood = (lr.random(n) < lr.uniform(0.0, 0.12)).astype(np.float32)

    sel = pidx[lab]
    stripe = np.take_along_axis(pats, sel[None], axis=0)[0]
    tex = 1.0 + amp.astype(np.float32)[lab] * stripe + mottle.astype(np.float32)[lab] * (0.6 * mid + 0.4 * fine)
    img = base.astype(np.float32)[lab] * tex[..., None]

    # hedgerows / field tracks on parcel boundaries
    edge = np.zeros((size, size), bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    hedge_p = lr.uniform(0.2, 0.9)
    hedge_keep = lr.random(n) < hedge_p
    track = lr.random() < 0.35
    hcol = np.array(pal["soil"] if track else pal["hedge"], dtype=np.float32) * np.float32(lr.uniform(0.85, 1.1))
    emask = edge & hedge_keep[lab]
    if size >= 200:  # keep hedges ~1/128 of the tile wide at large sizes
        emask = cv2.dilate(emask.astype(np.uint8), np.ones((size // 128 + 1,) * 2, np.uint8)) > 0
    img[emask] = hcol * (1.0 + 0.15 * fine[emask])[:, None]
    return img, wood[lab], gang


def _land_cover(lr, tr, size, pal, forest_frac):
    """Natural woodland / meadow masks (float32 0..1) from low-res noise, size independent."""
    k = int(lr.integers(3, 7))
    n1 = lr.standard_normal((k, k))
    n2 = lr.standard_normal((k + 1, k + 1))
    t_meadow = lr.uniform(0.6, 1.6)
    f = _upsample(n1, size)
    if forest_frac <= 0.01:
        t_forest = 99.0
    else:
        t_forest = float(np.quantile(n1, 1.0 - forest_frac))
    g = _upsample(n2, size)
    return f, np.float32(t_forest), g, np.float32(t_meadow)


# --------------------------------------------------------------------------------------------
# vector layers (cv2 drawing on uint8)
# --------------------------------------------------------------------------------------------

def _lake(lr, img, wmask, size, wcol):
    c = lr.uniform(0.1, 0.9, 2)
    r = lr.uniform(0.07, 0.22)
    m = 40
    th = np.linspace(0, 2 * np.pi, m, endpoint=False)
    rad = np.ones(m)
    for h in range(2, 6):
        rad += lr.uniform(0, 0.35 / h * 2) * np.cos(h * th + lr.uniform(0, 2 * np.pi))
    rad = r * np.clip(rad, 0.35, None) * lr.uniform(0.6, 1.0, 1)
    ell = lr.uniform(0.5, 1.0)
    rot = lr.uniform(0, np.pi)
    pts = np.stack([rad * np.cos(th), ell * rad * np.sin(th)], 1)
    pts = pts @ np.array([[np.cos(rot), np.sin(rot)], [-np.sin(rot), np.cos(rot)]]) + c
    shore = c + (pts - c) * 1.08
    cv2.fillPoly(img, [_px(shore, size)], _col(wcol * 0.6 + np.array([60, 70, 40]) * 0.4), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(img, [_px(pts, size)], _col(wcol), cv2.LINE_AA, _SHIFT)
    inner = c + (pts - c) * 0.7
    cv2.fillPoly(img, [_px(inner, size)], _col(wcol * 0.9), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(wmask, [_px(shore, size)], 255, cv2.LINE_8, _SHIFT)


def _river(lr, img, wmask, size, wcol, bank):
    s0 = int(lr.integers(0, 4))
    s1 = int(lr.choice([s for s in range(4) if s != s0]))
    a, b = _edge_point(lr, s0), _edge_point(lr, s1)
    n = 80
    t = np.linspace(0, 1, n)
    d = b - a
    L = float(np.hypot(*d))
    nrm = np.array([-d[1], d[0]]) / L
    off = np.zeros(n)
    for _ in range(3):
        f = lr.uniform(1.0, 4.5)
        off += lr.uniform(0.02, 0.09) * np.sin(2 * np.pi * f * t * L + lr.uniform(0, 2 * np.pi))
    off *= np.sin(np.pi * t) ** 0.3 + 0.3
    pts = a + t[:, None] * d + off[:, None] * nrm
    w = lr.uniform(0.025, 0.07)
    pw = _px(pts, size)
    cv2.polylines(img, [pw], False, _col(bank), _thick(w + lr.uniform(0.015, 0.04), size), cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, [pw], False, _col(wcol), _thick(w, size), cv2.LINE_AA, _SHIFT)
    if w * size >= 5:
        cv2.polylines(img, [pw], False, _col(wcol * 0.88), _thick(w * 0.4, size), cv2.LINE_AA, _SHIFT)
    cv2.polylines(wmask, [pw], False, 255, _thick(w + 0.04, size), cv2.LINE_8, _SHIFT)


def _roads(lr, img, size, gang, nroads, suburb):
    roads = []  # list of (points (N, 2) unit, width unit)
    for i in range(nroads):
        r = lr.random()
        if r < 0.5:  # straight, usually aligned with the parcel grid
            p0 = lr.uniform(0.1, 0.9, 2)
            ang = gang + (lr.integers(0, 2) * np.pi / 2 if lr.random() < 0.7 else lr.uniform(0, np.pi))
            d = np.array([np.cos(ang), np.sin(ang)])
            pts = p0 + np.linspace(-1.6, 1.6, 24)[:, None] * d
        else:  # curved
            s0 = int(lr.integers(0, 4))
            s1 = int(lr.choice([s for s in range(4) if s != s0]))
            ctrl = np.stack([_edge_point(lr, s0), lr.uniform(0.0, 1.0, 2), lr.uniform(0.0, 1.0, 2),
                             _edge_point(lr, s1)])
            pts = _bezier(ctrl, 32)
        major = lr.random() < 0.45
        w = lr.uniform(0.022, 0.035) if major else lr.uniform(0.01, 0.02)
        roads.append((pts, w, major))
    if suburb:  # a local street grid
        c = lr.uniform(0.25, 0.75, 2)
        a = gang + lr.uniform(-0.3, 0.3)
        sp = lr.uniform(0.09, 0.16)
        ext = lr.uniform(0.25, 0.45)
        e1 = np.array([np.cos(a), np.sin(a)])
        e2 = np.array([-np.sin(a), np.cos(a)])
        for e, f in ((e1, e2), (e2, e1)):
            m = int(lr.integers(2, 5))
            for j in range(m):
                o = (j - (m - 1) / 2) * sp + lr.normal(0, 0.01)
                pts = c + o * f + np.linspace(-ext, ext, 16)[:, None] * e
                roads.append((pts, lr.uniform(0.011, 0.018), False))

    tone = lr.uniform(80, 150)
    warm = lr.normal(0, 4, 3)
    for pts, w, major in roads:
        pw = _px(pts, size)
        g = tone + lr.normal(0, 10)
        asphalt = np.array([g, g, g + 3]) + warm
        if major:
            cv2.polylines(img, [pw], False, _col(asphalt * 1.25 + 10), _thick(w * 1.5, size), cv2.LINE_AA, _SHIFT)
        cv2.polylines(img, [pw], False, _col(asphalt), _thick(w, size), cv2.LINE_AA, _SHIFT)
        if major and w * size >= 2.5:
            cv2.polylines(img, [pw], False, _col(asphalt + 70), 1, cv2.LINE_AA, _SHIFT)
    return roads


def _building_polys(centres, ang, w, d, sun):
    """Return (full rects, lit halves, shadow rects) as (N, 4, 2) unit arrays."""
    ca, sa = np.cos(ang), np.sin(ang)
    ex = np.stack([ca, sa], -1) * (w / 2)[:, None]
    ey = np.stack([-sa, ca], -1) * (d / 2)[:, None]
    c = centres
    full = np.stack([c - ex - ey, c + ex - ey, c + ex + ey, c - ex + ey], 1)
    half = np.stack([c - ex - ey, c + ex - ey, c + ex, c - ex], 1)
    shadow = full + sun[:, None, :]
    return full, half, shadow


def _buildings(lr, img, wmask, size, roads, gang, nvill, nfarm, suburb, sun_dir):
    cents, angs, ws, ds = [], [], [], []
    for _ in range(nvill):
        if not roads:
            break
        pts, rw, _major = roads[int(lr.integers(0, len(roads)))]
        m = len(pts) - 1
        nb = int(lr.integers(8, 40 if suburb else 24))
        i0 = lr.uniform(0, m - 1)
        span = lr.uniform(0.1, 0.4) * m / max(1.0, np.hypot(*(pts[-1] - pts[0])))
        tt = np.clip(i0 + lr.uniform(0, span, nb) * m, 0, m - 1e-6)
        ii = tt.astype(int)
        fr = (tt - ii)[:, None]
        p = pts[ii] * (1 - fr) + pts[ii + 1] * fr
        tang = pts[ii + 1] - pts[ii]
        a = np.arctan2(tang[:, 1], tang[:, 0])
        nrm = np.stack([-np.sin(a), np.cos(a)], -1)
        d = lr.uniform(0.022, 0.045, nb)
        side = lr.choice([-1.0, 1.0], nb)
        off = rw / 2 + lr.uniform(0.008, 0.03, nb) + d / 2
        cents.append(p + (side * off)[:, None] * nrm)
        angs.append(a + lr.normal(0, 0.05, nb))
        ws.append(lr.uniform(0.025, 0.06, nb))
        ds.append(d)
    for _ in range(nfarm):
        c = lr.uniform(0.05, 0.95, 2)
        nb = int(lr.integers(2, 7))
        a0 = gang + lr.integers(0, 2) * np.pi / 2
        cents.append(c + lr.normal(0, 0.035, (nb, 2)))
        angs.append(a0 + lr.integers(0, 2, nb) * np.pi / 2 + lr.normal(0, 0.03, nb))
        ws.append(lr.uniform(0.03, 0.1, nb))
        ds.append(lr.uniform(0.025, 0.05, nb))
    if not cents:
        return
    cents = np.concatenate(cents)
    angs = np.concatenate(angs)
    ws = np.concatenate(ws)
    ds = np.concatenate(ds)
    nb = len(cents)
    roofs = lr.choice(len(_ROOFS), nb, p=None)
    pal = lr.choice(len(_ROOFS), 3, replace=False)
    roofs = np.where(lr.random(nb) < 0.75, pal[roofs % 3], roofs)
    jitter = lr.normal(0, 6, (nb, 1))

    # drop buildings in water or far off the tile
    ci = np.clip((cents * size).astype(int), 0, size - 1)
    keep = (wmask[ci[:, 1], ci[:, 0]] == 0) & np.all((cents > -0.05) & (cents < 1.05), axis=1)
    if not keep.any():
        return
    cents, angs, ws, ds, roofs, jitter = cents[keep], angs[keep], ws[keep], ds[keep], roofs[keep], jitter[keep]
    sl = lr.uniform(0.006, 0.014)
    sun = np.broadcast_to(sun_dir * sl, (len(cents), 2))
    full, half, shadow = _building_polys(cents, angs, ws, ds, sun)
    fpx = _px(full.reshape(-1, 2), size).reshape(-1, 4, 2)
    hpx = _px(half.reshape(-1, 2), size).reshape(-1, 4, 2)
    spx = _px(shadow.reshape(-1, 2), size).reshape(-1, 4, 2)
    cv2.fillPoly(img, list(spx), (34, 36, 34), cv2.LINE_8, _SHIFT)
    for r in np.unique(roofs):
        sel = roofs == r
        base = _ROOFS[r] + float(jitter[sel].mean())
        cv2.fillPoly(img, list(fpx[sel]), _col(base * 0.78), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(img, list(hpx[sel]), _col(base), cv2.LINE_8, _SHIFT)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def synthetic_tile(index: int, size: int = 128, seed: int = 0) -> np.ndarray:
    """Return tile number `index` as a (size, size, 3) uint8 RGB array; deterministic in (index, size, seed)."""
    index = _check_int("index", index, 0, None, "pass a non-negative tile index (e.g. index=0)")
    size = _check_size(size)
    seed = _check_seed(seed)

    lr = np.random.default_rng([seed, index, 0])  # layout: never depends on size
    tr = np.random.default_rng([seed, index, 1, size])  # resolution-specific texture noise

    season = _SEASONS[int(lr.choice(len(_SEASONS), p=_SEASON_P))]
    ttype = _TYPES[int(lr.choice(len(_TYPES), p=_TYPE_P))]
    _, frange, rrange, vrange, frm_range, p_river, p_lake, p_suburb = ttype
    pal = {k: (v if k == "fields" else np.array(v, dtype=np.float64)) for k, v in season.items()}
    tint = lr.normal(0, 6, 3)
    for k in ("forest", "grass", "soil", "hedge"):
        pal[k] = pal[k] + tint
    pal["fields"] = [np.array(c) + tint for c in pal["fields"]]
    gang = lr.uniform(0, np.pi)

    # texture noise fields (resolution specific)
    fine = tr.standard_normal((size, size), dtype=np.float32)
    m = max(4, size // 4)
    mid = _upsample(tr.standard_normal((m, m), dtype=np.float32), size, cubic=False)
    mc = max(4, size // 3)
    crown = _upsample(tr.standard_normal((mc, mc), dtype=np.float32), size, cubic=False)

    img, wood, gang = _fields(lr, tr, size, pal, gang, fine, mid)

    # natural land cover: meadows and woodland with ragged edges
    forest_frac = lr.uniform(*frange)
    f, t_forest, g, t_meadow = _land_cover(lr, tr, size, pal, forest_frac)
    if lr.random() < 0.5:
        ma = np.clip((g - t_meadow) * 3.0 + 0.3 * mid, 0.0, 1.0)
        grass = pal["grass"].astype(np.float32) * (1.0 + 0.08 * mid + 0.04 * fine)[..., None]
        img += ma[..., None] * (grass - img)
    fa = np.clip((f - t_forest) * 4.0 + 0.35 * crown + 0.15 * mid, 0.0, 1.0)
    fa = np.maximum(fa, np.clip(wood * 1.6 + 0.25 * crown - 0.3, 0.0, 1.0))
    fshade = lr.uniform(0.22, 0.35)
    fcol = pal["forest"].astype(np.float32)
    forest = fcol * (1.0 + fshade * crown + 0.12 * fine)[..., None]
    img += fa[..., None] * (forest - img)

    # arid tiles get centre-pivot irrigation circles
    u8 = np.clip(img, 0, 255).astype(np.uint8)
    if season is _SEASONS[4] and lr.random() < 0.6:
        for _ in range(int(lr.integers(1, 4))):
            c = _px(lr.uniform(0.0, 1.0, (1, 2)), size)[0]
            r = int(lr.uniform(0.12, 0.3) * size * _ONE)
            col = np.array(pal["fields"][int(lr.choice([2, 4, 5]))]) * lr.uniform(0.85, 1.1)
            cv2.circle(u8, (int(c[0]), int(c[1])), r, _col(col), -1, cv2.LINE_AA, _SHIFT)

    wmask = np.zeros((size, size), np.uint8)
    wcol = _WATER[int(lr.integers(0, len(_WATER)))] + lr.normal(0, 5, 3)
    if lr.random() < p_lake:
        _lake(lr, u8, wmask, size, wcol)
    if lr.random() < p_river:
        bank = pal["hedge"] * lr.uniform(0.9, 1.2) if lr.random() < 0.7 else pal["soil"] * 1.05
        _river(lr, u8, wmask, size, wcol, bank)

    suburb = lr.random() < p_suburb
    nroads = int(lr.integers(rrange[0], rrange[1] + 1))
    roads = _roads(lr, u8, size, gang, nroads, suburb)

    sun_a = lr.uniform(0, 2 * np.pi)
    sun_dir = np.array([np.cos(sun_a), np.sin(sun_a)])
    nvill = int(lr.integers(vrange[0], vrange[1] + 1)) + (2 if suburb else 0)
    nfarm = int(lr.integers(frm_range[0], frm_range[1] + 1))
    _buildings(lr, u8, wmask, size, roads, gang, nvill, nfarm, suburb, sun_dir)

    # optics + sensor: slight blur, per-channel gain/offset, haze, low-amplitude noise
    sigma = 0.55 * size / 128.0
    if sigma >= 0.3:
        u8 = cv2.GaussianBlur(u8, (0, 0), sigma)
    gain = (lr.normal(1.0, 0.04, 3) * (1 - (haze := lr.uniform(0.0, 0.15)))).astype(np.float32)
    bias = (lr.normal(0, 4, 3) + haze * np.array([200.0, 205.0, 215.0])).astype(np.float32)
    noise_amp = np.float32(lr.uniform(1.5, 3.5))
    out = u8.astype(np.float32) * gain + bias
    out += (fine * noise_amp)[..., None]
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def iter_synthetic(limit: int = 600, size: int = 128, seed: int = 0) -> Iterator[tuple[str, np.ndarray, str]]:
    """Yield (tile_id: str, image: np.ndarray uint8 HxWx3, provenance: str) for index 0..limit-1.
    tile_id like 'synthetic-000042'; provenance like 'synthetic:seed=0:index=42'."""
    limit = _check_int("limit", limit, 1, None, "pass a positive number of tiles (e.g. limit=600)")
    size = _check_size(size)
    seed = _check_seed(seed)
    return _iter(limit, size, seed)


def _iter(limit: int, size: int, seed: int) -> Iterator[tuple[str, np.ndarray, str]]:
    for i in range(limit):
        yield f"synthetic-{i:06d}", synthetic_tile(i, size, seed), f"synthetic:seed={seed}:index={i}"
