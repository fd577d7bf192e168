"""Small file helpers every layer uses: names that are one path component, JSON written atomically, a
folder moved out of every listing before it is removed.

They live here, at the bottom, so that the dataset store and the run registry both use them without importing
each other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from .errors import SiameseError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str = "dataset") -> str:
    """A dataset or run name is one path component: letters, digits, '.', '_', '-' (no '/', no '..')."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise SiameseError(f"invalid {what} name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                           f"starting with a letter or digit (no '/' or '..')")
    return name


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON next to ``path`` and rename over it: readers see the old or the new file, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path):
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def move_to_trash(path: Path) -> Path:
    """Rename ``path`` to a hidden name beside it, out of every listing, and return that name: deleting is a
    rename and then a removal, so a crash midway never leaves half a dataset or run listed. Trash that an
    earlier crash left beside it is removed first."""
    path = Path(path)
    for old in path.parent.glob(".trash-*"):
        shutil.rmtree(old, ignore_errors=True)
    trash = path.parent / f".trash-{path.name}-{os.getpid()}-{time.time_ns()}"
    os.replace(path, trash)
    return trash


__all__ = ["check_name", "write_json_atomic", "read_json", "move_to_trash"]
