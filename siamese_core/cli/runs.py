"""Commands on the workspace: ``list`` (datasets and runs) and ``delete``.
"""

from __future__ import annotations

import sys

from ..core.errors import SiameseError
from .common import result_line


def cmd_list(args) -> int:
    from ..data.store import list_datasets, open_dataset
    from ..runs.registry import list_runs, run_path
    from ..runs.run import Run
    print("datasets:")
    for n in list_datasets(args.workspace):
        i = open_dataset(n, args.workspace).info
        print(f"  {n}: {i['images']} images, {i['groups']} tiles, source {i['config']['source']}")
    print("runs:")
    for r in list_runs(args.workspace):
        run = Run(run_path(r, args.workspace))
        st, cfg = run.status(), run.config
        result = result_line(run)
        print(f"  {r}: {st.get('status')} ({cfg.model.preset} on {cfg.dataset})"
              + (f" - {st['error']}" if st.get("error") and st.get("status") != "finished" else "")
              + (f" - {result}" if result else ""))
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
    from ..data.store import open_dataset
    from ..runs.delete import delete_dataset, delete_run
    from ..runs.registry import open_run
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


def add_list(sub) -> None:
    s = sub.add_parser("list", help="datasets and runs in the workspace")
    s.set_defaults(func=cmd_list)


def add_delete(sub) -> None:
    s = sub.add_parser("delete", help="delete a dataset or a run (refused while a training job uses it)")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--dataset", help="dataset name (runs trained on it keep their models)")
    q.add_argument("--run", help="run id (the bundled run cannot be deleted)")
    s.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    s.set_defaults(func=cmd_delete)
