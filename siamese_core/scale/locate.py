"""Locate a tile in a large scene: "where in this 20,000 × 20,000 px image does my tile lie?", coarse to fine.

Why this module exists: judging a tile against every place of a scene one pair at a time would take hours. Two
first passes, both from an index built once per scene and model and cached on disk, name the places worth a
closer look:

* **Keypoint votes** (checked first). The scene's SIFT keypoints are found in overlapping blocks (:data:`KP_BLOCK`
  px every :data:`KP_STRIDE`, read at :data:`KP_SCALE`, the scale a 256 px tile's keypoints are found at by
  :mod:`siamese_core.judge.geometry`), each block keeping those in its own part; their positions, sizes, angles and
  blocks go to ``keypoints.npy``, their RootSIFT descriptors to an 8-bit FAISS index (128 B a keypoint): flat
  (exhaustive) up to :data:`KP_IVF_MIN` keypoints, partitioned above (:func:`partition_keypoints`: a tile's
  keypoints visit :data:`KP_NPROBE` of about 4·sqrt(n) cells, so a 20,000² scene's search stays well under a
  second). The tile's
  keypoints (rotation-invariant: the tile is not turned) are matched with all of them (ratio test), and each match
  votes for where the tile's centre lies, by the two keypoints' angles and sizes; the peaks are the regions
  (:func:`vote_regions`).
* **Embedding search.** The tower's embeddings place views of one place close together, so the scene is cut into
  overlapping windows at several scales (sides :data:`SIDES` scene px, stride a quarter of the side), each resized
  to the model's input and embedded into a FAISS index. The tile's embedding (and those of its turns) is searched
  among the windows (:func:`candidates`).

The regions of the votes, then the embeddings' hits, get the geometric check: the tile is matched by keypoints
(any angle, any scale) against the scene region around the place, :data:`ENLARGE` times as wide, read at the tile's
resolution (for a vote's region, the transform its matches agree on when they agree better); the transform found
lays the scene onto the tile's frame, and :meth:`Scorer.judge` gives the fused verdict of that aligned pair. The
first confident hit ends the search; "not found" when no hit passes the verdict. While the votes' regions of the
tile as given judge no place the same, those of the tile resampled (:data:`RESAMPLE`: ×2, for tiles up to 320 px;
a tile at another resolution) are checked before the embeddings' hits. When no region of the tile as given gave a
transform, the best candidate's window itself is judged as laid, and its own transform, if any, gives the polygon.

The index and how it is built and cached: :mod:`siamese_core.scale.scene_index`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from ..data.images import decode_image
from ..judge.geometry import RATIO, keypoints, match
from .search import search_index

from .scene_index import SceneIndex, scene_index

TOP = 48                  # nearest windows per turn of the query
TURNS = 8                 # the query is the tile turned by every 360/TURNS degrees (right angles exactly)
CHECK = 40                # hits given the geometric check at most (spread over the scene) ...
BUDGET_S = 1.5            # ... and no new one started after this many seconds on a tile
ENLARGE = 1.5             # the region checked around a hit, in hit sides (more inliers than 2: bench/RESULTS.md)
REGION_MAX = 768          # the region is read at most this many pixels a side
MIN_INLIERS = 8           # fewer keypoints agreeing on a transform: the hit is not checked further
DECISIVE = 30             # this many inliers and a "same" verdict: stop early
KP_TILE = 500             # the tile's strongest keypoints matched against the scene's
KP_RATIO = RATIO          # Lowe's ratio test on the two nearest scene keypoints
VOTE_BIN = 16             # scene px a side of the cells the implied tile centres are counted in
VOTE_RADIUS = 40          # votes within this many scene px of a peak are its support
VOTE_REGIONS = 4          # peaks (at least VOTE_MIN votes, VOTE_APART px apart) checked before the embeddings' hits
VOTE_MIN = 3
VOTE_APART = 96
VOTE_RANSAC_PX = 4.0      # the votes' own transform: reprojection tolerance in tile px (times the size ratio)
RESAMPLE = (2.0,)         # while the tile as given is not found, its votes at these resamplings (another resolution;
                          # ×0.5 placed none more on the bench and its checks delayed the embedding hits: RESULTS.md)
RESAMPLE_SIDES = (96, 640)  # ... when the resampled tile's longest side lies within these (SIFT works at <= 320 px)


@dataclass
class Location:
    """Where one tile lies in the scene (``found``), or the best candidate's score when it lies nowhere."""

    tile: str
    found: bool
    polygon: list            # [[x, y], ...] scene pixels (empty when not found)
    score: float | None      # the fused score of the best candidate (lower = more alike)
    polygon_crs: list | None = None   # the same corners in the scene's CRS (georeferenced scenes only)
    evidence: str = ""
    checked: int = 0         # candidates given the geometric check
    seconds: float = 0.0
    source: str = ""         # which pass gave the found polygon: "keypoint votes" or "embedding search"

    @property
    def centre(self) -> tuple[float, float] | None:
        return tuple(np.mean(np.asarray(self.polygon, float), axis=0)) if self.polygon else None

    def as_dict(self, crs: bool) -> dict:
        d = {"tile": self.tile, "found": self.found, "polygon": [[round(x, 2), round(y, 2)] for x, y in self.polygon],
             "score": None if self.score is None else round(self.score, 6)}
        if crs:
            d["polygon_crs"] = [[x, y] for x, y in self.polygon_crs] if self.found and self.polygon_crs else []
        return d


