"""Search an archive: "which tile of my dataset is this?", answered in milliseconds instead of N judgements.

Why this module exists: :meth:`Scorer.judge` answers "same place?" for one pair, and asking it of a query
against every tile of an archive costs one network pass and one keypoint match per tile. The tower's
embeddings already place tiles of one place close together, so every tile of a dataset is embedded once,
stored with a FAISS index, and a query is one embedding plus one nearest-neighbour search; the slower
geometric check (:meth:`Scorer.judge`: keypoints, RANSAC, the fused verdict) then runs on the top hits only.

On disk, per run and dataset: ``<workspace>/indexes/<run>/<dataset>/`` (two folders: a run or dataset name is one path
component, so no two pairs of names share a folder, as ``<run>__<dataset>`` could for names holding ``_``) with

    embeddings.npy   (N, D) float32, row i = dataset image i (written batch by batch, memory stays bounded)
    index.faiss      the FAISS index over those rows
    meta.json        what it was built from: the run's model.keras mtime/size, the dataset's images.npy
                     mtime/size and image count, the tile size, the metric and the index kind

The index is reused while the model and the dataset are unchanged, and rebuilt (saying why) when either
changed (or the code's :data:`FORMAT`). Building takes a lock on ``<dataset>.lock`` beside the folder (a second
builder waits at most ``wait_s`` seconds, then says who holds it) and writes into a temporary folder that is flushed
and swapped into place when complete (:func:`~siamese_core.core.files.replace_dir`), so two builders never mix files
and a crash leaves the previous index intact.

Index kind: up to :data:`EXACT_MAX` (1,000,000) vectors the search is exact (``IndexFlatIP`` on the
L2-normalised embeddings, i.e. every vector is compared; about 2 ms per query at 100,000 vectors of 128
dims on one core, bench/search.py). Beyond that an ``IndexIVFFlat`` is built: the vectors are clustered into
``nlist ≈ 4·sqrt(N)`` cells (trained on a sample) and a query visits the ``nprobe = 16`` nearest cells,
which is approximate (a true nearest neighbour in an unvisited cell is missed) but keeps a query in the
milliseconds at tens of millions of vectors. A run whose tower is not L2-normalised (the ``seed`` preset)
gets the same two kinds with the Euclidean metric (``IndexFlatL2`` / ``IndexIVFFlat`` L2).

Distances are Euclidean distances between embeddings (for normalised embeddings ``sqrt(2 − 2·cos)``,
0 … 2): lower = more alike, like every score of this package.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.config import workspace_dir
from ..core.errors import SiameseError, count_of
from ..core.files import build_dir, check_name, write_json_atomic
from ..core.locks import file_lock
from ..data.images import tiles_at
from ..data.store import Dataset, open_dataset

EXACT_MAX = 1_000_000  # more vectors than this: IndexIVFFlat instead of the exact flat index
NPROBE = 16
BATCH = 512            # images read and embedded at a time while building (bounded memory)
FORMAT = 2             # bump when the on-disk layout changes: older indexes are rebuilt
LOCK_WAIT_S = 600.0    # a second builder of one index waits this long for the first, then gives up


def load_faiss():
    """The faiss module, or a one-line SiameseError saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise SiameseError("search needs the faiss-cpu package: pip install -r requirements.txt") from None
    return faiss


def indexes_dir(workspace=None) -> Path:
    return workspace_dir(workspace) / "indexes"


def index_path(run_name: str, dataset_name: str, workspace=None) -> Path:
    """``<workspace>/indexes/<run>/<dataset>``: one folder per pair of names, never shared by two pairs."""
    check_name(dataset_name)
    check_name(run_name, "run")
    return indexes_dir(workspace) / run_name / dataset_name


def _stat(p: Path) -> dict:
    try:
        st = Path(p).stat()
    except OSError:
        return {"mtime_ns": 0, "size": 0}
    return {"mtime_ns": st.st_mtime_ns, "size": st.st_size}


def source_stamp(scorer, ds: Dataset) -> dict:
    """What an index depends on: the run's model file, the dataset's images file and count, the tile size."""
    return {"format": FORMAT, "run": scorer.name, "model": _stat(scorer.run.model_path),
            "dataset": ds.name, "images": {**_stat(ds.path / "images.npy"), "count": len(ds)},
            "tile_size": int(scorer.size)}


