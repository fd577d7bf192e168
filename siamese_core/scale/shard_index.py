"""A FAISS index over the embedding shards of ``embed`` (:mod:`siamese_core.scale.jobs`): search beyond one dataset.

Why this module exists: :mod:`siamese_core.scale.search` indexes one workspace dataset, whose images and embeddings
sit on one disk and whose flat index holds every vector uncompressed (512 bytes a tile at 128 dims: 5 GB for ten
million tiles, and a query compares them all). An archive embedded by ``embed`` into parquet shards can be far
larger. This module builds an index from those shards, streaming them one at a time, with two kinds:

``flat``   exact (``IndexFlatL2``): every vector kept and compared. The choice up to :data:`EXACT_MAX` vectors.
``ivfpq``  ``faiss.index_factory(d, "IVF{nlist},PQ{m}np")``: the vectors are clustered into ``nlist`` cells
           (≈ 4·√N, as in search.py) and each is stored as ``m`` bytes (product quantisation: the vector cut into
           ``m`` pieces, each replaced by the nearest of 256 learned centroids; ``m`` = dims / 4, so 32 bytes for
           128 dims, 16× smaller than flat). A query visits the ``nprobe`` (16) nearest cells and ranks by the
           compressed vectors, so results and distances are approximate; ten million tiles fit in ≈ 0.4 GB.
           Cells and codebooks are trained on a random sample (seeded) of at most
           ``max(64·nlist, 65,536)`` vectors, read from the shards without loading them all. ``np`` turns off
           FAISS's "polysemous" training, which only serves Hamming-distance pre-filtering (not used here) and
           took 5-6× the training time (3,000 vectors of 128 dims, PQ32: 92 s with it, 8 s without, on the
           2-core development machine; the same recall).

Distances are Euclidean between embeddings (lower = more alike), as everywhere in this package; rows whose
``error`` is set (unreadable inputs) are not indexed. On disk, in ``<out>/index/``: ``index.faiss``,
``keys.parquet`` (index position → the input's ``row`` and ``name``) and ``meta.json`` (kind, parameters, the
code's :data:`FORMAT` and the shard keys it was built from: an index is rebuilt only when one of them changes).
Building holds a lock on ``<out>/index.lock`` (a second builder waits at most ``wait_s`` seconds, then says who
holds it); the index is written to a temporary folder, flushed and swapped into place whole.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import SiameseError
from ..core.files import make_temp_dir, remove, replace_dir, write_json_atomic
from ..core.locks import file_lock
from .search import EXACT_MAX, NPROBE, ivf_params, load_faiss, search_index
from .shards import shard_paths

KINDS = ("auto", "flat", "ivfpq")
FORMAT = 2          # 2: built under a lock and keyed on this number; raise it when the index's layout changes
LOCK_WAIT_S = 600.0


def pq_m(dim: int) -> int:
    """Bytes per vector for IVF-PQ: dims / 4 (rounded down to a divisor of ``dim``), at least 1."""
    m = max(1, dim // 4)
    while dim % m:
        m -= 1
    return m


def _valid_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """(embeddings of the rows without an error, their input rows, their names) of one shard."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    t = pq.read_table(path, columns=["row", "name", "embedding", "error"])
    t = t.filter(pc.equal(t.column("error"), ""))
    col = t.column("embedding").combine_chunks()
    dim = col.type.list_size
    emb = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    return np.ascontiguousarray(emb), t.column("row").to_numpy(), t.column("name").to_pylist()


