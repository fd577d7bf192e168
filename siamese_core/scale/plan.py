"""What a Ray job is to compute: its input cut into shards (:class:`Shard`), each keyed by what its rows depend on.

Why this module exists: planning reads only the input's listing (file names with size and mtime, parquet row
counts, a dataset's image count, a pairs CSV's rows and the size and mtime of every image they name) and the run's
model file and verdict, never an image, so a job that has nothing left to do is known before Ray starts. A shard's
key is a hash of everything its rows depend on: the code's format (:data:`~siamese_core.scale.shards.FORMAT`), the
run's model file, the tile size, the shard's inputs (names with size and mtime), and for pairs also the fusion and
the threshold. A second run keeps every shard whose key matches (:mod:`.shards`) and recomputes only the others:
an image replaced under the same name, a new model, a recalibrated fusion or another threshold all give new keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import RunError, SiameseError, count_of
from ..core.keys import digest
from ..data.pairs_csv import resolve_image
from .shards import FORMAT

SHARD_SIZE = 4096          # inputs per shard: the unit of work, of progress and of resuming
PATH_COLUMNS = ("path", "image_path", "file", "filename")  # parquet string columns taken as image paths


def _stat(p: Path) -> list:
    st = Path(p).stat()
    return [st.st_size, st.st_mtime_ns]


def _stat_or_none(p: Path) -> list:
    """Size and mtime, or None for a file gone since it was listed (its row will say it cannot be read)."""
    try:
        return _stat(p)
    except OSError:
        return [None, None]


@dataclass(frozen=True)
class Shard:
    """One unit of work: its number, its key, how many rows it makes, and what a worker needs (JSON)."""

    index: int
    key: str
    rows: int
    task: dict


@dataclass
class Plan:
    kind: str                  # embed | score
    run: str | None
    run_dir: Path
    source: dict               # what the input is, for job.json and messages
    shards: list
    fusion: dict | None = None  # score: the fusion (its dict) every worker judges with, read once with the threshold


def run_stamp(run: str | None, workspace) -> tuple[Path, dict]:
    """The run's folder and what its results depend on (model file, tile size); fails before any work."""
    from ..runs.registry import open_run
    from ..runs.run import PRETRAINED
    r = open_run(run or PRETRAINED, workspace)
    if not r.has_model():
        raise RunError(f"run {run!r} has no trained model yet (status: see `list`); wait for it to finish")
    return r.path, {"run": r.name, "model": _stat(r.model_path), "size": r.config.model.size}


def _cut(n: int, shard_size: int):
    return [(lo, min(n, lo + shard_size)) for lo in range(0, n, shard_size)]


def check_shard_size(shard_size) -> int:
    return SHARD_SIZE if shard_size is None else count_of(shard_size, "shard size", "inputs", "inputs per shard file")


def folder_tasks(root, shard_size: int) -> tuple[dict, list]:
    """Shards of the image files under ``root`` (recursive, sorted; names relative to ``root``)."""
    from ..data.images import IMAGE_EXTENSIONS
    from ..data.sources.files import list_images
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SiameseError(f"{root}: folder does not exist" if not root.exists() else
                           f"{root}: not a folder; give a folder of images (or --parquet for a parquet file)")
    root = root.resolve()
    paths = list_images(root)
    if not paths:
        raise SiameseError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    prefix = len(str(root).rstrip("/")) + 1
    out = []
    for lo, hi in _cut(len(paths), shard_size):
        names = [str(p)[prefix:] for p in paths[lo:hi]]
        items = [[n, *_stat_or_none(p)] for n, p in zip(names, paths[lo:hi])]
        out.append(({"kind": "files", "root": str(root), "names": names, "start": lo}, items, hi - lo))
    return {"kind": "folder", "path": str(root), "count": len(paths)}, out


def parquet_column(path: Path, schema, column: str = "") -> tuple[str, str]:
    """(column, "bytes" | "paths"): an image column (binary, or a struct with ``bytes``) or a string column of
    image paths. Without ``column``: the image column :func:`sources.hf.pick_column` would pick, else the first
    of :data:`PATH_COLUMNS`."""
    import pyarrow as pa
    from ..data.sources.hf import image_columns, pick_column
    names = [f.name for f in schema]
    images = image_columns(schema)
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    if column:
        if column not in names:
            raise SiameseError(f"{path}: no column {column!r}; columns are {names}; pass --column with one of "
                               f"{images + strings or names}")
        if column in images:
            return column, "bytes"
        if column in strings:
            return column, "paths"
        raise SiameseError(f"{path}: column {column!r} holds neither image bytes nor image paths (strings); "
                           f"use one of {images + strings}")
    if images:
        return pick_column(path, schema), "bytes"
    for c in PATH_COLUMNS:
        if c in strings:
            return c, "paths"
    raise SiameseError(f"{path}: no image column (binary, or a struct with 'bytes') and no path column "
                       f"({', '.join(PATH_COLUMNS)}); columns are {names}; pass --column NAME")


