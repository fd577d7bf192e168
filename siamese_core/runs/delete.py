"""Delete a run or a dataset, or replace a dataset (``prepare --overwrite``), refused in one line while a training
job works on it.

Deleting and replacing a dataset live here, beside deleting a run, rather than in the dataset store: they need the
one-job lock and the list of live runs, and the data layer does not import runs. A deleted dataset or run is renamed
out of every listing first (:func:`~siamese_core.core.files.move_to_trash`), then removed, so a crash midway never
leaves half of it listed; what a killed deletion left is swept (:mod:`siamese_core.core.sweep`).
"""

from __future__ import annotations

import contextlib

from ..core.config import workspace_dir
from ..core.errors import DatasetError, RunError, SiameseError
from ..core.files import move_to_trash, remove
from ..core.sweep import sweep_folder
from ..data.store import build_dataset, datasets_dir, open_dataset
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
    remove(trash)
    sweep_folder(trash.parent)  # and what an earlier, killed deletion left


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
    remove(trash)
    sweep_folder(trash.parent)


def _refuse_if_used(name: str, workspace, job: str | None) -> None:
    busy = jobs_using_dataset(name, workspace, job)
    if busy:
        raise DatasetError(f"dataset {name!r} is used by the running job {busy[0]!r}; --overwrite would replace its "
                           f"images under it: stop it first (python -m siamese_core stop --run {busy[0]}), or "
                           f"prepare under another --name")


@contextlib.contextmanager
def dataset_swap_guard(name: str, workspace=None):
    """Held while dataset ``name`` is swapped for a new one: no training job can start meanwhile, and a job using it
    refuses the swap (one line naming the job)."""
    with no_launch(workspace) as job:
        _refuse_if_used(name, workspace, job)
        yield


def prepare_dataset(cfg, name: str, workspace=None, overwrite: bool = False, progress=None, on_skip=None,
                    build=build_dataset, **kw):
    """Build dataset ``name`` (:func:`~siamese_core.data.store.build_dataset`, or ``build``, e.g.
    :func:`~siamese_core.data.uploads.build_from_zip`, called with ``cfg`` as its first argument). With
    ``overwrite``, a dataset that a training job uses is refused before anything is built, and again at the swap
    (a job may have started meanwhile); either way the old dataset stays whole."""
    if overwrite and (datasets_dir(workspace) / name).exists():
        with no_launch(workspace) as job:
            _refuse_if_used(name, workspace, job)
    return build(cfg, name, workspace, overwrite=overwrite, progress=progress, on_skip=on_skip,
                 swap_guard=lambda: dataset_swap_guard(name, workspace), **kw)


__all__ = ["delete_run", "delete_dataset", "jobs_using_dataset", "prepare_dataset", "dataset_swap_guard"]
