"""Runs by id: where run ``<id>`` lives (in the workspace, or in the package for the bundled run), which runs a
workspace has, a fresh id, and a new run directory.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..core.config import RunConfig, workspace_dir
from ..core.errors import RunError
from ..core.files import check_name
from .run import PRETRAINED, Run, bundled_run


def runs_dir(workspace=None) -> Path:
    return workspace_dir(workspace) / "runs"


def run_path(run_id: str, workspace=None) -> Path:
    """Where run ``run_id`` lives (the bundled run for ``pretrained``, unless the workspace has its own)."""
    check_name(run_id, "run")
    p = runs_dir(workspace) / run_id
    bundled = bundled_run()
    if run_id == PRETRAINED and not Run(p).exists() and bundled.exists():
        return bundled.path
    return p


def open_run(run_id: str, workspace=None) -> Run:
    """The run ``run_id``; a RunError listing the runs there are when it does not exist."""
    run = Run(run_path(run_id, workspace))
    if not run.exists():
        have = list_runs(workspace)
        raise RunError(f"run {run_id!r} not found in {runs_dir(workspace)}; "
                       + (f"available: {', '.join(have[-5:])}" if have else "train one with: python -m siamese_core train"))
    return run


def new_run_id(preset: str, workspace=None) -> str:
    base = time.strftime("%Y%m%d-%H%M%S") + f"-{preset}"
    rid, k = base, 1
    while run_path(rid, workspace).exists():
        k += 1
        rid = f"{base}-{k}"
    return rid


def list_runs(workspace=None) -> list[str]:
    """Run ids in the workspace, plus the bundled ``pretrained`` run."""
    d = runs_dir(workspace)
    have = ({p.name for p in d.iterdir() if not p.name.startswith(".") and Run(p).exists()}
            if d.is_dir() else set())
    if bundled_run().exists():
        have.add(PRETRAINED)
    return sorted(have)


def create_run(cfg: RunConfig, workspace=None, run_id: str | None = None) -> Run:
    """Make the run directory with its config, the dataset's fingerprint and a 'queued' status; refuse an
    existing id."""
    from ..data.store import open_dataset
    ds = open_dataset(cfg.dataset, workspace)  # fail early, with the list of datasets
    run_id = run_id or new_run_id(cfg.model.preset, workspace)
    run = Run(run_path(run_id, workspace))
    if run.path.exists():
        raise RunError(f"run {run_id!r} already exists; choose another --run-id or resume it with --resume")
    run.path.mkdir(parents=True)
    run.write_config(cfg)
    run.record_dataset(ds)
    run.write_status("queued", reset=True, pid=None)
    return run


__all__ = ["runs_dir", "run_path", "open_run", "new_run_id", "list_runs", "create_run"]
