"""The output folder of a Ray job: parquet shards that are each either complete or absent.

Layout of an output folder::

    part-00000.parquet ...   one file per shard of ``shard_size`` inputs, in input order
    job.json                 what the shards were made from; written when every shard is done
    index/                   (embed only, optional) the FAISS index over the shards, see shard_index.py

A worker writes a shard to ``.part-NNNNN.<pid>.tmp`` and renames it into place, so a killed job leaves whole
shards only. Each shard carries its key (:mod:`.plan`) in its parquet metadata; a shard whose key and row count
match is done (:func:`shard_done`). Shards past the end of a shrunken input, and temporary files of a killed job,
are removed (:func:`tidy`). One job at a time writes a folder (:func:`open_out` holds a lock on it).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from ..core.errors import SiameseError

FORMAT = 1
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
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SiameseError(f"{out}: cannot write the output folder ({e.strerror or e})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SiameseError(f"{out}: another job is writing to this folder; wait for it or choose another --out") from None
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
    """Remove shards past ``count`` (the input shrank) and temporary files of a killed job."""
    for p in out.iterdir():
        m = PART.match(p.name)
        if (m and int(m.group(1)) >= count) or (p.name.startswith(".part-") and p.name.endswith(".tmp")):
            p.unlink(missing_ok=True)


def write_shard(out: Path, shard_index: int, key: str, table) -> None:
    """Write a table as shard ``shard_index``: a temporary file first, renamed into place when complete."""
    import pyarrow.parquet as pq
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"siamese.key": key.encode(),
                                           b"siamese.format": str(FORMAT).encode()})
    final = Path(out) / part_name(shard_index)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def shard_paths(out) -> list[Path]:
    """The shard files of a finished job, in order (a SiameseError when the job is not finished)."""
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
    return paths


def read_shards(out, columns=None):
    """All shards of a finished job as one pyarrow Table, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in shard_paths(out)])


__all__ = ["FORMAT", "PART", "part_name", "open_out", "shard_done", "tidy", "write_shard", "shard_paths",
           "read_shards"]
