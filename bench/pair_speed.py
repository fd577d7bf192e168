"""How long one pair takes, geometry included, on one CPU core at 256 px; and batch pairs/s on every core.

    python bench/pair_speed.py [--run RUN_ID] [--repeats 30]

One pair = decode two 256×256 PNGs from bytes, learned distance (twice when the keypoints found a
transform with 8 to 29 inliers), SIFT + ORB keypoints, matching, RANSAC and edge agreement, the fused score: exactly
``Scorer.judge_pair``. The process is pinned to one core for the single-pair figure (TensorFlow and
OpenCV then have one core to use). Measured on one synthetic tile (always), and when
``../shared/data/aerial-sample`` is there, on real 256 px aerial tiles too: 12 tiles, each paired with
a simulated second acquisition turned by 33° (same place) and with the next tile (different place);
the median over all their repeats. Batch: ``score --pairs``' code path (`judge_rows`) over 200 pairs of
distinct tiles with every core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from machine import cpu_model  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--workspace")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})  # before TensorFlow starts its thread pools
    import cv2
    from siamese_core.core.backend import tf
    from siamese_core.data.augment import rotate
    from siamese_core.data.images import encode_png
    from siamese_core.data.sources.synthetic import synthetic_tile
    from siamese_core.judge.inference import Scorer, judge_rows
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    scorer = Scorer.from_run(args.run, args.workspace)
    a = synthetic_tile(1, 256, seed=0)
    pairs = [(encode_png(a), encode_png(rotate(a, 33.0))), (encode_png(a), encode_png(synthetic_tile(2, 256, seed=0)))]
    out = {"run": scorer.name, "cpu": cpu_model()}
    for name, (pa, pb) in zip(("same_place_ms", "different_place_ms"), pairs):
        scorer.judge_pair(pa, pb)  # warm-up: graph trace
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            scorer.judge_pair(pa, pb)
            ts.append(1000 * (time.perf_counter() - t0))
        out[name] = round(statistics.median(ts), 1)
    aerial = ROOT.parent / "shared" / "data" / "aerial-sample"
    if aerial.is_dir():  # real tiles: what analysts score (SIFT's cost depends on the texture)
        import numpy as np
        from siamese_core.data.augment import acquisition
        from siamese_core.data.images import decode_image
        files = sorted(aerial.rglob("*.jpg"))[::50][:12]
        tiles = [decode_image(f) for f in files]
        same = [(encode_png(t), encode_png(rotate(acquisition(t, np.random.default_rng(i))[0], 33.0)))
                for i, t in enumerate(tiles)]
        diff = [(encode_png(t), encode_png(tiles[(i + 1) % len(tiles)])) for i, t in enumerate(tiles)]
        for name, pairs in (("aerial_same_place_ms", same), ("aerial_different_place_ms", diff)):
            ts = []
            for pa, pb in pairs:
                scorer.judge_pair(pa, pb)
                for _ in range(max(3, args.repeats // 6)):
                    t0 = time.perf_counter()
                    scorer.judge_pair(pa, pb)
                    ts.append(1000 * (time.perf_counter() - t0))
            out[name] = round(statistics.median(ts), 1)
        out["aerial_tiles"] = len(tiles)
    os.sched_setaffinity(0, set(cores))
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i in range(200):
            t = synthetic_tile(100 + i, 256, seed=1)
            cv2.imwrite(f"{tmp}/{i}a.png", t)
            cv2.imwrite(f"{tmp}/{i}b.png", rotate(t, float(i)))
            rows.append({"image_a": f"{i}a.png", "image_b": f"{i}b.png"})
        t0 = time.perf_counter()
        js = judge_rows(scorer, rows, Path(tmp))
        dt = time.perf_counter() - t0
        assert all(hasattr(j, "score") for j in js)
        out["batch_pairs_per_s"] = round(len(rows) / dt, 1)
        out["batch_cores"] = len(cores)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
