"""The command line: ``python -m siamese_core {prepare,train,calibrate,evaluate,score,embed,locate,list,stop,delete,...}``.

Every user-fixable problem (a SiameseError) ends the command with exit code 2 and one line on
stderr, never a traceback. Long steps show tqdm progress bars (on stderr). Every command first sweeps the
workspace of what killed processes left (:mod:`siamese_core.core.sweep`), and SIGTERM ends it as Ctrl-C does:
cleanly, its temporary files removed.

One module per command group, each adding its subcommands to the parser: :mod:`.data` (prepare, make-pairs),
:mod:`.train` (train, stop, _job), :mod:`.judge` (evaluate, calibrate, score), :mod:`.scale` (embed, index,
search, score --engine ray), :mod:`.locate` (locate: tiles in a large scene) and :mod:`.runs` (list, delete); :mod:`.common` holds what they share.
"""

from __future__ import annotations

import argparse
import errno
import sys

from . import data, judge, locate, runs, scale, train
from ..core.config import workspace_dir
from ..core.errors import SiameseError
from ..core.procs import Terminated, sigterm_raises
from ..core.sweep import sweep_workspace
from .common import end_progress_lines, import_tensorflow_quietly


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
    locate.add_locate(sub)
    runs.add_list(sub)
    train.add_stop(sub)
    runs.add_delete(sub)
    train.add_job(sub)
    return p


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def os_error_line(e: OSError) -> str:
    """One line for a failed read or write that no layer turned into a SiameseError, naming the file."""
    name = e.filename2 or e.filename  # a copy or a rename names its source first: the file written is the second
    what = f"{name}: " if name else ""
    why = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
    if e.errno in FULL:
        return (f"{what}{why}: the disk is full; nothing half-written was kept and earlier results are intact; free "
                f"some space and run the command again")
    return f"{what}{why}; nothing half-written was kept; fix the cause and run the command again"


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "train" and not args.resume and not args.dataset:
        parser().error("train needs --dataset NAME (or --resume RUN_ID)")
    if args.command in ("train", "score", "evaluate", "calibrate", "_job", "index", "search", "locate"):
        import_tensorflow_quietly()
    with sigterm_raises():
        try:
            sweep_workspace(workspace_dir(args.workspace))
            return args.func(args)
        except SiameseError as e:
            end_progress_lines()
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # a full disk, a read-only folder: results are written whole or not at all
            end_progress_lines()
            print(f"error: {os_error_line(e)}", file=sys.stderr)
            return 2
        except Terminated:
            end_progress_lines()
            print("stopped (SIGTERM)", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            end_progress_lines()
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            end_progress_lines()  # a bar left unfinished by a command that returned


__all__ = ["main", "parser"]
