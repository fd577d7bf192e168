"""Embed tiles and score pairs over archives that outgrow one process: Ray Data jobs writing parquet shards.

Why this module exists: :meth:`Scorer.embed` and :func:`judge_rows` run in one Python process. An archive of
millions of tiles (or a pairs CSV of millions of rows) needs many processes, on one machine or a cluster, and a
job of hours must survive being stopped. Ray Data does the scheduling; this module only cuts the input into
shards, runs one model per worker (:class:`_EmbedWorker`, :class:`_ScoreWorker`: callable classes that load the
run once, used with ``map_batches`` on an actor pool) and makes every shard a file that is either complete or
absent.

Layout of an output folder::

    part-00000.parquet ...   one file per shard of ``shard_size`` inputs, in input order
    job.json                 what the shards were made from; written when every shard is done
    index/                   (embed only, optional) the FAISS index over the shards, see shard_index.py

A worker writes a shard to ``.part-NNNNN.<pid>.tmp`` and renames it into place, so a killed job leaves whole
shards only. Each shard carries, in its parquet metadata, a key: a hash of everything its rows depend on (the
run's model file, the tile size, the inputs of that shard: file names with size and mtime, parquet rows, dataset
rows, or pair rows and the threshold). A second run with the same inputs keeps every shard whose key matches and
whose row count is right, and computes only the others; a changed input or model recomputes only the shards
it touches. Shards past the end of a shrunken input are deleted.

Embedding shards hold ``row`` (position in the input), ``name`` (file path relative to the folder,
``file.parquet#row`` or the parquet's path cell, the dataset's ``tile_id``), ``embedding`` (float32 list of the
run's embedding size, null when the row failed) and ``error`` ("" or one line naming the file). Score shards hold
the pairs CSV's own columns, the columns of ``score --pairs`` (typed: score and distance as float, same_place as
bool, ...) and ``line`` (the CSV line of the row).

Ray is optional (``requirements-scale.txt``): this module imports without it and says so in one line when a job
needs it. A job with nothing left to compute does not start Ray at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import workspace_dir
from ..core.errors import ImageError, RunError, SiameseError, count_of
from ..core.files import write_json_atomic

FORMAT = 1
SHARD_SIZE = 4096          # inputs per shard: the unit of work, of progress and of resuming
CHUNK = 256                # tiles decoded and embedded at a time inside a shard (bounded memory)
PART = re.compile(r"^part-(\d{5,})\.parquet$")
PATH_COLUMNS = ("path", "image_path", "file", "filename")  # parquet string columns taken as image paths
INSTALL = "pip install -r requirements-scale.txt"


def part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _ray():
    """The ray module, or a one-line SiameseError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SiameseError(f"this command runs on Ray, which is not installed; install it with: {INSTALL}") from None
    return ray


def _stat(p: Path) -> list:
    st = Path(p).stat()
    return [st.st_size, st.st_mtime_ns]


def _stat_or_none(p: Path) -> list:
    """Size and mtime, or None for a file gone since it was listed (its row will say it cannot be read)."""
    try:
        return _stat(p)
    except OSError:
        return [None, None]


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()


# --- what is to be computed ---------------------------------------------------------------------------

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


def _run_stamp(run: str | None, workspace) -> tuple[Path, dict]:
    """The run's folder and what its results depend on (model file, tile size); fails before any work."""
    from ..runs.registry import open_run
    from ..runs.run import PRETRAINED
    r = open_run(run or PRETRAINED, workspace)
    if not r.has_model():
        raise RunError(f"run {run!r} has no trained model yet (status: see `list`); wait for it to finish")
    return r.path, {"run": r.name, "model": _stat(r.model_path), "size": r.config.model.size}


def _cut(n: int, shard_size: int):
    return [(lo, min(n, lo + shard_size)) for lo in range(0, n, shard_size)]


def _check_shard_size(shard_size) -> int:
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
    """Shards of the rows of a pairs CSV (read with :func:`read_pairs_csv`: the same rules as ``score --pairs``)."""
    from ..data.pairs_csv import read_pairs_csv
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise SiameseError(f"{csv_path}: pairs CSV does not exist" if not csv_path.exists() else
                           f"{csv_path}: not a file; give a CSV with columns image_a,image_b")
    csv_path = csv_path.resolve()
    rows, cols, lines = read_pairs_csv(csv_path)
    if not rows:
        raise SiameseError(f"{csv_path}: no pairs below the header; nothing to score")
    out = []
    for lo, hi in _cut(len(rows), shard_size):
        task = {"kind": "pairs", "base": str(csv_path.parent), "cwd": os.getcwd(), "rows": rows[lo:hi],
                "cols": cols, "lines": lines[lo:hi], "threshold": threshold}
        out.append((task, [rows[lo:hi], str(csv_path.parent), os.getcwd(), threshold], hi - lo))
    return {"kind": "pairs", "path": str(csv_path), "count": len(rows), "columns": cols}, out


