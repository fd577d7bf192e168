"""Commands that judge: ``score`` (two images or a CSV of pairs), ``evaluate`` (a run's numbers) and
``calibrate`` (fit a run's fused verdict).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.errors import SiameseError
from .common import bands_help, progress, ray_options, scorer_for
from .scale import cmd_score_ray


def cmd_evaluate(args) -> int:
    from ..learn.evaluate import report
    from ..runs.registry import open_run
    from ..runs.scores import VALIDATION_LABEL
    if args.pairs and args.dataset:
        raise SiameseError("give --pairs LABELLED.csv or --dataset NAME, not both")
    if args.pairs or args.dataset:
        from ..judge.calibration import evaluate_dataset, evaluate_pairs
        if args.dataset:
            from ..data.store import open_dataset
            ds = open_dataset(args.dataset, args.workspace)  # an unknown dataset fails before the model loads
            res = evaluate_dataset(scorer_for(args), ds, args.workspace, progress=progress("evaluate", "pair"),
                                   threshold=args.threshold)
            what = f"dataset {args.dataset}"
        else:
            res = evaluate_pairs(scorer_for(args), Path(args.pairs), args.threshold,
                                 progress=progress("evaluate", "pair"), workspace=args.workspace)
            what = args.pairs
        if args.json:
            print(json.dumps(res, indent=2))
            return 0
        print(f"{what}: threshold {res['threshold']:.4f} (score > threshold = different place)")
        pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
        for k, e in res["kinds"].items():
            print(f"  {k:>20}: n={e['pairs']} ({e['same']} same)  ROC-AUC={e['roc_auc_score']}  "
                  f"same found {pct(e['recall'])}, false same {pct(e['false_same'])}, undecided {pct(e['undecided'])} "
                  f"(accuracy on decided {pct(e['accuracy_decided'])})\n{'':>24}ROC-AUC alone: learned distance "
                  f"{e['roc_auc_distance']}, inliers {e['roc_auc_inliers']}, edges aligned {e['roc_auc_structure']}, "
                  f"edges as laid {e['roc_auc_structure_identity']}")
        print(f"stored -> {res['stored']} (and .npz: the scores, for the dashboard's Threshold page)", file=sys.stderr)
        return 0
    if not args.run:
        raise SiameseError("evaluate needs --run RUN_ID (its test pairs), --pairs LABELLED.csv or --dataset NAME")
    run = open_run(args.run, args.workspace)
    if run.has_test_scores():
        v, split = run.test_scores(), "test"
        info = run.evaluation_pairs()
        label = info["label"] if info["split"] == "test" else "test pairs: places never used for training or the threshold"
    else:  # a run from before the test split (or trained with --test-fraction 0)
        v, split, label = run.val_scores(), "validation", VALIDATION_LABEL
    s, y = v["score"], v["label"]
    changed = run.dataset_change(args.workspace)
    if changed:  # the scores are the run's own, stored when it finished; the dataset's images are not theirs now
        print(f"warning: {changed}; these scores are of its images at training time", file=sys.stderr)
    t = args.threshold if args.threshold is not None else run.threshold()
    if run.has_fusion() and args.threshold is None:
        # the stored scores are the learned distance; the run's threshold is now the fused verdict's, on
        # another scale: report the distance at the threshold it was evaluated with, and say so
        t = float(run.evaluation().get("all", {}).get("metrics", {}).get("threshold", t))
        label += (f"; the learned distance alone: run {args.run}'s verdict is fused (keypoints + distance), "
                  f"measure it with evaluate --run {args.run} --pairs LABELLED.csv")
    rep = report(s, y, t, identical=v["identical"])
    if args.json:
        print(json.dumps({"run": args.run, "threshold": t, "dataset_changed": changed,
                          "pairs": {"split": split, "pairs": len(s), "label": label}, **rep}, indent=2))
        return 0
    print(f"run {args.run}: {len(s)} {split} pairs ({label}), threshold {t:.4f} "
          f"(score > threshold = different place)")
    for key, title in (("all", "all pairs"), ("without_identical", "without identical pairs")):
        r = rep.get(key)
        if not r:
            continue
        m = r["metrics"]
        print(f"  {title:>24}: n={r['n_pairs']}  ROC-AUC={r['roc_auc']}  AP={r['average_precision']}  "
              f"accuracy={m['accuracy']:.4f}  precision={m['precision']:.4f}  recall={m['recall']:.4f}  f1={m['f1']:.4f}")
        print(f"  {'':>24}  confusion (rows true same/different, cols predicted same/different): "
              f"[[{m['tp']}, {m['fn']}], [{m['fp']}, {m['tn']}]]")
        sg = r["suggestions"]
        print(f"  {'':>24}  suggested thresholds: best F1 {sg['best_f1']}, best accuracy {sg['best_accuracy']}, "
              f"precision>={sg['target']}: {sg['target_precision']}")
    return 0


def cmd_calibrate(args) -> int:
    from ..judge.calibration import calibrate
    res = calibrate(scorer_for(args), Path(args.pairs), args.as_name, args.workspace,
                    progress=progress("calibrate", "pair"))
    f = res["fusion"]
    print(f"run {res['run']}: fusion fitted on {res['pairs']} pairs (features {', '.join(f['names'])}); "
          f"threshold {f['threshold']:.4f}; on these same pairs ROC-AUC {res['roc_auc']:.4f}, "
          f"accuracy {res['accuracy']:.4f}, {res['undecided']:.1%} undecided (measure on other pairs with evaluate --pairs)")
    return 0


def cmd_score(args) -> int:
    from ..judge.inference import explain, score_csv
    if args.engine == "ray":
        return cmd_score_ray(args)
    if args.ray_address or args.workers or args.gpus_per_worker or args.shard_size:
        raise SiameseError("--ray-address, --workers, --gpus-per-worker and --shard-size apply to --engine ray")
    from ..data.rasters import parse_bands
    bands = parse_bands(args.bands)  # a bad --bands is one line before any model loads
    scorer = scorer_for(args)
    t = args.threshold if args.threshold is not None else scorer.threshold
    if args.pairs:
        if args.geojson:
            raise SiameseError("--geojson applies to two images (score A.tif B.tif), not to --pairs")
        if not args.out:
            raise SiameseError("--pairs needs --out OUT.csv")
        res = score_csv(scorer, Path(args.pairs), Path(args.out), t, progress=progress("score", "pair"), bands=bands)
        for n, why in res["failed"]:
            print(f"line {n}: {why}", file=sys.stderr)
        print(f"scored {res['scored']} pair(s), {len(res['failed'])} failed -> {args.out}")
        return 0 if res["scored"] else 2
    if not (args.image_a and args.image_b):
        raise SiameseError("give two images (score --run ID A.png B.png) or --pairs IN.csv --out OUT.csv")
    from ..judge.georef import footprints_geojson, is_georeferenced, judge_georeferenced
    if args.geojson and not all(is_georeferenced(p) for p in (args.image_a, args.image_b)):
        raise SiameseError(f"--geojson {args.geojson}: both images must be rasters with a CRS and a geotransform "
                           f"(GeoTIFF, COG...); drop --geojson for plain images")
    j, georef = judge_georeferenced(scorer, args.image_a, args.image_b, bands=bands, threshold=t)
    if args.geojson:
        from ..core.files import write_json_atomic
        try:
            write_json_atomic(Path(args.geojson), footprints_geojson(georef, args.image_a, args.image_b))
        except OSError as e:
            raise SiameseError(f"{args.geojson}: cannot write the GeoJSON ({e.strerror or e}); "
                               f"choose a writable path") from None
    if args.json:
        geo = {k: v for k, v in j.geo.as_row().items() if k not in ("geometry", "polygon")}
        print(json.dumps({"run": scorer.name, "image_a": args.image_a, "image_b": args.image_b, "score": j.score,
                          "threshold": t, "same_place": j.same_place, "verdict": j.verdict, "reason": j.reason,
                          "distance": j.distance, **geo, "overlap": round(j.geo.overlap, 4) if j.geo.found else None,
                          "polygon": [list(p) for p in j.geo.polygon], "geometry": j.geo.sentence(),
                          "georef": georef}))
    else:
        print(explain(j.score, t, scorer.band))
        if j.reason:
            print(f"  {j.reason}")
        if j.geo.found:
            print(f"  B covers {j.geo.overlap:.0%} of A")
        print(f"  evidence: learned distance {j.distance:.4f}; {j.geo.sentence()}")
        if georef:
            off = "" if georef["offset_m"] is None else f" (offset {georef['offset_m']:.1f} m)"
            print(f"  georeferencing ({georef['crs']}): {georef['sentence']}{off}")
    return 0


def add_evaluate(sub) -> None:
    s = sub.add_parser("evaluate", help="a run's metrics on its test pairs, on labelled pairs (--pairs) "
                                        "or on pairs drawn from a dataset (--dataset)")
    s.add_argument("--run", help="run id (with --pairs or --dataset: default the bundled model)")
    s.add_argument("--pairs", help="labelled CSV image_a,image_b,label[,kind]: ROC-AUC and accuracy per kind")
    s.add_argument("--dataset", help="dataset name: score pairs drawn from it (each image with another of its "
                                     "place and one of another place, at most 2,000, seeded); stored under the "
                                     "run as evaluations/dataset-NAME.json and .npz")
    s.add_argument("--threshold", type=float)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)


def add_calibrate(sub) -> None:
    s = sub.add_parser("calibrate", help="fit a run's fused verdict (learned distance + geometry) on labelled pairs")
    s.add_argument("--run", help="run id (default: the bundled model, which needs --as)")
    s.add_argument("--pairs", required=True, help="labelled CSV image_a,image_b,label (0 same place, 1 different)")
    s.add_argument("--as", dest="as_name", help="save the calibrated run as a new run of this name")
    s.set_defaults(func=cmd_calibrate)


def add_score(sub) -> None:
    s = sub.add_parser("score", help="score two images, or a CSV of pairs (lower score = more alike)")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.add_argument("image_a", nargs="?")
    s.add_argument("image_b", nargs="?")
    s.add_argument("--pairs", help="CSV with columns image_a,image_b")
    s.add_argument("--out", help="output CSV for --pairs (with --engine ray: a folder of parquet shards)")
    s.add_argument("--threshold", type=float)
    s.add_argument("--json", action="store_true")
    s.add_argument("--bands", help=bands_help("with --pairs, for every raster the CSV names"))
    s.add_argument("--geojson", help="two georeferenced rasters: write B's footprints on A (from the imagery and "
                                     "from B's metadata) to this GeoJSON file, in A's CRS")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="--pairs on Ray (local, or a cluster with --ray-address): --out is then a folder of "
                        "parquet shards, resumable (default: local, one process, --out a CSV)")
    ray_options(s)
    s.set_defaults(func=cmd_score)
