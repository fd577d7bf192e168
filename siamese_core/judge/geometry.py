"""A geometric second opinion: do the two tiles share keypoints that one similarity transform explains?

Two acquisitions of one place (other seasons, light, sensors, years) rarely look alike pixel for pixel,
but roads, field edges, buildings and shorelines keep their layout. This module finds that layout:
SIFT (as RootSIFT) and ORB keypoints on contrast-equalised grey tiles, Lowe's ratio test, and a RANSAC
similarity transform (rotation, isotropic scale, shift; mirrored views too). What it returns —
inlier counts, the estimated angle, scale and shift, and how well the tiles' edges agree once aligned —
is evidence in numbers, for :mod:`siamese_core.judge.fusion` to weigh with the learned distance.

Everything is OpenCV on one core per pair (``cv2.setNumThreads(1)``; OpenCV releases the GIL, so a
thread pool scores a batch on every core). Tiles of any size are worked on at most ``MAX_SIDE`` pixels a
side, keeping their aspect; the transform is reported in the original pixels of each tile.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

MAX_SIDE = 320            # working resolution: tiles are shrunk (never enlarged) to this longest side
MIN_FEATURES = 8          # fewer keypoints than this: "no evidence" (blank, flat or tiny tile)
SIFT_FEATURES = 250       # the strongest keypoints kept: their descriptors are half of SIFT's cost (see bench/RESULTS.md)
ORB_FEATURES = 500
RATIO = 0.8               # Lowe's ratio test
RANSAC_PX = 4.0           # reprojection tolerance at the working resolution
SCALE_RANGE = (0.2, 5.0)  # transforms outside this are not one place seen twice
STRUCTURE_SIDE = 96       # edge-agreement maps are compared at this size
STRUCTURE_BLOCKS = 4      # ... and, for the part of a place that stayed, in blocks of a 4x4 grid (see local_structure)
PEAK_SHIFTS = (4, 24)     # ... and against the same maps shifted this many pixels (see structure_peak)
PEAK_TOP = 0.05           # ... of which the best-agreeing share is what "agrees elsewhere too" means

cv2.setNumThreads(1)
# SIFT's descriptor of a mirrored patch is this permutation of the original's: rows of the 4x4 grid
# reversed, orientation bins negated (measured: 423 of 433 keypoints of a tile and its mirror agree)
_MIRROR = np.array([((3 - r) * 4 + c) * 8 + (-o) % 8 for r in range(4) for c in range(4) for o in range(8)])


@dataclass(frozen=True)
class TileFeatures:
    """Keypoints of one tile at the working resolution (``factor`` = working px / original px)."""

    gray: np.ndarray
    factor: float
    shape: tuple          # original (height, width)
    sift_pts: np.ndarray
    sift_desc: np.ndarray | None
    orb_pts: np.ndarray
    orb_desc: np.ndarray | None
    edges: np.ndarray     # complex edge-orientation map (STRUCTURE_SIDE²), see _edge_field
    enlarged_cache: dict = field(default_factory=dict, compare=False, repr=False)  # side → see enlarged()

    @property
    def n_keypoints(self) -> int:
        return int(len(self.sift_pts))


@dataclass(frozen=True)
class GeoMatch:
    """The geometric evidence for one pair. ``transform`` maps tile B's original pixels onto tile A's."""

    inliers: int = 0             # of the better method
    matches: int = 0             # tentative matches of the better method (ratio test passed)
    sift_inliers: int = 0
    orb_inliers: int = 0
    method: str = ""             # "sift" or "orb" ("" when neither found a transform)
    mirrored: bool = False
    angle: float = 0.0           # degrees: B is A turned this much counter-clockwise (-180..180)
    scale: float = 1.0           # how much larger B shows the ground than A (2 = B is zoomed in 2×)
    shift: tuple = (0.0, 0.0)
    transform: tuple = ()        # 2x3 affine as nested tuples, B → A (original pixels)
    work_transform: tuple = ()   # the same between the working-resolution images (see working_image)
    structure: float = 0.0       # edge agreement of the aligned tiles, -1..1 (0 = unrelated)
    structure_identity: float = 0.0  # the same, with the tiles laid on each other as they are
    structure_local: float = 0.0     # the same over the best-agreeing quarter of the tiles (see local_structure)
    structure_peak: float = 0.0      # how far the agreement as laid stands above shifted ones (see structure_peak)
    points_a: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32), repr=False)
    points_b: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32), repr=False)
    reason: str = ""             # why the evidence is thin, when it is
    keypoints_a: int = 0         # how much each tile had to match (SIFT keypoints found on it)
    keypoints_b: int = 0
    polygon: tuple = ()          # the part of A that B covers: (x, y) corners in A's original pixels
    overlap: float = 0.0         # that part's share of A's area (0 when no transform was found)

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0

    @property
    def found(self) -> bool:
        return bool(self.transform)

    def sentence(self) -> str:
        """One line for people, e.g. 'matched at 37° rotation, 1.80× scale, 212 inliers (SIFT)'."""
        if not self.found:
            return f"no geometric match: {self.reason or 'no consistent keypoints'}"
        mirror = ", mirrored" if self.mirrored else ""
        return (f"matched at {self.angle:.0f}° rotation, {self.scale:.2f}× scale{mirror}, "
                f"{self.inliers} inliers of {self.matches} matches ({self.method.upper()})")

    def as_row(self) -> dict:
        """The columns `score --pairs` adds (plain values)."""
        return {"inliers": self.inliers, "sift_inliers": self.sift_inliers, "orb_inliers": self.orb_inliers,
                "angle": round(self.angle, 2) if self.found else "", "scale": round(self.scale, 4) if self.found else "",
                "overlap": round(self.overlap, 4) if self.found else "",
                "polygon": polygon_text(self.polygon) if self.found else "",
                "structure": round(self.structure, 4), "geometry": self.sentence()}


def polygon_text(polygon) -> str:
    """A polygon as compact JSON text, ``[[x, y], ...]`` with one decimal (for CSV cells)."""
    return "[" + ",".join(f"[{x:.1f},{y:.1f}]" for x, y in polygon) + "]"


def working_image(img: np.ndarray) -> tuple[np.ndarray, float]:
    """The tile shrunk (never enlarged) to at most MAX_SIDE a side, and the factor used."""
    h, w = img.shape[:2]
    f = min(1.0, MAX_SIDE / max(h, w))
    if f < 1.0:
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img), f


def _edge_field(gray: np.ndarray) -> np.ndarray:
    """Edge orientation as a complex map with the angle doubled: a road reads the same whether it is
    darker or brighter than its surroundings (seasons flip contrast), weighted by the square root of
    its strength and smoothed, so that near-misses of a few pixels still agree."""
    g = cv2.resize(gray, (STRUCTURE_SIDE, STRUCTURE_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy) + 1e-6
    z = (gx + 1j * gy) ** 2 / mag ** 1.5
    re = cv2.GaussianBlur(z.real.astype(np.float32), (0, 0), 1.5)
    im = cv2.GaussianBlur(z.imag.astype(np.float32), (0, 0), 1.5)
    return (re + 1j * im).astype(np.complex64)


def _corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    if mask is not None:
        if mask.mean() < 0.2:
            return 0.0
        a, b = a[mask], b[mask]
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.sum(np.abs(a) ** 2)) * float(np.sum(np.abs(b) ** 2)))
    num = float(np.sum(a.real * b.real + a.imag * b.imag))  # Re <b, a>, without waking a BLAS thread pool
    return num / den if den > 1e-9 else 0.0


def local_structure(a: np.ndarray, b: np.ndarray, blocks: int = STRUCTURE_BLOCKS) -> float:
    """Edge agreement of the part of a place that stayed: the two tiles' edge maps as laid, compared block by
    block on a ``blocks`` x ``blocks`` grid, the best quarter of the blocks averaged. A place where new houses
    cover half the ground (or a cleared wood, a new road) still agrees where it did not change, while the
    whole-tile agreement is diluted by the changed half. With it the fused verdict let through fewer different
    places (1.6 → 1.2 % on the test split) and left fewer pairs undecided (7.6 → 4.2 %; bench/RESULTS.md)."""
    k = a.shape[0] // blocks
    corr = sorted((_corr(a[i:i + k, j:j + k], b[i:i + k, j:j + k])
                   for i in range(0, k * blocks, k) for j in range(0, k * blocks, k)), reverse=True)
    return float(np.mean(corr[:max(1, len(corr) // 4)]))


def _ring(side: int, lo: int, hi: int) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side]
    r = np.hypot(np.minimum(yy, side - yy), np.minimum(xx, side - xx))  # circular shift distance
    return (r >= lo) & (r <= hi)


_PEAK_RING = _ring(STRUCTURE_SIDE, *PEAK_SHIFTS)


def structure_peak(a: np.ndarray, b: np.ndarray) -> float:
    """How far the edge agreement of two edge maps as laid stands above their agreement shifted 4-24 px (of 96):
    the agreement at zero shift minus the mean of the best 5 % of the shifted ones (circular shifts, one FFT).

    One place seen twice agrees at one placement only, so its agreement drops as soon as one map moves. Two
    different places with a look-alike layout (freeway lanes, rows of parked aircraft, furrows, orchards at
    one heading) agree about as well at many placements: their agreement as laid can be as high as a changed
    place's, but it is no peak. With it as a fusion input, calibrated on different places of the same kind,
    the verdict let through fewer look-alikes without losing the changed places (bench/RESULTS.md)."""
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.sum(np.abs(a) ** 2)) * float(np.sum(np.abs(b) ** 2)))
    if den <= 1e-9:
        return 0.0
    c = np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))).real / den
    shifted = np.sort(c[_PEAK_RING])
    return float(c[0, 0] - shifted[-max(1, int(len(shifted) * PEAK_TOP)):].mean())


def _rootsift(desc: np.ndarray | None) -> np.ndarray | None:
    if desc is None:
        return None
    d = desc / (desc.sum(axis=1, keepdims=True) + 1e-7)
    return np.sqrt(d).astype(np.float32)


_LOCAL = threading.local()


def _detectors():
    """(CLAHE, SIFT, ORB) of this thread: OpenCV's objects keep working buffers, so threads that share one
    can disturb each other's results (seen as one pair's inlier count changing between runs)."""
    if not hasattr(_LOCAL, "tools"):
        _LOCAL.tools = (cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)),
                        cv2.SIFT_create(nfeatures=SIFT_FEATURES, contrastThreshold=0.03),
                        cv2.ORB_create(nfeatures=ORB_FEATURES, fastThreshold=10))
    return _LOCAL.tools


def _detect(det, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    kp, desc = det.detectAndCompute(gray, None)
    if desc is None or not kp:
        return np.zeros((0, 2), np.float32), None
    return np.float32([k.pt for k in kp]), desc


KEYPOINT_SCALE, KEYPOINT_MIN_SIDE = 0.75, 192  # keypoints are found on the working tile shrunk by this much,
# not below this side. SIFT doubles the image it is given first, so its cost grows with 4× the area; on the
# development pairs 0.75 (192 px for a 256 px tile) kept every ROC-AUC of the full size and cut SIFT's time by a
# third. ORB on the same smaller image: 0.55× its time, and its inliers separated same from different places
# better than at full size on every kind of pair but distorted copies (bench/RESULTS.md, session 5).


def _keypoint_image(gray: np.ndarray) -> tuple[np.ndarray, float]:
    h, w = gray.shape
    f = min(1.0, max(KEYPOINT_SCALE, KEYPOINT_MIN_SIDE / max(h, w)))
    if f >= 1.0:
        return gray, 1.0
    return cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA), f


def _keypoints(gray: np.ndarray) -> tuple:
    """(SIFT points, RootSIFT descriptors, ORB points, ORB descriptors) of a CLAHE'd grey working image."""
    _, sift, orb = _detectors()
    kimg, k = _keypoint_image(gray)
    (sp, sd), (op, od) = _detect(sift, kimg), _detect(orb, kimg)
    if k < 1.0:  # keypoints back to the working tile's pixels (centres of pixels kept in place)
        sp, op = (sp + 0.5) / k - 0.5, (op + 0.5) / k - 0.5
    return sp, _rootsift(sd), op, od