def plan(kind: str, source: dict, tasks: list, run: str | None, workspace) -> Plan:
    run_dir, stamp = _run_stamp(run, workspace)
    shards = [Shard(i, _key(FORMAT, kind, stamp, items), n, task) for i, (task, items, n) in enumerate(tasks)]
    return Plan(kind, run, run_dir, source, shards)


# --- the output folder --------------------------------------------------------------------------------

def _open_out(out) -> tuple[Path, int]:
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


def shard_done(path: Path, shard: Shard) -> bool:
    """Whether ``path`` is a complete shard of ``shard``'s inputs (its key and row count match)."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata or {}
        return meta.get(b"siamese.key") == shard.key.encode() and pf.metadata.num_rows == shard.rows
    except Exception:  # missing, truncated or not parquet: compute it again
        return False


def _tidy(out: Path, count: int) -> None:
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


# --- the workers (one model each) ---------------------------------------------------------------------

def _worker_scorer(run, workspace):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ..judge.inference import Scorer
    return Scorer.from_run(run, workspace)


def _read(task: dict, i: int, names: list, values: list, size: int):
    """(uint8 tile, error) for item ``i`` of a task."""
    from ..data.images import load_tile
    try:
        if task["kind"] == "files":
            return load_tile(Path(task["root"]) / names[i], size, name=names[i]), ""
        v = values[i]
        if task["kind"] == "parquet":
            if task["mode"] == "paths":
                if not v:
                    raise ImageError(f"{names[i]}: empty path cell in column {task['column']!r}")
                p = Path(v).expanduser()
                p = p if p.is_absolute() else Path(task["file"]).parent / p
                return load_tile(p, size, name=str(v)), ""
            data = v.get("bytes") if isinstance(v, dict) else v
            if not data:
                raise ImageError(f"{names[i]}: empty image cell in column {task['column']!r}")
            return load_tile(data, size, name=names[i]), ""
        return v, ""  # dataset rows are tiles already (resized below when the sizes differ)
    except ImageError as e:
        return None, str(e)
    except Exception as e:  # a bug in a decoder must not kill a job of hours: the row says what happened
        return None, f"{names[i]}: {type(e).__name__}: {e}".splitlines()[0]


def _parquet_rows(task: dict) -> list:
    """Cells ``lo..hi`` of the task's column, reading only the row groups that hold them."""
    import pyarrow.parquet as pq
    pf = pq.ParquetFile(task["file"])
    lo, hi, off, cells = task["lo"], task["hi"], 0, []
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if off < hi and off + n > lo:
            col = pf.read_row_group(g, columns=[task["column"]]).column(0)
            a, b = max(lo - off, 0), min(hi - off, n)
            cells.extend(col.slice(a, b - a).to_pylist())
        off += n
    return cells


def _task_items(task: dict) -> tuple[list, list]:
    """(names, values) of a task's inputs; values are filled per chunk for datasets (see embed_task)."""
    if task["kind"] == "parquet":
        cells = _parquet_rows(task)
        if task["mode"] == "paths":
            return [str(c) for c in cells], cells
        return [f"{Path(task['file']).name}#{r}" for r in range(task["lo"], task["hi"])], cells
    return task["names"], [None] * len(task["names"])


