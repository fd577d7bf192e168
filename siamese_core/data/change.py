"""Simulated change: the same place after part of it was rebuilt, cleared or crossed by a new road.

Real places change between two dates: estates appear on bare land, woods are cleared, roads are laid.
A judge trained and calibrated only on places that kept their look learns that "nothing matches" means
"another place". :func:`simulate_change` replaces a part of a tile (15–50 % of it by default) so that
training views and labelled ``changed`` pairs teach the opposite: the rest of the place still counts.
Three kinds of change, drawn at random, each with soft edges so that the seam itself is no cue:

- ``built``: a patch of another place (the ``donor``), its colours pulled half-way to the local ones;
- ``cleared``: the region smoothed flat, as a field or a cleared wood looks;
- ``road``: a straight band of one tone across the tile.

:func:`displace` adds what another viewing angle does to a place years later: every part of it shifted
by a few pixels in its own direction (tall things lean differently, the orthorectification differs). It
leaves the layout (the edges at a coarse scale) in place but moves fine detail enough that keypoints
no longer agree on one transform, as on real pairs of changed places, where SIFT finds almost nothing.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

CHANGES = ("built", "cleared", "road")


def _patch(donor: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    dh, dw = donor.shape[:2]
    if dh < h or dw < w:
        return cv2.resize(donor, (w, h), interpolation=cv2.INTER_LINEAR)
    y, x = int(rng.integers(0, dh - h + 1)), int(rng.integers(0, dw - w + 1))
    return donor[y:y + h, x:x + w]


def _region(kind: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    if kind == "road":
        p = rng.uniform(0, 1, 2) * (w, h)
        t = rng.uniform(0, math.pi)
        d = np.array([math.cos(t), math.sin(t)]) * 2 * max(h, w)
        cv2.line(m, tuple(int(v) for v in p - d), tuple(int(v) for v in p + d), 1,
                 max(2, int(rng.uniform(0.02, 0.06) * w)))
    else:
        centre = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
        size = (float(rng.uniform(0.15, 0.5) * w), float(rng.uniform(0.15, 0.5) * h))
        cv2.fillConvexPoly(m, cv2.boxPoints((centre, size, float(rng.uniform(0, 180)))).astype(np.int32), 1)
    return m


def simulate_change(img: np.ndarray, donor: np.ndarray, rng: np.random.Generator,
                    share: tuple = (0.15, 0.5)) -> np.ndarray:
    """``img`` (uint8 RGB) with a random share in ``share`` of it changed (see the module docstring);
    ``donor`` is another place's image, the source of new buildings. Pure function of its inputs and ``rng``."""
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    covered = np.zeros((h, w), np.uint8)
    target = float(rng.uniform(*share))
    for _ in range(12):
        if covered.mean() >= target:
            break
        kind = CHANGES[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        m = _region(kind, h, w, rng)
        if not m.any() or (covered.any() and (covered | m).mean() > share[1] + 0.1):
            continue  # nothing, or a region that would change far more of the place than asked
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1.2)[..., None]
        local = out[m > 0]
        if kind == "built":
            fill = _patch(donor, h, w, rng).astype(np.float32)
            dm, ds = fill[m > 0].mean(0), fill[m > 0].std(0) + 1e-3
            lm, ls = local.mean(0), local.std(0) + 1e-3
            k = rng.uniform(0.3, 0.7)  # half-way to the local colour statistics
            fill = (fill - dm) * (k * ls / ds + (1 - k)) + (k * lm + (1 - k) * dm)
        elif kind == "cleared":
            fill = cv2.GaussianBlur(out, (0, 0), 0.08 * w) * rng.uniform(0.9, 1.15, 3)[None, None, :]
            fill = fill + rng.normal(0, 3, fill.shape)
        else:
            tone = float(local.mean()) + float(rng.choice([-1, 1]) * rng.uniform(25, 60))
            fill = np.full_like(out, tone) * rng.uniform(0.95, 1.05, 3)[None, None, :] + rng.normal(0, 3, out.shape)
        out = out * (1 - soft) + fill * soft
        covered |= m
    return np.clip(out, 0, 255).astype(np.uint8)


def displace(img: np.ndarray, rng: np.random.Generator, amplitude: float, scale: float) -> np.ndarray:
    """``img`` with each part shifted by a smooth random field: about ``amplitude`` pixels (standard
    deviation), varying over about ``scale`` pixels."""
    h, w = img.shape[:2]
    field = [cv2.GaussianBlur(rng.normal(size=(h, w)).astype(np.float32), (0, 0), scale) for _ in range(2)]
    dx, dy = (f * (amplitude / (f.std() + 1e-9)) for f in field)
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, xx + dx, yy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def changed_view(img: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The place as a later, changed acquisition shows it: :func:`simulate_change`, and for half of the
    draws :func:`displace` by 1-3 px in 256, varying over 24 px (another viewing angle: each building or tree
    leans as one piece; a field varying over 8 px at 2-6 px swirled fields and roofs into shapes no
    acquisition shows)."""
    out = simulate_change(img, donor, rng)
    if rng.random() < 0.5:
        k = max(img.shape[:2]) / 256.0
        out = displace(out, rng, float(rng.uniform(1.0, 3.0)) * k, 24.0 * k)
    return out


__all__ = ["simulate_change", "displace", "changed_view", "CHANGES"]
