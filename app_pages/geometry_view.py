"""Pictures of the geometric evidence for the Compare page (NumPy + OpenCV; no Streamlit, no TensorFlow).

The library finds the matches and the transform (:mod:`siamese_core.judge.geometry`); this module only draws
them: the two tiles side by side with lines between the inlier keypoints, and tile B laid onto tile A
blended with it.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

MAX_LINES = 100   # more lines than this is a scribble
HEIGHT = 320      # both tiles are drawn at this height
GAP = 12          # white gap between the two tiles


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)
    return np.ascontiguousarray(img)


def _to_height(img: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    f = height / h
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (max(1, round(w * f)), height), interpolation=interp), f


def _colours(n: int) -> list[tuple[int, int, int]]:
    """n distinct bright colours (hues round the wheel), so that crossing lines stay readable."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((0.61803 * i) % 1.0, 0.85, 1.0)) for i in range(n)]


def pick_lines(n: int, max_lines: int = MAX_LINES) -> np.ndarray:
    """Indices of at most ``max_lines`` of ``n`` matches, spread evenly over them (deterministic)."""
    if n <= max_lines:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_lines).round().astype(int))


def matches_image(img_a: np.ndarray, img_b: np.ndarray, points_a: np.ndarray, points_b: np.ndarray,
                  scale_a: float = 1.0, scale_b: float = 1.0, max_lines: int = MAX_LINES,
                  height: int = HEIGHT) -> np.ndarray:
    """Tile A and tile B side by side with a line between each drawn pair of inlier points.

    ``points_a``/``points_b`` are (n, 2) x, y in the pixels the match was reported in; ``scale_a`` and
    ``scale_b`` turn them into pixels of ``img_a``/``img_b`` (e.g. the working-image factor)."""
    a, fa = _to_height(_rgb(img_a), height)
    b, fb = _to_height(_rgb(img_b), height)
    canvas = np.full((height, a.shape[1] + GAP + b.shape[1], 3), 255, np.uint8)
    canvas[:, :a.shape[1]] = a
    x0 = a.shape[1] + GAP
    canvas[:, x0:] = b
    pa = np.asarray(points_a, np.float64).reshape(-1, 2) * scale_a * fa
    pb = np.asarray(points_b, np.float64).reshape(-1, 2) * scale_b * fb + [x0, 0]
    n = min(len(pa), len(pb))
    idx = pick_lines(n, max_lines)
    thick = max(1, round(height / 320))
    for colour, i in zip(_colours(len(idx)), idx):
        p, q = tuple(int(round(v)) for v in pa[i]), tuple(int(round(v)) for v in pb[i])
        cv2.line(canvas, p, q, colour, thick, cv2.LINE_AA)
        cv2.circle(canvas, p, 2 + thick, colour, -1, cv2.LINE_AA)
        cv2.circle(canvas, q, 2 + thick, colour, -1, cv2.LINE_AA)
    return canvas


def blend(img_a: np.ndarray, warped_b: np.ndarray, alpha: float, covered: np.ndarray | None = None) -> np.ndarray:
    """``(1 − alpha)·A + alpha·B`` where the warped B covers A; A alone elsewhere.

    ``covered`` is where B reaches in A's frame (non-zero = covered; e.g. a white image warped the same
    way); without it, non-black pixels of ``warped_b`` count as covered."""
    a = _rgb(img_a)
    b = _rgb(warped_b)
    if b.shape[:2] != a.shape[:2]:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    alpha = float(np.clip(alpha, 0.0, 1.0))
    mixed = cv2.addWeighted(a, 1.0 - alpha, b, alpha, 0.0)
    if covered is None:
        mask = b.max(axis=2) > 0
    else:
        c = np.asarray(covered)
        c = c.max(axis=2) if c.ndim == 3 else c
        if c.shape != a.shape[:2]:
            c = cv2.resize(c.astype(np.uint8), (a.shape[1], a.shape[0]), interpolation=cv2.INTER_NEAREST)
        mask = c > 0
    return np.where(mask[..., None], mixed, a).astype(np.uint8)


CONTRIBUTION_LABELS = {
    "distance": "learned distance",
    "sift": "SIFT inliers",
    "orb": "ORB inliers",
    "structure": "edge agreement (aligned)",
    "structure_identity": "edge agreement (as given)",
    "keypoints": "keypoints to match",
    "structure_local": "edge agreement (the part that stayed)",
    "structure_peak": "edge agreement (sharpness of its peak)",
}


def contribution_rows(contributions: dict) -> list[dict]:
    """One row per piece of evidence, strongest push first: name, log-odds, and which way it pushed."""
    rows = []
    for name, v in sorted(contributions.items(), key=lambda kv: -abs(kv[1])):
        v = float(v)
        way = "toward same place" if v > 0.05 else "toward different places" if v < -0.05 else "about neutral"
        rows.append({"evidence": CONTRIBUTION_LABELS.get(name, name), "log-odds push": round(v, 3), "direction": way})
    return rows


def footprint_image(img_a: np.ndarray, polygon, scale: float = 1.0, height: int = HEIGHT) -> np.ndarray:
    """Tile A with the part that tile B covers outlined (and the rest dimmed). ``polygon`` is (x, y) corners in
    the pixels the match was reported in; ``scale`` turns them into pixels of ``img_a``."""
    a, f = _to_height(_rgb(img_a), height)
    pts = np.round(np.asarray(polygon, np.float64).reshape(-1, 2) * scale * f).astype(np.int32)
    inside = np.zeros(a.shape[:2], np.uint8)
    cv2.fillPoly(inside, [pts], 1)
    out = np.where(inside[..., None] > 0, a, (a * 0.45).astype(np.uint8))
    cv2.polylines(out, [pts], True, (255, 214, 0), 2, cv2.LINE_AA)
    return out


__all__ = ["matches_image", "blend", "pick_lines", "contribution_rows", "footprint_image", "MAX_LINES"]