def embed_task(scorer, task: dict, dim: int, pool=None):
    """The embedding table of one shard (see the module docstring); unreadable inputs become error rows."""
    import pyarrow as pa
    from ..data.images import tiles_at
    names, values = _task_items(task)
    n = len(names)
    emb = np.zeros((n, dim), np.float32)
    errors = [""] * n
    rows = None
    if task["kind"] == "dataset":
        from ..data.store import TileRows
        rows = TileRows(Path(task["path"]) / "images.npy")
    for lo in range(0, n, CHUNK):
        idx = list(range(lo, min(n, lo + CHUNK)))
        if rows is not None:
            block = rows[np.arange(task["lo"] + lo, task["lo"] + idx[-1] + 1)]
            for k, i in enumerate(idx):
                values[i] = block[k]
        got = list((pool.map if pool else map)(lambda i: _read(task, i, names, values, scorer.size), idx))
        ok = [i for i, (t, _) in zip(idx, got) if t is not None]
        for i, (_, err) in zip(idx, got):
            errors[i] = err
        if ok:
            tiles = tiles_at(np.stack([got[i - lo][0] for i in ok]), scorer.size)
            emb[ok] = scorer.embed(tiles)
        if rows is not None:
            for i in idx:
                values[i] = None
    failed = pa.array([bool(e) for e in errors], pa.bool_())
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim, mask=failed)  # zeros under the nulls
    start = task["start"]
    return pa.table({"row": pa.array(np.arange(start, start + n, dtype=np.int64)), "name": pa.array(names, pa.string()),
                     "embedding": col, "error": pa.array(errors, pa.string())},
                    metadata={b"siamese.dim": str(dim).encode()})


SCORE_TYPES = {"score": "float", "distance": "float", "same_place": "bool", "inliers": "int", "sift_inliers": "int",
               "orb_inliers": "int", "angle": "float", "scale": "float", "structure": "float"}


def _typed(values: list, kind: str):
    import pyarrow as pa

    def conv(v):
        if v is None or v == "":
            return None
        if kind == "bool":
            return v if isinstance(v, bool) else str(v).lower() == "true"
        return int(v) if kind == "int" else float(v)
    return pa.array([conv(v) for v in values], {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}[kind])


def score_task(scorer, task: dict):
    """The scored table of one shard of pairs: exactly the rows ``score --pairs`` writes, typed."""
    import pyarrow as pa
    from ..judge.inference import judge_rows, scored_rows
    if task.get("cwd") and os.path.isdir(task["cwd"]):
        os.chdir(task["cwd"])  # paths relative to the working directory resolve as on the driver
    rows, cols = task["rows"], task["cols"]
    results = judge_rows(scorer, rows, Path(task["base"]), task["threshold"])
    out, out_cols, _ = scored_rows(rows, cols, task["lines"], results)
    table = {c: (_typed([r[c] for r in out], SCORE_TYPES[c]) if c in SCORE_TYPES and c not in cols
                 else pa.array([str(r.get(c, "")) for r in out], pa.string())) for c in out_cols}
    table["line"] = pa.array(task["lines"], pa.int64())
    return pa.table(table)


class _Worker:
    """One model per Ray actor: loaded once, then a shard per call (``map_batches(batch_size=1)``)."""

    def __init__(self, kind: str, run, workspace, out):
        self.kind, self.out, self.fatal = kind, Path(out), ""
        try:
            self.scorer = _worker_scorer(run, workspace)
            if kind == "embed":
                blank = np.zeros((1, self.scorer.size, self.scorer.size, 3), np.uint8)
                self.dim = int(self.scorer.embed(blank).shape[1])
                self.pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)))
        except Exception as e:  # reported by the first call: Ray's own report of a failed actor loses the message
            self.fatal = str(e) if isinstance(e, SiameseError) else f"{type(e).__name__}: {e}".splitlines()[0]

    def __call__(self, batch: dict) -> dict:
        done = {"shard": [], "rows": [], "errors": [], "seconds": [], "fatal": []}
        if self.fatal:
            return {**{k: np.zeros(1, np.int64) for k in done}, "fatal": np.asarray([self.fatal])}
        for index, key, task in zip(batch["shard"], batch["key"], batch["task"]):
            t0 = time.time()
            task = json.loads(task)
            table = (embed_task(self.scorer, task, self.dim, self.pool) if self.kind == "embed"
                     else score_task(self.scorer, task))
            write_shard(self.out, int(index), str(key), table)
            errors = table.column("error").to_pylist()
            done["shard"].append(int(index))
            done["rows"].append(table.num_rows)
            done["errors"].append(sum(1 for e in errors if e))
            done["seconds"].append(time.time() - t0)
            done["fatal"].append("")
        return {k: np.asarray(v) for k, v in done.items()}


# --- running a job ------------------------------------------------------------------------------------