def features(img: np.ndarray, factor: float = 1.0, shape: tuple | None = None) -> TileFeatures:
    """Keypoints and the edge map of one uint8 tile (RGB or grey, any size). Pure function.

    A caller that already shrank the tile with :func:`working_image` passes that ``factor`` and the
    original ``shape``, so that transforms are still reported in the original pixels."""
    img = np.asarray(img, np.uint8)
    shape = tuple(shape or img.shape[:2])
    small, f = working_image(img)
    f *= factor
    clahe = _detectors()[0]
    gray = clahe.apply(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small)
    return TileFeatures(gray, f, shape, *_keypoints(gray), _edge_field(gray))


@dataclass(frozen=True)
class Keypoints:
    """SIFT keypoints of one image with their scale and orientation, in the image's own pixels."""

    pts: np.ndarray      # (N, 2) float32 x, y
    sizes: np.ndarray    # (N,) float32 diameter of the keypoint's neighbourhood
    angles: np.ndarray   # (N,) float32 degrees, OpenCV's convention
    desc: np.ndarray     # (N, 128) float32 RootSIFT (unit length)


def keypoints(img: np.ndarray, n: int = SIFT_FEATURES, working: bool = True) -> Keypoints:
    """The ``n`` strongest SIFT keypoints of a uint8 image (RGB or grey) found as :func:`features` finds them
    (CLAHE'd grey; with ``working`` shrunk to the working resolution and the keypoint scale first, else on the
    image as given), with sizes and angles, reported in the image's pixels. For callers that place keypoints
    by their scale and orientation (``siamese_core.scale.locate``'s keypoint votes)."""
    img = np.asarray(img, np.uint8)
    f = 1.0
    if working:
        img, f = working_image(img)
    clahe = _detectors()[0]
    gray = clahe.apply(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img)
    k = 1.0
    if working:
        gray, k = _keypoint_image(gray)
    if not hasattr(_LOCAL, "sift_n"):
        _LOCAL.sift_n = {}
    sift = _LOCAL.sift_n.get(n) or _LOCAL.sift_n.setdefault(n, cv2.SIFT_create(nfeatures=n, contrastThreshold=0.03))
    kp, desc = sift.detectAndCompute(gray, None)
    if desc is None or not kp:
        z = np.zeros(0, np.float32)
        return Keypoints(np.zeros((0, 2), np.float32), z, z, np.zeros((0, 128), np.float32))
    g = f * k
    pts = (np.float32([p.pt for p in kp]) + 0.5) / g - 0.5
    return Keypoints(pts.astype(np.float32), np.float32([p.size for p in kp]) / g, np.float32([p.angle for p in kp]),
                     _rootsift(desc))


