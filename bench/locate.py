"""Locate tiles in a scene: placement within 8 px, "not found" for other places, seconds a tile, index build.

    python bench/locate.py [--run RUN_ID] [--n 100] [--negatives 100] [--big 6000] [--seed 0] [--zoom 1]
                           [--check N] [--votes N] [--resample 2,0.5|none]

* Scene: a 2,001 × 2,001 px mosaic of 3 × 3 places of ``../shared/data/temporal-dev`` (date A), each centre-cropped
  square and resized to 667 px, stretched (2–98 % per band, the sample is rendered dark) and written as a tiled
  GeoTIFF with a CRS. The places are the 9 largest of the sample, laid out in a seeded order.
* Positives: ``--n`` crops of 256 px from the same mosaic built from the places' date-B images (co-registered, so
  positions match), each turned by a random angle (0–360°: a 384 px square is turned and its centre 256 px cut, so
  the truth is the crop's centre), resampled by ``--zoom`` (another resolution; the truth is in scene px either
  way). Placed = found, and the polygon's centre within 8 px of the truth; ``placed_by`` counts which first pass
  (keypoint votes, of the tile as given or resampled; embedding search) gave the placed ones. ``--check 0`` /
  ``--votes 0``: that pass left out; ``--resample none``: no resampled votes (the library's default: ×2 for
  tiles up to 320 px).
* Negatives: ``--negatives`` crops made the same way from the date-B images of the other 15 places (resized like
  the mosaic's). Correct = "not found".
* Seconds a tile: wall time of ``locate_tile`` once the index is built (on this machine's cores).
* Build: the 2,001 px scene's index build time; then a ``--big`` px square scene (the date-A mosaic repeated,
  written window by window as a tiled GeoTIFF) built in a fresh process-wide measure of peak RSS
  (``resource.getrusage``), its windows a second (the build's time less the keypoint part's) and its keypoint
  blocks, the windows and keypoint blocks of a 20,000 × 20,000 scene under the same rules
  (:func:`siamese_core.scale.scene_index.windows_of`, ``grid``), hence the extrapolated build time and index size at
  the measured rates, and the keypoint votes' seconds a tile on the big scene (``vote_s_median``, 5 crops).
Skipped with a message when the sample is absent. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import cpu_model  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared" / "data" / "temporal-dev"
PLACE = 667


def _load(path: Path) -> np.ndarray:
    import cv2
    img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return cv2.resize(img, (PLACE, PLACE), interpolation=cv2.INTER_AREA if s > PLACE else cv2.INTER_CUBIC)


def _stretch(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img.reshape(-1, 3), (2, 98), axis=0)
    return np.clip((img - lo) * 255.0 / np.maximum(hi - lo, 1e-6), 0, 255).astype(np.uint8)


def mosaic(places: list, date: str) -> np.ndarray:
    tiles = [_load(SAMPLE / date / f"{p}.png") for p in places]
    return _stretch(np.concatenate([np.concatenate(tiles[r * 3:r * 3 + 3], 1) for r in range(3)], 0).astype(float))


def crop(src: np.ndarray, cx: int, cy: int, angle: float, side: int = 256) -> np.ndarray:
    import cv2
    big = int(side * 1.5)
    r = src[cy - big // 2:cy - big // 2 + big, cx - big // 2:cx - big // 2 + big]
    r = cv2.warpAffine(r, cv2.getRotationMatrix2D((big / 2, big / 2), angle, 1.0), (big, big))
    return np.ascontiguousarray(r[big // 2 - side // 2:big // 2 + side // 2, big // 2 - side // 2:big // 2 + side // 2])


def write_scene(path: Path, img_or_fn, side: int, block: int = 2001) -> None:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=Affine(10.0, 0, 500000.0, 0, -10.0, 4000000.0), tiled=True, blockxsize=256,
                       blockysize=256) as d:
        for y in range(0, side, block):
            for x in range(0, side, block):
                part = img_or_fn(x, y, min(block, side - x), min(block, side - y))
                d.write(part.transpose(2, 0, 1), window=Window(x, y, part.shape[1], part.shape[0]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run id (default: the bundled model)")
    p.add_argument("--n", type=int, default=100, help="positive crops")
    p.add_argument("--negatives", type=int, default=100, help="crops of other places")
    p.add_argument("--big", type=int, default=6000, help="side of the scene whose build is measured (0 = skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoom", type=float, default=1.0,
                   help="tiles resampled by this factor (0.5: the crop's 256 scene px as a 128 px tile)")
    p.add_argument("--check", type=int, default=None, help="embedding hits checked at most (default: the library's)")
    p.add_argument("--votes", type=int, default=None, help="keypoint-vote regions checked (default: the library's)")
    p.add_argument("--resample", default=None,
                   help="factors the tile's votes are also tried at when not found, e.g. 2 or 2,0.5; none: off "
                        "(default: the library's)")
    args = p.parse_args(argv)
    if not (SAMPLE / "A").is_dir():
        print(json.dumps({"skipped": f"{SAMPLE} is absent"}))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from siamese_core.judge.inference import Scorer
    from siamese_core.scale import locate as L
    from siamese_core.scale import scene_index as S
    from siamese_core.scale.scene_index import scene_index, windows_of

    def locate_tile(idx, scorer, img):
        if args.zoom != 1.0:
            import cv2
            s = max(8, round(img.shape[0] * args.zoom))
            img = cv2.resize(img, (s, s), interpolation=cv2.INTER_AREA if args.zoom < 1 else cv2.INTER_CUBIC)
        kw = {k: v for k, v in (("check", args.check), ("votes", args.votes)) if v is not None}
        if args.resample is not None:
            kw["resample"] = () if args.resample == "none" else tuple(float(v) for v in args.resample.split(","))
        return L.locate_tile(idx, scorer, img, **kw)

    rng = np.random.default_rng(args.seed)
    sizes = {r["place"]: int(min(map(int, r["size"].split("x")))) for r in csv.DictReader(open(SAMPLE / "dates.csv"))}
    ranked = sorted(sizes, key=lambda k: -sizes[k])
    inside = [ranked[i] for i in rng.permutation(9)]
    outside = ranked[9:]
    a, b = mosaic(inside, "A"), mosaic(inside, "B")
    side = a.shape[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-locate-"))
    scene = tmp / "scene.tif"
    write_scene(scene, lambda x, y, w, h: a[y:y + h, x:x + w], side)
    scorer = Scorer.from_run(args.run, tmp / "ws")
    t0 = time.perf_counter()
    idx = scene_index(scorer, scene, tmp / "ws")
    build_s = time.perf_counter() - t0
    out = {"zoom": args.zoom, "resample": args.resample or list(L.RESAMPLE),
           "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "run": scorer.name, "scene_px": side,
           "places": inside, "windows": len(idx.windows), "scales": idx.meta["scales"],
           "build_s": round(build_s, 2), "keypoints": idx.meta["keypoint_count"], "blocks": idx.meta["blocks"],
           "keypoints_s": idx.meta["keypoints_s"], "threshold": scorer.threshold}
    locate_tile(idx, scorer, crop(b, 1000, 1000, 10.0))  # warm-up (graph tracing)
    placed, errs, secs, checked, misses, sources = 0, [], [], [], [], {}
    for i in range(args.n):
        cx, cy = (int(v) for v in rng.integers(192, side - 192, 2))
        ang = float(rng.uniform(0, 360))
        loc = locate_tile(idx, scorer, crop(b, cx, cy, ang))
        secs.append(loc.seconds)
        checked.append(loc.checked)
        e = float(np.hypot(loc.centre[0] - cx, loc.centre[1] - cy)) if loc.found else None
        if e is not None:
            errs.append(e)
        if e is not None and e <= 8:
            placed += 1
            sources[loc.source] = sources.get(loc.source, 0) + 1
        else:
            misses.append({"cx": cx, "cy": cy, "angle": round(ang, 1), "found": loc.found, "error_px": e,
                           "score": loc.score, "evidence": loc.evidence})
    neg_ok, neg_secs, fps = 0, [], []
    others = {p: _stretch(_load(SAMPLE / "B" / f"{p}.png").astype(float)) for p in outside}
    for i in range(args.negatives):
        pl = outside[int(rng.integers(len(outside)))]
        cx, cy = (int(v) for v in rng.integers(192, PLACE - 192, 2))
        loc = locate_tile(idx, scorer, crop(others[pl], cx, cy, float(rng.uniform(0, 360))))
        neg_secs.append(loc.seconds)
        if not loc.found:
            neg_ok += 1
        else:
            fps.append({"place": pl, "score": loc.score, "evidence": loc.evidence})
    allsecs = np.array(secs + neg_secs)
    out.update(positives=args.n, placed=placed, placed_pct=round(100 * placed / max(1, args.n), 1),
               median_error_px=round(float(np.median(errs)), 2) if errs else None,
               max_error_placed_px=round(max(e for e in errs if e <= 8), 2) if placed else None, placed_by=sources,
               negatives=args.negatives, not_found=neg_ok, not_found_pct=round(100 * neg_ok / max(1, args.negatives), 1),
               s_per_tile={"median": round(float(np.median(allsecs)), 3), "p95": round(float(np.percentile(allsecs, 95)), 3),
                           "max": round(float(allsecs.max()), 3), "positives_mean": round(float(np.mean(secs)), 3),
                           "negatives_mean": round(float(np.mean(neg_secs)), 3)},
               mean_checked_positive=round(float(np.mean(checked)), 2), misses=misses[:10], false_positives=fps[:10])
    if args.big:
        big = tmp / "big.tif"
        write_scene(big, lambda x, y, w, h: np.ascontiguousarray(a[:h, :w][:, ::-1] if (x // 2001) % 2 else a[:h, :w]),
               args.big)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        bidx = scene_index(scorer, big, tmp / "ws")
        bs = time.perf_counter() - t0
        full = sum(len(xs) * len(ys) for _, _, (xs, ys) in windows_of(20000, 20000))
        gx, gy = S.grid(S.KP_BLOCK, 20000, 20000, S.KP_STRIDE)
        blocks20 = len(gx) * len(gy)
        rate = len(bidx.windows) / max(1e-9, bs - bidx.meta["keypoints_s"])  # the windows' part of the build
        kp20 = round(blocks20 * bidx.meta["keypoint_count"] / bidx.meta["blocks"])
        kp20_s = round(blocks20 * bidx.meta["keypoints_s"] / bidx.meta["blocks"])
        vote_s = []  # the keypoint votes' cost a tile on the big scene (its keypoints searched exhaustively)
        for i in range(5):
            t1 = time.perf_counter()
            L.vote_regions(bidx, crop(b, 400 + 250 * i, 600, 30.0 * i))
            vote_s.append(time.perf_counter() - t1)
        out["big"] = {"scene_px": args.big, "windows": len(bidx.windows), "build_s": round(bs, 1),
                      "windows_per_s": round(rate, 1), "scales": bidx.meta["scales"],
                      "peak_rss_mb_before": round(rss0 / 1024), "peak_rss_mb_after": round(
                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "index_mb_on_disk": round(sum(f.stat().st_size for f in bidx.path.iterdir()) / 2**20, 1),
                      "keypoints": bidx.meta["keypoint_count"], "blocks": bidx.meta["blocks"],
                      "keypoints_s": bidx.meta["keypoints_s"],
                      "blocks_20000": blocks20, "keypoints_20000_extrapolated": kp20,
                      "keypoints_s_20000_extrapolated": kp20_s, "vote_s_median": round(float(np.median(vote_s)), 3),
                      "windows_20000": full, "build_s_20000_extrapolated": round(full / rate + kp20_s),
                      "index_mb_20000_extrapolated": round((full * (bidx.meta["dim"] * 4 * 2 + 12)
                                                            + kp20 * (128 + S.KP_DTYPE.itemsize)) / 2**20)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