def _cause(e: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (RayTaskError → UserCodeException → ...)."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        nxt = getattr(e, "cause", None) or e.__cause__
        if not isinstance(nxt, BaseException):
            break
        e = nxt
    return e


def ray_connected() -> bool:
    """Whether this process already has a Ray session (then jobs run there, whatever the address)."""
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def _connect(address: str | None):
    """Ray, connected: the session already open in this process, the cluster at ``address``, else a new local
    one. Returns (ray, started_here)."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SiameseError(f"could not start or reach {where} ({first}); check --ray-address (host:port of the "
                           f"head node, or 'auto') or leave it out for a local Ray") from None
    return ray, True


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A host:port address must answer a TCP connection: Ray itself waits minutes for an address that is wrong."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", (address or "").strip())
    if not m:
        return  # no address (a local Ray), or 'auto'
    import socket
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise SiameseError(f"--ray-address {address!r}: nothing answers there ({e.strerror or e}); give the head "
                           f"node's host:port (ray start --head prints it), or leave it out for a local Ray") from None


def _quiet_ray_data():
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False       # the CLI draws one tqdm bar of its own
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a failure becomes one SiameseError line instead


def _default_workers(ray, gpus_per_worker: float, pending: int) -> int:
    res = ray.cluster_resources()
    if gpus_per_worker:
        n = int(res.get("GPU", 0) // gpus_per_worker)
        if n < 1:
            raise SiameseError(f"--gpus-per-worker {gpus_per_worker} asks for GPUs, but the Ray cluster has "
                               f"{res.get('GPU', 0)}; leave it at 0 on CPU machines")
    else:
        n = int(res.get("CPU", 1) // 2)  # TensorFlow already spreads one model's work over a few cores
    return max(1, min(n, pending))


def run_plan(p: Plan, out, workspace=None, workers: int | None = None, gpus_per_worker: float = 0.0,
        address: str | None = None, progress=None) -> dict:
    """Compute every shard of ``p`` that ``out`` does not already hold, on Ray; then write ``job.json``.

    ``progress(done_rows, total_rows)`` counts inputs (kept shards count as done at once). Returns a summary:
    shards, kept, computed, rows, errors (the count), failures (up to 20 (name or line, reason)), out."""
    out = Path(out).expanduser()
    if not out.is_dir() or any(not shard_done(out / part_name(s.index), s) for s in p.shards):
        _ray()  # Ray missing or a wrong address: fail before anything is written
        if not ray_connected():
            _check_reachable(address)
    created = not out.exists()
    out, lock = _open_out(out)
    try:
        _tidy(out, len(p.shards))
        pending = [s for s in p.shards if not shard_done(out / part_name(s.index), s)]
        if pending:
            (out / "job.json").unlink(missing_ok=True)  # written again once every shard is there
        total = sum(s.rows for s in p.shards)
        done = total - sum(s.rows for s in pending)
        if progress:
            progress(done, total)
        if pending:
            done = _execute(p, pending, out, workspace, workers, gpus_per_worker, address, progress, done, total)
        missing = [s.index for s in p.shards if not (out / part_name(s.index)).exists()]
        if missing:
            raise SiameseError(f"{out}: shard {part_name(missing[0])} was not written; run the same command again")
        summary = _summary(p, out, len(p.shards) - len(pending), len(pending))
        write_json_atomic(out / "job.json", {"format": FORMAT, "kind": p.kind, "run": p.run_dir.name,
                                             "source": p.source, "shards": len(p.shards),
                                             "keys": [s.key for s in p.shards], "rows": summary["rows"],
                                             "errors": summary["errors"],
                                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return summary
    except BaseException:
        if created and not any(PART.match(f.name) for f in out.iterdir()):  # a failed first run leaves no folder
            (out / ".lock").unlink(missing_ok=True)
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    finally:
        os.close(lock)


def _execute(p: Plan, pending: list, out: Path, workspace, workers, gpus_per_worker, address, progress,
             done: int, total: int) -> int:
    ray, started = _connect(address)
    try:
        _quiet_ray_data()
        import ray.data
        n = int(workers) if workers else _default_workers(ray, gpus_per_worker, len(pending))
        if n < 1:
            raise SiameseError(f"--workers must be at least 1, got {workers}")
        items = [{"shard": s.index, "key": s.key, "task": json.dumps(s.task)} for s in pending]
        # workers import this package from where the driver did (a local Ray; a cluster installs it on every node)
        pkg = str(Path(__file__).resolve().parents[2])
        env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               "PYTHONPATH": os.pathsep.join(x for x in (pkg, os.environ.get("PYTHONPATH", "")) if x)}
        with warnings.catch_warnings():
            # max_restarts=0: a worker that dies (e.g. out of memory) ends the job with one line, and the next run
            # resumes from the shards already written; Ray 2.60 marks passing it this way as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                _Worker, batch_size=1, batch_format="numpy",
                fn_constructor_args=(p.kind, p.run, str(workspace_dir(workspace)), str(out)),
                compute=ray.data.ActorPoolStrategy(size=min(n, len(pending))),
                num_cpus=1, num_gpus=gpus_per_worker or None, runtime_env={"env_vars": env}, max_restarts=0)
        try:
            for r in ds.iter_rows():
                if r["fatal"]:
                    raise SiameseError(f"a Ray worker could not start: {r['fatal']}")
                done += int(r["rows"])
                if progress:
                    progress(done, total)
        except SiameseError:
            raise
        except Exception as e:
            c = _cause(e)
            if isinstance(c, SiameseError):
                raise SiameseError(str(c)) from None
            first = (str(c).strip().splitlines() or [""])[0][:300]
            raise SiameseError(f"a Ray worker failed ({type(c).__name__}: {first}); shards written so far are kept: "
                               f"run the same command again to resume") from None
    finally:
        if started:
            ray.shutdown()
    return done


def _summary(p: Plan, out: Path, kept: int, computed: int) -> dict:
    import pyarrow.parquet as pq
    rows, errors, failures = 0, 0, []
    name = "name" if p.kind == "embed" else "line"
    for s in p.shards:
        t = pq.read_table(out / part_name(s.index), columns=[name, "error"])
        rows += t.num_rows
        err = t.column("error").to_pylist()
        bad = [i for i, e in enumerate(err) if e]
        errors += len(bad)
        if bad and len(failures) < 20:
            names = t.column(name).to_pylist()
            failures.extend((names[i], err[i]) for i in bad[:20 - len(failures)])
    return {"out": str(out), "shards": len(p.shards), "kept": kept, "computed": computed, "rows": rows,
            "errors": errors, "failures": failures}


# --- the two jobs -------------------------------------------------------------------------------------

def embed(out, images=None, parquet=None, dataset=None, column: str = "", run: str | None = None, workspace=None,
          shard_size: int | None = SHARD_SIZE, workers: int | None = None, gpus_per_worker: float = 0.0,
          address: str | None = None, progress=None) -> dict:
    """Embed every tile of one input (a folder of ``images``, a ``parquet`` file or folder, or a workspace
    ``dataset``) with run ``run`` (None: the bundled model) into parquet shards under ``out``. Resumable: see
    the module docstring. Returns the summary of :func:`run_plan`."""
    given = [x for x in (images, parquet, dataset) if x]
    if len(given) != 1:
        raise SiameseError("embed needs exactly one input: --images DIR, --parquet FILE or --dataset NAME "
                           f"(got {len(given)})")
    shard_size = _check_shard_size(shard_size)
    if images:
        source, tasks = folder_tasks(images, shard_size)
    elif parquet:
        source, tasks = parquet_tasks(parquet, shard_size, column)
    else:
        source, tasks = dataset_tasks(dataset, workspace, shard_size)
    return run_plan(plan("embed", source, tasks, run, workspace), out, workspace, workers, gpus_per_worker, address,
               progress)


def score_pairs(pairs, out, run: str | None = None, workspace=None, threshold: float | None = None,
                shard_size: int | None = SHARD_SIZE, workers: int | None = None, gpus_per_worker: float = 0.0,
                address: str | None = None, progress=None) -> dict:
    """Score every row of a pairs CSV like ``score --pairs`` (same judgements, same columns), into parquet
    shards under ``out``. ``threshold`` None: the run's saved threshold. Returns the summary of :func:`run_plan`."""
    from ..runs.run import Run
    shard_size = _check_shard_size(shard_size)
    run_dir, _ = _run_stamp(run, workspace)
    t = float(Run(run_dir).threshold() if threshold is None else threshold)
    source, tasks = pairs_tasks(pairs, shard_size, t)
    summary = run_plan(plan("score", {**source, "threshold": t}, tasks, run, workspace), out, workspace, workers,
                  gpus_per_worker, address, progress)
    return {**summary, "threshold": t}


def read_shards(out, columns=None):
    """All shards of a finished job as one pyarrow Table, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in shard_paths(out)])


__all__ = ["embed", "score_pairs", "run_plan", "plan", "read_shards", "shard_paths", "SHARD_SIZE", "Shard", "Plan"]
