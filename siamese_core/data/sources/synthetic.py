"""Procedural aerial-looking RGB tiles: the embedded, offline default data source.

Why this exists: the tool must train, test and demo without network access, API keys or a
downloaded dataset, so it needs a source of tiles that is always there, costs nothing to store,
and is reproducible byte for byte.  This module draws such tiles from a seed: agricultural
parcels with crop-row textures and hedgerows, orchards, woodland, meadows, lakes, meandering
rivers, straight and curved roads, street grids, and villages and farmsteads whose buildings have
gabled roofs and shadows, under a per-tile seasonal palette with a little optical blur and sensor
noise.  Every tile is different and full of non-symmetric structure up to its edges, so a matcher
cannot tell two tiles (or a tile and a rotated copy of it) apart by colour statistics alone.

The layout is drawn in unit coordinates from ``np.random.default_rng([seed, index])`` and never
depends on ``size``, so one ``(index, seed)`` is the same scene at every resolution.  Fine texture
and sensor noise is cut from a fixed, lazily built 1024 x 1024 noise bank at offsets drawn from
that generator (fields too big for the bank come from ``default_rng([seed, index, size, 1])``);
no global random state is read or changed.  Only numpy and OpenCV are used, with vectorised array maths and cv2
drawing primitives, so one core renders several hundred 128 px tiles a second.

Why one module of about 650 lines: it draws one thing, a scene, and every part of the scene (fields, water,
roads, buildings) draws from the same random stream in a fixed order and from the same noise bank; that order is
what makes a tile the same bytes on every machine and at every size.  The drawing helpers only make sense inside
that order, so they stay private here rather than becoming an API another module could call out of turn.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator

import cv2
import numpy as np

from ...core.errors import SiameseError

__all__ = ["synthetic_tile", "iter_synthetic"]

MIN_SIZE = 16
MAX_SIZE = 2048

_SHIFT = 4  # cv2 sub-pixel bits for polygon / polyline coordinates
_ONE = float(1 << _SHIFT)
_BANK = 1024  # side of the cached noise bank; larger tiles draw their noise directly
_BANK_SEED = 0x5A7E111E
_QUARTER = np.array([0.0, np.pi / 2], dtype=np.float32)  # sin(x + pi/2) = cos(x)

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
    {  # winter (partly snow-covered)
        "fields": [(196, 198, 200), (150, 146, 134), (134, 126, 110), (214, 216, 218), (118, 114, 98),
                   (172, 170, 162), (104, 108, 88)],
        "forest": (50, 58, 50), "grass": (132, 134, 112), "soil": (118, 106, 90),
        "hedge": (66, 70, 60),
    },
    {  # arid
        "fields": [(192, 168, 128), (172, 146, 112), (112, 128, 72), (204, 184, 144), (152, 152, 92),
                   (90, 118, 58), (182, 158, 118)],
        "forest": (82, 92, 56), "grass": (176, 156, 116), "soil": (196, 170, 130),
        "hedge": (110, 110, 74),
    },
)
_SEASON_CUM = np.cumsum([0.2, 0.32, 0.2, 0.1, 0.18])[:-1]
_ARID = 4

_WATER = np.array([(40, 70, 86), (56, 92, 82), (82, 92, 74), (30, 56, 80), (64, 96, 104), (48, 78, 66)],
                  dtype=np.float64)
_ROOFS = np.array([(172, 82, 62), (134, 62, 52), (122, 122, 126), (82, 82, 88), (204, 202, 196),
                   (142, 112, 92), (102, 112, 124), (186, 120, 88), (160, 150, 140)], dtype=np.float64)

# Tile archetypes: (weight, forest fraction range, road count range, village count range,
#                   farmstead count range, river probability, lake probability, street-grid probability)
_TYPES = (
    (0.40, (0.0, 0.25), (1, 3), (0, 2), (0, 3), 0.25, 0.15, 0.0),   # farmland
    (0.18, (0.35, 0.75), (0, 2), (0, 1), (0, 1), 0.3, 0.25, 0.0),   # woodland
    (0.22, (0.0, 0.2), (1, 3), (1, 3), (0, 2), 0.15, 0.1, 0.75),    # village / suburb
    (0.20, (0.05, 0.35), (0, 2), (0, 1), (0, 2), 0.85, 0.45, 0.0),  # river / lakes
)
_TYPE_CUM = np.cumsum([t[0] for t in _TYPES])[:-1]


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    bank = np.random.default_rng(_BANK_SEED).standard_normal((_BANK, _BANK), dtype=np.float32)
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=8)
def _axis(size: int) -> np.ndarray:
    """Pixel-centre coordinates along one axis in the unit interval (float32, read-only)."""
    a = ((np.arange(size, dtype=np.float64) + 0.5) / size).astype(np.float32)
    a.setflags(write=False)
    return a


class _Noise:
    """Standard-normal float32 noise fields: windows of the shared bank at offsets drawn from the
    layout generator (so every tile consumes the same random numbers at every size)."""

    def __init__(self, lr: np.random.Generator, seed: int, index: int, size: int):
        self._lr = lr
        self._key = (seed, index, size)
        self._rng: np.random.Generator | None = None

    def window(self, h: int, w: int) -> np.ndarray:
        """An h x w noise field, C-contiguous."""
        ox, oy = self._lr.random(2)
        if h <= _BANK and w <= _BANK:
            x, y = int(ox * (_BANK - w)), int(oy * (_BANK - h))
            return np.ascontiguousarray(_noise_bank()[y:y + h, x:x + w])
        if self._rng is None:
            self._rng = np.random.default_rng([*self._key, 1])
        return self._rng.standard_normal((h, w), dtype=np.float32)

    def field(self, n: int) -> np.ndarray:
        return self.window(n, n)

    def smooth(self, n: int, size: int) -> np.ndarray:
        """An n x n noise window bilinearly stretched to size x size."""
        small = self.field(n)
        return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def _upsample(small: np.ndarray, size: int) -> np.ndarray:
    """Smooth (cubic, then linear) upsampling of a tiny grid to size x size, float32."""
    small = small.astype(np.float32)
    k = min(size, max(16, size // 6))
    mid = cv2.resize(small, (k, k), interpolation=cv2.INTER_CUBIC)
    if k == size:
        return mid
    return cv2.resize(mid, (size, size), interpolation=cv2.INTER_LINEAR)


def _px(points: np.ndarray, size: int) -> np.ndarray:
    """Unit coordinates (..., 2) -> cv2 fixed-point int32 pixel coordinates."""
    return np.round(points * (size * _ONE) - 0.5 * _ONE).astype(np.int32)


def _thick(w_unit: float, size: int) -> int:
    return max(1, int(round(w_unit * size)))


def _col(c) -> tuple[float, float, float]:
    r, g, b = c.tolist()
    return (min(255.0, max(0.0, r)), min(255.0, max(0.0, g)), min(255.0, max(0.0, b)))


def _lut(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).reshape(1, 256)


def _bezier(p: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2]
            + t ** 3 * p[3])


def _edge_point(lr: np.random.Generator, side: int) -> np.ndarray:
    s = lr.uniform(0.05, 0.95)
    return np.array([(-0.08, s), (1.08, s), (s, -0.08), (s, 1.08)][side])


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, tex: np.ndarray,
           shade: np.ndarray | None = None) -> None:
    """In place on planar img (3, H, W): img = (img * (1 - alpha) + alpha * tex * colour) * shade."""
    keep = np.float32(1.0) - alpha
    paint = alpha * tex
    if shade is not None:
        keep *= shade
        paint *= shade
    img *= keep
    img += paint * colour.astype(np.float32)[:, None, None]


def _shift(a: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float32)
    return cv2.warpAffine(a, m, (a.shape[1], a.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _sine_plane(xs: np.ndarray, a: float, period: float, phase: float) -> np.ndarray:
    """sin(2*pi*(x cos a + y sin a)/period + phase) on the pixel grid, via two outer products."""
    k = 2 * np.pi / period
    ax = xs * np.float32(np.cos(a) * k)
    by = xs * np.float32(np.sin(a) * k) + np.float32(phase)
    # sin(ax + by) = sin(by) cos(ax) + cos(by) sin(ax): a rank-2 product, one small matmul
    return np.sin(by[:, None] + _QUARTER[None, :]) @ np.sin(ax[None, :] + _QUARTER[::-1, None])


# --------------------------------------------------------------------------------------------
# raster layers (vectorised, channel-planar float32)
# --------------------------------------------------------------------------------------------

def _parcel_labels(lr, size, gang):
    """Parcel id of every pixel (uint8, ids recycled mod 255) and the parcel-boundary mask.

    Parcels are rows of random height with columns of random width in a frame rotated by
    ``gang`` (and optionally gently warped); the label image is built in that frame with 1-D
    look-ups and resampled onto the tile with ``cv2.remap``.  Neighbouring parcels never share
    an id; id 255 is left free for hedgerows."""
    xs = _axis(size)
    warp = lr.uniform(0.0, 0.035) if lr.random() < 0.6 else 0.0
    wsmall = lr.standard_normal((4, 4, 2))
    ca, sa = np.float32(np.cos(gang)), np.float32(np.sin(gang))
    cx, cy = 0.5 + lr.uniform(-0.2, 0.2, 2)

    R = 1.15  # half-extent of the rotated frame: covers the tile for any angle, centre and warp
    hmean = float(np.exp(lr.uniform(np.log(0.08), np.log(0.3))))
    aspect = float(np.exp(lr.uniform(np.log(0.35), np.log(3.0))))
    wmean = min(0.6, max(0.05, hmean * aspect))
    row_edges = -R - lr.uniform(0, hmean) + np.cumsum(lr.uniform(0.5, 1.5, 64) * hmean)
    nrows = int(np.searchsorted(row_edges, R)) + 2
    row_edges = row_edges[: nrows - 1]
    ncol = int(2 * R / (0.4 * wmean)) + 3
    col_edges = -R - lr.uniform(0, wmean, (nrows, 1)) + np.cumsum(
        lr.uniform(0.4, 1.6, (nrows, ncol)) * wmean, axis=1)

    # label image in the rotated frame (S x S pixels at tile resolution)
    S = int(np.ceil(2 * R * size))
    row_of = np.searchsorted(row_edges, -R + (np.arange(S) + 0.5) / size)
    # column index of every rotated-frame x in every row = number of column edges left of it
    pos = np.clip(np.floor((col_edges + R) * size - 0.5).astype(np.intp) + 1, 0, S)
    flat = (np.arange(nrows)[:, None] * (S + 1) + pos).ravel()
    counts = np.bincount(flat, minlength=nrows * (S + 1)).reshape(nrows, S + 1)[:, :S]
    table = ((np.cumsum(counts, axis=1, dtype=np.int32) + np.arange(nrows, dtype=np.int32)[:, None] * ncol)
             % 255).astype(np.uint8)
    rot = table[row_of]

    # tile pixel -> rotated-frame pixel, as one two-channel map
    off = np.float32(R * size - 0.5)
    dx = (xs - np.float32(cx)) * np.float32(size)
    dy = (xs - np.float32(cy)) * np.float32(size)
    m = cv2.merge([(dx * ca + off)[None, :] + (dy * sa)[:, None],
                   (dy * ca + off)[:, None] - (dx * sa)[None, :]])
    if warp > 0:
        m += _upsample(wsmall, size) * np.float32(warp * size)
    lab = cv2.remap(rot, m, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)

    edge = np.zeros((size, size), np.bool_)
    edge[1:, :] = lab[1:, :] != lab[:-1, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    return lab, edge


def _fields(lr, size, pal, gang, fine, mid):
    """Parcel mosaic with crop-row textures, mottling and hedgerows.

    Returns (image (3, H, W) float32, woodlot mask (H, W) float32)."""
    xs = _axis(size)
    lab, edge = _parcel_labels(lr, size, gang)

    # per-parcel attributes, indexed by parcel id; id 255 is the hedgerow / farm-track class
    fcols = pal["fields"]
    at = lr.random((9, 256))
    soil = at[0] < 0.2  # ploughed / bare soil; otherwise pasture (no rows) or crop rows
    rows = ~soil & (at[0] < 0.2 + 0.45)
    base = np.where(soil[:, None], pal["soil"], fcols[(at[1] * len(fcols)).astype(np.intp)])
    base = base * (0.86 + 0.26 * at[2])[:, None] + lr.normal(0, 3.5, (256, 3))
    pasture = ~(soil | rows)
    amp = np.where(pasture, 0.0, 0.05 + 0.15 * at[3])
    mottle = np.where(pasture, 0.05 + 0.09 * at[4], 0.01 + 0.04 * at[4])
    pidx = (at[5] * 3).astype(np.intp)
    wood = at[6] < lr.uniform(0.0, 0.12)
    hedge = at[7] < lr.uniform(0.2, 0.9)

    # stripe patterns: mostly parallel / perpendicular to the parcel grid
    pats = []
    for _ in range(3):
        r = lr.random()
        a = gang + (0.0 if r < 0.45 else np.pi / 2 if r < 0.8 else lr.uniform(0, np.pi))
        period = max(lr.uniform(0.014, 0.04), 2.3 / size)
        pats.append(_sine_plane(xs, a, period, lr.uniform(0, 2 * np.pi)))
    if lr.random() < 0.3:  # orchards / vineyards: dotted rows in some parcels (pattern 2)
        period = max(lr.uniform(0.02, 0.035), 3.0 / size)
        s1 = _sine_plane(xs, gang, period, 0.0)
        s2 = _sine_plane(xs, gang + np.pi / 2, period, 0.0)
        pats[2] = np.clip(0.6 - 2.0 * s1 * s2, -1.0, 1.0)
        orchard = at[8] < 0.14
        pidx = np.where(orchard, 2, pidx % 2)
        amp = np.where(orchard, 0.25 + 0.15 * at[4], amp)
        base = np.where(orchard[:, None], pal["grass"] * (0.85 + 0.25 * at[2])[:, None], base)

    # hedgerows (or farm tracks) on the boundaries of some parcels
    track = lr.random() < 0.35
    base[255] = (pal["soil"] if track else pal["hedge"]) * lr.uniform(0.85, 1.1)
    amp[255] = 0.0
    mottle[255] = 0.2
    wood[255] = False
    keep = edge & (cv2.LUT(lab, hedge.astype(np.uint8).reshape(1, 256)) > 0)
    width = int(round(size / 128))  # keep them about 1/128 of the tile wide
    if width > 1:
        keep = cv2.dilate(keep.view(np.uint8), np.ones((width, width), np.uint8)) > 0
    lab[keep] = 255

    stripe = cv2.LUT(lab, _lut(np.where(pidx == 0, amp, 0.0))) * pats[0]
    stripe += cv2.LUT(lab, _lut(np.where(pidx == 1, amp, 0.0))) * pats[1]
    stripe += cv2.LUT(lab, _lut(np.where(pidx == 2, amp, 0.0))) * pats[2]
    tex = stripe + np.float32(1.0)
    tex += cv2.LUT(lab, _lut(mottle)) * (np.float32(0.6) * mid + np.float32(0.4) * fine)
    img = np.empty((3, size, size), np.float32)
    for c in range(3):
        np.multiply(cv2.LUT(lab, _lut(base[:, c])), tex, out=img[c])
    return img, cv2.LUT(lab, _lut(wood))


# --------------------------------------------------------------------------------------------
# vector layers (cv2 drawing on the uint8 RGB image)
# --------------------------------------------------------------------------------------------

def _pivots(lr, img, size, pal, mid, fine):
    """Centre-pivot irrigation circles (some only partly planted), blended into the planar image."""
    full = np.zeros((size, size), np.uint8)
    part = np.zeros((size, size), np.uint8)
    for _ in range(int(lr.integers(1, 4))):
        c = _px(lr.uniform(0.0, 1.0, 2), size)
        centre = (int(c[0]), int(c[1]))
        r = int(lr.uniform(0.08, 0.18) * size * _ONE)
        cv2.circle(full, centre, r, 255, -1, cv2.LINE_AA, _SHIFT)
        a0 = lr.uniform(0, 360)
        cv2.ellipse(part, centre, (r, r), a0, 0, lr.uniform(60, 240), 255, -1, cv2.LINE_AA, _SHIFT)
    crop = pal["fields"][(2, 4, 5)[int(lr.integers(0, 3))]] * lr.uniform(0.85, 1.1)  # arid greens
    other = pal["soil"] * lr.uniform(0.9, 1.1) if lr.random() < 0.5 else crop * lr.uniform(0.7, 1.3)
    tex = np.float32(1.0) + np.float32(0.07) * mid + np.float32(0.05) * fine
    _blend(img, full * np.float32(1 / 255), crop, tex)
    _blend(img, part * np.float32(1 / 255), other, tex)


def _lake(lr, img, wmask, size, wcol):
    c = lr.uniform(0.1, 0.9, 2)
    r = lr.uniform(0.07, 0.2)
    m = 36
    th = np.linspace(0, 2 * np.pi, m, endpoint=False)
    h = np.arange(2, 6)[:, None]
    rad = 1.0 + (lr.uniform(0, 0.7, (4, 1)) / h * np.cos(h * th + lr.uniform(0, 2 * np.pi, (4, 1)))).sum(0)
    rad = r * np.clip(rad, 0.35, None)
    ell = lr.uniform(0.5, 1.0)
    rot = lr.uniform(0, np.pi)
    pts = np.stack([rad * np.cos(th), ell * rad * np.sin(th)], 1)
    pts = pts @ np.array([[np.cos(rot), np.sin(rot)], [-np.sin(rot), np.cos(rot)]]) + c
    shore = _px(c + (pts - c) * 1.1, size)
    cv2.fillPoly(img, [shore], _col(wcol * 0.6 + np.array([60, 70, 40]) * 0.4), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(img, [_px(pts, size)], _col(wcol), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(img, [_px(c + (pts - c) * 0.65, size)], _col(wcol * 0.9), cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(wmask, [shore], 255, cv2.LINE_8, _SHIFT)


def _river(lr, img, wmask, size, wcol, bank):
    """A meandering river: a sine-generated curve (heading oscillates along the arc length)."""
    side = int(lr.integers(0, 4))
    start = _edge_point(lr, side)
    heading = np.arctan2(0.5 - start[1], 0.5 - start[0]) + lr.uniform(-0.6, 0.6)
    n = 56
    s = np.linspace(0.0, 2.3, n)
    wave = lr.uniform(0.3, 0.8)
    # meander amplitude waxes and wanes along the river; a smoothed random walk breaks the rhythm
    omega = lr.uniform(0.3, 1.2) * (0.65 + 0.35 * np.sin(2 * np.pi * s / lr.uniform(0.8, 2.0) + lr.uniform(0, 6.3)))
    walk = np.convolve(np.cumsum(lr.normal(0, 0.22, n + 6)), np.ones(7) / 7, "valid")
    theta = (heading + omega * np.sin(2 * np.pi * s / wave + lr.uniform(0, 2 * np.pi))
             + 0.3 * omega * np.sin(4 * np.pi * s / wave + lr.uniform(0, 2 * np.pi))
             + walk - walk.mean())
    step = s[1] - s[0]
    pts = start + np.concatenate([[[0.0, 0.0]], np.cumsum(step * np.stack([np.cos(theta), np.sin(theta)], 1)[:-1], 0)])
    w = lr.uniform(0.025, 0.07)
    pw = _px(pts, size)
    cv2.polylines(img, [pw], False, _col(bank), _thick(w + lr.uniform(0.015, 0.04), size), cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, [pw], False, _col(wcol), _thick(w, size), cv2.LINE_AA, _SHIFT)
    if w * size >= 5:
        cv2.polylines(img, [pw], False, _col(wcol * 0.9), _thick(w * 0.4, size), cv2.LINE_AA, _SHIFT)
    cv2.polylines(wmask, [pw], False, 255, _thick(w + 0.04, size), cv2.LINE_8, _SHIFT)


def _roads(lr, img, size, gang, nroads, grid):
    """Draw roads; return them as [(points (N, 2) in unit coords, width, major, straight)]."""
    roads = []
    for _ in range(nroads):
        if lr.random() < 0.5:  # straight, usually along the parcel grid
            p0 = lr.uniform(0.1, 0.9, 2)
            ang = gang + (lr.integers(0, 2) * np.pi / 2 if lr.random() < 0.7 else lr.uniform(0, np.pi))
            pts = p0 + np.linspace(-1.6, 1.6, 33)[:, None] * np.array([np.cos(ang), np.sin(ang)])
            straight = True
        else:  # curved, edge to edge
            s0 = int(lr.integers(0, 4))
            s1 = (s0 + 1 + int(lr.integers(0, 3))) % 4
            p0, p3 = _edge_point(lr, s0), _edge_point(lr, s1)
            d = p3 - p0
            n = np.array([-d[1], d[0]])
            off = lr.uniform(-0.35, 0.35, 2)  # bounded bends: no cusps or loops
            ctrl = np.stack([p0, p0 + d / 3 + off[0] * n, p0 + 2 * d / 3 + off[1] * n, p3])
            pts = _bezier(ctrl, 24)
            straight = False
        major = lr.random() < 0.4
        w = lr.uniform(0.018, 0.028) if major else lr.uniform(0.008, 0.015)
        roads.append((pts, w, major, straight))
    if grid:  # a local street grid
        c = lr.uniform(0.25, 0.75, 2)
        a = gang + lr.uniform(-0.3, 0.3)
        sp = lr.uniform(0.09, 0.16)
        ext = lr.uniform(0.2, 0.4)
        e1 = np.array([np.cos(a), np.sin(a)])
        e2 = np.array([-np.sin(a), np.cos(a)])
        for e, f in ((e1, e2), (e2, e1)):
            m = int(lr.integers(2, 5))
            for j in range(m):
                o = (j - (m - 1) / 2) * sp + lr.normal(0, 0.01)
                pts = c + o * f + np.linspace(-ext, ext, 12)[:, None] * e
                roads.append((pts, lr.uniform(0.008, 0.014), False, True))

    tone = lr.uniform(85, 150)
    warm = lr.normal(0, 4, 3)
    verge = lr.random() < 0.5
    for pts, w, major, straight in roads:
        pw = _px(pts[[0, -1]] if straight else pts, size)
        g = tone + lr.normal(0, 10)
        asphalt = np.array([g + 3, g + 1, g]) + warm
        if major and verge:
            cv2.polylines(img, [pw], False, _col(asphalt * 1.2 + 12), _thick(w * 1.6, size), cv2.LINE_AA, _SHIFT)
        cv2.polylines(img, [pw], False, _col(asphalt), _thick(w, size), cv2.LINE_AA, _SHIFT)
        if major and w * size >= 2.5:
            cv2.polylines(img, [pw], False, _col(asphalt + 60), 1, cv2.LINE_AA, _SHIFT)
    return roads


_SX = np.array([-0.5, 0.5, 0.5, -0.5])
_SY = np.array([-0.5, -0.5, 0.5, 0.5])


def _rects(c, ang, w, d):
    """Corners (N, 4, 2) of rectangles centred at c with side w along angle ang and side d across."""
    ca, sa = np.cos(ang)[:, None], np.sin(ang)[:, None]
    u, v = _SX * w[:, None], _SY * d[:, None]
    out = np.empty((len(c), 4, 2))
    out[:, :, 0] = c[:, :1] + u * ca - v * sa
    out[:, :, 1] = c[:, 1:] + u * sa + v * ca
    return out


def _buildings(lr, img, wmask, size, roads, gang, nvill, nfarm, dense, sun, pal):
    """Villages along roads (houses with garden plots) and farmsteads (yard + big sheds)."""
    parts = []  # (centres, angles, widths, depths)
    if roads and nvill:
        # every road resampled to the same number of points so villages vectorise
        P = np.stack([r[0] if len(r[0]) == 33 else _resample(r[0], 33) for r in roads])
        width = np.array([r[1] for r in roads])
        seg = np.hypot(*(P[:, 1] - P[:, 0]).T)
        road = lr.integers(0, len(roads), nvill)
        inside = np.all((P[road] > 0.05) & (P[road] < 0.95), axis=2)  # (nvill, 33)
        ninside = inside.sum(1)
        rank = (lr.random(nvill) * ninside).astype(np.intp)
        ic = np.argmax(np.cumsum(inside, 1) > rank[:, None], axis=1)
        nbv = np.where(ninside > 0, lr.integers(10, 36 if dense else 22, nvill), 0)
        length = lr.uniform(0.2, 0.5, nvill)
        v = np.repeat(np.arange(nvill), nbv)
        nb = len(v)
        rv = road[v]
        tt = np.clip(ic[v] + lr.uniform(-0.5, 0.5, nb) * length[v] / seg[rv], 0, 32 - 1e-3)
        ii = tt.astype(np.intp)
        fr = (tt - ii)[:, None]
        p = P[rv, ii] * (1 - fr) + P[rv, ii + 1] * fr
        tang = P[rv, ii + 1] - P[rv, ii]
        a = np.arctan2(tang[:, 1], tang[:, 0])
        nrm = np.stack([-np.sin(a), np.cos(a)], -1)
        d = lr.uniform(0.022, 0.04, nb)
        w = lr.uniform(0.025, 0.055, nb)
        side = np.where(lr.random(nb) < 0.5, -1.0, 1.0)
        rw = width[rv] / 2
        depth = lr.uniform(0.03, 0.07, nb)
        plots = _rects(p + (side * (rw + 0.003 + (d + depth) / 2))[:, None] * nrm, a,
                       w + lr.uniform(0.005, 0.02, nb), d + depth)
        parts.append((p + (side * (rw + lr.uniform(0.006, 0.02, nb) + d / 2))[:, None] * nrm,
                      a + lr.normal(0, 0.04, nb), w, d))
        which = lr.integers(0, 3, nb)
        shades = lr.uniform(0.8, 1.2, 3)
        ppx = _px(plots, size)
        for k in range(3):
            if (which == k).any():
                cv2.fillPoly(img, list(ppx[which == k]), _col(pal["grass"] * shades[k]), cv2.LINE_8, _SHIFT)
    if nfarm:
        fc = lr.uniform(0.05, 0.95, (nfarm, 2))
        fa = gang + lr.integers(0, 2, nfarm) * np.pi / 2
        yards = _rects(fc, fa, lr.uniform(0.1, 0.18, nfarm), lr.uniform(0.08, 0.14, nfarm))
        gravel = pal["soil"] * lr.uniform(0.9, 1.2) + 10
        cv2.fillPoly(img, list(_px(yards, size)), _col(gravel), cv2.LINE_AA, _SHIFT)
        f = np.repeat(np.arange(nfarm), lr.integers(2, 7, nfarm))
        nb = len(f)
        parts.append((fc[f] + lr.uniform(-0.04, 0.04, (nb, 2)),
                      fa[f] + lr.integers(0, 2, nb) * np.pi / 2 + lr.normal(0, 0.03, nb),
                      lr.uniform(0.03, 0.09, nb), lr.uniform(0.025, 0.05, nb)))
    if not parts:
        return
    cents, angs, ws, ds = (np.concatenate(x) for x in zip(*parts))
    nb = len(cents)
    local = lr.permutation(len(_ROOFS))[:3]
    roofs = np.where(lr.random(nb) < 0.75, local[lr.integers(0, 3, nb)], lr.integers(0, len(_ROOFS), nb))
    sl = lr.uniform(0.006, 0.014)

    # drop buildings standing in water or off the tile
    ci = np.clip((cents * size).astype(np.intp), 0, size - 1)
    keep = (wmask[ci[:, 1], ci[:, 0]] == 0) & np.all((cents > -0.05) & (cents < 1.05), axis=1)
    if not keep.any():
        return
    full = _rects(cents[keep], angs[keep], ws[keep], ds[keep])
    roofs = roofs[keep]
    # gabled roofs: the half facing the sun (shadows fall along +sun) is the lighter one
    m12 = (full[:, 1] + full[:, 2]) / 2
    m03 = (full[:, 0] + full[:, 3]) / 2
    near = ((full[:, 3] - full[:, 0]) @ sun > 0)[:, None]
    lit = np.stack([np.where(near, full[:, 0], m03), np.where(near, full[:, 1], m12),
                    np.where(near, m12, full[:, 2]), np.where(near, m03, full[:, 3])], 1)
    cv2.fillPoly(img, list(_px(full + sun * sl, size)), (34, 36, 34), cv2.LINE_8, _SHIFT)
    fpx = _px(full, size)
    hpx = _px(lit, size)
    for r in np.unique(roofs):
        sel = roofs == r
        cv2.fillPoly(img, list(fpx[sel]), _col(_ROOFS[r] * 0.76), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(img, list(hpx[sel]), _col(_ROOFS[r]), cv2.LINE_8, _SHIFT)


def _resample(pts: np.ndarray, n: int) -> np.ndarray:
    """Resample a polyline to n points evenly spaced in parameter (not arc length)."""
    t = np.linspace(0, len(pts) - 1, n)
    i = np.minimum(t.astype(np.intp), len(pts) - 2)
    f = (t - i)[:, None]
    return pts[i] * (1 - f) + pts[i + 1] * f


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def synthetic_tile(index: int, size: int = 128, seed: int = 0) -> np.ndarray:
    """Return tile number `index` as a (size, size, 3) uint8 RGB array; deterministic in (index, size, seed)."""
    index = _check_int("index", index, 0, None, "pass a non-negative tile index (e.g. index=0)")
    size = _check_size(size)
    seed = _check_seed(seed)

    lr = np.random.default_rng([seed, index])  # the whole layout; never depends on size
    noise = _Noise(lr, seed, index, size)

    season = int(np.searchsorted(_SEASON_CUM, lr.random(), side="right"))
    ttype = int(np.searchsorted(_TYPE_CUM, lr.random(), side="right"))
    _, frange, rrange, vrange, frm_range, p_river, p_lake, p_grid = _TYPES[ttype]
    tint = lr.normal(0, 5, 3)
    pal = {k: np.array(v, dtype=np.float64) + tint for k, v in _SEASONS[season].items()}
    gang = lr.uniform(0, np.pi)
    sun_a = lr.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(sun_a), np.sin(sun_a)])

    fine = noise.field(size)
    mid = noise.smooth(max(4, size // 4), size)
    crown = noise.smooth(max(4, size // 3), size)

    img, wood = _fields(lr, size, pal, gang, fine, mid)

    # natural land cover: meadows and woodland with ragged edges, woodlots on some parcels
    k = int(lr.integers(3, 7))
    n_forest = lr.standard_normal((k, k))
    n_meadow = lr.standard_normal((k + 1, k + 1))
    forest_frac = lr.uniform(*frange)
    if lr.random() < 0.5:
        t_meadow = np.float32(lr.uniform(0.6, 1.6))
        ma = np.clip((_upsample(n_meadow, size) - t_meadow) * np.float32(3.0) + np.float32(0.4) * mid, 0.0, 1.0)
        _blend(img, ma, pal["grass"], np.float32(1.0) + np.float32(0.1) * mid + np.float32(0.05) * fine)
    if season == _ARID and lr.random() < 0.6:
        _pivots(lr, img, size, pal, mid, fine)
    t_forest = np.float32(np.sort(n_forest, axis=None)[int((1.0 - forest_frac) * (k * k - 1))]
                          if forest_frac > 0.01 else 99.0)
    fa = np.clip((_upsample(n_forest, size) - t_forest) * np.float32(4.0)
                 + np.float32(0.35) * crown + np.float32(0.15) * mid, 0.0, 1.0)
    fa = np.maximum(fa, np.clip(wood * np.float32(1.6) + np.float32(0.25) * crown - np.float32(0.3), 0.0, 1.0))
    # trees cast shadows onto whatever lies beside them, away from the sun
    sl = lr.uniform(0.008, 0.016) * size
    shade = np.float32(1.0) - np.float32(0.45) * np.clip(_shift(fa, sun[0] * sl, sun[1] * sl) - fa, 0.0, 1.0)
    ftex = np.float32(1.0) + np.float32(lr.uniform(0.22, 0.35)) * crown + np.float32(0.12) * fine
    _blend(img, fa, pal["forest"], ftex, shade)
    np.clip(img, 0.0, 255.0, out=img)
    u8 = cv2.merge([p.astype(np.uint8) for p in img])

    wmask = np.zeros((size, size), np.uint8)
    wcol = _WATER[int(lr.integers(0, len(_WATER)))] + lr.normal(0, 5, 3)
    if lr.random() < p_lake:
        _lake(lr, u8, wmask, size, wcol)
    if lr.random() < p_river:
        bank = pal["hedge"] * lr.uniform(0.9, 1.2) if lr.random() < 0.7 else pal["soil"] * 1.05
        _river(lr, u8, wmask, size, wcol, bank)

    grid = lr.random() < p_grid
    roads = _roads(lr, u8, size, gang, int(lr.integers(rrange[0], rrange[1] + 1)), grid)
    nvill = int(lr.integers(vrange[0], vrange[1] + 1)) + (2 if grid else 0)
    nfarm = int(lr.integers(frm_range[0], frm_range[1] + 1))
    _buildings(lr, u8, wmask, size, roads, gang, nvill, nfarm, grid, sun, pal)

    # optics and sensor: slight blur, per-channel gain/offset with haze, low-amplitude noise
    sigma = 0.55 * (size / 128.0) ** 0.5
    if sigma >= 0.3:
        u8 = cv2.GaussianBlur(u8, (0, 0), sigma)
    haze = lr.uniform(0.0, 0.15)
    m = np.zeros((3, 4), np.float32)
    m[:, :3] = np.diag(lr.normal(1.0, 0.05) * lr.normal(1.0, 0.015, 3) * (1.0 - haze))
    m[:, 3] = lr.normal(0, 4, 3) + haze * np.array([200.0, 205.0, 215.0])
    out = cv2.transform(u8, m)  # saturates to uint8
    amp = lr.uniform(1.5, 3.5)
    if 3 * size <= _BANK:  # (the last draws of the tile, so the split cannot shift the layout)
        sensor = noise.window(size, 3 * size).reshape(size, size, 3)
    else:
        sensor = cv2.merge([noise.field(size) for _ in range(3)])
    return cv2.addWeighted(out, 1.0, sensor, amp, 0.0, dtype=cv2.CV_8U)


def iter_synthetic(limit: int = 600, size: int = 128, seed: int = 0) -> Iterator[tuple[str, np.ndarray, str]]:
    """Yield (tile_id: str, image: np.ndarray uint8 HxWx3, provenance: str) for index 0..limit-1.
    tile_id like 'synthetic-000042'; provenance like 'synthetic:seed=0:index=42'."""
    limit = _check_int("limit", limit, 1, None, "pass a positive number of tiles (e.g. limit=600)")
    size = _check_size(size)
    seed = _check_seed(seed)
    return _iterate(limit, size, seed)


def _iterate(limit: int, size: int, seed: int) -> Iterator[tuple[str, np.ndarray, str]]:
    for i in range(limit):
        yield f"synthetic-{i:06d}", synthetic_tile(i, size, seed), f"synthetic:seed={seed}:index={i}"
