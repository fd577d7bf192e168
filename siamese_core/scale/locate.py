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

The scene is read window by window (:func:`siamese_core.data.rasters.read_raster`), never whole. Big scenes get a
coarser stride (:func:`stride_for`), so that no scale holds more than :data:`MAX_WINDOWS` windows.

On disk: ``<workspace>/scene-indexes/<run>/<key>/`` (``key`` = a digest of the scene's resolved path) holding
``embeddings.npy`` (N, D), ``windows.npy`` (N, 3: x, y, side in scene px), ``index.faiss``, ``keypoints.npy`` (M,
:data:`KP_DTYPE`), ``keypoints.faiss`` and ``meta.json`` (the format, the scene's size and mtime, the model's file
stamp, the window and keypoint parameters); reused while they are all unchanged, else rebuilt into a temporary
folder swapped into place whole (:func:`~siamese_core.core.files.replace_dir`).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..core.config import workspace_dir
from ..core.errors import SiameseError
from ..core.files import build_dir, check_name, read_json, write_json_atomic
from ..core.keys import digest
from ..core.locks import file_lock
from ..data.images import decode_image
from ..data.rasters import raster_info, read_raster, stretch_limits
from ..judge.geometry import KEYPOINT_SCALE, RATIO, keypoints, match
from .search import ivf_params, load_faiss, search_index

FORMAT = 3                # 2: the keypoint part (keypoints.npy, keypoints.faiss) next to the window embeddings;
                          # 3: keypoints.faiss partitioned (IVF) above KP_IVF_MIN keypoints
SIDES = (128, 256, 512)   # window sides in scene pixels (the scales a tile's footprint may have)
STRIDE_DIV = 4            # stride = side / 4 ...
MAX_WINDOWS = 150_000     # ... doubled until a scale has at most this many windows (big scenes)
CHUNK = 24                # windows per axis read from the scene at once (bounded memory)
TOP = 48                  # nearest windows per turn of the query
TURNS = 8                 # the query is the tile turned by every 360/TURNS degrees (right angles exactly)
CHECK = 40                # hits given the geometric check at most (spread over the scene) ...
BUDGET_S = 1.5            # ... and no new one started after this many seconds on a tile
ENLARGE = 1.5             # the region checked around a hit, in hit sides (more inliers than 2: bench/RESULTS.md)
REGION_MAX = 768          # the region is read at most this many pixels a side
MIN_INLIERS = 8           # fewer keypoints agreeing on a transform: the hit is not checked further
DECISIVE = 30             # this many inliers and a "same" verdict: stop early
LOCK_WAIT_S = 600.0
KP_BLOCK = 512            # the scene's keypoints are found in blocks of this many scene px ...
KP_STRIDE = 384           # ... every this many; each keeps those nearer its centre than any other block's
KP_PER_BLOCK = 500        # the strongest SIFT keypoints found in a block (about 300 lie in its own part)
KP_SCALE = KEYPOINT_SCALE  # blocks are read at this scale: a 256 px tile's keypoints are found at it (geometry)
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
KP_IVF_MIN = 100_000      # more scene keypoints than this: their index is partitioned (IVF, 8-bit residuals) ...
KP_NPROBE = 32            # ... and a tile's keypoints visit this many of its nlist ≈ 4·sqrt(n) cells
KP_TRAIN_PER_LIST = 40    # the cells are trained on at most this many sampled keypoints a cell


def stride_for(side: int, width: int, height: int, max_windows: int = MAX_WINDOWS) -> int:
    """The stride of windows of ``side`` px: side / STRIDE_DIV, doubled while the scene holds more than
    ``max_windows`` of them (a 20,000² scene: 128 px windows every 64 px instead of 32)."""
    stride = max(1, side // STRIDE_DIV)
    while ((max(0, width - side) // stride + 1) * (max(0, height - side) // stride + 1) > max_windows
           and stride < side):
        stride *= 2
    return stride


def grid(side: int, width: int, height: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Window origins along x and y; the last window of a row or column touches the scene's edge."""
    def axis(n):
        if n <= side:
            return np.array([0])
        xs = np.arange(0, n - side + 1, stride)
        return xs if xs[-1] == n - side else np.append(xs, n - side)
    return axis(width), axis(height)


def windows_of(width: int, height: int, sides=SIDES, max_windows: int = MAX_WINDOWS) -> list[tuple[int, int, list]]:
    """(side, stride, [x origins, y origins]) of every scale that fits the scene (a scene smaller than the smallest
    side is one window)."""
    out = []
    for s in sides:
        if s > max(width, height) and out:
            break
        s = min(s, width, height) if s > min(width, height) else s
        st = stride_for(s, width, height, max_windows)
        out.append((s, st, list(grid(s, width, height, st))))
        if s >= min(width, height):
            break
    return out


def scene_stamp(scorer, scene: Path, info, max_windows: int) -> dict:
    st = scene.stat()
    model = Path(scorer.run.model_path).stat()
    return {"format": FORMAT, "scene": str(scene), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "width": info.width, "height": info.height, "run": scorer.name,
            "model": [model.st_size, model.st_mtime_ns], "tile_size": int(scorer.size), "sides": list(SIDES),
            "stride_div": STRIDE_DIV, "max_windows": int(max_windows), "keypoints": _kp_params()}


def _kp_params() -> dict:
    return {"block": KP_BLOCK, "stride": KP_STRIDE, "per_block": KP_PER_BLOCK, "scale": KP_SCALE,
            "ivf_min": KP_IVF_MIN}


def index_dir(scorer, scene: Path, workspace=None) -> Path:
    return workspace_dir(workspace) / "scene-indexes" / check_name(scorer.name, "run") / digest(str(scene))[:20]


@dataclass
class SceneIndex:
    """A scene's windows, their embeddings' FAISS index, and what reading the scene needs again."""

    path: Path
    scene: Path
    info: object            # RasterInfo
    limits: tuple            # per-band stretch (low, high), the same for every read of this scene
    windows: np.ndarray      # (N, 3) int: x, y, side
    faiss_index: object
    meta: dict
    status: str = "reused"   # built | rebuilt | reused
    reason: str = ""
    keypoints: np.ndarray | None = None   # (M,) KP_DTYPE: the scene's keypoints (x, y, size, angle, block)
    keypoint_index: object = None          # FAISS index of their RootSIFT descriptors (8-bit scalar quantizer;
    #                                        flat, or IVF above KP_IVF_MIN keypoints: :func:`partition_keypoints`)


KP_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("size", "<f2"), ("angle", "<f2"), ("block", "<u4")])


def _block_keypoints(scene, limits, info, xs, ys, bi: int, bj: int):
    """The keypoints of block (bi, bj) that lie in its own part of the scene: (KP_DTYPE array, descriptors)."""
    x0, y0 = int(xs[bi]), int(ys[bj])
    w, h = min(KP_BLOCK, info.width - x0), min(KP_BLOCK, info.height - y0)
    img = read_raster(scene, window=(x0, y0, w, h), out_side=max(1, round(max(w, h) * KP_SCALE)),
                      limits=limits).image
    k = keypoints(img, KP_PER_BLOCK, working=False)
    fx, fy = w / img.shape[1], h / img.shape[0]
    x = x0 + (k.pts[:, 0] + 0.5) * fx - 0.5
    y = y0 + (k.pts[:, 1] + 0.5) * fy - 0.5
    cx, cy = np.asarray(xs) + KP_BLOCK / 2, np.asarray(ys) + KP_BLOCK / 2
    own = (np.abs(x[:, None] - cx).argmin(1) == bi) & (np.abs(y[:, None] - cy).argmin(1) == bj)
    out = np.zeros(int(own.sum()), KP_DTYPE)
    out["x"], out["y"] = x[own], y[own]
    out["size"], out["angle"] = k.sizes[own] * (fx + fy) / 2, k.angles[own]
    out["block"] = bj * len(xs) + bi
    return out, k.desc[own]


def partition_keypoints(flat, nprobe: int = KP_NPROBE):
    """The descriptors of the flat 8-bit index ``flat`` in a partitioned one: ``IndexIVFScalarQuantizer`` (8-bit
    residuals) of nlist ≈ 4·sqrt(n) cells (:func:`siamese_core.scale.search.ivf_params`), trained on at most
    KP_TRAIN_PER_LIST keypoints a cell sampled evenly (seeded), ``nprobe`` cells visited a query. A search then
    costs about nlist + nprobe · n / nlist distances instead of n (bench/RESULTS.md, "Locate")."""
    faiss = load_faiss()
    n = flat.ntotal
    nlist = ivf_params(n)[0]
    take = np.zeros(n, bool)
    take[np.random.default_rng(0).choice(n, size=min(n, KP_TRAIN_PER_LIST * nlist), replace=False)] = True
    step = 65536
    sample = np.concatenate([flat.reconstruct_n(i, min(step, n - i))[take[i:i + step]] for i in range(0, n, step)])
    quant = faiss.IndexFlatL2(flat.d)
    idx = faiss.IndexIVFScalarQuantizer(quant, flat.d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
    idx.train(np.ascontiguousarray(sample, np.float32))
    for i in range(0, n, step):
        idx.add(np.ascontiguousarray(flat.reconstruct_n(i, min(step, n - i)), np.float32))
    idx.nprobe = min(nprobe, nlist)
    return idx


def build_keypoints(tmp: Path, scene, info, limits, progress, done: int, total: int) -> tuple[int, int, dict]:
    """Find the scene's keypoints block by block (two threads: OpenCV releases the GIL) into ``keypoints.npy``
    and the descriptors' FAISS index ``keypoints.faiss`` (flat; partitioned above KP_IVF_MIN keypoints);
    (keypoints, blocks, the index's kind and parameters)."""
    faiss = load_faiss()
    xs, ys = grid(KP_BLOCK, info.width, info.height, KP_STRIDE)
    idx = faiss.IndexScalarQuantizer(128, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_L2)
    idx.train(np.float32([np.zeros(128), np.ones(128)]))  # RootSIFT values lie in 0..1
    jobs = [(bi, bj) for bj in range(len(ys)) for bi in range(len(xs))]
    pts = []
    workers = max(1, min(2, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(workers) as pool:
        for c in range(0, len(jobs), 8 * workers):  # a few blocks in flight at once (bounded memory)
            part = jobs[c:c + 8 * workers]
            for p, d in pool.map(lambda j: _block_keypoints(scene, limits, info, xs, ys, *j), part):
                pts.append(p)
                if len(d):
                    idx.add(np.ascontiguousarray(d, np.float32))
            done += len(part)
            if progress:
                progress(done, total)
    kp = np.concatenate(pts) if pts else np.zeros(0, KP_DTYPE)
    np.save(tmp / "keypoints.npy", kp)
    kind = {"kind": "flat"}
    if idx.ntotal > KP_IVF_MIN:
        idx = partition_keypoints(idx)
        kind = {"kind": "ivf", "nlist": int(idx.nlist), "nprobe": int(idx.nprobe)}
    faiss.write_index(idx, str(tmp / "keypoints.faiss"))
    return len(kp), len(jobs), kind


def _embed_scale(scorer, scene, limits, side, xs, ys, write, progress, done, total) -> int:
    """Embed every window of one scale, CHUNK × CHUNK windows read from the scene at once."""
    size = scorer.size
    for yi in range(0, len(ys), CHUNK):
        for xi in range(0, len(xs), CHUNK):
            cx, cy = xs[xi:xi + CHUNK], ys[yi:yi + CHUNK]
            x0, y0 = int(cx[0]), int(cy[0])
            w, h = int(cx[-1]) + side - x0, int(cy[-1]) + side - y0
            f = size / side
            img = read_raster(scene, window=(x0, y0, w, h), out_side=max(1, round(max(w, h) * f)),
                              limits=limits).image
            fy, fx = img.shape[0] / h, img.shape[1] / w
            tiles, wins = [], []
            for y in cy:
                for x in cx:
                    px, py = round((x - x0) * fx), round((y - y0) * fy)
                    t = img[py:py + round(side * fy), px:px + round(side * fx)]
                    if t.shape[:2] != (size, size):
                        t = cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA)
                    tiles.append(t)
                    wins.append((int(x), int(y), side))
            e = scorer.embed(np.stack(tiles))
            e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            write(np.asarray(wins, np.int32), e.astype(np.float32))
            done += len(wins)
            if progress:
                progress(done, total)
    return done


def _build_into(tmp: Path, scorer, scene: Path, info, stamp: dict, limits, progress, max_windows) -> dict:
    t0 = time.time()
    scales = windows_of(info.width, info.height, SIDES, max_windows)
    total = sum(len(xs) * len(ys) for _, _, (xs, ys) in scales)
    bx, by = grid(KP_BLOCK, info.width, info.height, KP_STRIDE)
    blocks = len(bx) * len(by)
    wins, dim = [], 0
    if progress:
        progress(0, total + blocks)
    with open(tmp / "embeddings.npy", "wb") as f:
        def write(w, e):
            nonlocal dim
            if not dim:
                dim = int(e.shape[1])
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (total, dim)})
            wins.append(w)
            f.write(np.ascontiguousarray(e).tobytes())
        done = 0
        for side, _, (xs, ys) in scales:
            done = _embed_scale(scorer, scene, limits, side, xs, ys, write,
                                progress and (lambda d, t: progress(d, total + blocks)), done, total)
    np.save(tmp / "windows.npy", np.concatenate(wins))
    emb = np.load(tmp / "embeddings.npy", mmap_mode="r")
    faiss = load_faiss()
    idx = faiss.IndexFlatIP(dim)
    for i in range(0, total, 65536):
        idx.add(np.ascontiguousarray(emb[i:i + 65536]))
    faiss.write_index(idx, str(tmp / "index.faiss"))
    del emb
    t1 = time.time()
    nkp, nblocks, kind = build_keypoints(tmp, scene, info, limits, progress, total, total + blocks)
    meta = {**stamp, "count": total, "dim": dim, "keypoint_count": nkp, "blocks": nblocks, "keypoint_index": kind,
            "keypoints_s": round(time.time() - t1, 2),
            "limits": [list(map(float, limits[0])), list(map(float, limits[1]))],
            "scales": [{"side": s, "stride": st, "windows": len(xs) * len(ys)} for s, st, (xs, ys) in scales],
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_s": round(time.time() - t0, 2)}
    write_json_atomic(tmp / "meta.json", meta)
    return meta


def _changed(old: dict | None, new: dict) -> str | None:
    if old is None:
        return "no index yet"
    if any(old.get(k) != new[k] for k in ("format", "sides", "stride_div", "max_windows", "tile_size", "keypoints")):
        return "it was made with other window parameters"
    if old.get("model") != new["model"] or old.get("run") != new["run"]:
        return f"the model of run {new['run']!r} changed"
    if any(old.get(k) != new[k] for k in ("scene", "size", "mtime_ns", "width", "height")):
        return "the scene file changed"
    return None


def _load(path: Path, meta: dict):
    try:
        wins = np.load(path / "windows.npy")
        idx = load_faiss().read_index(str(path / "index.faiss"))
        kp = np.load(path / "keypoints.npy")
        kidx = load_faiss().read_index(str(path / "keypoints.faiss"))
    except (OSError, ValueError, RuntimeError):
        return None
    if hasattr(kidx, "nprobe"):  # partitioned: the cells a query visits (a search parameter, not in the key)
        kidx.nprobe = min(KP_NPROBE, int(kidx.nlist))
    ok = len(wins) == idx.ntotal == meta.get("count") and len(kp) == kidx.ntotal == meta.get("keypoint_count")
    return (wins, idx, kp, kidx) if ok else None


def scene_index(scorer, scene, workspace=None, progress=None, max_windows: int = MAX_WINDOWS,
                wait_s: float = LOCK_WAIT_S) -> SceneIndex:
    """The window index of ``scene`` for ``scorer``'s model: loaded from the workspace when the scene file, the
    model and the window parameters are unchanged, else (re)built; ``progress(done, total)`` while embedding."""
    scene = Path(scene).resolve()
    if not scene.is_file():
        raise SiameseError(f"scene {scene}: no such file; give the path of a GeoTIFF, PNG or JPEG scene")
    info = raster_info(scene)
    stamp = scene_stamp(scorer, scene, info, max_windows)
    path = index_dir(scorer, scene, workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f"{path.name}.lock", f"the window index of scene {scene.name}", wait_s,
                   fix="another process is building it: wait for it, then run this again"):
        old = read_json(path / "meta.json")
        why = _changed(old, stamp)
        if why is None and (got := _load(path, old)) is not None:
            lim = tuple(np.asarray(v, np.float64) for v in old["limits"])
            return SceneIndex(path, scene, info, lim, got[0], got[1], old, "reused",
                              f"reused the index of {scene.name} ({old['count']} windows, {old['keypoint_count']} "
                              f"keypoints, built {old['built']})", keypoints=got[2], keypoint_index=got[3])
        why = why or "its files were incomplete"
        limits = stretch_limits(scene)
        meta = build_dir(path, lambda tmp: _build_into(tmp, scorer, scene, info, stamp, limits, progress, max_windows),
                         "scene index")
        got = _load(path, meta)
        if got is None:
            raise SiameseError(f"the window index just written to {path} cannot be read back; is the disk full?")
        status = "built" if old is None else "rebuilt"
        return SceneIndex(path, scene, info, limits, got[0], got[1], meta, status,
                          f"{status} the index of {scene.name} ({meta['count']} windows, {meta['keypoint_count']} "
                          f"keypoints, {meta['build_s']} s)" + ("" if old is None else f" because {why}"),
                          keypoints=got[2], keypoint_index=got[3])


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
    img = read_raster(index.scene, window=(x0, y0, r, r), out_side=out, limits=index.limits).image
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
        win = read_raster(index.scene, window=(x, y, s, s), out_side=max(th, tw), limits=index.limits).image
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


def read_tile(source, name: str | None = None, max_side: int = 1024) -> np.ndarray:
    """A tile file (GeoTIFF, PNG, JPEG...) as uint8 RGB, at most ``max_side`` a side, read as every other tile is
    (:func:`~siamese_core.data.images.decode_image`, with its one-line errors)."""
    img = decode_image(source, name=name, max_side=max_side)
    f = max_side / max(img.shape[:2])
    if f < 1:
        img = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))),
                         interpolation=cv2.INTER_AREA)
    return img


def locate(scene, tiles: list, scorer, workspace=None, progress=None, threshold: float | None = None) -> tuple:
    """(SceneIndex, [Location per tile, in order]) for tile paths (or (name, uint8 array) pairs)."""
    index = scene_index(scorer, scene, workspace, progress)
    out = []
    for tile in tiles:
        name, img = (tile if isinstance(tile, tuple) else (str(tile), read_tile(tile)))
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


__all__ = ["SceneIndex", "Location", "scene_index", "locate", "locate_tile", "candidates", "geojson", "to_crs",
           "read_tile", "windows_of", "stride_for", "vote_regions", "VoteRegion", "build_keypoints",
           "partition_keypoints", "resampled", "SIDES", "MAX_WINDOWS"]
