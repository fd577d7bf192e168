"""Commands that train: ``train`` (or ``--resume``), ``stop``, and the internal ``_job`` a background launch runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..core.config import PRECISIONS, PRESETS, RunConfig, workspace_dir
from .common import result_line


def run_config(args) -> RunConfig:
    return RunConfig.build(args.dataset, args.preset, epochs=args.epochs, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, seed=args.seed, steps_per_epoch=args.steps_per_epoch,
                           precision=args.precision, augment=args.augment, identical=args.identical,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction, negatives=args.negatives,
                           pair_limit=args.pair_limit, devices=args.devices)


def _check_devices(cfg: RunConfig) -> None:
    """Refuse too many --devices before anything is written; say on stderr what N or 'all' resolved to."""
    if cfg.train.devices != 1:
        from ..learn.devices import resolve_devices
        print(f"devices: {resolve_devices(cfg.train.devices).describe()}", file=sys.stderr)


def cmd_train(args) -> int:
    from ..runs.lock import acquire_train_lock
    from ..runs.registry import create_run, new_run_id, open_run
    ws = workspace_dir(args.workspace)
    if args.resume:
        run = open_run(args.resume, ws)
        from ..learn.train import run_training
        run.resume_check(ws)
        _check_devices(run.config)
        run.clear_stop()
        run_training(run, resume=True, verbose=args.verbose)
    else:
        cfg = run_config(args)
        _check_devices(cfg)
        rid = args.run_id or new_run_id(cfg.model.preset, ws)
        fd = acquire_train_lock(rid, ws)  # refuse before creating anything
        try:
            run = create_run(cfg, ws, rid)
        except BaseException:
            os.close(fd)
            raise
        print(f"run {rid}: training preset {cfg.model.preset!r} on {cfg.dataset} -> {run.path}", file=sys.stderr)
        from ..learn.train import run_training
        run_training(run, lock_fd=fd, verbose=args.verbose)
    st = run.status()
    thr = run.threshold_info() or {"threshold": float("nan"), "source": "none"}
    fitted = " on the calibration pairs" if thr["source"] == "calibrated" else ""
    print(f"run {run.name}: {st['status']} on {st.get('device')}; threshold {thr['threshold']:.4f} "
          f"({thr['source']}{fitted}); {result_line(run)}")
    if st["status"] == "finished" and not run.has_fusion():
        print(f"run {run.name} scores with the learned distance alone; to weigh the keypoint evidence in too: "
              f"python -m siamese_core make-pairs --tiles DIR --out PAIRS --split calibration && "
              f"python -m siamese_core calibrate --run {run.name} --pairs PAIRS/pairs.csv",
              file=sys.stderr)
    return 0 if st["status"] == "finished" else 1


def cmd_job(args) -> int:
    """Internal: run a queued run (started by the dashboard, which already holds the lock)."""
    from ..learn.train import run_training
    from ..runs.registry import open_run
    fd = os.environ.get("SIAMESE_LOCK_FD")
    run_training(open_run(args.run_id, args.workspace), resume=args.resume,
                 lock_fd=int(fd) if fd else None, verbose=2)
    return 0


def cmd_stop(args) -> int:
    from ..runs.registry import open_run
    st = open_run(args.run, args.workspace).stop(wait_s=args.wait)
    print(f"stop requested for {args.run} (status now: {st.get('status')})")
    return 0


def add_train(sub) -> None:
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


def add_stop(sub) -> None:
    s = sub.add_parser("stop", help="ask a running training job to stop")
    s.add_argument("--run", required=True)
    s.add_argument("--wait", type=float, default=10.0, help="seconds to wait before terminating it")
    s.set_defaults(func=cmd_stop)


def add_job(sub) -> None:
    s = sub.add_parser("_job", help=argparse.SUPPRESS)
    s.add_argument("run_id")
    s.add_argument("--resume", action="store_true")
    s.set_defaults(func=cmd_job)
