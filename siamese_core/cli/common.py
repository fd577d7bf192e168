"""What every command group shares: progress bars on stderr, the run to score with, a run's result line, the
options of a Ray job, and importing TensorFlow without its start-up noise.
"""

from __future__ import annotations

import os
import sys


def bands_help(scope: str) -> str:
    """The help of a ``--bands`` option: how to write bands, ``scope`` (which files it reads), and the default."""
    return ("raster bands as red,green,blue (e.g. 3,2,1; one band = grey) or a preset: rgb (1,2,3), sentinel2 "
            f"(4,3,2); {scope}. Default: the bands the file marks red, green and blue, else 4,3,2 for a 12- or "
            "13-band Sentinel-2 stack, else 1,2,3 (band 1 for 1-2 band files)")


_OPEN: list = []  # the progress bars drawn and not yet closed (see end_progress_lines)


def progress(desc: str, unit: str):
    from tqdm import tqdm
    bar = None

    def update(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
            _OPEN.append(close)
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    def close():  # end an unfinished bar's line, so that an error after it starts a line of its own
        if bar is not None and bar.n < (bar.total or 0):
            bar.close()
        if close in _OPEN:
            _OPEN.remove(close)
    update.close = close
    return update


def end_progress_lines() -> None:
    """Close every unfinished progress bar, so that the error line that follows starts a line of its own."""
    for close in list(_OPEN):
        close()


def scorer_for(args):
    """The run named by --run, else the bundled model (and say so on stderr)."""
    from ..judge.inference import Scorer
    from ..runs.run import PRETRAINED
    if not args.run:
        print(f"using the bundled model {PRETRAINED!r} (no --run given)", file=sys.stderr)
    return Scorer.from_run(args.run, args.workspace)


def result_line(run) -> str:
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


def ray_options(s) -> None:
    """The options of a job that runs on Ray (embed, score --engine ray)."""
    s.add_argument("--ray-address", help="Ray cluster to run on (host:port of its head node, or 'auto'); "
                                         "default: a local Ray on this machine")
    s.add_argument("--workers", type=int, help="model copies (Ray actors) at once (default: one per 2 CPUs, "
                                               "or one per --gpus-per-worker GPUs)")
    s.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each worker holds (default 0: CPU)")
    s.add_argument("--shard-size", type=int,
                   help="inputs per parquet shard: the unit of work and of resuming (default 4096)")


def import_tensorflow_quietly() -> None:
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
        from ..core import backend  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
