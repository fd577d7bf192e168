"""The index ``locate`` searches a scene with, built once per scene and model and cached on disk.

Why this module exists: a scene of up to 20,000 × 20,000 px cannot be searched window by window per tile, so its
windows' embeddings and its keypoints are computed once, written into one folder and reused while the scene file,
the model and the parameters are unchanged. :mod:`siamese_core.scale.locate` asks the questions of it.

* **Windows:** the scene cut into overlapping windows at several scales (sides :data:`SIDES` scene px, stride a
  quarter of the side, coarser for big scenes: :func:`stride_for`, at most :data:`MAX_WINDOWS` a scale), each
  resized to the model's input and embedded into a FAISS index.
* **Keypoints:** the scene's SIFT keypoints found in overlapping blocks (:data:`KP_BLOCK` px every
  :data:`KP_STRIDE`, read at :data:`KP_SCALE`, the scale a 256 px tile's keypoints are found at by
  :mod:`siamese_core.judge.geometry`), each block keeping those in its own part; positions, sizes, angles and
  blocks in ``keypoints.npy``, RootSIFT descriptors in an 8-bit FAISS index (128 B a keypoint): flat up to
  :data:`KP_IVF_MIN` keypoints, partitioned above (:func:`partition_keypoints`).

The scene is read window by window (:func:`siamese_core.data.rasters.read_raster`), never whole. On disk:
``<workspace>/scene-indexes/<run>/<key>/`` (``key`` = a digest of the scene's resolved path) holding
``embeddings.npy`` (N, D), ``windows.npy`` (N, 3: x, y, side in scene px), ``index.faiss``, ``keypoints.npy`` (M,
:data:`KP_DTYPE`), ``keypoints.faiss`` and ``meta.json`` (the format, the scene's size and mtime, the model's file
stamp, the window and keypoint parameters, the raster bands when asked for: ``bands``); rebuilt into a temporary
folder swapped into place whole (:func:`~siamese_core.core.files.build_dir`).
"""


from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.config import workspace_dir
from ..core.errors import SiameseError
from ..core.files import build_dir, check_name, read_json, write_json_atomic
from ..core.keys import digest
from ..core.locks import file_lock
from ..data.rasters import raster_info, read_raster, stretch_limits
from ..judge.geometry import KEYPOINT_SCALE, keypoints
from .search import ivf_params, load_faiss

FORMAT = 3                # 2: the keypoint part (keypoints.npy, keypoints.faiss) next to the window embeddings;
                          # 3: keypoints.faiss partitioned (IVF) above KP_IVF_MIN keypoints
SIDES = (128, 256, 512)   # window sides in scene pixels (the scales a tile's footprint may have)
STRIDE_DIV = 4            # stride = side / 4 ...
MAX_WINDOWS = 150_000     # ... doubled until a scale has at most this many windows (big scenes)
CHUNK = 24                # windows per axis read from the scene at once (bounded memory)
LOCK_WAIT_S = 600.0
KP_BLOCK = 512            # the scene's keypoints are found in blocks of this many scene px ...
KP_STRIDE = 384           # ... every this many; each keeps those nearer its centre than any other block's
KP_PER_BLOCK = 500        # the strongest SIFT keypoints found in a block (about 300 lie in its own part)
KP_SCALE = KEYPOINT_SCALE  # blocks are read at this scale: a 256 px tile's keypoints are found at it (geometry)
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


def scene_stamp(scorer, scene: Path, info, max_windows: int, bands=None) -> dict:
    """What the index depends on; ``bands`` (None: the scene's own red, green and blue) only when asked for, so
    an index built before bands were part of the key still matches the default."""
    st = scene.stat()
    model = Path(scorer.run.model_path).stat()
    out = {"format": FORMAT, "scene": str(scene), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "width": info.width, "height": info.height, "run": scorer.name,
           "model": [model.st_size, model.st_mtime_ns], "tile_size": int(scorer.size), "sides": list(SIDES),
           "stride_div": STRIDE_DIV, "max_windows": int(max_windows), "keypoints": _kp_params()}
    if bands is not None:
        out["bands"] = [int(b) for b in bands]
    return out


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
    bands: tuple | None = None             # the raster bands every read of the scene takes (None: its own RGB)

    def read(self, window: tuple, out_side: int) -> np.ndarray:
        """The scene's ``window`` (x, y, w, h in scene px) as uint8 RGB at most ``out_side`` a side, read as the
        index was built: with its bands and stretch."""
        return read_raster(self.scene, bands=self.bands, window=window, out_side=out_side, limits=self.limits).image


KP_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("size", "<f2"), ("angle", "<f2"), ("block", "<u4")])