def _counts(paths: list) -> tuple[list, int]:
    """Vectors per shard (rows without an error) and the embedding size."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    counts, dim = [], 0
    for p in paths:
        err = pq.read_table(p, columns=["error"]).column("error")
        counts.append(int(pc.sum(pc.equal(err, "")).as_py() or 0))
        dim = dim or int(pq.read_schema(p).field("embedding").type.list_size)
    return counts, dim


def _sample(paths: list, counts: list, size: int, seed: int = 0) -> np.ndarray:
    """A seeded random sample of ``size`` vectors across the shards, read shard by shard."""
    n = sum(counts)
    pick = np.sort(np.random.default_rng(seed).choice(n, size=min(n, size), replace=False))
    out, start = [], 0
    for p, c in zip(paths, counts):
        mine = pick[(pick >= start) & (pick < start + c)] - start
        if len(mine):
            out.append(_valid_embeddings(p)[0][mine])
        start += c
    return np.concatenate(out)


def _new_index(kind: str, dim: int, n: int, nlist: int, m: int):
    faiss = load_faiss()
    if kind == "flat":
        return faiss.IndexFlatL2(dim), {}
    nlist = int(nlist) or ivf_params(n)[0]
    m = int(m) or pq_m(dim)
    if dim % m:
        raise SiameseError(f"--pq-m {m} must divide the embedding size {dim}; try {pq_m(dim)}")
    spec = f"IVF{nlist},PQ{m}np"
    return faiss.index_factory(dim, spec, faiss.METRIC_L2), {"factory": spec, "nlist": nlist, "m": m,
                                                              "nprobe": min(NPROBE, nlist)}


def build_shard_index(out, kind: str = "auto", nlist: int = 0, m: int = 0, progress=None,
                      exact_max: int = EXACT_MAX, wait_s: float = LOCK_WAIT_S) -> dict:
    """Build (or reuse) ``<out>/index`` from the shards of a finished ``embed`` job in ``out``; returns its meta
    plus ``status`` (built | reused). ``kind`` auto: flat up to ``exact_max`` vectors, else ivfpq. ``nlist`` and
    ``m`` (0: chosen from N and the embedding size) apply to ivfpq. ``progress(done_shards, total)``."""
    if kind not in KINDS:
        raise SiameseError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
    out = Path(out).expanduser()
    shard_paths(out)  # a finished job, or its one-line error, before any lock file is made
    with file_lock(out / "index.lock", f"the index of {out}", wait_s,
                   fix="another process is building it: wait for it, then run this again"):
        return _build(out, kind, nlist, m, progress, exact_max)


def _build(out: Path, kind: str, nlist: int, m: int, progress, exact_max: int) -> dict:
    paths = shard_paths(out)
    job = json.loads((out / "job.json").read_text())
    if job.get("kind") != "embed":
        raise SiameseError(f"{out}: holds {job.get('kind')!r} shards, not embeddings; index the output of embed")
    counts, dim = _counts(paths)
    n = sum(counts)
    if n == 0:
        raise SiameseError(f"{out}: no embeddings to index (every input failed; see the shards' error column)")
    want = kind if kind != "auto" else ("flat" if n <= exact_max else "ivfpq")
    source = {"format": FORMAT, "keys": job["keys"], "run": job.get("run"), "kind": want, "nlist": int(nlist),
              "m": int(m)}
    dest = out / "index"
    try:
        old = json.loads((dest / "meta.json").read_text())
        if old.get("source") == source and (dest / "index.faiss").exists() and (dest / "keys.parquet").exists():
            return {**old, "status": "reused"}
    except (OSError, ValueError):
        pass
    t0 = time.time()
    idx, params = _new_index(want, dim, n, nlist, m)
    if want == "ivfpq":
        idx.train(_sample(paths, counts, max(64 * params["nlist"], 65_536)))
        idx.nprobe = params["nprobe"]
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows, names = [], []
    for i, p in enumerate(paths):
        emb, r, nm = _valid_embeddings(p)
        if len(emb):
            idx.add(emb)
        rows.append(r)
        names.extend(nm)
        if progress:
            progress(i + 1, len(paths))
    try:
        tmp = make_temp_dir(out, ".tmp-index")
        try:
            try:
                load_faiss().write_index(idx, str(tmp / "index.faiss"))
            except RuntimeError as e:  # FAISS reports a failed write (a full disk) this way
                raise OSError(f"FAISS could not write index.faiss ({(str(e).strip().splitlines() or ['?'])[-1][:160]})") \
                    from None
            pq.write_table(pa.table({"row": np.concatenate(rows), "name": pa.array(names, pa.string())}),
                           tmp / "keys.parquet")
            meta = {"kind": want, "count": n, "dim": dim, **params, "source": source,
                    "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_s": round(time.time() - t0, 2)}
            write_json_atomic(tmp / "meta.json", meta)
            replace_dir(tmp, dest)
        finally:
            remove(tmp)
    except OSError as e:
        raise SiameseError(f"cannot write the index to {dest}: {e.strerror or e}; the previous one (if any) is "
                           f"kept") from None
    return {**meta, "status": "built"}


@dataclass
class ShardHit:
    """One search result: the input's row and name, and the embedding distance (lower = more alike)."""

    rank: int
    row: int
    name: str
    distance: float


@dataclass
class ShardIndex:
    """A loaded shard index: ``search(embeddings, k)`` → the k nearest inputs of each query embedding."""

    path: Path
    faiss_index: object
    rows: np.ndarray
    names: list
    meta: dict

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    @property
    def run(self) -> str | None:
        """The run whose model embedded the shards: queries must be embedded by the same one."""
        return self.meta.get("source", {}).get("run")

    def search(self, embeddings, k: int = 5) -> list[list[ShardHit]]:
        from .search import check_k
        k = check_k(k)
        q = np.ascontiguousarray(np.asarray(embeddings, np.float32).reshape(-1, self.meta["dim"]))
        d2, ids = search_index(self.faiss_index, q, min(k, len(self)))
        return [[ShardHit(r + 1, int(self.rows[i]), self.names[i], float(np.sqrt(max(0.0, d))))
                 for r, (i, d) in enumerate(zip(ids[qi], d2[qi])) if i >= 0] for qi in range(len(q))]


def open_shard_index(out) -> ShardIndex:
    """The index built by :func:`build_shard_index` in ``<out>/index``."""
    import pyarrow.parquet as pq
    dest = Path(out).expanduser() / "index"
    try:
        meta = json.loads((dest / "meta.json").read_text())
        idx = load_faiss().read_index(str(dest / "index.faiss"))
        keys = pq.read_table(dest / "keys.parquet")
    except (OSError, ValueError, RuntimeError):
        raise SiameseError(f"{dest}: no complete index here; build it with: embed ... --out {out} --index auto") from None
    try:
        keys_now = json.loads((Path(out).expanduser() / "job.json").read_text()).get("keys")
    except (OSError, ValueError):
        keys_now = None
    if keys_now != meta.get("source", {}).get("keys"):
        raise SiameseError(f"{dest}: the index is older than the shards in {out} (they were computed again since); "
                           f"rebuild it with: embed ... --out {out} --index {meta.get('kind', 'auto')}")
    if meta.get("kind") == "ivfpq":
        idx.nprobe = int(meta.get("nprobe") or NPROBE)
    return ShardIndex(dest, idx, keys.column("row").to_numpy(), keys.column("name").to_pylist(), meta)


__all__ = ["build_shard_index", "open_shard_index", "ShardIndex", "ShardHit", "pq_m", "KINDS"]
