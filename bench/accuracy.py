"""Accuracy on real tiles a run never trained on: ROC-AUC on rotation pairs and on distorted pairs.

Pairs (no identical pairs): a tile and a copy rotated by a random angle (same place), or a rotated copy
of another tile (different place); the "distorted" variant gives the second tile one extra distortion
(flip, blur, brightness/contrast, zoom-crop or a blacked-out patch). Usage:

    python bench/accuracy.py --run RUN_ID --tiles FOLDER [--pairs 2000] [--seed 0]
    python bench/accuracy.py --run RUN_ID              # the run's own validation tiles (never trained on)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from siamese_core import augment  # noqa: E402
from siamese_core.evaluate import metrics_at, roc_auc  # noqa: E402
from siamese_core.images import load_tile  # noqa: E402
from siamese_core.sources.files import list_images  # noqa: E402

DISTORT = ("flip", "blur", "brightness", "scale", "occlude")


def make_eval_pairs(tiles: np.ndarray, n_pairs: int, seed: int, distorted: bool):
    rng = np.random.default_rng(seed)
    n = len(tiles)
    a, b, y = [], [], []
    for k in range(n_pairs):
        i = int(rng.integers(n))
        same = k % 2 == 0
        j = i if same else int((i + rng.integers(1, n)) % n)
        second = augment.rotate(tiles[j], float(rng.uniform(0, 360)))
        if distorted:
            kind = DISTORT[int(rng.integers(len(DISTORT)))]
            second = augment.apply_distortion(second, kind, augment.draw_distortion(kind, rng))
        a.append(tiles[i]); b.append(second); y.append(0 if same else 1)
    return np.stack(a), np.stack(b), np.array(y, np.uint8)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--tiles", help="folder of real tiles the run never saw (default: the original tiles of the "
                                   "run's validation groups, which training never used)")
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workspace")
    args = p.parse_args(argv)
    from siamese_core.inference import Scorer
    scorer = Scorer.from_run(args.run, args.workspace)
    if args.tiles:
        tiles = np.stack([load_tile(f, scorer.size) for f in list_images(args.tiles)])
    else:
        from siamese_core.pairs import Pairs
        from siamese_core.runs import read_config
        from siamese_core.store import open_dataset
        ds = open_dataset(read_config(scorer.run_dir).dataset, args.workspace)
        val = Pairs.load(scorer.run_dir / "pairs.npz").validation
        held_out = np.unique(ds.groups[val.a])
        originals = ds.manifest.index[(ds.manifest["variant"] == 0) & ds.manifest["group"].isin(held_out)]
        tiles = np.asarray(ds.images[originals.to_numpy()])
    out = {"run": args.run, "tiles": len(tiles), "threshold": scorer.threshold}
    for name, distorted in (("rotation", False), ("distorted", True)):
        a, b, y = make_eval_pairs(tiles, args.pairs, args.seed, distorted)
        t0 = time.perf_counter()
        s = scorer.score_tiles(a, b)
        dt = time.perf_counter() - t0
        out[name] = {"roc_auc": roc_auc(s, y), "accuracy_at_threshold": metrics_at(s, y, scorer.threshold).accuracy,
                     "pairs": len(y), "ms_per_pair": 1000 * dt / len(y)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
