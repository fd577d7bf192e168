"""How a second sensor frames the same ground: another heading, resolution and footprint.

Two tiles of one place rarely share their frame. Another acquisition is turned, at another ground
resolution, and cut on another tiling, so it covers only part of the first tile's ground. These pure
functions cut such views out of a larger image and say exactly which ground each covers (a polygon in the
source image's pixels), so that labelled pairs (:mod:`.pairsets`), training views and tests of the overlap
polygon all agree on what "B covers 40 % of A" means.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def view_matrix(cx: float, cy: float, side: int, angle: float, zoom: float) -> tuple[np.ndarray, int]:
    """The 2×3 map from source pixels into a ``side·zoom`` square view centred on (cx, cy), turned by
    ``angle``° (counter-clockwise, as OpenCV turns), and the view's side in pixels."""
    out = max(16, int(round(side * zoom)))
    m = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
    m[:, 2] += (out / 2.0 - cx, out / 2.0 - cy)
    return m, out


def turn(img: np.ndarray, cx: float, cy: float, side: int, angle: float, zoom: float) -> np.ndarray:
    """A ``side·zoom`` square view of ``img`` centred on (cx, cy), turned by ``angle``°: as if a sensor at
    another resolution and heading had framed the same ground (black where the image ends)."""
    m, out = view_matrix(cx, cy, side, angle, zoom)
    return cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def footprint(cx: float, cy: float, side: int, angle: float, zoom: float) -> np.ndarray:
    """The ground a :func:`turn` view covers: its four corners in source pixels (float32, 4×2)."""
    m, out = view_matrix(cx, cy, side, angle, zoom)
    inv = cv2.invertAffineTransform(m)
    corners = np.float32([[0, 0], [out, 0], [out, out], [0, out]])
    return (corners @ inv[:, :2].T + inv[:, 2]).astype(np.float32)


def box(x: float, y: float, w: float, h: float) -> np.ndarray:
    """An axis-aligned window as a 4×2 polygon."""
    return np.float32([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


def overlap_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Share of polygon ``a``'s area that convex polygon ``b`` covers (0…1)."""
    area_a = abs(cv2.contourArea(np.float32(a)))
    if area_a <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(np.float32(a), np.float32(b))
    return float(max(0.0, inter) / area_a)


def within(poly: np.ndarray, h: int, w: int, margin: float = 0.0) -> bool:
    """Whether every corner lies inside an ``h``×``w`` image (give or take ``margin`` pixels)."""
    p = np.asarray(poly)
    return bool((p[:, 0] >= -margin).all() and (p[:, 0] <= w + margin).all()
                and (p[:, 1] >= -margin).all() and (p[:, 1] <= h + margin).all())


def overlap_view(rng: np.random.Generator, h: int, w: int, x: int, y: int, side: int,
                 lo: float = 0.3, hi: float = 0.7, zoom: tuple = (1.0, 1.0), tries: int = 40):
    """Where to cut a view that covers a share in [lo, hi] of the window (x, y, side) of an h×w image:
    (cx, cy, angle, zoom, covered share), turned by any angle and lying wholly inside the image, or None
    when the image has no room for one. The share is reached by bisection on the distance between the
    centres, in a random direction."""
    window = box(x, y, side, side)
    target = float(rng.uniform(lo, hi))
    for _ in range(tries):
        angle = float(rng.uniform(-180.0, 180.0))
        zm = float(math.exp(rng.uniform(math.log(zoom[0]), math.log(zoom[1]) + 1e-12)))
        phi = float(rng.uniform(0.0, 2.0 * math.pi))
        near, far = 0.0, 1.5 * side
        for _ in range(30):
            d = (near + far) / 2
            cx, cy = x + side / 2 + d * math.cos(phi), y + side / 2 + d * math.sin(phi)
            f = overlap_fraction(window, footprint(cx, cy, side, angle, zm))
            near, far = (d, far) if f > target else (near, d)
        if abs(f - target) < 0.03 and within(footprint(cx, cy, side, angle, zm), h, w, margin=2):
            return cx, cy, angle, zm, f
    return None


def coarser(img: np.ndarray, factor: float) -> np.ndarray:
    """The same ground at ``factor`` times coarser resolution (fewer pixels; area-averaged)."""
    h, w = img.shape[:2]
    return cv2.resize(img, (max(8, round(w / factor)), max(8, round(h / factor))), interpolation=cv2.INTER_AREA)


__all__ = ["view_matrix", "turn", "footprint", "box", "overlap_fraction", "within", "overlap_view", "coarser"]
