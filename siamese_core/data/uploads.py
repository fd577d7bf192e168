"""Uploaded archives of tiles: extract a zip safely, then build a ``folder`` dataset from it.

A zip from a browser is untrusted input. :func:`extract_zip` therefore

* refuses the whole archive when a member's path would land outside the target directory
  (``../`` components, absolute paths, drive letters, backslash tricks),
* refuses nested archives (a member named ``*.zip`` or whose bytes start like a zip),
* refuses encrypted members,
* skips symbolic links, directories, ``__MACOSX`` resource forks and non-image files,
* caps the number of members (:data:`MAX_MEMBERS`) and the total uncompressed size
  (:data:`MAX_TOTAL_BYTES`), counting the bytes actually written, not the sizes the archive claims.

:func:`build_from_zip` extracts into a temporary directory (``<workspace>/.uploads/.upload-<owner>...``, removed
afterwards whatever happens, and by the workspace sweep when the process was killed), builds the dataset with
:func:`siamese_core.data.store.build_dataset`, and records the archive's name instead of the temporary path.
Nothing here imports Streamlit.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..core.errors import SiameseError
from ..core.files import atomic_file, make_temp_dir, remove
from .images import IMAGE_EXTENSIONS

MAX_MEMBERS = 20_000
MAX_TOTAL_BYTES = 2 * 1024 ** 3  # 2 GiB uncompressed
ARCHIVE_EXTENSIONS = (".zip", ".jar", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_CHUNK = 1024 * 1024


class UploadError(SiameseError):
    """An uploaded archive was refused (unsafe, too large, or not a zip)."""


def _limits_text(max_members: int, max_total_bytes: int) -> str:
    return f"limits: at most {max_members:,} files and {max_total_bytes / 1024 ** 3:g} GB uncompressed"


@dataclass
class ExtractResult:
    """What :func:`extract_zip` wrote: ``files`` images, ``bytes`` in total, and what it skipped."""

    files: int = 0
    bytes: int = 0
    skipped: list = field(default_factory=list)  # (member name, reason)


def safe_relpath(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it is absolute or escapes the target."""
    n = name.replace("\\", "/")
    if n.startswith("/") or (len(n) >= 2 and n[1] == ":") or "\x00" in n:
        return None
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return PurePosixPath(*parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def extract_zip(source, target, *, max_members: int = MAX_MEMBERS,
                max_total_bytes: int = MAX_TOTAL_BYTES, name: str = "upload.zip") -> ExtractResult:
    """Extract the image files of zip ``source`` (bytes, a path or a binary file object) into ``target``.

    Raises :class:`UploadError` (one line, naming the member and the limits) when the archive is not
    a zip, is unsafe, or is over the limits; in that case ``target`` may hold a partial extraction,
    which the caller removes (:func:`build_from_zip` does).
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
        raise UploadError(f"{name}: not a zip archive (or it is damaged); upload a .zip of image tiles") from None
    except OSError as e:
        raise UploadError(f"{name}: cannot read the archive ({e.strerror or e})") from None
    limits = _limits_text(max_members, max_total_bytes)
    res = ExtractResult()
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise UploadError(f"{name}: has {len(infos):,} members, over the limit ({limits}); split it into smaller zips")
        declared = sum(i.file_size for i in infos if not i.is_dir())
        if declared > max_total_bytes:
            raise UploadError(f"{name}: would unpack to {declared / 1024 ** 3:.1f} GB, over the limit ({limits})")
        for info in infos:
            rel = safe_relpath(info.filename)
            if rel is None:
                raise UploadError(f"{name}: member {info.filename!r} has an unsafe path (absolute or '..'); "
                                  f"refusing the whole archive")
            if info.is_dir():
                continue
            if _is_symlink(info):
                res.skipped.append((info.filename, "symbolic link (skipped)"))
                continue
            if rel.parts[0] == "__MACOSX" or rel.name.startswith("."):
                continue
            suffix = rel.suffix.lower()
            if suffix in ARCHIVE_EXTENSIONS:
                raise UploadError(f"{name}: contains a nested archive {info.filename!r}; "
                                  f"unpack it and upload one zip of image files")
            if suffix not in IMAGE_EXTENSIONS:
                res.skipped.append((info.filename, "not an image file (skipped)"))
                continue
            if info.flag_bits & 0x1:
                raise UploadError(f"{name}: member {info.filename!r} is encrypted; upload an archive without a password")
            dest = root.joinpath(*rel.parts)
            try:  # belt and braces: the resolved path must stay inside the target
                if os.path.commonpath([root, dest.resolve()]) != str(root):
                    raise ValueError
            except ValueError:
                raise UploadError(f"{name}: member {info.filename!r} would be written outside the target; "
                                  f"refusing the whole archive") from None
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(dest, "wb") as out:
                    first = True
                    while True:
                        chunk = src.read(_CHUNK)
                        if not chunk:
                            break
                        if first and chunk[:4] in _ZIP_MAGIC:
                            raise UploadError(f"{name}: member {info.filename!r} is itself a zip archive; "
                                              f"nested archives are refused")
                        first = False
                        res.bytes += len(chunk)
                        if res.bytes > max_total_bytes:
                            raise UploadError(f"{name}: unpacks to more than {max_total_bytes / 1024 ** 3:g} GB "
                                              f"({limits})")
                        out.write(chunk)
            except UploadError:
                raise
            except (zipfile.BadZipFile, EOFError, ValueError, RuntimeError, NotImplementedError) as e:
                msg = (str(e).splitlines() or [type(e).__name__])[0]
                raise UploadError(f"{name}: member {info.filename!r} cannot be unpacked ({msg})") from None
            except OSError as e:
                raise UploadError(f"{name}: cannot write {info.filename!r} ({e.strerror or e})") from None
            res.files += 1
    if res.files == 0:
        raise UploadError(f"{name}: no image files inside (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return res


@contextmanager
def extracted_zip(source, *, name: str = "upload.zip", tmp_root=None, **limits):
    """``with extracted_zip(data) as (folder, result):`` — a temporary folder (in ``tmp_root``, default the system's
    temporary folder) removed on exit; its name carries the owner tag, so the sweep removes it after a kill."""
    tmp = make_temp_dir(tmp_root if tmp_root is not None else tempfile.gettempdir(), ".upload-")
    try:
        res = extract_zip(source, tmp / "tiles", name=name, **limits)
        yield tmp / "tiles", res
    finally:
        remove(tmp)


def build_from_zip(source, dataset_name: str, workspace=None, *, zip_name: str = "upload.zip",
                   size: int = 128, limit: int = 0, variants: int = 2, distortions=(), seed: int = 0,
                   overwrite: bool = False, progress=None, on_skip=None, swap_guard=None, **limits):
    """Extract an uploaded zip into a temporary folder, build a ``folder`` dataset, remove the folder.

    Returns ``(dataset, ExtractResult)``. Skip reasons passed to ``on_skip`` and written to
    ``skipped.csv`` name files relative to the archive (``tiles.zip:sub/a.png``), never the
    temporary path; the dataset's recorded ``path`` is ``upload:<zip name>``. Both are written before the dataset
    is published. ``swap_guard``: see :func:`~siamese_core.data.store.build_dataset`.
    """
    from ..core.config import DataConfig, workspace_dir
    from ..core.files import check_name
    from .store import build_dataset, datasets_dir

    check_name(dataset_name)
    ws = workspace_dir(workspace)
    if (datasets_dir(ws) / dataset_name).exists() and not overwrite:
        from ..core.errors import DatasetError
        raise DatasetError(f"dataset {dataset_name!r} already exists; choose another name")
    with extracted_zip(source, name=zip_name, tmp_root=ws / ".uploads", **limits) as (folder, res):
        prefix = str(folder.resolve()) + os.sep

        def clean(text: str) -> str:
            return str(text).replace(prefix, f"{zip_name}:").replace(str(folder.resolve()), zip_name)

        cfg = DataConfig(source="folder", path=str(folder), limit=limit, size=size, variants=variants,
                         distortions=tuple(distortions), seed=seed)
        ds = build_dataset(cfg, dataset_name, ws, overwrite=overwrite, progress=progress, on_skip=on_skip,
                           swap_guard=swap_guard, recorded_path=f"upload:{zip_name}", clean=clean)
    return ds, res


def keep_upload(data: bytes, name: str, folder, max_bytes: int) -> Path:
    """An uploaded file (e.g. a large scene) kept once under ``folder``, named by its content, so that it can be read
    window by window from disk; the same bytes uploaded again reuse the file. Refused, in one line naming the file,
    over ``max_bytes``."""
    if len(data) > max_bytes:
        raise UploadError(f"{name}: file is {len(data) / 1e6:.0f} MB, over the {max_bytes / 2**20:.0f} MB upload "
                          f"limit; give its path on the server instead")
    folder = Path(folder)
    path = folder / f"{hashlib.sha1(data).hexdigest()[:16]}{Path(name).suffix.lower()}"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_bytes(data)
    return path
