"""Rotation and the other distortions that turn one source tile into its variants.

Two tiles of one place that an analyst compares are usually two acquisitions: another season or year,
another sensor, another sun angle, another footprint. Besides rotation and the older distortions
(mirror, zoom, shear, blur, occlusion, exposure), this module therefore models a new acquisition: colour balance
and contrast (``color``), ``gamma``, atmospheric ``haze``, cloud or terrain ``shadow``, ``season``
(vegetation hue and saturation), sensor ``resolution``, ``jpeg`` re-compression, sensor ``noise``,
ground-sample-distance change (``zoom`` 0.5-2x) and partial overlap (``shift``). :data:`ACQUISITION`
names these, and :func:`acquisition` applies a random few of them to simulate a second date.

Each function takes a uint8 RGB tile and returns a new one of the same shape; :func:`make_variant`
applies a random rotation plus the requested distortions and returns the parameters it drew, so
the manifest records exactly what was done to every image. Parameters are JSON-friendly (numbers,
lists, short strings; noise records its own seed), so ``apply_distortion(img, kind, params)``
reproduces an image from the manifest. All randomness comes from the ``numpy.random.Generator``
passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.config import DISTORTIONS

#: The distortions that model a second acquisition of the same place, in the order
#: :func:`acquisition` applies them: the scene (season, shadow), the atmosphere (haze), the sensor's
#: footprint and resolution (zoom, shift, resolution), its radiometry (color, gamma), then noise and
#: the archive's compression.
ACQUISITION = ("season", "shadow", "haze", "zoom", "shift", "resolution", "color", "gamma", "noise", "jpeg")
#: The same without the two that move the frame (``zoom``, ``shift``): a second date in the same frame, for the
#: pair kinds that set the frame themselves (overlap, coarse, changed).
SAME_FRAME = tuple(k for k in ACQUISITION if k not in ("zoom", "shift"))


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


def _to_uint8(f: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def color_balance(img: np.ndarray, gains, contrast: float = 1.0) -> np.ndarray:
    """Another sensor's or day's colour balance: per-channel gain (R, G, B), then contrast about the mean."""
    g = np.asarray(gains, np.float32).reshape(-1)
    if g.shape != (3,) or not np.all(g > 0):
        raise ValueError(f"color gains must be three positive numbers (R, G, B), got {list(gains)}; "
                         "use e.g. [1.1, 1.0, 0.9]")
    f = img.astype(np.float32) * g
    mean = f.mean()
    return _to_uint8((f - mean) * contrast + mean)


def gamma(img: np.ndarray, gamma: float) -> np.ndarray:
    """out = 255·(in/255)^gamma: gamma > 1 darkens mid-tones, < 1 brightens them; black and white stay."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}; use e.g. 0.7 (brighter) or 1.4 (darker)")
    lut = _to_uint8(255.0 * (np.arange(256, dtype=np.float64) / 255.0) ** gamma)
    return lut[img]


