"""Delete a run or a dataset, refused in one line while a training job works on it.

Deleting a dataset lives here, beside deleting a run, rather than in the dataset store: it needs the one-job lock
and the list of live runs, and the data layer does not import runs. Either is renamed out of every listing first
(:func:`~siamese_core.core.files.move_to_trash`), then removed, so a crash midway never leaves half of it listed.
"""

from __future__ import annotations

import shutil

from ..core.config import workspace_dir
from ..core.errors import DatasetError, RunError, SiameseError
from ..core.files import move_to_trash
from ..data.store import open_dataset
from .lock import no_launch
from .registry import list_runs, open_run, run_path
from .run import LIVE, PRETRAINED, Run


def delete_run(run_id: str, workspace=None) -> None:
    """Delete run ``run_id`` from the workspace: refused, in one line, for the bundled run and for a run a job
    is working on. The run is renamed out of the listing first, then removed, so that a crash midway never
    leaves half a run listed."""
    ws = workspace_dir(workspace)
    run = open_run(run_id, ws)
    if run.is_bundled:
        raise RunError(f"the bundled run {PRETRAINED!r} is part of the package and cannot be deleted")
    with no_launch(ws) as job:
        st = run.status()
        if job == run_id or st.get("status") in LIVE:
            raise RunError(f"run {run_id!r} is {st.get('status') if st.get('status') in LIVE else 'running'}; "
                           f"stop it first (python -m siamese_core stop --run {run_id}), then delete it")
        trash = move_to_trash(run.path)
    shutil.rmtree(trash, ignore_errors=True)


def jobs_using_dataset(name: str, workspace=None, job: str | None = None) -> list[str]:
    """Ids of the runs on dataset ``name`` that a job is working on (``job``: the lock holder's id, if any)."""
    out = []
    for rid in list_runs(workspace):
        run = Run(run_path(rid, workspace))
        try:
            on_it = run.config.dataset == name
        except (OSError, ValueError, KeyError, SiameseError):
            continue
        if on_it and (rid == job or run.is_live()):
            out.append(rid)
    return out


def delete_dataset(name: str, workspace=None) -> None:
    """Delete dataset ``name``: refused, in one line, while a training job works on it. It is renamed out of
    the listing first, then removed (:func:`move_to_trash`). Runs trained on it keep their models."""
    ds = open_dataset(name, workspace)
    with no_launch(workspace) as job:  # no job can start on it meanwhile
        busy = jobs_using_dataset(name, workspace, job)
        if busy:
            raise DatasetError(f"dataset {name!r} is used by the running job {busy[0]!r}; stop it first "
                               f"(python -m siamese_core stop --run {busy[0]}), then delete it")
        trash = move_to_trash(ds.path)
    shutil.rmtree(trash, ignore_errors=True)


__all__ = ["delete_run", "delete_dataset", "jobs_using_dataset"]
