"""The command line: ``python -m siamese_core {prepare,train,calibrate,evaluate,score,embed,list,stop,delete,...}``.

Every user-fixable problem (a SiameseError) ends the command with exit code 2 and one line on
stderr, never a traceback. Long steps show tqdm progress bars (on stderr). Every command first sweeps the
workspace of what killed processes left (:mod:`siamese_core.core.sweep`), and SIGTERM ends it as Ctrl-C does:
cleanly, its temporary files removed.

One module per command group, each adding its subcommands to the parser: :mod:`.data` (prepare, make-pairs),
:mod:`.train` (train, stop, _job), :mod:`.judge` (evaluate, calibrate, score), :mod:`.scale` (embed, index,
search, score --engine ray) and :mod:`.runs` (list, delete); :mod:`.common` holds what they share.
"""

from __future__ import annotations

import argparse
import sys

from . import data, judge, runs, scale, train
from ..core.config import workspace_dir
from ..core.errors import SiameseError
from ..core.procs import Terminated, sigterm_raises
from ..core.sweep import sweep_workspace
from .common import import_tensorflow_quietly


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m siamese_core",
                                description="Do these two satellite or aerial tiles show the same place?")
    p.add_argument("--workspace", default=None, help="workspace directory (default $SIAMESE_WORKSPACE or ./workspace)")
    sub = p.add_subparsers(dest="command", required=True)
    data.add_prepare(sub)
    train.add_train(sub)
    judge.add_evaluate(sub)
    judge.add_calibrate(sub)
    data.add_make_pairs(sub)
    judge.add_score(sub)
    scale.add_embed(sub)
    scale.add_index(sub)
    scale.add_search(sub)
    runs.add_list(sub)
    train.add_stop(sub)
    runs.add_delete(sub)
    train.add_job(sub)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "train" and not args.resume and not args.dataset:
        parser().error("train needs --dataset NAME (or --resume RUN_ID)")
    if args.command in ("train", "score", "evaluate", "calibrate", "_job", "index", "search"):
        import_tensorflow_quietly()
    with sigterm_raises():
        try:
            sweep_workspace(workspace_dir(args.workspace))
            return args.func(args)
        except SiameseError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Terminated:
            print("stopped (SIGTERM)", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


__all__ = ["main", "parser"]