def parquet_tasks(path, shard_size: int, column: str = "") -> tuple[dict, list]:
    """Shards of the rows of a parquet file (or of every ``*.parquet`` under a folder); a shard never spans
    two files. Rows are numbered across the files in sorted order."""
    from ..data.sources.hf import open_parquet, parquet_files
    path = Path(path).expanduser()
    if not path.exists():
        raise SiameseError(f"{path}: parquet file or folder does not exist")
    files = [f.resolve() for f in parquet_files(path)]
    out, start, modes = [], 0, set()
    for f in files:
        pf = open_parquet(f)
        col, mode = parquet_column(f, pf.schema_arrow, column)
        modes.add(f"{col} ({mode})")
        n = pf.metadata.num_rows
        for lo, hi in _cut(n, shard_size):
            out.append(({"kind": "parquet", "file": str(f), "column": col, "mode": mode, "lo": lo, "hi": hi,
                         "start": start + lo}, [str(f), _stat(f), col, lo, hi], hi - lo))
        start += n
    if not start:
        raise SiameseError(f"{path}: the parquet holds no rows")
    return {"kind": "parquet", "path": str(path.resolve()), "files": len(files), "columns": sorted(modes),
            "count": start}, out


def dataset_tasks(name: str, workspace, shard_size: int) -> tuple[dict, list]:
    """Shards of the images of a workspace dataset (names: the manifest's tile_id)."""
    from ..data.store import open_dataset
    ds = open_dataset(name, workspace)
    n = len(ds)
    if n == 0:
        raise SiameseError(f"dataset {name!r} has no images; nothing to embed")
    stamp = _stat(ds.path / "images.npy")
    try:
        import pandas as pd
        ids = pd.read_parquet(ds.path / "manifest.parquet", columns=["tile_id"])["tile_id"].astype(str).tolist()
    except (OSError, KeyError, ValueError):
        ids = []
    if len(ids) != n:
        ids = [f"{ds.name}#{r}" for r in range(n)]
    out = [({"kind": "dataset", "path": str(ds.path), "names": ids[lo:hi], "lo": lo, "hi": hi, "start": lo},
            [stamp, lo, hi], hi - lo) for lo, hi in _cut(n, shard_size)]
    return {"kind": "dataset", "name": ds.name, "path": str(ds.path), "count": n}, out


def pairs_tasks(csv_path, shard_size: int, threshold: float) -> tuple[dict, list]:
    """Shards of the rows of a pairs CSV (read with :func:`read_pairs_csv`: the same rules as ``score --pairs``), each
    keyed on its rows, the size and mtime of every image they name (found as the scorer finds it:
    :func:`~siamese_core.data.pairs_csv.resolve_image`) and the threshold."""
    from ..data.pairs_csv import read_pairs_csv
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise SiameseError(f"{csv_path}: pairs CSV does not exist" if not csv_path.exists() else
                           f"{csv_path}: not a file; give a CSV with columns image_a,image_b")
    csv_path = csv_path.resolve()
    rows, cols, lines = read_pairs_csv(csv_path)
    if not rows:
        raise SiameseError(f"{csv_path}: no pairs below the header; nothing to score")
    out, base, cwd, seen = [], csv_path.parent, os.getcwd(), {}

    def stamp(name: str):
        name = name.strip()
        if name not in seen:
            seen[name] = _stat_or_none(resolve_image(name, base, cwd)) if name else None
        return seen[name]
    for lo, hi in _cut(len(rows), shard_size):
        task = {"kind": "pairs", "base": str(base), "cwd": cwd, "rows": rows[lo:hi],
                "cols": cols, "lines": lines[lo:hi], "threshold": threshold}
        images = [[stamp(r.get("image_a", "")), stamp(r.get("image_b", ""))] for r in rows[lo:hi]]
        out.append((task, [rows[lo:hi], str(base), cwd, threshold, images], hi - lo))
    return {"kind": "pairs", "path": str(csv_path), "count": len(rows), "columns": cols}, out


def plan(kind: str, source: dict, tasks: list, run: str | None, workspace, fusion: dict | None = None) -> Plan:
    """The shards of a job, keyed. For scores, ``fusion`` is the run's fusion (its dict, None: the learned distance
    alone), read together with the threshold: the workers are handed it, so what a shard holds is what its key says
    even if the run is calibrated again while the job runs."""
    run_dir, stamp = run_stamp(run, workspace)
    if kind == "score":
        stamp = {**stamp, "fusion": digest(fusion)}
    shards = [Shard(i, digest(FORMAT, kind, stamp, items), n, task) for i, (task, items, n) in enumerate(tasks)]
    return Plan(kind, run, run_dir, source, shards, fusion)


__all__ = ["Shard", "Plan", "plan", "run_stamp", "check_shard_size", "folder_tasks", "parquet_tasks",
           "dataset_tasks", "pairs_tasks", "parquet_column", "SHARD_SIZE", "PATH_COLUMNS"]
