"""Accuracy per kind of pair on imagery a run never trained on: the fused score and each piece of evidence.

Draws labelled pairs of every kind (`siamese_core.data.pairsets`: two dates in the same frame, two dates
turned and zoomed, rotated copies, distorted copies, simulated second dates, and the tiles that only partly
agree: B covering 30-70 % of A, B 2-4× coarser, a changed place) from the places and tiles hashed into the
``test`` split (never used to train or calibrate the bundled model), then runs ``evaluate --pairs`` on them
and prints, per kind, the fused verdict's numbers at the shipped threshold (same places found, false "same",
undecided share, accuracy on the decided pairs) and each piece of evidence alone (ROC-AUC). Usage:

    python bench/accuracy.py [--run RUN_ID] [--ab DIR] [--tiles DIR] [--split test] [--seed 2] [--kinds K,K]
    python bench/accuracy.py --pairs LABELLED.csv [--run RUN_ID]      # your own labelled pairs
    python bench/accuracy.py --ab ../shared/data/changed-dev --tiles none --split all --kinds overlap,coarse,changed

Defaults: the bundled model, ``../shared/data/temporal-dev`` and ``../shared/data/aerial-sample``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run id (default: the bundled model)")
    p.add_argument("--pairs", help="a labelled CSV (image_a,image_b,label[,kind]) instead of drawn pairs")
    p.add_argument("--ab", default=str(SHARED / "temporal-dev"), help="A/B folder of places on two dates")
    p.add_argument("--tiles", default=str(SHARED / "aerial-sample"), help="folder of single tiles")
    p.add_argument("--split", default="test", choices=("all", "calibration", "test"))
    p.add_argument("--per-place", type=int, default=10)
    p.add_argument("--tiles-n", type=int, default=100)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--kinds", help="comma-separated pair kinds (default: every kind)")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from siamese_core.data.pairsets import make_pairset
    from siamese_core.judge.calibration import evaluate_pairs
    from siamese_core.judge.inference import Scorer
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(args.pairs) if args.pairs else make_pairset(
            tmp, args.ab if Path(args.ab).is_dir() else None, args.tiles if Path(args.tiles).is_dir() else None,
            per_place=args.per_place, n_tiles=args.tiles_n, split=args.split, seed=args.seed,
            kinds=args.kinds.split(",") if args.kinds else None)
        scorer = Scorer.from_run(args.run, args.workspace)
        t0 = time.perf_counter()
        rep = evaluate_pairs(scorer, csv_path)
        n = sum(e["pairs"] for k, e in rep["kinds"].items() if k != "all" or len(rep["kinds"]) == 1)
        rep["ms_per_pair"] = round(1000 * (time.perf_counter() - t0) / max(n, 1), 1)
        rep["run"] = scorer.name
    if args.json:
        print(json.dumps(rep, indent=2))
        return
    print(f"run {rep['run']}, threshold {rep['threshold']:.4f}, {rep['ms_per_pair']} ms/pair (2 cores, decode included)")
    print("| kind | pairs | ROC-AUC fused | same found | false same | undecided | decided right "
          "| learned distance alone | inliers alone | edges aligned alone | edges as laid alone |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    pct = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731
    for k, e in rep["kinds"].items():
        print(f"| {k} | {e['pairs']} | {e['roc_auc_score']} | {pct(e['recall'])} | {pct(e['false_same'])} | "
              f"{pct(e['undecided'])} | {pct(e['accuracy_decided'])} | {e['roc_auc_distance']} | "
              f"{e['roc_auc_inliers']} | {e['roc_auc_structure']} | {e['roc_auc_structure_identity']} |")


if __name__ == "__main__":
    main()