def _changed(old: dict, new: dict) -> str | None:
    """Why an index built from ``old`` is stale for ``new`` (None when it is not)."""
    if old.get("format") != new["format"]:
        return "it was made by an older version"
    if old.get("run") != new["run"] or old.get("dataset") != new["dataset"]:
        return "it was made for another run or dataset"
    if old.get("model") != new["model"] or old.get("tile_size") != new["tile_size"]:
        return f"the model of run {new['run']!r} changed"
    if old.get("images") != new["images"]:
        return f"dataset {new['dataset']!r} changed"
    return None


def ivf_params(n: int) -> tuple[int, int]:
    """(nlist, nprobe) for an IVF index over ``n`` vectors: nlist ≈ 4·sqrt(n), at least 39 vectors a cell."""
    nlist = max(1, min(int(round(4 * math.sqrt(n))), n // 39))
    return nlist, min(NPROBE, nlist)


@dataclass
class Hit:
    """One search result: dataset row, embedding distance (lower = more alike), and the row's place."""

    rank: int
    row: int
    distance: float
    group: int
    same_group: bool | None = None   # only when the query is a dataset row: the same place (group)?
    tile_id: str = ""
    score: float | None = None        # fused score of the geometric check (lower = more alike)
    same_place: bool | None = None    # the check's verdict
    evidence: str = ""                # the check's keypoint sentence

    def as_dict(self) -> dict:
        d = {"rank": self.rank, "row": self.row, "distance": round(self.distance, 6), "group": self.group,
             "same_group": self.same_group, "tile_id": self.tile_id}
        if self.score is not None:
            d.update(score=round(self.score, 6), same_place=self.same_place, evidence=self.evidence)
        return d


@dataclass
class Index:
    """A loaded index: the FAISS index, its embeddings (memory-mapped), the dataset, the scorer."""

    path: Path
    scorer: object
    dataset: Dataset
    faiss_index: object
    embeddings: np.ndarray
    meta: dict
    status: str = "reused"            # built | rebuilt | reused
    reason: str = ""                  # one sentence: what happened and why
    _groups: np.ndarray | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def groups(self) -> np.ndarray:
        if self._groups is None:
            self._groups = self.dataset.groups
        return self._groups


def _embed(scorer, tiles: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(scorer.embed(tiles_at(tiles, scorer.size)), dtype=np.float32)


def _new_faiss(dim: int, n: int, metric: str, exact_max: int):
    faiss = load_faiss()
    ip = metric == "ip"
    if n <= exact_max:
        return (faiss.IndexFlatIP(dim) if ip else faiss.IndexFlatL2(dim)), "flat", 0, 0
    nlist, nprobe = ivf_params(n)
    quant = faiss.IndexFlatIP(dim) if ip else faiss.IndexFlatL2(dim)
    idx = faiss.IndexIVFFlat(quant, dim, nlist, faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
    idx.nprobe = nprobe
    return idx, "ivf", nlist, nprobe


def _build_into(tmp: Path, scorer, ds: Dataset, stamp: dict, progress, exact_max: int) -> dict:
    """Embed every image of ``ds`` batch by batch into ``tmp/embeddings.npy``, then index them.

    The embeddings are appended with ordinary writes, not through a writable memory map: on a full disk a write
    fails with ENOSPC (one error line), where a page of a memory map would kill the process with SIGBUS."""
    n = len(ds)
    rows = ds.rows()
    t0 = time.time()
    if progress:
        progress(0, n)
    dim = 0
    with open(tmp / "embeddings.npy", "wb") as f:
        for i in range(0, n, BATCH):
            e = _embed(scorer, rows[np.arange(i, min(n, i + BATCH))])
            if not dim:
                dim = int(e.shape[1])
                np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                         "fortran_order": False, "shape": (n, dim)})
            f.write(np.ascontiguousarray(e, dtype=np.float32).tobytes())
            if progress:
                progress(min(n, i + BATCH), n)
    emb = np.load(tmp / "embeddings.npy", mmap_mode="r")
    # a normalised tower (default preset): inner product = cosine, ranked like the Euclidean distance
    probe = np.linalg.norm(emb[: min(n, 4096)], axis=1)
    metric = "ip" if np.allclose(probe, 1.0, atol=1e-3) else "l2"
    idx, kind, nlist, nprobe = _new_faiss(dim, n, metric, exact_max)
    if kind == "ivf":
        sample = np.sort(np.random.default_rng(0).choice(n, size=min(n, max(256 * nlist, 100_000)), replace=False))
        idx.train(np.ascontiguousarray(emb[sample]))
    for i in range(0, n, 65536):
        idx.add(np.ascontiguousarray(emb[i:i + 65536]))
    try:
        load_faiss().write_index(idx, str(tmp / "index.faiss"))
    except RuntimeError as e:  # FAISS reports a failed write (a full disk) this way
        raise OSError(f"FAISS could not write index.faiss ({(str(e).strip().splitlines() or ['?'])[-1][:160]})") \
            from None
    meta = {**stamp, "count": n, "dim": dim, "metric": metric, "kind": kind, "nlist": nlist, "nprobe": nprobe,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_s": round(time.time() - t0, 2)}
    write_json_atomic(tmp / "meta.json", meta)
    del emb
    return meta


def _read_meta(path: Path) -> dict | None:
    try:
        return json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _load(path: Path, meta: dict):
    """(faiss index, embeddings memmap) of a complete index folder; None when a file is missing or damaged."""
    try:
        emb = np.load(path / "embeddings.npy", mmap_mode="r")
        idx = load_faiss().read_index(str(path / "index.faiss"))
    except (OSError, ValueError, RuntimeError):
        return None
    if emb.shape != (meta.get("count"), meta.get("dim")) or idx.ntotal != meta.get("count"):
        return None
    if meta.get("kind") == "ivf":
        idx.nprobe = int(meta.get("nprobe") or NPROBE)
    return idx, emb


def build_index(scorer, dataset_name: str, workspace=None, progress=None, exact_max: int = EXACT_MAX,
                force: bool = False, wait_s: float = LOCK_WAIT_S) -> Index:
    """The search index of ``scorer``'s run over dataset ``dataset_name``: loaded from the workspace when it
    was built from the same model and dataset files, else (re)built, embedding the dataset in batches.

    ``progress(done_images, total)`` is called while embedding. The returned Index says in ``status``
    (built / rebuilt / reused) and ``reason`` what happened. Raises SiameseError for an unknown or empty
    dataset, and when another process builds the same index for longer than ``wait_s`` seconds (naming it)."""
    ds = open_dataset(dataset_name, workspace)
    if len(ds) == 0:
        raise SiameseError(f"dataset {dataset_name!r} has no images; nothing to index")
    path = index_path(scorer.name, ds.name, workspace)
    stamp = source_stamp(scorer, ds)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SiameseError(f"cannot write the search index to {path.parent}: {e.strerror or e}") from None
    with file_lock(path.parent / f"{path.name}.lock", f"the search index of run {scorer.name!r} on dataset "
                   f"{ds.name!r}", wait_s, fix="another process is building it: wait for it, then run this again"):
        old = _read_meta(path)
        why = "a rebuild was asked for" if force else ("no index yet" if old is None else _changed(old, stamp))
        if why is None and old.get("kind") != ("flat" if len(ds) <= exact_max else "ivf"):
            why = f"an {'exact' if len(ds) <= exact_max else 'IVF'} index is wanted for {len(ds)} images"
        if why is None and (got := _load(path, old)) is not None:
            return Index(path, scorer, ds, got[0], got[1], old, "reused",
                         f"reused the index of run {scorer.name!r} on dataset {ds.name!r} "
                         f"({old['count']} images; model and dataset unchanged since {old.get('built')})")
        if why is None:
            why = "its files were incomplete"
        meta = build_dir(path, lambda tmp: _build_into(tmp, scorer, ds, stamp, progress, exact_max),
                         "search index")
        got = _load(path, meta)
        if got is None:
            raise SiameseError(f"the search index just written to {path} cannot be read back; is the disk full?")
        status = "built" if old is None else "rebuilt"
        what = (f"{meta['kind']} index" + (f", nlist {meta['nlist']}, nprobe {meta['nprobe']}" if meta["kind"] == "ivf"
                                           else ", exact"))
        reason = (f"{status} the index of run {scorer.name!r} on dataset {ds.name!r} ({meta['count']} images, "
                  f"{what}, {meta['build_s']} s)" + ("" if old is None else f" because {why}"))
        return Index(path, scorer, ds, got[0], got[1], meta, status, reason)


def check_k(k) -> int:
    """``k`` (the number of nearest tiles to return) as a whole number of at least 1, or a one-line error."""
    return count_of(k, "k", "results", "the number of nearest tiles to return")


FEW_QUERIES = 64  # up to this many queries at once: one thread (see search_index)


def search_index(faiss_index, q: np.ndarray, k: int):
    """FAISS search; a few queries run on one thread. FAISS splits even a single query over its OpenMP
    threads, and the hand-off costs more than it saves: 25 ms instead of 2 ms per query over 100,000
    vectors on a 2-core machine (bench/search.py). ``omp_set_num_threads`` only changes the calling thread."""
    if len(q) > FEW_QUERIES:
        return faiss_index.search(q, k)
    faiss = load_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return faiss_index.search(q, k)
    finally:
        faiss.omp_set_num_threads(before)


def search(index: Index, query_tiles, k: int = 5, query_rows=None, check: bool = False,
           prepared=None, workers: int | None = None) -> list[list[Hit]]:
    """The ``k`` nearest dataset images of each query tile, nearest first: one list of Hits per query.

    ``query_tiles``: uint8 RGB (Q, S, S, 3) or one (S, S, 3) tile, any size (resized to the model's).
    ``query_rows``: the dataset rows the queries are, if they are (each hit then says whether it shows
    the same place, i.e. the same group). ``check``: also judge each query against its hits with
    :meth:`Scorer.judge` (keypoints and the fused verdict; tiles read from the dataset); ``prepared``
    optionally gives the queries already prepared from their original files (better keypoints than the
    model-size tile). ``k`` larger than the dataset returns every image."""
    k = check_k(k)
    tiles = tiles_at(query_tiles, index.scorer.size)
    q = _embed(index.scorer, tiles)
    if index.meta["metric"] == "ip":  # the tower's output is normalised; keep the query exactly on the sphere
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    kk = min(k, len(index))
    sims, ids = search_index(index.faiss_index, q, kk)
    if index.meta["metric"] == "ip":
        dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims))
    else:
        dist = np.sqrt(np.maximum(0.0, sims))
    groups = index.groups
    try:
        tile_ids = index.dataset.manifest["tile_id"].astype(str).to_numpy()
    except (OSError, KeyError, ValueError, ImportError):
        tile_ids = None
    qrows = None if query_rows is None else np.asarray(query_rows, np.int64).reshape(-1)
    out = []
    for qi in range(len(q)):
        hits = []
        for r, (i, d) in enumerate(zip(ids[qi], dist[qi])):
            if i < 0:  # an IVF search that found fewer than k
                continue
            same = None if qrows is None else bool(groups[i] == groups[qrows[qi]])
            hits.append(Hit(r + 1, int(i), float(d), int(groups[i]), same,
                            "" if tile_ids is None else str(tile_ids[i])))
        out.append(hits)
    if check:
        _check(index, tiles, out, prepared, workers)
    return out


def _check(index: Index, tiles: np.ndarray, results: list[list[Hit]], prepared, workers) -> None:
    """Fill score / same_place / evidence of every hit from the run's fused judgement."""
    scorer = index.scorer
    rows = sorted({h.row for hits in results for h in hits})
    if not rows:
        return
    imgs = index.dataset.rows()[np.array(rows)]
    prep = {r: scorer.prepare(img) for r, img in zip(rows, imgs)}
    pairs, where = [], []
    for qi, hits in enumerate(results):
        pq = prepared[qi] if prepared is not None else scorer.prepare(tiles[qi])
        for h in hits:
            pairs.append((pq, prep[h.row]))
            where.append(h)
    for h, j in zip(where, scorer.judge(pairs, workers=workers)):
        h.score, h.same_place, h.evidence = float(j.score), bool(j.same_place), j.geo.sentence()


def dataset_row(index: Index, row) -> np.ndarray:
    """Image ``row`` of the indexed dataset as (1, S, S, 3) uint8; a one-line SiameseError when out of range."""
    try:
        row = int(row)
    except (TypeError, ValueError):
        raise SiameseError(f"row must be a whole number, got {row!r}") from None
    n = len(index.dataset)
    if not 0 <= row < n:
        raise SiameseError(f"row {row} is out of range: dataset {index.dataset.name!r} has rows 0..{n - 1}")
    return index.dataset.rows()[[row]]