def haze(img: np.ndarray, strength: float, veil=(200, 210, 225)) -> np.ndarray:
    """Atmospheric haze: blend toward a bright grey-blue veil (``strength`` 0 = none, 1 = only veil)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"haze strength must be in [0, 1], got {strength}; use e.g. 0.3")
    v = np.asarray(veil, np.float32).reshape(1, 1, 3)
    return _to_uint8(img.astype(np.float32) * (1.0 - strength) + v * strength)


def shadow(img: np.ndarray, shape: str, cx: float, cy: float, angle: float, rx: float, ry: float,
           depth: float) -> np.ndarray:
    """Darken a soft region: an ellipse (``shape='blob'``, a cloud's shadow) centred at (cx, cy) in [0, 1]
    with radii rx, ry (fractions of the side) turned by ``angle`` radians, or a band (``'band'``, a ridge's
    or building's shadow) through (cx, cy) along ``angle`` with half-width rx. Flat core, soft edge;
    ``depth`` is how much light the core loses (0 = none, 1 = black)."""
    if shape not in ("blob", "band"):
        raise ValueError(f"shadow shape must be 'blob' or 'band', got {shape!r}")
    if not (rx > 0 and ry > 0):
        raise ValueError(f"shadow radii must be > 0, got rx={rx}, ry={ry}; use fractions of the side such as 0.2")
    h, w = img.shape[:2]
    side = float(min(h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    px, py = (xx - cx * (w - 1)) / side, (yy - cy * (h - 1)) / side
    u = px * np.cos(angle) + py * np.sin(angle)     # along the band / the ellipse's first axis
    v = -px * np.sin(angle) + py * np.cos(angle)    # across it
    q = (v / rx) ** 2 if shape == "band" else (u / rx) ** 2 + (v / ry) ** 2
    mask = np.exp(-(q ** 2))                        # super-Gaussian: flat core, soft edge
    return _to_uint8(img.astype(np.float32) * (1.0 - depth * mask)[..., None])


def season(img: np.ndarray, hue_shift: float, saturation: float) -> np.ndarray:
    """Another season: vegetation hues turned by ``hue_shift`` degrees (negative = toward yellow/brown),
    fully for olive to green to teal (80-160°), fading to none at 40° (orange/brown soil, roofs) and
    200° (water), and every pixel's saturation scaled by ``saturation``."""
    hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
    h = hsv[..., 0]
    weight = np.clip((h - 40.0) / 40.0, 0.0, 1.0) * np.clip((200.0 - h) / 40.0, 0.0, 1.0)
    hsv[..., 0] = np.mod(h + hue_shift * weight, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0.0, 1.0)
    return _to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0)


def resolution(img: np.ndarray, factor: float) -> np.ndarray:
    """A coarser sensor: shrink by ``factor`` (area average), then enlarge back (bilinear)."""
    if not factor >= 1.0:
        raise ValueError(f"resolution factor must be >= 1 (1 = unchanged), got {factor}; use e.g. 2.5")
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Re-compress as JPEG at ``quality`` (1-100) and decode, as archives and web maps do."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"jpeg quality must be 1-100, got {quality}; use e.g. 40")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.shape} {img.dtype} tile as JPEG; pass a uint8 RGB tile")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def noise(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Gaussian sensor noise of standard deviation ``sigma`` (0-255 units), drawn from ``seed``."""
    n = np.random.default_rng(int(seed)).normal(0.0, float(sigma), img.shape).astype(np.float32)
    return _to_uint8(img.astype(np.float32) + n)


def zoom(img: np.ndarray, scale: float, dx: float, dy: float) -> np.ndarray:
    """Another ground sample distance: ``scale`` > 1 zooms in (a crop resized back, as :func:`zoom_crop`),
    < 1 zooms out (the tile shrunk and placed on black, like rotation corners); dx, dy in [-1, 1] place
    the window (or the shrunk tile) within the free margin."""
    if not scale > 0:
        raise ValueError(f"zoom scale must be > 0, got {scale}; use 0.5-2 (2 = twice as close)")
    if scale >= 1.0:
        return zoom_crop(img, scale, dx, dy)
    h, w = img.shape[:2]
    sh, sw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    y = int(round((h - sh) / 2 * (1 + dy)))
    x = int(round((w - sw) / 2 * (1 + dx)))
    out = np.zeros_like(img)
    out[y:y + sh, x:x + sw] = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    return out


def shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Partial overlap: move the content by dx, dy (fractions of the width/height, rounded to whole
    pixels; positive = right/down) and fill what was uncovered with black."""
    h, w = img.shape[:2]
    ox, oy = int(round(dx * w)), int(round(dy * h))
    out = np.zeros_like(img)
    if abs(ox) >= w or abs(oy) >= h:
        return out
    dst = (slice(max(0, oy), h + min(0, oy)), slice(max(0, ox), w + min(0, ox)))
    out[dst] = img[max(0, -oy):h - max(0, oy), max(0, -ox):w - max(0, ox)]
    return out


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _draw_shadow(rng: np.random.Generator) -> dict:
    shape = "band" if rng.uniform() < 0.35 else "blob"
    return {"shape": shape, "cx": float(rng.uniform()), "cy": float(rng.uniform()),
            "angle": float(rng.uniform(0.0, np.pi)),
            "rx": float(rng.uniform(0.06, 0.18) if shape == "band" else rng.uniform(0.15, 0.4)),
            "ry": float(rng.uniform(0.15, 0.4)), "depth": float(rng.uniform(0.3, 0.65))}


def _draw_shift(rng: np.random.Generator) -> dict:
    m, a = rng.uniform(0.1, 0.4), rng.uniform(0.0, 2 * np.pi)
    return {"dx": float(m * np.cos(a)), "dy": float(m * np.sin(a))}


def _draw_haze(rng: np.random.Generator) -> dict:
    g = rng.uniform(185.0, 230.0)
    veil = [int(round(g - 10)), int(round(g - 2)), int(round(min(255.0, g + 12)))]  # grey, a little blue
    return {"strength": float(rng.uniform(0.1, 0.5)), "veil": veil}


_DRAW = {
    "flip": lambda rng: {"axis": int(rng.integers(0, 2))},
    "scale": lambda rng: {"scale": float(rng.uniform(1.1, 1.5)), "dx": float(rng.uniform(-1, 1)),
                          "dy": float(rng.uniform(-1, 1))},
    "affine": lambda rng: {"shear": float(rng.uniform(-0.2, 0.2)), "sx": float(rng.uniform(0.85, 1.15)),
                           "sy": float(rng.uniform(0.85, 1.15))},
    "blur": lambda rng: {"sigma": float(rng.uniform(0.8, 2.0))},
    "occlude": lambda rng: {"x": float(rng.uniform()), "y": float(rng.uniform()),
                            "frac": float(rng.uniform(0.15, 0.35))},
    "brightness": lambda rng: {"brightness": float(rng.uniform(-0.15, 0.15)), "contrast": float(rng.uniform(0.7, 1.3))},
    "color": lambda rng: {"gains": [float(g) for g in rng.uniform(0.8, 1.2, 3)],
                          "contrast": float(rng.uniform(0.75, 1.25))},
    "gamma": lambda rng: {"gamma": _log_uniform(rng, 0.6, 1.7)},
    "haze": _draw_haze,
    "shadow": _draw_shadow,
    "season": lambda rng: {"hue_shift": float(rng.uniform(-45.0, -10.0)), "saturation": float(rng.uniform(0.6, 1.4))},
    "resolution": lambda rng: {"factor": float(rng.uniform(1.5, 4.0))},
    "jpeg": lambda rng: {"quality": int(rng.integers(20, 71))},
    "noise": lambda rng: {"sigma": float(rng.uniform(2.0, 10.0)), "seed": int(rng.integers(0, 2**31 - 1))},
    "zoom": lambda rng: {"scale": _log_uniform(rng, 0.5, 2.0), "dx": float(rng.uniform(-1, 1)),
                         "dy": float(rng.uniform(-1, 1))},
    "shift": _draw_shift,
}

_APPLY = {
    "flip": lambda img, p: flip(img, p["axis"]),
    "scale": lambda img, p: zoom_crop(img, p["scale"], p["dx"], p["dy"]),
    "affine": lambda img, p: affine(img, p["shear"], p["sx"], p["sy"]),
    "blur": lambda img, p: blur(img, p["sigma"]),
    "occlude": lambda img, p: occlude(img, p["x"], p["y"], p["frac"]),
    "brightness": lambda img, p: brightness_contrast(img, p["brightness"], p["contrast"]),
    "color": lambda img, p: color_balance(img, p["gains"], p["contrast"]),
    "gamma": lambda img, p: gamma(img, p["gamma"]),
    "haze": lambda img, p: haze(img, p["strength"], p["veil"]),
    "shadow": lambda img, p: shadow(img, p["shape"], p["cx"], p["cy"], p["angle"], p["rx"], p["ry"], p["depth"]),
    "season": lambda img, p: season(img, p["hue_shift"], p["saturation"]),
    "resolution": lambda img, p: resolution(img, p["factor"]),
    "jpeg": lambda img, p: jpeg(img, p["quality"]),
    "noise": lambda img, p: noise(img, p["sigma"], p["seed"]),
    "zoom": lambda img, p: zoom(img, p["scale"], p["dx"], p["dy"]),
    "shift": lambda img, p: shift(img, p["dx"], p["dy"]),
}


def _unknown(kind) -> ValueError:
    return ValueError(f"unknown distortion {kind!r}; choose from {', '.join(DISTORTIONS)}")


def draw_distortion(kind: str, rng: np.random.Generator) -> dict:
    """Random parameters for one distortion, as a JSON-friendly dict."""
    if kind not in _DRAW:
        raise _unknown(kind)
    return _DRAW[kind](rng)


def apply_distortion(img: np.ndarray, kind: str, p: dict) -> np.ndarray:
    """Apply one distortion with parameters from :func:`draw_distortion` (or read back from a manifest)."""
    if kind not in _APPLY:
        raise _unknown(kind)
    try:
        return _APPLY[kind](img, p)
    except KeyError as e:
        raise ValueError(f"distortion {kind!r} needs parameter {e.args[0]!r}, got {sorted(p)}; "
                         f"draw them with draw_distortion({kind!r}, rng)") from None


def acquisition(img: np.ndarray, rng: np.random.Generator, k: int | None = None,
                kinds: tuple = ACQUISITION) -> tuple[np.ndarray, dict]:
    """The same place as a second acquisition might show it: ``k`` distinct distortions from ``kinds``
    (:data:`ACQUISITION`, or :data:`SAME_FRAME` to keep the frame; 2-4 at random when ``k`` is None), applied in
    that tuple's order. Returns (image, {kind: params}) in the order applied."""
    if k is None:
        k = int(rng.integers(2, 5))
    if not 1 <= int(k) <= len(kinds):
        raise ValueError(f"acquisition k must be 1-{len(kinds)}, got {k}; use None for 2-4 at random")
    chosen = set(rng.choice(len(kinds), size=int(k), replace=False).tolist())
    out, params = img, {}
    for i, kind in enumerate(kinds):
        if i in chosen:
            p = draw_distortion(kind, rng)
            out = apply_distortion(out, kind, p)
            params[kind] = p
    return out, params


def each_distortion(img: np.ndarray, rng: np.random.Generator, kinds=ACQUISITION) -> list[tuple[str, dict, np.ndarray]]:
    """(kind, params, image) for ``img`` put through each of ``kinds`` alone: a gallery of what each does."""
    out = []
    for kind in kinds:
        p = draw_distortion(kind, rng)
        out.append((kind, p, apply_distortion(img, kind, p)))
    return out


def describe(p: dict) -> str:
    """Short text for a parameter dict: ``gamma=1.32`` or ``gains=[1.05, 0.91, 1.12] · contrast=0.84``."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.2f}"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)
    return " · ".join(f"{k}={fmt(v)}" for k, v in p.items() if k != "seed")


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
