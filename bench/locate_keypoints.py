"""The keypoint search of locate at a 20,000² scene's size: flat vs partitioned (IVF) index, seconds a tile and recall.

    python bench/locate_keypoints.py [--total 662600] [--n 30] [--nprobe 8,16,32,64] [--seed 0]

* Scene keypoints: the real ones of bench/locate.py's 2,001² date-A mosaic (found as the scene index finds them,
  ``build_keypoints``), ids first.
* Distractors, up to ``--total`` (the 20,000² count extrapolated in bench/RESULTS.md): real RootSIFT descriptors of
  images that are not in the scene (the 15 other temporal-dev places, both dates; changed-dev; aerial-sample), each
  found as a block's (``keypoints(img, KP_PER_BLOCK, working=False)``) at 1× and 0.75×; then copies of those with
  Gaussian noise (σ 0.02 a dimension, clipped at 0, renormalised) until the total is reached. Each distractor gets a
  random position in a 20,000² frame laid over the scene (so votes for it fall outside or scatter).
* Queries: ``--n`` 256 px crops of the date-B mosaic turned by random angles (as bench/locate.py's positives), their
  ``KP_TILE`` keypoints.
* Flat: the index a scene gets today (8-bit ``IndexScalarQuantizer``); IVF: ``partition_keypoints`` of it (its build
  time is reported). For each: median seconds a tile of the 2-nearest search (``search_index``, as vote_regions
  calls it), the ratio-test matches (``KP_RATIO``), the fraction of the flat's matches (same query keypoint, same
  scene keypoint) the IVF keeps, and whether the top vote region lies within 16 px of the truth (``vote_regions``
  on the combined keypoints, in a 20,000² frame; its median seconds, the tile's SIFT and the vote histogram
  included).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from machine import cpu_model  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--total", type=int, default=662_600)
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--nprobe", default="8,16,32,64")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (DATA / "temporal-dev" / "A").is_dir():
        print(json.dumps({"skipped": f"{DATA} is absent"}))
        return 0
    import csv

    import cv2

    import locate as B  # bench/locate.py: the mosaic, the crops, the GeoTIFF writer
    from siamese_core.data.rasters import raster_info, stretch_limits
    from siamese_core.judge.geometry import keypoints
    from siamese_core.scale import locate as L
    from siamese_core.scale import scene_index as S
    from siamese_core.scale.search import load_faiss, search_index
    faiss = load_faiss()

    rng = np.random.default_rng(args.seed)
    sample = DATA / "temporal-dev"
    sizes = {r["place"]: int(min(map(int, r["size"].split("x")))) for r in csv.DictReader(open(sample / "dates.csv"))}
    ranked = sorted(sizes, key=lambda k: -sizes[k])
    inside = [ranked[i] for i in rng.permutation(9)]
    a, b = B.mosaic(inside, "A"), B.mosaic(inside, "B")
    side = a.shape[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-kp-"))
    scene = tmp / "scene.tif"
    B.write_scene(scene, lambda x, y, w, h: a[y:y + h, x:x + w], side)
    info = raster_info(scene)
    nkp, _, _ = S.build_keypoints(tmp, scene, info, stretch_limits(scene), None, 0, 0)
    skp = np.load(tmp / "keypoints.npy")
    sflat = faiss.read_index(str(tmp / "keypoints.faiss"))
    sdesc = sflat.reconstruct_n(0, sflat.ntotal)

    # distractors: real descriptors of other images, then noisy copies
    t0 = time.perf_counter()
    paths = [sample / d / f"{pl}.png" for pl in ranked[9:] for d in "AB"]
    paths += sorted((DATA / "changed-dev").glob("*/*.png")) + sorted((DATA / "aerial-sample").glob("*/*"))
    real = []
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        for f in (1.0, 0.75):
            im = img if f == 1 else cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            d = keypoints(im, S.KP_PER_BLOCK, working=False).desc
            if len(d):
                real.append(d)
    real = np.concatenate(real).astype(np.float32)
    distract_s = time.perf_counter() - t0
    need = args.total - len(sdesc)
    flat = faiss.IndexScalarQuantizer(128, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_L2)
    flat.train(np.float32([np.zeros(128), np.ones(128)]))
    flat.add(np.ascontiguousarray(sdesc))
    flat.add(np.ascontiguousarray(real[:need]))
    left = need - min(need, len(real))
    while left:
        c = min(left, 65536)
        x = real[rng.integers(0, len(real), c)] + rng.normal(0, 0.02, (c, 128)).astype(np.float32)
        x = np.maximum(x, 0)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        flat.add(np.ascontiguousarray(x, np.float32))
        left -= c
    W = 20000
    dk = np.zeros(flat.ntotal - len(skp), S.KP_DTYPE)
    dk["x"], dk["y"] = rng.uniform(0, W, len(dk)), rng.uniform(0, W, len(dk))
    dk["size"] = rng.choice(skp["size"], len(dk))
    dk["angle"] = rng.uniform(0, 360, len(dk))
    allkp = np.concatenate([skp, dk])

    t0 = time.perf_counter()
    ivf = S.partition_keypoints(flat)
    ivf_build_s = time.perf_counter() - t0

    crops = []
    for _ in range(args.n):
        cx, cy = (int(v) for v in rng.integers(192, side - 192, 2))
        crops.append((cx, cy, B.crop(b, cx, cy, float(rng.uniform(0, 360)))))
    qs = [np.ascontiguousarray(keypoints(c, L.KP_TILE).desc, np.float32) for _, _, c in crops]

    def run(index):
        secs, matches = [], []
        for q in qs:
            t1 = time.perf_counter()
            d, ids = search_index(index, q, 2)
            secs.append(time.perf_counter() - t1)
            good = (ids[:, 1] >= 0) & (d[:, 0] < L.KP_RATIO ** 2 * d[:, 1])
            matches.append({(int(i), int(ids[i, 0])) for i in np.flatnonzero(good)})
        top, vsecs = 0, []
        for cx, cy, c in crops:  # the votes on the combined keypoints: is the best region the truth's?
            idx = SimpleNamespace(keypoint_index=index, keypoints=allkp, info=SimpleNamespace(width=W, height=W))
            t1 = time.perf_counter()
            v = L.vote_regions(idx, c)
            vsecs.append(time.perf_counter() - t1)
            top += bool(v) and np.hypot(v[0].x + v[0].side / 2 - cx, v[0].y + v[0].side / 2 - cy) <= 16
        return secs, matches, top, float(np.median(vsecs))

    out = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "scene_keypoints": int(nkp),
           "distractor_descriptors_found": len(real), "distractors_real": int(min(need, len(real))),
           "distractors_noisy": int(max(0, need - len(real))),
           "distractor_images": len(paths), "distractors_s": round(distract_s, 1), "total": int(flat.ntotal),
           "tiles": args.n, "tile_keypoints_mean": round(float(np.mean([len(q) for q in qs])), 1),
           "ivf": {"nlist": int(ivf.nlist), "build_s": round(ivf_build_s, 1)}}
    fs, fm, ftop, fv = run(flat)
    out["flat"] = {"s_median": round(float(np.median(fs)), 3), "s_max": round(float(max(fs)), 3),
                   "vote_regions_s_median": round(fv, 3),
                   "matches_mean": round(float(np.mean([len(m) for m in fm])), 1), "top_region_true": int(ftop)}
    for npb in (int(v) for v in args.nprobe.split(",")):
        ivf.nprobe = npb
        s, m, top, v = run(ivf)
        kept = sum(len(x & y) for x, y in zip(fm, m)) / max(1, sum(len(x) for x in fm))
        out[f"ivf_nprobe{npb}"] = {"s_median": round(float(np.median(s)), 4), "s_max": round(float(max(s)), 4),
                                   "vote_regions_s_median": round(v, 3),
                                   "matches_mean": round(float(np.mean([len(x) for x in m])), 1),
                                   "flat_matches_kept": round(kept, 3), "top_region_true": int(top)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