def to_crs(points, transform) -> list:
    """Scene pixel corners (x = column, y = row) through the scene's affine transform (a, b, c, d, e, f)."""
    a, b, c, d, e, f = transform
    return [[a * x + b * y + c, d * x + e * y + f] for x, y in points]


def turns(tile: np.ndarray, n: int = TURNS) -> np.ndarray:
    """The tile turned by every 360/n degrees: right angles exactly (np.rot90), others about the centre and cut to
    the square inside the turned one (no black corners), resized back to the tile's side."""
    s = tile.shape[0]
    out = []
    for k in range(n):
        ang = 360.0 * k / n
        if ang % 90 == 0:
            out.append(np.ascontiguousarray(np.rot90(tile, int(ang // 90))))
            continue
        r = cv2.warpAffine(tile, cv2.getRotationMatrix2D((s / 2, s / 2), ang, 1.0), (s, s), flags=cv2.INTER_LINEAR)
        rad = np.radians(ang)
        c = int(s / (abs(np.cos(rad)) + abs(np.sin(rad))))
        o = (s - c) // 2
        out.append(cv2.resize(r[o:o + c, o:o + c], (s, s), interpolation=cv2.INTER_LINEAR))
    return np.stack(out)


def candidates(index: SceneIndex, scorer, tile: np.ndarray, top: int = TOP, check: int = CHECK) -> list[int]:
    """Rows of the best windows for the tile and its turns (:func:`turns`), one per neighbourhood (a window
    whose centre lies within half a side of a better one's is left out), at most ``check``."""
    q = scorer.embed(turns(tile))
    q = np.ascontiguousarray(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12), np.float32)
    sims, ids = search_index(index.faiss_index, q, min(top, len(index.windows)))
    order = np.argsort(-sims.ravel(), kind="stable")
    rows, seen = [], set()
    w = index.windows
    for i in ids.ravel()[order]:
        if i < 0 or i in seen:
            continue
        seen.add(i)
        c = w[i, :2] + w[i, 2] / 2
        if any(np.hypot(*(c - (w[j, :2] + w[j, 2] / 2))) < max(w[i, 2], w[j, 2]) / 2 for j in rows):
            continue
        rows.append(int(i))
        if len(rows) >= check:
            break
    return rows


class VoteRegion(NamedTuple):
    """A place the keypoint votes point to: the window ``(x, y, side)`` (scene px) of the tile's footprint, and the
    similarity transform (2×3, tile px → scene px) that the matches voting for it agree on (None: fewer than
    MIN_INLIERS agree), with the number agreeing."""

    x: float
    y: float
    side: float
    votes: int
    transform: np.ndarray | None
    inliers: int


def vote_regions(index: SceneIndex, tile_img: np.ndarray, regions: int = VOTE_REGIONS) -> list[VoteRegion]:
    """Where the tile's keypoints say it lies, best first.

    The tile's keypoints (:func:`siamese_core.judge.geometry.keypoints`; rotation-invariant, so the tile is not
    turned) are matched with all the scene's (the two nearest, Lowe's ratio test). Each match says where the
    tile's centre lies in the scene: the tile's keypoint laid on the scene's one, turned by the difference of
    their angles and scaled by the ratio of their sizes. The implied centres are counted in VOTE_BIN px cells,
    smoothed; each peak of at least VOTE_MIN votes gives the median centre and size ratio of the votes near it,
    hence a window of the tile's footprint, and a RANSAC similarity over the matches that voted near it."""
    if index.keypoint_index is None or not len(index.keypoints):
        return []
    tk = keypoints(tile_img, KP_TILE)
    if len(tk.desc) < 2:
        return []
    d, ids = search_index(index.keypoint_index, np.ascontiguousarray(tk.desc, np.float32), 2)
    good = (ids[:, 1] >= 0) & (d[:, 0] < KP_RATIO * KP_RATIO * d[:, 1])
    if good.sum() < VOTE_MIN:
        return []
    sk = index.keypoints[ids[good, 0]]
    ti = np.flatnonzero(good)
    th, tw = tile_img.shape[:2]
    scale = sk["size"].astype(np.float64) / np.maximum(tk.sizes[ti], 1e-3)
    ang = np.radians(sk["angle"].astype(np.float64) - tk.angles[ti])
    vx, vy = (tw - 1) / 2 - tk.pts[ti, 0], (th - 1) / 2 - tk.pts[ti, 1]
    cx = sk["x"] + scale * (np.cos(ang) * vx - np.sin(ang) * vy)
    cy = sk["y"] + scale * (np.sin(ang) * vx + np.cos(ang) * vy)
    W, H = index.info.width, index.info.height
    inside = (cx >= 0) & (cx < W) & (cy >= 0) & (cy < H) & (scale > 0.2) & (scale < 5)
    cx, cy, scale = cx[inside], cy[inside], scale[inside]
    src = tk.pts[ti[inside]].astype(np.float32)
    dst = np.stack([sk["x"][inside], sk["y"][inside]], 1).astype(np.float32)
    if len(cx) < VOTE_MIN:
        return []
    hist = np.zeros((H // VOTE_BIN + 1, W // VOTE_BIN + 1), np.float32)
    np.add.at(hist, ((cy // VOTE_BIN).astype(int), (cx // VOTE_BIN).astype(int)), 1.0)
    hist = cv2.GaussianBlur(hist, (0, 0), 1.0) * (2 * np.pi)  # about the votes within a cell and a half
    out = []
    for _ in range(regions):
        r, c = np.unravel_index(int(hist.argmax()), hist.shape)
        px, py = (c + 0.5) * VOTE_BIN, (r + 0.5) * VOTE_BIN
        near = np.hypot(cx - px, cy - py) <= VOTE_RADIUS
        if near.sum() < VOTE_MIN:
            break
        mx, my, ms = float(np.median(cx[near])), float(np.median(cy[near])), float(np.median(scale[near]))
        side = float(min(max(32.0, ms * max(th, tw)), W, H))
        m, inl = None, 0
        sup = np.hypot(cx - mx, cy - my) <= 2 * VOTE_RADIUS
        if sup.sum() >= 3:
            m, mask = cv2.estimateAffinePartial2D(src[sup], dst[sup], method=cv2.RANSAC,
                                                  ransacReprojThreshold=VOTE_RANSAC_PX * ms, maxIters=2000,
                                                  confidence=0.995, refineIters=10)
            inl = int(mask.sum()) if m is not None else 0
            if inl < MIN_INLIERS:
                m, inl = None, 0
        out.append(VoteRegion(mx - side / 2, my - side / 2, side, int(near.sum()), m, inl))
        a = VOTE_APART // VOTE_BIN
        hist[max(0, r - a):r + a + 1, max(0, c - a):c + a + 1] = 0
    return out


def _region(index: SceneIndex, win, tile_side: int):
    """(region image, x0, y0, scene px per region px along x and y) around window ``win``, ENLARGE sides wide."""
    x, y, s = (float(v) for v in win)
    W, H = index.info.width, index.info.height
    r = int(min(ENLARGE * s, W, H))
    cx, cy = x + s / 2, y + s / 2
    x0 = int(min(max(0, round(cx - r / 2)), W - r))
    y0 = int(min(max(0, round(cy - r / 2)), H - r))
    out = int(min(REGION_MAX, max(64, round(ENLARGE * tile_side))))
    img = index.read((x0, y0, r, r), out)
    return img, x0, y0, r / img.shape[1], r / img.shape[0]


def _affine(t) -> np.ndarray:
    return np.vstack([np.asarray(t, np.float64), [0, 0, 1]])


def resampled(tile_img: np.ndarray, f: float) -> np.ndarray:
    """The tile resampled by ``f`` (area-averaged when shrunk, cubic when enlarged), at least 16 px a side."""
    h, w = tile_img.shape[:2]
    size = (max(16, round(w * f)), max(16, round(h * f)))
    return cv2.resize(tile_img, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def locate_tile(index: SceneIndex, scorer, tile_img: np.ndarray, name: str = "tile", threshold: float | None = None,
                check: int = CHECK, votes: int = VOTE_REGIONS, resample=RESAMPLE) -> Location:
    """Where ``tile_img`` (uint8 RGB, any size, any angle) lies in the indexed scene (see the module's docstring):
    the ``votes`` best regions of the keypoint votes (:func:`vote_regions`) are checked first; while none is
    judged the same place, those of the tile resampled by each factor of ``resample`` (another resolution: the
    polygon is the same tile's corners; only factors giving a longest side within RESAMPLE_SIDES), then up to
    ``check`` hits of the embedding search (0 and 0: nothing is checked). No check is started after BUDGET_S
    seconds."""
    t0 = time.perf_counter()
    t = scorer.threshold if threshold is None else threshold
    prep_tile = scorer.prepare(tile_img)
    best = None  # (score, judgement, polygon, source)
    first = None  # the first candidate of the tile as given: (window, source)
    native_transform = False  # a candidate of the tile as given had a transform
    side = max(tile_img.shape[:2])
    stages = [("votes", 1.0)] + [("votes", float(f)) for f in (resample if votes else ())
                                 if f != 1.0 and RESAMPLE_SIDES[0] <= side * f <= RESAMPLE_SIDES[1]]
    stages += [("embeddings", 1.0)]
    n = 0
    done = False
    for kind, f in stages:
        if done or (n and time.perf_counter() - t0 > BUDGET_S):
            break
        if f != 1.0 and best is not None and best[1].same_place:
            continue  # resampled only while the tile as given is not found
        img = tile_img if f == 1.0 else resampled(tile_img, f)
        prep = prep_tile if f == 1.0 else scorer.prepare(img)
        if kind == "votes":
            label = "keypoint votes" if f == 1.0 else f"keypoint votes (tile ×{f:g})"
            wins = [(v[:3], label, v) for v in (vote_regions(index, img, votes) if votes else [])]
        else:
            rows = candidates(index, scorer, prep_tile.tile, check=check) if check else []
            wins = [(index.windows[r], "embedding search", None) for r in rows]
        if f == 1.0 and wins and first is None:
            first = wins[0][:2]
        th, tw = img.shape[:2]
        for win, source, vote in wins:
            if time.perf_counter() - t0 > BUDGET_S and n:
                break
            n += 1
            region, x0, y0, sx, sy = _region(index, win, max(th, tw))
            g = match(scorer.prepare(region).features, prep.features)
            t1, inliers = (_affine(g.transform), g.inliers) if g.found and g.inliers >= MIN_INLIERS else (None, 0)
            if vote is not None and vote.transform is not None and vote.inliers > inliers:
                # the votes' matches (the scene's keypoints are denser than the region's) agree better: their
                # transform, scene px brought to region px
                t1 = np.diag([1 / sx, 1 / sy, 1.0]) @ _affine([[1, 0, -x0], [0, 1, -y0]]) @ _affine(vote.transform)
                inliers = vote.inliers
            if t1 is None:
                continue  # tile px → region px
            native_transform |= f == 1.0
            warped = cv2.warpAffine(region, t1[:2], (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            j = scorer.judge([(scorer.prepare(warped), prep)], t)[0]
            full = t1 @ _affine(j.geo.transform) if j.geo.found and j.geo.inliers >= inliers else t1
            corners = np.float64([[0, 0], [tw, 0], [tw, th], [0, th]]) @ full[:2, :2].T + full[:2, 2]
            poly = [[x0 + u * sx, y0 + v * sy] for u, v in corners]
            if best is None or j.score < best[0]:
                best = (j.score, j, poly, source)
            if j.same_place and (j.verdict == "same" or j.geo.inliers >= DECISIVE):
                done = True
                break
    if not native_transform and first is not None and not (best is not None and best[1].same_place):
        # no transform in any (wider) region of the tile as given: the best candidate's window itself, as laid,
        # judged; its keypoints, denser on the smaller window, may still agree on a transform, which then gives
        # the polygon
        th, tw = tile_img.shape[:2]
        W, H = index.info.width, index.info.height
        s = int(min(first[0][2], W, H))
        x, y = (int(min(max(0, v), lim - s)) for v, lim in zip(first[0][:2], (W, H)))
        win = index.read((x, y, s, s), max(th, tw))
        j = scorer.judge([(scorer.prepare(win), prep_tile)], t)[0]
        poly = []
        if j.geo.found and j.geo.inliers >= MIN_INLIERS:
            m = _affine(j.geo.transform)  # tile px → window px
            corners = np.float64([[0, 0], [tw, 0], [tw, th], [0, th]]) @ m[:2, :2].T + m[:2, 2]
            poly = [[x + u * s / win.shape[1], y + v * s / win.shape[0]] for u, v in corners]
        if best is None or (j.same_place and poly) or j.score < best[0]:
            best = (j.score, j, poly, first[1])
    secs = time.perf_counter() - t0
    if best is None:
        return Location(name, False, [], None, checked=n, seconds=secs)
    score, j, poly, source = best
    found = bool(poly) and bool(j.same_place)
    crs = to_crs(poly, index.info.transform) if found and index.info.transform is not None else None
    return Location(name, found, poly if found else [], float(score), crs, j.geo.sentence(), n, secs,
                    source if found else "")


def read_tile(source, name: str | None = None, max_side: int = 1024, bands=None) -> np.ndarray:
    """A tile file (GeoTIFF, PNG, JPEG...) as uint8 RGB, at most ``max_side`` a side, read as every other tile is
    (:func:`~siamese_core.data.images.decode_image`, with its one-line errors); ``bands`` chooses a raster's bands
    (None: its own red, green and blue; plain images ignore it)."""
    img = decode_image(source, name=name, max_side=max_side, bands=bands)
    f = max_side / max(img.shape[:2])
    if f < 1:
        img = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))),
                         interpolation=cv2.INTER_AREA)
    return img


def locate(scene, tiles: list, scorer, workspace=None, progress=None, threshold: float | None = None,
           bands=None) -> tuple:
    """(SceneIndex, [Location per tile, in order]) for tile paths (or (name, uint8 array) pairs), the scene and the
    tile paths read through ``bands`` (e.g. (4, 3, 2); None: each file's own red, green and blue)."""
    index = scene_index(scorer, scene, workspace, progress, bands=bands)
    out = []
    for tile in tiles:
        name, img = (tile if isinstance(tile, tuple) else (str(tile), read_tile(tile, bands=bands)))
        out.append(locate_tile(index, scorer, img, name, threshold))
    return index, out


def geojson(locations: list, index: SceneIndex) -> dict:
    """The found polygons as a GeoJSON FeatureCollection: in the scene's CRS when it has one, else in scene pixels
    (each feature's ``coordinates`` property says which)."""
    crs = index.info.crs if index.info.transform is not None else None
    feats = []
    for loc in locations:
        if not loc.found:
            continue
        ring = loc.polygon_crs if crs or index.info.transform is not None else loc.polygon
        ring = [list(map(float, p)) for p in ring]
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
                      "properties": {"tile": loc.tile, "score": loc.score,
                                     "coordinates": f"scene CRS {crs}" if crs else (
                                         "scene georeferenced coordinates" if index.info.transform is not None
                                         else "scene pixels (x = column, y = row)")}})
    out = {"type": "FeatureCollection", "features": feats}
    if crs:
        out["crs"] = {"type": "name", "properties": {"name": crs}}
    return out


__all__ = ["Location", "locate", "locate_tile", "candidates", "geojson", "to_crs", "read_tile", "vote_regions",
           "VoteRegion", "resampled"]
