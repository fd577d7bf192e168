"""The output folder of a Ray job: parquet shards that are each either complete or absent.

Layout of an output folder::

    part-00000.parquet ...   one file per shard of ``shard_size`` inputs, in input order
    job.json                 what the shards were made from; written when every shard is done
    index/                   (embed only, optional) the FAISS index over the shards, see shard_index.py

A worker writes a shard to ``.part-NNNNN.parquet<owner>.tmp.parquet``, flushes it and renames it into place
(:func:`~siamese_core.core.files.atomic_file`), so a killed job leaves whole shards only. Each shard carries its key
(:mod:`.plan`) in its parquet metadata; a shard whose key and row count match is done (:func:`shard_done`), and
``job.json`` lists the keys of the shards of the finished job: a reader checks them (:func:`shard_paths`), so a shard
computed from other inputs is never served as this job's. Shards past the end of a shrunken input, and temporary
files whose writer is gone, are removed (:func:`tidy`). One job at a time writes a folder (:func:`open_out` holds a
lock on it, and says who holds it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..core.errors import SiameseError
from ..core.files import atomic_file
from ..core.locks import holder, note_holder, open_lock_file, try_lock
from ..core.procs import owner_state
from ..core.sweep import sweep_folder

FORMAT = 2  # 2: score shards keyed on every image's size and mtime and on the fusion
PART = re.compile(r"^part-(\d{5,})\.parquet$")


def part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def open_out(out) -> tuple[Path, int]:
    """The output folder (created) and an exclusive lock on it: two jobs never write one folder."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise SiameseError(f"{out}: exists and is not a folder; --out names a folder of parquet shards")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = open_lock_file(out / ".lock")
    except OSError as e:
        raise SiameseError(f"{out}: cannot write the output folder ({e.strerror or e})") from None
    if not try_lock(fd):
        os.close(fd)
        raise SiameseError(f"{out}: another job is writing to this folder ({holder(out / '.lock')}); wait for it or "
                           f"choose another --out")
    note_holder(fd)
    return out.resolve(), fd


def shard_done(path: Path, shard) -> bool:
    """Whether ``path`` is a complete shard of ``shard``'s inputs (a :class:`~siamese_core.scale.plan.Shard`: its key
    and row count match)."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata or {}
        return meta.get(b"siamese.key") == shard.key.encode() and pf.metadata.num_rows == shard.rows
    except Exception:  # missing, truncated or not parquet: compute it again
        return False


def tidy(out: Path, count: int) -> None:
    """Remove shards past ``count`` (the input shrank) and what killed writers left (temporary shards and index
    folders whose owner process is gone: :func:`~siamese_core.core.sweep.sweep_folder`)."""
    for p in out.iterdir():
        m = PART.match(p.name)
        legacy = p.name.startswith(".part-") and p.name.endswith(".tmp") and owner_state(p.name) is None
        if (m and int(m.group(1)) >= count) or legacy:  # (a version without owner tags: this job holds the folder)
            p.unlink(missing_ok=True)
    sweep_folder(out)


def write_shard(out: Path, shard_index: int, key: str, table) -> None:
    """Write a table as shard ``shard_index``: a temporary file first, renamed into place when complete."""
    import pyarrow.parquet as pq
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"siamese.key": key.encode(),
                                           b"siamese.format": str(FORMAT).encode()})
    with atomic_file(Path(out) / part_name(shard_index)) as tmp:
        pq.write_table(table, tmp)


def shard_key(path: Path) -> str | None:
    """The key a shard file was written with (its parquet metadata), or None when it is unreadable."""
    import pyarrow.parquet as pq
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # missing, truncated or not parquet
        return None
    key = meta.get(b"siamese.key")
    return key.decode() if key else None


def shard_paths(out) -> list[Path]:
    """The shard files of a finished job, in order, each checked against the key ``job.json`` lists for it (a
    SiameseError when the job is not finished, or a shard is missing or was written by another job since)."""
    out = Path(out).expanduser()
    try:
        job = json.loads((out / "job.json").read_text())
    except (OSError, ValueError):
        raise SiameseError(f"{out}: no finished job here (job.json missing); run embed into this folder first, "
                           f"or again to finish it") from None
    paths = [out / part_name(i) for i in range(int(job["shards"]))]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise SiameseError(f"{out}: shard {missing[0]} is missing ({len(missing)} in all); run the same job again "
                           f"to recompute them")
    keys = job.get("keys") or [None] * len(paths)
    stale = [p.name for p, k in zip(paths, keys) if k is not None and shard_key(p) != k]
    if stale:
        raise SiameseError(f"{out}: shard {stale[0]} is not the one this job finished with ({len(stale)} in all; "
                           f"another job wrote to the folder since); run the job again to recompute them")
    return paths


def read_shards(out, columns=None):
    """All shards of a finished job as one pyarrow Table, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in shard_paths(out)])


__all__ = ["FORMAT", "PART", "part_name", "open_out", "shard_done", "shard_key", "tidy", "write_shard", "shard_paths",
           "read_shards"]