RESAMPLE_RATIO = 1.3  # tiles whose working sides differ more than this are also matched at one resolution
RESAMPLE_BELOW = 30   # ... unless their keypoints already agree this well as they are


def enlarged(tf: TileFeatures, side: int) -> TileFeatures:
    """The keypoints of tile ``tf`` found again on its working image enlarged to ``side`` pixels (longest
    side): a coarser tile brought to the other tile's pixel size, so that both tiles' keypoints are found at
    the same scale. SIFT alone finds few of a coarse tile's keypoints at the scale of the sharper one's
    (on two dates at 2-4× coarser resolution, inliers' ROC-AUC rose from 0.93 to 1.0 on the development
    pairs). Cached on ``tf``: a tile met in many pairs is enlarged once per size."""
    got = tf.enlarged_cache.get(side)
    if got is None:
        h, w = tf.gray.shape
        f = side / max(h, w)
        big = cv2.resize(tf.gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_CUBIC)
        got = tf.enlarged_cache[side] = TileFeatures(big, tf.factor * f, tf.shape, *_keypoints(big), tf.edges)
    return got


def _ransac(pb: np.ndarray, pa: np.ndarray) -> tuple[np.ndarray | None, int]:
    if len(pa) < 3:
        return None, 0
    m, inl = cv2.estimateAffinePartial2D(pb, pa, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX,
                                         maxIters=2000, confidence=0.995, refineIters=10)
    if m is None or inl is None:
        return None, 0
    s = math.hypot(m[0, 0], m[1, 0])
    if not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]:
        return None, 0
    return m, int(inl.sum())


