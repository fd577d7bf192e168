"""What one Ray worker does: load a run's model once, then turn one shard's task into one parquet table.

Embedding shards hold ``row`` (position in the input), ``name`` (file path relative to the folder,
``file.parquet#row`` or the parquet's path cell, the dataset's ``tile_id``), ``embedding`` (float32 list of the
run's embedding size, null when the row failed) and ``error`` ("" or one line naming the file). Score shards hold
the pairs CSV's own columns, the columns of ``score --pairs`` (typed: score and distance as float, same_place as
bool, ...) and ``line`` (the CSV line of the row).

:class:`Worker` is the callable class Ray Data runs on an actor pool (``map_batches``, one shard per call); the two
task functions, :func:`embed_task` and :func:`score_task`, need no Ray and are what the tests compare with
:meth:`Scorer.embed <siamese_core.judge.inference.Scorer.embed>` and ``score --pairs``.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.errors import ImageError, SiameseError
from .shards import write_shard

CHUNK = 256                # tiles decoded and embedded at a time inside a shard (bounded memory)


def _worker_scorer(run, workspace, fusion=None, kind: str = "embed"):
    """The run's scorer; for scores, judging with ``fusion`` (the dict the job was keyed on), not whatever the run's
    verdict holds by the time this worker starts."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ..core.keys import digest
    from ..judge.fusion import fusion_from_dict
    from ..judge.inference import Scorer
    scorer = Scorer.from_run(run, workspace)
    if kind == "score":
        scorer.fusion = fusion_from_dict(fusion) if fusion is not None else None
        scorer.fusion_key = digest(fusion)
    return scorer


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
    """The scored table of one shard of pairs: exactly the rows ``score --pairs`` writes, typed. Paths relative to
    the driver's working directory resolve against it (``task["cwd"]``); the worker's own stays where it is."""
    import pyarrow as pa
    from ..judge.inference import judge_rows, scored_rows
    rows, cols = task["rows"], task["cols"]
    results = judge_rows(scorer, rows, Path(task["base"]), task["threshold"], cwd=task.get("cwd"))
    out, out_cols, _ = scored_rows(rows, cols, task["lines"], results)
    table = {c: (_typed([r[c] for r in out], SCORE_TYPES[c]) if c in SCORE_TYPES and c not in cols
                 else pa.array([str(r.get(c, "")) for r in out], pa.string())) for c in out_cols}
    table["line"] = pa.array(task["lines"], pa.int64())
    return pa.table(table)


class Worker:
    """One model per Ray actor: loaded once, then a shard per call (``map_batches(batch_size=1)``)."""

    def __init__(self, kind: str, run, workspace, out, fusion=None):
        self.kind, self.out, self.fatal = kind, Path(out), ""
        try:
            self.scorer = _worker_scorer(run, workspace, fusion, kind)
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


__all__ = ["Worker", "embed_task", "score_task", "SCORE_TYPES", "CHUNK"]