def _block_keypoints(scene, limits, bands, info, xs, ys, bi: int, bj: int):
    """The keypoints of block (bi, bj) that lie in its own part of the scene: (KP_DTYPE array, descriptors)."""
    x0, y0 = int(xs[bi]), int(ys[bj])
    w, h = min(KP_BLOCK, info.width - x0), min(KP_BLOCK, info.height - y0)
    img = read_raster(scene, bands=bands, window=(x0, y0, w, h), out_side=max(1, round(max(w, h) * KP_SCALE)),
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


def build_keypoints(tmp: Path, scene, info, limits, progress, done: int, total: int,
                    bands=None) -> tuple[int, int, dict]:
    """Find the scene's keypoints block by block (two threads: OpenCV releases the GIL) into ``keypoints.npy``
    and the descriptors' FAISS index ``keypoints.faiss`` (flat; partitioned above KP_IVF_MIN keypoints), the scene
    read through ``bands`` (None: its own red, green and blue); (keypoints, blocks, the index's kind and
    parameters)."""
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
            for p, d in pool.map(lambda j: _block_keypoints(scene, limits, bands, info, xs, ys, *j), part):
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


def _embed_scale(scorer, scene, limits, bands, side, xs, ys, write, progress, done, total) -> int:
    """Embed every window of one scale, CHUNK × CHUNK windows read from the scene at once."""
    size = scorer.size
    for yi in range(0, len(ys), CHUNK):
        for xi in range(0, len(xs), CHUNK):
            cx, cy = xs[xi:xi + CHUNK], ys[yi:yi + CHUNK]
            x0, y0 = int(cx[0]), int(cy[0])
            w, h = int(cx[-1]) + side - x0, int(cy[-1]) + side - y0
            f = size / side
            img = read_raster(scene, bands=bands, window=(x0, y0, w, h), out_side=max(1, round(max(w, h) * f)),
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


def _build_into(tmp: Path, scorer, scene: Path, info, stamp: dict, limits, progress, max_windows,
                bands=None) -> dict:
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
            done = _embed_scale(scorer, scene, limits, bands, side, xs, ys, write,
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
    nkp, nblocks, kind = build_keypoints(tmp, scene, info, limits, progress, total, total + blocks, bands)
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
    if old.get("bands") != new.get("bands"):  # no "bands": the scene's own red, green and blue
        was, now = (",".join(map(str, b)) if b else "the file's own" for b in (old.get("bands"), new.get("bands")))
        return f"it was read with other raster bands ({was} then, {now} now)"
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
                wait_s: float = LOCK_WAIT_S, bands=None) -> SceneIndex:
    """The window index of ``scene`` for ``scorer``'s model: loaded from the workspace when the scene file, the
    model, the window parameters and the bands are unchanged, else (re)built; ``progress(done, total)`` while
    embedding. ``bands`` (e.g. (4, 3, 2), see :func:`~siamese_core.data.rasters.parse_bands`; None: the scene's
    own red, green and blue) are the raster bands its windows, stretch limits and keypoints are read with."""
    scene = Path(scene).resolve()
    if not scene.is_file():
        raise SiameseError(f"scene {scene}: no such file; give the path of a GeoTIFF, PNG or JPEG scene")
    info = raster_info(scene)
    bands = None if bands is None else tuple(int(b) for b in bands)
    stamp = scene_stamp(scorer, scene, info, max_windows, bands)
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
                              f"keypoints, built {old['built']})", keypoints=got[2], keypoint_index=got[3],
                              bands=bands)
        why = why or "its files were incomplete"
        limits = stretch_limits(scene, bands=bands)
        meta = build_dir(path, lambda tmp: _build_into(tmp, scorer, scene, info, stamp, limits, progress, max_windows,
                                                       bands), "scene index")
        got = _load(path, meta)
        if got is None:
            raise SiameseError(f"the window index just written to {path} cannot be read back; is the disk full?")
        status = "built" if old is None else "rebuilt"
        return SceneIndex(path, scene, info, limits, got[0], got[1], meta, status,
                          f"{status} the index of {scene.name} ({meta['count']} windows, {meta['keypoint_count']} "
                          f"keypoints, {meta['build_s']} s)" + ("" if old is None else f" because {why}"),
                          keypoints=got[2], keypoint_index=got[3], bands=bands)


__all__ = ["SceneIndex", "scene_index", "windows_of", "stride_for", "grid", "index_dir", "scene_stamp",
           "build_keypoints", "partition_keypoints", "SIDES", "MAX_WINDOWS", "KP_DTYPE", "KP_BLOCK", "KP_STRIDE",
           "KP_PER_BLOCK", "KP_SCALE", "KP_IVF_MIN", "KP_NPROBE", "FORMAT"]