def _knn(da: np.ndarray, db: np.ndarray, norm: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio test: (index in B, index in A) of each descriptor of B whose nearest neighbour in A is
    clearly nearer than the second nearest. Every distance comes from one matrix product: RootSIFT descriptors
    have unit length, and ORB's bits read as ±1 give Hamming distances exactly (three and 1.4 times faster
    than OpenCV's brute-force matcher, with the same matches). The product is OpenCV's, on this thread:
    NumPy's would wake OpenBLAS's thread pool, whose spinning threads slowed the rest of a pair on one core
    by about 5 % (measured)."""
    none = np.zeros(0, np.intp)
    if da is None or db is None or len(da) < 2 or len(db) < 2:
        return none, none
    if norm == cv2.NORM_L2:
        d = np.maximum(2.0 - 2.0 * cv2.gemm(db, da, 1.0, None, 0.0, flags=cv2.GEMM_2_T), 0.0)  # squared, B × A
        ratio = RATIO * RATIO
    else:  # binary (ORB): with bits as ±1, Hamming = (bits − dot) / 2, exact in float32
        bits = da.shape[1] * 8
        sa, sb = (np.unpackbits(x, axis=1).astype(np.float32) * 2.0 - 1.0 for x in (da, db))
        d = (bits - cv2.gemm(sb, sa, 1.0, None, 0.0, flags=cv2.GEMM_2_T)) * 0.5
        ratio = RATIO
    rows = np.arange(len(db))
    near = d.argmin(axis=1)
    first = d[rows, near]
    d[rows, near] = np.inf  # the second nearest is then the smallest left (cheaper than a partition)
    keep = first < ratio * d.min(axis=1)  # a tie for nearest never passes, whichever index argmin chose
    return rows[keep], near[keep]


def _attempt(pa, da, pb, db, norm) -> tuple[np.ndarray | None, int, int, np.ndarray]:
    """(transform B→A in working px, inliers, matches, inlier mask) for one descriptor set."""
    ib, ia = _knn(da, db, norm)
    if len(ib) < 3:
        return None, 0, len(ib), np.zeros((0, 4), np.float32)
    src = pb[ib]
    dst = pa[ia]
    m, n = _ransac(src, dst)
    if m is None:
        return None, 0, len(ib), np.zeros((0, 4), np.float32)
    err = np.linalg.norm(src @ m[:, :2].T + m[:, 2] - dst, axis=1)
    keep = err <= RANSAC_PX
    return m, n, len(ib), np.hstack([dst[keep], src[keep]])


def _mirror_x(width: int) -> np.ndarray:
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def match(fa: TileFeatures, fb: TileFeatures) -> GeoMatch:
    """The geometric evidence that tiles A and B show the same place. Never raises on thin input.

    Tiles of different pixel sizes (a coarser second image) are matched as they are and, unless that is
    decisive already, with the smaller one enlarged to the other's size (:func:`enlarged`); the better
    attempt counts. The result says which part of A the tile B covers (``polygon``, ``overlap``)."""
    m = _match(fa, fb)
    sa, sb = max(fa.gray.shape), max(fb.gray.shape)
    if m.inliers < RESAMPLE_BELOW and max(sa, sb) > RESAMPLE_RATIO * min(sa, sb):
        m2 = _match(fa, enlarged(fb, sa)) if sa > sb else _match(enlarged(fa, sb), fb)
        if m2.inliers > m.inliers:
            m = m2
    extra = {"keypoints_a": fa.n_keypoints, "keypoints_b": fb.n_keypoints}
    if m.found:
        extra["polygon"], extra["overlap"] = footprint_on_a(m.transform, fa.shape, fb.shape)
    return dataclasses.replace(m, **extra)


def footprint_on_a(transform, shape_a: tuple, shape_b: tuple) -> tuple[tuple, float]:
    """The part of tile A that tile B covers, given the transform from B's pixels to A's: the polygon
    (B's frame mapped onto A, clipped to A's frame; (x, y) in A's pixels) and its share of A's area."""
    t = np.asarray(transform, np.float64)
    (ha, wa), (hb, wb) = shape_a[:2], shape_b[:2]
    corners = np.float64([[0, 0], [wb, 0], [wb, hb], [0, hb]]) @ t[:, :2].T + t[:, 2]
    if np.linalg.det(t[:, :2]) < 0:  # a mirrored B: keep the corners in one turning direction
        corners = corners[::-1]
    area, poly = cv2.intersectConvexConvex(np.float32(corners), np.float32([[0, 0], [wa, 0], [wa, ha], [0, ha]]))
    if poly is None or area <= 0:
        return (), 0.0
    return tuple((float(x), float(y)) for x, y in poly.reshape(-1, 2)), float(min(1.0, area / (wa * ha)))


def _match(fa: TileFeatures, fb: TileFeatures) -> GeoMatch:
    ident = _corr(fa.edges, fb.edges)
    laid = {"structure_identity": ident, "structure_local": local_structure(fa.edges, fb.edges),
            "structure_peak": structure_peak(fa.edges, fb.edges)}  # the evidence of the tiles as laid
    if fa.n_keypoints < MIN_FEATURES or fb.n_keypoints < MIN_FEATURES:
        which = "A" if fa.n_keypoints < MIN_FEATURES else "B"
        return GeoMatch(structure=ident, **laid,
                        reason=f"tile {which} has almost no texture (blank, flat or tiny): no keypoints to match")
    wb = fb.gray.shape[1]
    best = None  # (inliers, matches, method, mirrored, m_working, pts)
    results = {}
    # mirrored views are tried with SIFT only (its descriptors mirror by a permutation; ORB's do not)
    for method, mirrored in (("sift", False), ("sift", True), ("orb", False)):
        if mirrored and results.get("sift", 0) >= 25:
            continue  # a plain match this strong is not a mirror image: skip the mirrored attempt
        if method == "sift":
            pb = fb.sift_pts
            db = fb.sift_desc[:, _MIRROR] if (mirrored and fb.sift_desc is not None) else fb.sift_desc
            if mirrored:
                pb = pb.copy()
                pb[:, 0] = wb - 1 - pb[:, 0]
            m, n, k, pts = _attempt(fa.sift_pts, fa.sift_desc, pb, db, cv2.NORM_L2)
        else:
            m, n, k, pts = _attempt(fa.orb_pts, fa.orb_desc, fb.orb_pts, fb.orb_desc, cv2.NORM_HAMMING)
        results[method] = max(results.get(method, 0), n)
        if m is not None and (best is None or n > best[0]):
            best = (n, k, method, mirrored, m, pts)
    if best is None or best[0] < 4:
        return GeoMatch(sift_inliers=results["sift"], orb_inliers=results["orb"], structure=ident, **laid,
                        matches=best[1] if best else 0,
                        reason="no set of keypoints agrees on one rotation, scale and shift")
    n, k, method, mirrored, m, pts = best
    # working px of B (mirrored if so) → working px of A, then to original pixels of each tile
    m3 = np.vstack([m, [0, 0, 1]])
    if mirrored:
        m3 = m3 @ _mirror_x(wb)
    full = np.diag([1 / fa.factor, 1 / fa.factor, 1]) @ m3 @ np.diag([fb.factor, fb.factor, 1])
    aligned = _aligned_structure(fa, fb, m3)
    a2 = full[:2, :2]
    scale = 1.0 / math.sqrt(abs(np.linalg.det(a2)))  # how much larger B shows the ground than A
    r = a2 @ np.diag([-1.0, 1.0]) if mirrored else a2
    angle = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    pa = pts[:, :2] / fa.factor
    pb = pts[:, 2:].copy()
    if mirrored:
        pb[:, 0] = wb - 1 - pb[:, 0]
    pb = pb / fb.factor
    return GeoMatch(inliers=n, matches=k, sift_inliers=results["sift"], orb_inliers=results["orb"], method=method,
                    mirrored=mirrored, angle=angle, scale=scale,
                    shift=(float(full[0, 2]), float(full[1, 2])),
                    transform=tuple(tuple(float(v) for v in row) for row in full[:2]),
                    work_transform=tuple(tuple(float(v) for v in row) for row in m3[:2]),
                    structure=max(ident, aligned), **laid,
                    points_a=pa.astype(np.float32), points_b=pb.astype(np.float32))


def _aligned_structure(fa: TileFeatures, fb: TileFeatures, m3: np.ndarray) -> float:
    """Edge agreement with B warped onto A by the working-resolution transform ``m3``, over the overlap."""
    ha, wa = fa.gray.shape
    s = STRUCTURE_SIDE
    warped = cv2.warpAffine(fb.gray, m3[:2], (wa, ha), flags=cv2.INTER_LINEAR)
    valid = cv2.warpAffine(np.ones_like(fb.gray), m3[:2], (wa, ha), flags=cv2.INTER_NEAREST)
    eb = _edge_field(warped)
    mask = cv2.resize(valid, (s, s), interpolation=cv2.INTER_NEAREST).astype(bool)
    mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return _corr(fa.edges, eb, mask)


def match_tiles(a: np.ndarray, b: np.ndarray) -> GeoMatch:
    """Geometric evidence for two uint8 tiles (any sizes)."""
    return match(features(a), features(b))


def warp_onto(a: np.ndarray, b: np.ndarray, m: GeoMatch, working: bool = False) -> np.ndarray:
    """Tile B resampled into tile A's frame by the match's transform (black where B does not reach).

    ``a`` and ``b`` are the original tiles, or with ``working=True`` their :func:`working_image` copies."""
    if not m.found:
        return cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    t = np.array(m.work_transform if working else m.transform, np.float64)
    return cv2.warpAffine(b, t, (a.shape[1], a.shape[0]), flags=cv2.INTER_LINEAR)


__all__ = ["TileFeatures", "GeoMatch", "Keypoints", "keypoints", "features", "match", "match_tiles", "warp_onto",
           "working_image", "MAX_SIDE", "enlarged", "footprint_on_a", "polygon_text", "KEYPOINT_SCALE",
           "local_structure", "structure_peak"]
