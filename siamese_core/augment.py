"""Rotation and the other distortions that turn one source tile into its variants.

Each function takes a uint8 RGB tile and returns a new one of the same shape; :func:`make_variant`
applies a random rotation plus the requested distortions and returns the parameters it drew, so
the manifest records exactly what was done to every image. All randomness comes from the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

from .config import DISTORTIONS


def rotate(img: np.ndarray, angle: float) -> np.ndarray:
    """Rotate about the centre, same frame size, black corners (as the reference does)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def flip(img: np.ndarray, axis: int) -> np.ndarray:
    """axis 1 = left-right mirror, 0 = up-down."""
    return np.ascontiguousarray(img[:, ::-1] if axis == 1 else img[::-1])


def zoom_crop(img: np.ndarray, scale: float, dx: float, dy: float) -> np.ndarray:
    """Crop a window ``1/scale`` of the side (offset dx, dy in [-1, 1] of the free margin), resize back."""
    h, w = img.shape[:2]
    ch, cw = max(2, int(round(h / scale))), max(2, int(round(w / scale)))
    y = int(round((h - ch) / 2 * (1 + dy)))
    x = int(round((w - cw) / 2 * (1 + dx)))
    return cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def affine(img: np.ndarray, shear: float, sx: float, sy: float) -> np.ndarray:
    """Shear (radians) and anisotropic scale about the centre."""
    h, w = img.shape[:2]
    a = np.array([[sx, shear], [0.0, sy]])
    c = np.array([w / 2, h / 2])
    m = np.hstack([a, (c - a @ c)[:, None]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)


def occlude(img: np.ndarray, x: float, y: float, frac: float) -> np.ndarray:
    """Black out a square of side ``frac`` of the tile with its top-left corner at (x, y) in [0, 1)."""
    h, w = img.shape[:2]
    s = max(1, int(round(frac * min(h, w))))
    x0, y0 = int(x * (w - s)), int(y * (h - s))
    out = img.copy()
    out[y0:y0 + s, x0:x0 + s] = 0
    return out


def brightness_contrast(img: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """out = (img − mean)·contrast + mean + brightness·255."""
    f = img.astype(np.float32)
    mean = f.mean()
    return np.clip((f - mean) * contrast + mean + brightness * 255.0, 0, 255).astype(np.uint8)


def draw_distortion(kind: str, rng: np.random.Generator) -> dict:
    """Random parameters for one distortion, as a JSON-friendly dict."""
    if kind == "flip":
        return {"axis": int(rng.integers(0, 2))}
    if kind == "scale":
        return {"scale": float(rng.uniform(1.1, 1.5)), "dx": float(rng.uniform(-1, 1)), "dy": float(rng.uniform(-1, 1))}
    if kind == "affine":
        return {"shear": float(rng.uniform(-0.2, 0.2)), "sx": float(rng.uniform(0.85, 1.15)), "sy": float(rng.uniform(0.85, 1.15))}
    if kind == "blur":
        return {"sigma": float(rng.uniform(0.8, 2.0))}
    if kind == "occlude":
        return {"x": float(rng.uniform()), "y": float(rng.uniform()), "frac": float(rng.uniform(0.15, 0.35))}
    if kind == "brightness":
        return {"brightness": float(rng.uniform(-0.15, 0.15)), "contrast": float(rng.uniform(0.7, 1.3))}
    raise ValueError(f"unknown distortion {kind!r}; choose from {', '.join(DISTORTIONS)}")


def apply_distortion(img: np.ndarray, kind: str, p: dict) -> np.ndarray:
    if kind == "flip":
        return flip(img, p["axis"])
    if kind == "scale":
        return zoom_crop(img, p["scale"], p["dx"], p["dy"])
    if kind == "affine":
        return affine(img, p["shear"], p["sx"], p["sy"])
    if kind == "blur":
        return blur(img, p["sigma"])
    if kind == "occlude":
        return occlude(img, p["x"], p["y"], p["frac"])
    if kind == "brightness":
        return brightness_contrast(img, p["brightness"], p["contrast"])
    raise ValueError(f"unknown distortion {kind!r}; choose from {', '.join(DISTORTIONS)}")


def make_variant(img: np.ndarray, rng: np.random.Generator, distortions=()) -> tuple[np.ndarray, dict]:
    """A random-angle rotation (0–360°) followed by each requested distortion; returns (image, params)."""
    angle = float(rng.uniform(0.0, 360.0))
    out = rotate(img, angle)
    params: dict = {"angle": round(angle, 3)}
    for kind in distortions:
        p = draw_distortion(kind, rng)
        out = apply_distortion(out, kind, p)
        params[kind] = p
    return out, params
