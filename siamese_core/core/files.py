"""Small file helpers every layer uses: names that are one path component, results published whole and durably,
temporary files and folders that say who wrote them, a folder moved out of every listing before it is removed.

Why this module exists: a crash, a kill or a full disk must never leave a result half-written, and a result that was
reported as saved must survive a power cut. One way of doing it, used everywhere:

* **Publishing.** A result (a model, a checkpoint, an ``.npz``, a parquet shard, a CSV, a JSON file, a whole dataset
  or index folder) is written under a temporary name beside its final one, flushed to the disk (``fsync``), renamed
  into place, and the folder holding it is flushed too (the rename itself is then on the disk):
  :func:`atomic_file` / :func:`publish` for a file, :func:`replace_dir` for a folder.
* **Owners.** Every temporary name carries the writer's owner tag (:func:`siamese_core.core.procs.owner_tag`: machine,
  pid, start time), so the workspace sweep (:mod:`.sweep`) removes what a dead process left and never what a live one
  is writing.
* **Permissions.** Files are created with mode 0666 and folders with 0777, less the user's umask — the one rule, as
  any ordinary program does; nothing here narrows them (no 0600 files from ``mkstemp``, no 0700 folders from
  ``mkdtemp``), so a dashboard running as another user of the same group reads what the command line wrote.

They live here, at the bottom, so that the dataset store, the run registry and the search indexes share them without
importing each other.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import SiameseError
from .procs import owner_tag

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str = "dataset") -> str:
    """A dataset or run name is one path component: letters, digits, '.', '_', '-' (no '/', no '..')."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise SiameseError(f"invalid {what} name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                           f"starting with a letter or digit (no '/' or '..')")
    return name


# --- flushing to the disk ---------------------------------------------------------------------------------------

def fsync_path(path) -> None:
    """Flush a file's or a folder's contents (for a folder: its entries, i.e. the renames in it) to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path) -> None:
    """Flush every file and folder under ``path`` (and ``path`` itself) to the disk, the folders last."""
    path = Path(path)
    if not path.is_dir():
        fsync_path(path)
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                fsync_path(p)
        fsync_path(root)


# --- temporary names and publishing ----------------------------------------------------------------------------

def temp_path(final) -> Path:
    """A temporary name beside ``final`` that carries this process's owner tag and keeps ``final``'s suffix (Keras
    and NumPy add or expect one): ``model.keras`` → ``.model.keras@<owner>-<random>.tmp.keras``."""
    final = Path(final)
    return final.with_name(f".{final.name}{owner_tag()}-{secrets.token_hex(3)}.tmp{final.suffix}")


def publish(tmp, final) -> None:
    """Make the complete file (or folder) ``tmp`` the result ``final``: flush it, rename it over ``final`` (readers
    see the old or the new one, never a mix), then flush the folder so that the rename survives a power cut."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def remove(path) -> None:
    """Remove a file or a folder tree, whichever ``path`` is; missing is fine."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@contextmanager
def atomic_file(final):
    """``with atomic_file(path) as tmp:`` write the result to ``tmp`` (any writer: ``np.savez``, ``model.save``,
    ``pq.write_table``...); when the block ends it is published as ``path`` (:func:`publish`); if the block or the
    publishing fails, ``tmp`` is removed and ``path`` keeps its old content."""
    tmp = temp_path(final)
    try:
        yield tmp
        publish(tmp, final)
    except OSError as e:
        remove(tmp)
        if e.filename is None:  # a writer (NumPy's zip, Keras) that does not say which file: name the result
            raise OSError(e.errno, e.strerror or str(e), str(final)) from None
        raise
    except BaseException:
        remove(tmp)
        raise


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON next to ``path`` and publish it: readers see the old or the new file, never half."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()


def write_text_atomic(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` next to ``path`` and publish it (a CSV, a report)."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding=encoding, newline="") as f:
        f.write(text)


def read_json(path: Path):
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def make_temp_dir(parent, prefix: str) -> Path:
    """A new, empty folder ``<parent>/<prefix><owner>-<random>`` (``prefix`` should start with '.', out of every
    listing), created with the user's umask."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / f"{prefix}{owner_tag()}-{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


# --- folders ----------------------------------------------------------------------------------------------------

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a, b) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``): True when done, False when this system or
    file system cannot (the caller then renames twice)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp, final) -> None:
    """Make the complete folder ``tmp`` the folder ``final``, replacing what was there, so that at every instant
    ``final`` is the whole old folder or the whole new one. Both are flushed; the old one is then removed.

    Where the two can be swapped in one step (:func:`exchange`) nothing else is needed. Elsewhere the old folder is
    first renamed to ``.old-<name><owner>-...``; if this process dies before the new one is in place, the sweep
    (:mod:`.sweep`) renames it back."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    if os.path.lexists(final):
        if exchange(tmp, final):
            fsync_path(final.parent)
            remove(tmp)  # it now holds the old folder
            return
        old = final.with_name(f".old-{final.name}{owner_tag()}-{secrets.token_hex(3)}")
        os.replace(final, old)
        os.replace(tmp, final)
        fsync_path(final.parent)
        remove(old)
        return
    os.replace(tmp, final)
    fsync_path(final.parent)


def move_to_trash(path: Path) -> Path:
    """Rename ``path`` to a hidden name beside it (``.trash-<name><owner>-...``), out of every listing, and return that
    name: deleting is a rename and then a removal, so a crash midway never leaves half a dataset or run listed; the
    sweep removes what a dead process left."""
    path = Path(path)
    trash = path.with_name(f".trash-{path.name}{owner_tag()}-{secrets.token_hex(3)}")
    os.replace(path, trash)
    fsync_path(path.parent)
    return trash


def build_dir(final, build, what: str):
    """Build the folder ``final`` whole or not at all: ``build(tmp)`` fills a new temporary sibling, which then
    replaces ``final`` in one step (:func:`replace_dir`); the temporary folder never outlives the call. An
    OSError (a full disk, no permission) becomes one :class:`SiameseError` line naming ``what`` and the path, and
    the previous folder, if any, is kept. Returns what ``build`` returns."""
    final = Path(final)
    try:
        tmp = make_temp_dir(final.parent, f".tmp-{final.name}")
    except OSError as e:
        raise SiameseError(f"cannot write the {what} to {final.parent}: {e.strerror or e}") from None
    try:
        out = build(tmp)
        replace_dir(tmp, final)  # whole and flushed; a previous folder is swapped out in one step
    except OSError as e:
        raise SiameseError(f"cannot write the {what} to {final}: {e.strerror or e}; the previous one (if "
                           f"any) is kept") from None
    finally:
        remove(tmp)
    return out


__all__ = ["check_name", "fsync_path", "fsync_tree", "temp_path", "publish", "remove", "atomic_file",
           "write_json_atomic", "write_text_atomic", "read_json", "make_temp_dir", "exchange", "replace_dir", "build_dir",
           "move_to_trash"]
