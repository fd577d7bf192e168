"""Sweep a workspace of what crashed or killed processes left behind: temporary folders and files, old copies, trash.

Why this module exists: every result is written under a temporary name and renamed into place (:mod:`.files`), so a
process killed midway leaves its temporary file or folder behind — a whole ``images.npy``, an upload of up to
2 GiB, a half-built index. Nothing else ever removes them. The command line and the dashboard call
:func:`sweep_workspace` when they start.

What is removed is decided by the owner tag in the name (:func:`siamese_core.core.procs.owner_state`):

* the owner is **dead**: the entry goes. A ``.old-<name>...`` folder (the old copy of a dataset or index being
  replaced, :func:`~siamese_core.core.files.replace_dir`) is renamed back to ``<name>`` when nothing is there: the
  replacement never finished, so the old one is put back in place; otherwise it goes too.
* the owner is **alive**: the entry stays, whatever its age (a dataset may take hours to build).
* the owner is **unknown** (another machine or pid namespace shares the workspace) or the name carries no tag (left
  by a version before tags): the entry goes once nothing in it has changed for :data:`UNTAGGED_AGE_S`.

Only hidden entries with the prefixes and suffix below are ever considered; lock files and everything a user put
into the workspace are never touched. The walk goes :data:`DEPTH` folders deep (``runs/<id>/evaluations/``) and does
not enter hidden folders or follow links.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .files import fsync_path, remove
from .procs import OWNER, owner_state, pid_exists

PREFIXES = (".tmp-", ".old-", ".upload-", ".batch-", ".trash-", ".part-")  # temporary folders and shard files
TEMP_FILE = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")  # ".model.keras@<owner>-<random>.tmp.keras", and older ones
UNTAGGED_AGE_S = 24 * 3600
DEPTH = 3
_LEGACY_OLD = re.compile(r"^\.old-(.+)-(\d+)$")  # ".old-<name>-<pid>", before owner tags


def _candidate(name: str) -> bool:
    return name.startswith(PREFIXES) or bool(TEMP_FILE.match(name))


def _age(path: Path) -> float:
    """Seconds since anything in ``path`` (itself and its direct entries) last changed."""
    try:
        newest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            with os.scandir(path) as it:
                for e in it:
                    try:
                        newest = max(newest, e.stat(follow_symlinks=False).st_mtime)
                    except OSError:
                        pass
    except OSError:
        return 0.0
    return time.time() - newest


def _old_target(entry: Path) -> Path | None:
    """For a ``.old-<name>...`` entry, the ``<name>`` it was the old copy of."""
    name = entry.name
    if not name.startswith(".old-"):
        return None
    m = OWNER.search(name)
    if m is not None:
        return entry.with_name(name[len(".old-"):m.start()])
    legacy = _LEGACY_OLD.match(name)
    return entry.with_name(legacy.group(1)) if legacy else None


def _verdict(entry: Path, untagged_age_s: float) -> str:
    """'keep', or 'gone' (its writer is dead, or it is old enough without one)."""
    state = owner_state(entry.name)
    if state == "alive":
        return "keep"
    if state == "dead":
        return "gone"
    legacy = _LEGACY_OLD.match(entry.name)
    if state is None and legacy and not pid_exists(legacy.group(2)):
        return "gone"
    return "gone" if _age(entry) >= untagged_age_s else "keep"


def sweep_folder(folder, untagged_age_s: float = UNTAGGED_AGE_S) -> list[str]:
    """Sweep the entries of one folder (not below it); returns one line per entry removed or put back."""
    folder = Path(folder)
    done = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return done
    for entry in entries:
        if not (entry.name.startswith(".") and _candidate(entry.name)):
            continue
        if _verdict(entry, untagged_age_s) != "gone":
            continue
        target = _old_target(entry)
        try:
            if target is not None and not os.path.lexists(target) and entry.is_dir():
                os.replace(entry, target)  # the replacement never finished: the old copy goes back in place
                fsync_path(folder)
                done.append(f"put back {target}")
                continue
            remove(entry)
            done.append(f"removed {entry}")
        except OSError:
            pass  # another sweep got there first, or the folder is read-only: nothing to do
    return done


def sweep_tree(root, depth: int = DEPTH, untagged_age_s: float = UNTAGGED_AGE_S) -> list[str]:
    """:func:`sweep_folder` on ``root`` and on every non-hidden folder below it, ``depth`` levels deep (``root``'s
    own ``.uploads`` folder, which is hidden, too)."""
    root = Path(root)
    done = []
    level = [root]
    for d in range(depth + 1):
        nxt = []
        for folder in level:
            done += sweep_folder(folder, untagged_age_s)
            if d == depth:
                continue
            try:
                with os.scandir(folder) as it:
                    for e in it:
                        hidden = e.name.startswith(".") and not (d == 0 and e.name == ".uploads")
                        if not hidden and e.is_dir(follow_symlinks=False):
                            nxt.append(Path(e.path))
            except OSError:
                pass
        level = nxt
    return done


def sweep_workspace(workspace) -> list[str]:
    """Sweep a workspace (nothing happens when it does not exist yet); never raises."""
    root = Path(workspace)
    if not root.is_dir():
        return []
    try:
        return sweep_tree(root)
    except OSError:
        return []


__all__ = ["sweep_workspace", "sweep_tree", "sweep_folder", "PREFIXES", "UNTAGGED_AGE_S", "DEPTH"]
