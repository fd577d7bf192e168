"""The command line: ``python -m siamese_core {prepare,train,calibrate,evaluate,score,embed,list,stop,delete,...}``.

Every user-fixable problem (a SiameseError) ends the command with exit code 2 and one line on
stderr, never a traceback. Long steps show tqdm progress bars (on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import DISTORTIONS, PRECISIONS, PRESETS, SOURCES, DataConfig, RunConfig, workspace_dir
from .errors import SiameseError


def _progress(desc: str, unit: str):
    from tqdm import tqdm
    bar = None

    def update(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    def close():  # end an unfinished bar's line, so that an error after it starts a line of its own
        if bar is not None and bar.n < (bar.total or 0):
            bar.close()
    update.close = close
    return update


def cmd_prepare(args) -> int:
    from .store import build_dataset
    cfg = DataConfig(source=args.source, path=args.path or "", limit=args.limit, size=args.size,
                     variants=args.variants, distortions=tuple(args.distort or ()), seed=args.seed,
                     column=args.column or "", repo_id=args.repo_id, window=args.window, stride=args.stride)
    skipped = []
    ds = build_dataset(cfg, args.name, args.workspace, overwrite=args.overwrite,
                       progress=_progress(f"prepare {args.name}", "tile"),
                       on_skip=lambda f, why: skipped.append(why))
    for why in skipped[:20]:
        print(f"skipped: {why}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"... and {len(skipped) - 20} more (see {ds.path / 'skipped.csv'})", file=sys.stderr)
    info = ds.info
    what = "places/windows" if cfg.source == "ab" else "places" if cfg.source == "pairs-csv" else "tiles"
    print(f"dataset {ds.name}: {info['images']} images from {info['groups']} {what} "
          f"({cfg.variants} variant(s) each, {cfg.size} px), {len(skipped)} skipped -> {ds.path}")
    return 0


def _run_config(args) -> RunConfig:
    return RunConfig.build(args.dataset, args.preset, epochs=args.epochs, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, seed=args.seed, steps_per_epoch=args.steps_per_epoch,
                           precision=args.precision, augment=args.augment, identical=args.identical,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction, negatives=args.negatives,
                           pair_limit=args.pair_limit, devices=args.devices)


def _check_devices(cfg: RunConfig) -> None:
    """Refuse too many --devices before anything is written; say on stderr what N or 'all' resolved to."""
    if cfg.train.devices != 1:
        from .devices import resolve_devices
        print(f"devices: {resolve_devices(cfg.train.devices).describe()}", file=sys.stderr)


def cmd_train(args) -> int:
    from .runs import acquire_train_lock, create_run, new_run_id, open_run
    ws = workspace_dir(args.workspace)
    if args.resume:
        run = open_run(args.resume, ws)
        from .train import run_training
        run.resume_check(ws)
        _check_devices(run.config)
        run.clear_stop()
        run_training(run, resume=True, verbose=args.verbose)
    else:
        cfg = _run_config(args)
        _check_devices(cfg)
        rid = args.run_id or new_run_id(cfg.model.preset, ws)
        fd = acquire_train_lock(rid, ws)  # refuse before creating anything
        try:
            run = create_run(cfg, ws, rid)
        except BaseException:
            os.close(fd)
            raise
        print(f"run {rid}: training preset {cfg.model.preset!r} on {cfg.dataset} -> {run.path}", file=sys.stderr)
        from .train import run_training
        run_training(run, lock_fd=fd, verbose=args.verbose)
    st = run.status()
    thr = run.threshold_info() or {"threshold": float("nan"), "source": "none"}
    fitted = " on the calibration pairs" if thr["source"] == "calibrated" else ""
    print(f"run {run.name}: {st['status']} on {st.get('device')}; threshold {thr['threshold']:.4f} "
          f"({thr['source']}{fitted}); {_result_line(run)}")
    if st["status"] == "finished" and not run.has_fusion():
        print(f"run {run.name} scores with the learned distance alone; to weigh the keypoint evidence in too: "
              f"python -m siamese_core make-pairs --tiles DIR --out PAIRS --split calibration && "
              f"python -m siamese_core calibrate --run {run.name} --pairs PAIRS/pairs.csv",
              file=sys.stderr)
    return 0 if st["status"] == "finished" else 1


def _result_line(run) -> str:
    """'ROC-AUC 0.9800, accuracy 0.9400 on 60 pairs (test pairs: 2 places never used for ...)', or '' before
    the run has an evaluation."""
    ev = run.evaluation()
    m = ev.get("without_identical") or ev.get("all")
    if not m:
        return ""
    info = run.evaluation_pairs()
    acc = m.get("metrics", {}).get("accuracy")
    auc = m.get("roc_auc")
    return (f"ROC-AUC {'n/a' if auc is None else f'{auc:.4f}'}, accuracy {'n/a' if acc is None else f'{acc:.4f}'} "
            f"on {m.get('n_pairs')} pairs ({info['label']})")


def cmd_job(args) -> int:
    """Internal: run a queued run (started by the dashboard, which already holds the lock)."""
    from .runs import open_run
    from .train import run_training
    fd = os.environ.get("SIAMESE_LOCK_FD")
    run_training(open_run(args.run_id, args.workspace), resume=args.resume,
                 lock_fd=int(fd) if fd else None, verbose=2)
    return 0


def _scorer(args):
    """The run named by --run, else the bundled model (and say so on stderr)."""
    from .inference import Scorer
    from .runs import PRETRAINED
    if not args.run:
        print(f"using the bundled model {PRETRAINED!r} (no --run given)", file=sys.stderr)
    return Scorer.from_run(args.run, args.workspace)


def cmd_evaluate(args) -> int:
    from .evaluate import report
    from .runs import VALIDATION_LABEL, open_run
    if args.pairs and args.dataset:
        raise SiameseError("give --pairs LABELLED.csv or --dataset NAME, not both")
    if args.pairs or args.dataset:
        from .calibration import evaluate_dataset, evaluate_pairs
        if args.dataset:
            from .store import open_dataset
            ds = open_dataset(args.dataset, args.workspace)  # an unknown dataset fails before the model loads
            res = evaluate_dataset(_scorer(args), ds, args.workspace, progress=_progress("evaluate", "pair"),
                                   threshold=args.threshold)
            what = f"dataset {args.dataset}"
        else:
            res = evaluate_pairs(_scorer(args), Path(args.pairs), args.threshold,
                                 progress=_progress("evaluate", "pair"), workspace=args.workspace)
            what = args.pairs
        if args.json:
            print(json.dumps(res, indent=2))
            return 0
        print(f"{what}: threshold {res['threshold']:.4f} (score > threshold = different place)")
        for k, e in res["kinds"].items():
            print(f"  {k:>20}: n={e['pairs']} ({e['same']} same)  ROC-AUC={e['roc_auc_score']}  "
                  f"accuracy={e['accuracy']}  [learned distance alone {e['roc_auc_distance']}, "
                  f"inliers alone {e['roc_auc_inliers']}, edges alone {e['roc_auc_structure']}]")
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
    from .calibration import calibrate
    res = calibrate(_scorer(args), Path(args.pairs), args.as_name, args.workspace,
                    progress=_progress("calibrate", "pair"))
    f = res["fusion"]
    print(f"run {res['run']}: fusion fitted on {res['pairs']} pairs (features {', '.join(f['names'])}); "
          f"threshold {f['threshold']:.4f}; on these same pairs ROC-AUC {res['roc_auc']:.4f}, "
          f"accuracy {res['accuracy']:.4f} (measure on other pairs with evaluate --pairs)")
    return 0


def cmd_make_pairs(args) -> int:
    from .pairsets import make_pairset
    path = make_pairset(args.out, args.ab, args.tiles, per_place=args.per_place, n_tiles=args.tiles_n,
                        split=args.split, test_fraction=args.test_fraction, seed=args.seed)
    import csv
    from collections import Counter
    with open(path, newline="") as f:
        kinds = Counter(r["kind"] for r in csv.DictReader(f))
    print(f"{sum(kinds.values())} labelled pairs ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}) -> {path}")
    return 0


def cmd_score(args) -> int:
    from .inference import explain, score_csv
    if args.engine == "ray":
        return cmd_score_ray(args)
    if args.ray_address or args.workers or args.gpus_per_worker or args.shard_size:
        raise SiameseError("--ray-address, --workers, --gpus-per-worker and --shard-size apply to --engine ray")
    scorer = _scorer(args)
    t = args.threshold if args.threshold is not None else scorer.threshold
    if args.pairs:
        if not args.out:
            raise SiameseError("--pairs needs --out OUT.csv")
        res = score_csv(scorer, Path(args.pairs), Path(args.out), t, progress=_progress("score", "pair"))
        for n, why in res["failed"]:
            print(f"line {n}: {why}", file=sys.stderr)
        print(f"scored {res['scored']} pair(s), {len(res['failed'])} failed -> {args.out}")
        return 0 if res["scored"] else 2
    if not (args.image_a and args.image_b):
        raise SiameseError("give two images (score --run ID A.png B.png) or --pairs IN.csv --out OUT.csv")
    j = scorer.judge_pair(args.image_a, args.image_b, threshold=t)
    if args.json:
        print(json.dumps({"run": scorer.name, "image_a": args.image_a, "image_b": args.image_b, "score": j.score,
                          "threshold": t, "same_place": j.same_place, "distance": j.distance,
                          **{k: v for k, v in j.geo.as_row().items() if k != "geometry"},
                          "geometry": j.geo.sentence()}))
    else:
        print(explain(j.score, t))
        print(f"  evidence: learned distance {j.distance:.4f}; {j.geo.sentence()}")
    return 0


def _failures(res: dict, what: str) -> None:
    for name, why in res["failures"]:
        print(f"{what} {name}: {why}" if what == "line" else f"skipped: {why}", file=sys.stderr)
    if res["errors"] > len(res["failures"]):
        print(f"... and {res['errors'] - len(res['failures'])} more (the error column of the shards in {res['out']})",
              file=sys.stderr)


def _resumed(res: dict) -> str:
    return (f"{res['shards']} shard(s): {res['computed']} computed, {res['kept']} kept from an earlier run"
            if res["kept"] else f"{res['shards']} shard(s)")


def cmd_score_ray(args) -> int:
    """score --pairs IN.csv --out FOLDER --engine ray: the same judgements, as parquet shards, on Ray."""
    from .scale import score_pairs
    if not (args.pairs and args.out):
        raise SiameseError("--engine ray scores a CSV: give --pairs IN.csv --out FOLDER (a folder of parquet shards)")
    if not args.run:
        print("using the bundled model 'pretrained' (no --run given)", file=sys.stderr)
    bar = _progress("score", "pair")
    try:
        res = score_pairs(args.pairs, args.out, args.run, args.workspace, args.threshold, args.shard_size,
                          args.workers, args.gpus_per_worker, args.ray_address, progress=bar)
    finally:
        bar.close()
    _failures(res, "line")
    print(f"scored {res['rows'] - res['errors']} pair(s), {res['errors']} failed, threshold {res['threshold']:.4f} "
          f"({_resumed(res)}) -> {res['out']}")
    return 0 if res["rows"] > res["errors"] else 2


def cmd_embed(args) -> int:
    from .scale import embed
    if not args.run:
        print("using the bundled model 'pretrained' (no --run given)", file=sys.stderr)
    bar = _progress("embed", "tile")
    try:
        res = embed(args.out, images=args.images, parquet=args.parquet, dataset=args.dataset,
                    column=args.column or "", run=args.run, workspace=args.workspace, shard_size=args.shard_size,
                    workers=args.workers, gpus_per_worker=args.gpus_per_worker, address=args.ray_address,
                    progress=bar)
    finally:
        bar.close()
    _failures(res, "skipped")
    print(f"embedded {res['rows'] - res['errors']} tile(s), {res['errors']} unreadable ({_resumed(res)}) -> {res['out']}")
    if res["rows"] == res["errors"]:
        return 2
    if args.index != "none":
        from .shard_index import build_shard_index
        meta = build_shard_index(args.out, args.index, nlist=args.nlist, m=args.pq_m,
                                 progress=_progress("index", "shard"))
        what = (f"IVF-PQ {meta['factory']}, nprobe {meta['nprobe']}" if meta["kind"] == "ivfpq" else "exact")
        print(f"{meta['status']} the {meta['kind']} index of {meta['count']} embeddings ({what}) -> "
              f"{Path(args.out) / 'index'}")
    return 0


def _ray_options(s) -> None:
    """The options of a job that runs on Ray (embed, score --engine ray)."""
    s.add_argument("--ray-address", help="Ray cluster to run on (host:port of its head node, or 'auto'); "
                                         "default: a local Ray on this machine")
    s.add_argument("--workers", type=int, help="model copies (Ray actors) at once (default: one per 2 CPUs, "
                                               "or one per --gpus-per-worker GPUs)")
    s.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each worker holds (default 0: CPU)")
    s.add_argument("--shard-size", type=int,
                   help="inputs per parquet shard: the unit of work and of resuming (default 4096)")


def cmd_index(args) -> int:
    from .search import build_index
    from .store import open_dataset
    open_dataset(args.dataset, args.workspace)  # an unknown dataset fails before the model loads
    idx = build_index(_scorer(args), args.dataset, args.workspace, progress=_progress(f"index {args.dataset}", "tile"))
    print(f"{idx.reason} -> {idx.path}")
    return 0


def _search_shards(args) -> int:
    """``search --embeddings EMB --image X``: the nearest inputs of an ``embed`` job, from its shard index."""
    from .search import _check_k
    from .shard_index import open_shard_index
    k = _check_k(args.k)
    if args.image is None or args.check:
        raise SiameseError("search --embeddings EMB takes a query --image FILE (no --row, no --check: the inputs "
                           "of an embed job are not a dataset); use --dataset NAME for those")
    idx = open_shard_index(args.embeddings)
    made_by = idx.run
    if args.run and made_by and args.run != made_by:
        raise SiameseError(f"{args.embeddings} was embedded by run {made_by!r}; its distances mean nothing for run "
                           f"{args.run!r}: leave out --run, or embed again with --run {args.run}")
    from .inference import Scorer
    scorer = Scorer.from_run(args.run or made_by, args.workspace)
    hits = idx.search(scorer.embed(scorer.prepare(args.image).tile[None]), k)[0]
    if args.json:
        print(json.dumps({"run": scorer.name, "embeddings": str(args.embeddings), "query": {"image": args.image},
                          "k": k, "index": {"kind": idx.meta.get("kind"), "vectors": len(idx)},
                          "hits": [{"rank": h.rank, "row": h.row, "name": h.name, "distance": h.distance}
                                   for h in hits]}))
        return 0
    print(f"{len(hits)} nearest of {len(idx)} embedded inputs in {args.embeddings} to {args.image} "
          f"(run {scorer.name}; embedding distance, lower = more alike):")
    for h in hits:
        print(f"  {h.rank:>3}. distance {h.distance:.4f}  {h.name}")
    return 0


def cmd_search(args) -> int:
    if args.embeddings:
        return _search_shards(args)
    from .search import _check_k, build_index, dataset_row, search
    from .store import open_dataset
    k = _check_k(args.k)
    open_dataset(args.dataset, args.workspace)
    scorer = _scorer(args)
    idx = build_index(scorer, args.dataset, args.workspace, progress=_progress(f"index {args.dataset}", "tile"))
    if idx.status != "reused":
        print(idx.reason, file=sys.stderr)
    if args.image is not None:
        prep = scorer.prepare(args.image)
        hits = search(idx, prep.tile, k, check=args.check, prepared=[prep])[0]
        query = {"image": args.image}
    else:
        hits = search(idx, dataset_row(idx, args.row), k, query_rows=[args.row], check=args.check)[0]
        query = {"row": args.row, "group": int(idx.groups[args.row])}
    if args.json:
        print(json.dumps({"run": scorer.name, "dataset": args.dataset, "query": query, "k": k,
                          "index": {"kind": idx.kind, "vectors": len(idx), "status": idx.status},
                          "threshold": scorer.threshold if args.check else None,
                          "hits": [h.as_dict() for h in hits]}))
        return 0
    what = args.image if args.image is not None else f"row {args.row} (group {query['group']})"
    print(f"{len(hits)} nearest of {len(idx)} images in dataset {args.dataset} to {what} "
          f"(run {scorer.name}; embedding distance, lower = more alike):")
    for h in hits:
        line = f"  {h.rank:>3}. row {h.row:<8} distance {h.distance:.4f}  group {h.group}"
        if h.same_group is not None:
            line += " (same place)" if h.same_group else ""
        if h.tile_id:
            line += f"  {h.tile_id}"
        if h.score is not None:
            line += (f"\n       check: score {h.score:.4f} -> {'same place' if h.same_place else 'different places'}; "
                     f"{h.evidence}")
        print(line)
    return 0


def cmd_list(args) -> int:
    from .runs import Run, list_runs, run_path
    from .store import list_datasets, open_dataset
    print("datasets:")
    for n in list_datasets(args.workspace):
        i = open_dataset(n, args.workspace).info
        print(f"  {n}: {i['images']} images, {i['groups']} tiles, source {i['config']['source']}")
    print("runs:")
    for r in list_runs(args.workspace):
        run = Run(run_path(r, args.workspace))
        st, cfg = run.status(), run.config
        result = _result_line(run)
        print(f"  {r}: {st.get('status')} ({cfg.model.preset} on {cfg.dataset})"
              + (f" - {st['error']}" if st.get("error") and st.get("status") != "finished" else "")
              + (f" - {result}" if result else ""))
    return 0


def cmd_stop(args) -> int:
    from .runs import open_run
    st = open_run(args.run, args.workspace).stop(wait_s=args.wait)
    print(f"stop requested for {args.run} (status now: {st.get('status')})")
    return 0


def _confirmed(what: str, yes: bool) -> bool:
    """``--yes``, or a "y" typed at the prompt when a person is at the terminal; else a one-line refusal."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise SiameseError(f"delete {what}: nothing deleted; pass --yes to confirm (this cannot be undone)")
    print(f"delete {what}? This cannot be undone. [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_delete(args) -> int:
    from .runs import delete_run, open_run
    from .store import delete_dataset, open_dataset
    if bool(args.dataset) == bool(args.run):
        raise SiameseError("delete needs --dataset NAME or --run ID (one of them)")
    if args.dataset:
        open_dataset(args.dataset, args.workspace)  # an unknown name fails before the question
        what, delete = f"dataset {args.dataset!r}", lambda: delete_dataset(args.dataset, args.workspace)
    else:
        open_run(args.run, args.workspace)
        what, delete = f"run {args.run!r}", lambda: delete_run(args.run, args.workspace)
    if not _confirmed(what, args.yes):
        print(f"{what} kept", file=sys.stderr)
        return 1
    delete()
    print(f"deleted {what}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m siamese_core",
                                description="Do these two satellite or aerial tiles show the same place?")
    p.add_argument("--workspace", default=None, help="workspace directory (default $SIAMESE_WORKSPACE or ./workspace)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="import tiles and their rotated variants into a dataset")
    s.add_argument("--source", choices=SOURCES, default="synthetic")
    s.add_argument("--path", help="folder, file or parquet path (ab: the folder holding A/ and B/; "
                                  "pairs-csv: the CSV; hf-hub: cache directory)")
    s.add_argument("--name", required=True, help="dataset name (letters, digits, . _ -)")
    s.add_argument("--limit", type=int, default=0, help="at most this many source tiles (0 = all; synthetic: 600)")
    s.add_argument("--size", type=int, default=128, help="tile side in pixels (default 128)")
    s.add_argument("--variants", type=int, default=2, help="random-rotation variants per tile (default 2)")
    s.add_argument("--distort", nargs="*", choices=DISTORTIONS, help="extra distortions on every variant")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--column", help="parquet image column (default: imageA, else detected)")
    s.add_argument("--repo-id", default="huggan/maps", help="hub dataset for --source hf-hub")
    s.add_argument("--window", type=int, default=0,
                   help="ab: cut each place into aligned square windows of this many source px (0 = whole image)")
    s.add_argument("--stride", type=int, default=0, help="ab: step between windows in source px (0 = --window)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("train", help="train a Siamese model on a dataset (or --resume a run)")
    s.add_argument("--dataset", help="dataset name")
    s.add_argument("--preset", choices=PRESETS, default="default")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--learning-rate", type=float)
    s.add_argument("--steps-per-epoch", type=int, help="cap on steps per epoch (default: one pass over the pairs)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--precision", choices=PRECISIONS,
                   help="dtype policy (default float32); mixed_float16 for NVIDIA GPUs with tensor cores")
    s.add_argument("--devices", help="1 (default: one device), N or all: train on N GPUs (all: every GPU, or 1 CPU "
                                     "device without a GPU) with MirroredStrategy, the batch split across them")
    s.add_argument("--pair-limit", type=int, help="anchor images used for pairs (seed preset: 2000)")
    s.add_argument("--val-fraction", type=float,
                   help="share of the places held out as calibration pairs: Keras' validation, and the threshold is "
                        "fitted on them (default 0.1)")
    s.add_argument("--test-fraction", type=float,
                   help="share of the places held out as test pairs, never used for training or the threshold: "
                        "what evaluation.json and `evaluate --run` report (default 0.1; 0 = none, then the "
                        "report is on the calibration pairs, optimistic)")
    s.add_argument("--identical", action=argparse.BooleanOptionalAction, default=None,
                   help="include (i, i) pairs (seed: on, default: off)")
    s.add_argument("--negatives", type=int, help="different-place pairs drawn per image (seed: 1, default: 2)")
    s.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="augment on the fly (default preset: on; the seed preset has none)")
    s.add_argument("--run-id", help="name for the run (default: time-preset)")
    s.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted or stopped run from its checkpoint")
    s.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress output")
    s.set_defaults(func=cmd_train)

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

    s = sub.add_parser("calibrate", help="fit a run's fused verdict (learned distance + geometry) on labelled pairs")
    s.add_argument("--run", help="run id (default: the bundled model, which needs --as)")
    s.add_argument("--pairs", required=True, help="labelled CSV image_a,image_b,label (0 same place, 1 different)")
    s.add_argument("--as", dest="as_name", help="save the calibrated run as a new run of this name")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("make-pairs", help="labelled pairs of every kind from your own imagery, for calibrate/evaluate")
    s.add_argument("--ab", help="folder with A/ and B/ (co-registered dates, matching file names)")
    s.add_argument("--tiles", help="folder of single tiles (rotated, distorted and simulated second dates)")
    s.add_argument("--out", required=True, help="output folder (tiles/ and pairs.csv)")
    s.add_argument("--split", choices=("all", "calibration", "test"), default="all",
                   help="keep only places/tiles hashed into this split (calibration and test never share one)")
    s.add_argument("--test-fraction", type=float, default=0.25)
    s.add_argument("--per-place", type=int, default=6, help="windows per A/B place (each gives 4 pairs)")
    s.add_argument("--tiles-n", type=int, default=150, help="tiles drawn from --tiles (each gives 6 pairs)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_make_pairs)

    s = sub.add_parser("score", help="score two images, or a CSV of pairs (lower score = more alike)")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.add_argument("image_a", nargs="?")
    s.add_argument("image_b", nargs="?")
    s.add_argument("--pairs", help="CSV with columns image_a,image_b")
    s.add_argument("--out", help="output CSV for --pairs (with --engine ray: a folder of parquet shards)")
    s.add_argument("--threshold", type=float)
    s.add_argument("--json", action="store_true")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="--pairs on Ray (local, or a cluster with --ray-address): --out is then a folder of "
                        "parquet shards, resumable (default: local, one process, --out a CSV)")
    _ray_options(s)
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("embed", help="embed every tile of a folder, parquet or dataset into parquet shards, on Ray "
                                     "(resumable); optionally index them for search")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--images", help="folder of image files (recursive)")
    q.add_argument("--parquet", help="parquet file, or folder of them: a column of image bytes (binary, or a "
                                     "struct with 'bytes') or of image paths (strings, relative to the file)")
    q.add_argument("--dataset", help="workspace dataset name")
    s.add_argument("--column", help="parquet column (default: the image column, else path/image_path/file/filename)")
    s.add_argument("--out", required=True, help="output folder of parquet shards (run again to resume)")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.add_argument("--index", choices=("none", "auto", "flat", "ivfpq"), default="none",
                   help="then build a FAISS index in OUT/index: flat (exact), ivfpq (compressed, approximate; for "
                        "tens of millions), auto (flat up to 1,000,000)")
    s.add_argument("--nlist", type=int, default=0, help="ivfpq: cells (default ≈ 4·sqrt(N))")
    s.add_argument("--pq-m", type=int, default=0, help="ivfpq: bytes per vector (default embedding size / 4)")
    _ray_options(s)
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("index", help="embed every image of a dataset once for search (reused until model or data change)")
    s.add_argument("--dataset", required=True, help="dataset name")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="which images of a dataset (or of an embed job) are nearest to this tile? "
                                      "(embedding search)")
    w = s.add_mutually_exclusive_group(required=True)
    w.add_argument("--dataset", help="dataset name (indexed on first use)")
    w.add_argument("--embeddings", metavar="EMB", help="the --out folder of an `embed ... --index` job (its index)")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", help="query image file")
    q.add_argument("--row", type=int, help="query with image ROW of the dataset itself")
    s.add_argument("--k", type=int, default=5, help="number of nearest images (default 5)")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.add_argument("--check", action="store_true", help="also judge each hit (keypoints and the fused verdict)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("list", help="datasets and runs in the workspace")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("stop", help="ask a running training job to stop")
    s.add_argument("--run", required=True)
    s.add_argument("--wait", type=float, default=10.0, help="seconds to wait before terminating it")
    s.set_defaults(func=cmd_stop)

    s = sub.add_parser("delete", help="delete a dataset or a run (refused while a training job uses it)")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--dataset", help="dataset name (runs trained on it keep their models)")
    q.add_argument("--run", help="run id (the bundled run cannot be deleted)")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=cmd_delete)

    s = sub.add_parser("_job", help=argparse.SUPPRESS)
    s.add_argument("run_id")
    s.add_argument("--resume", action="store_true")
    s.set_defaults(func=cmd_job)
    return p


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    Its C++ start-up lines (oneDNN, CUDA drivers, CPU features) ignore TF_CPP_MIN_LOG_LEVEL and go
    straight to fd 2, which would break the contract that stderr carries only this tool's own lines
    (progress bars, one ``error:`` line). Level 3 also hides C++ errors such as "failed call to cuInit"
    on machines without a GPU; ``TF_CPP_MIN_LOG_LEVEL=0`` or ``1`` shows all of TensorFlow's messages.
    """
    if "tensorflow" in sys.modules or os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3") in ("0", "1"):
        return
    try:
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2: nothing to protect
        os.close(null)
        return
    try:
        os.dup2(null, 2)
        from . import _backend  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "train" and not args.resume and not args.dataset:
        parser().error("train needs --dataset NAME (or --resume RUN_ID)")
    if args.command in ("train", "score", "evaluate", "calibrate", "_job", "index", "search"):
        _import_tensorflow_quietly()
    try:
        return args.func(args)
    except SiameseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
