"""Archive search: query latency over 100,000 vectors, and recall@1 of rotated aerial tiles.

    python bench/search.py [--run RUN_ID] [--n 100000] [--queries 200] [--sample DIR] [--rerank 5]

* Latency: ``--n`` random unit vectors of the embedding dimension (128) in the exact index that
  ``siamese_core.scale.search`` builds up to 1,000,000 vectors (``IndexFlatIP``), plus the aerial tiles when
  the sample is there; one query at a time, k=5, median milliseconds over ``--queries`` queries: on one
  thread, as ``siamese_core.scale.search`` runs a single query, and with all of FAISS's OpenMP threads. The IVF
  index used beyond 1,000,000 vectors is timed too (nlist ≈ 4·sqrt(N), nprobe 16).
* Recall: every tile of the aerial sample (``../shared/data/aerial-sample`` relative to the repository,
  or ``--sample``; skipped when absent) is embedded with the run's model (default: the bundled one) and
  indexed among the random vectors; each tile, rotated (``siamese_core.data.augment.rotate``) by a right
  angle (90/180/270°) and by a random angle (black corners), is the query. recall@1 = the tile itself
  is the nearest; recall@5 = it is among the 5 nearest. With ``--rerank K`` the top K hits are also
  re-ranked by the run's fused verdict (``Scorer.judge``: keypoints + learned distance) and recall@1
  after that is reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from machine import cpu_model  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared" / "data" / "aerial-sample"


def _unit(rng, n, d) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _latency(index, queries: np.ndarray, k: int = 5, package: bool = True) -> float:
    """Median ms of one query; ``package``: through siamese_core.scale.search (a single query on one thread)."""
    from siamese_core.scale.search import search_index
    run = (lambda q: search_index(index, q, k)) if package else (lambda q: index.search(q, k))
    run(queries[:5])  # warm-up
    ts = []
    for q in queries:
        t0 = time.perf_counter()
        run(q[None])
        ts.append(1000 * (time.perf_counter() - t0))
    return round(statistics.median(ts), 3)


def _tiles(sample: Path, size: int, limit: int):
    from siamese_core.data.images import IMAGE_EXTENSIONS, decode_image
    files = sorted(p for p in sample.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[: limit or None]
    return files, [decode_image(p, name=p.name) for p in files]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run id (default: the bundled model)")
    p.add_argument("--workspace")
    p.add_argument("--n", type=int, default=100_000, help="random unit vectors in the index")
    p.add_argument("--dim", type=int, default=128, help="their dimension without a model (default 128)")
    p.add_argument("--queries", type=int, default=200, help="latency queries")
    p.add_argument("--sample", default=str(SAMPLE), help="folder of aerial tiles for the recall measure")
    p.add_argument("--limit", type=int, default=0, help="at most this many sample tiles (0 = all)")
    p.add_argument("--rerank", type=int, default=5, help="re-rank the top K by the fused verdict (0 = off)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import faiss

    from siamese_core.scale.search import NPROBE, ivf_params

    rng = np.random.default_rng(0)
    out = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "faiss": faiss.__version__,
           "faiss_threads": faiss.omp_get_max_threads(), "vectors": args.n}
    sample = Path(args.sample)
    have_sample = sample.is_dir() and any(sample.iterdir())
    scorer = None
    if have_sample:
        from siamese_core.judge.inference import Scorer
        scorer = Scorer.from_run(args.run, args.workspace)
        out["run"] = scorer.name
    dim = args.dim
    aerial = None
    if scorer is not None:
        from siamese_core.data.augment import rotate
        from siamese_core.data.images import to_tile
        files, imgs = _tiles(sample, scorer.size, args.limit)
        t0 = time.perf_counter()
        aerial = scorer.embed(np.stack([to_tile(im, scorer.size) for im in imgs]))
        out["embed_tiles_per_s"] = round(len(imgs) / (time.perf_counter() - t0), 1)
        dim = aerial.shape[1]
        out["sample_tiles"] = len(imgs)
    base = _unit(rng, args.n, dim)
    data = base if aerial is None else np.concatenate([base, aerial.astype(np.float32)])
    out["indexed"] = len(data)

    flat = faiss.IndexFlatIP(dim)
    flat.add(data)
    queries = _unit(rng, args.queries, dim)
    out["exact_query_ms_median"] = _latency(flat, queries)
    out["exact_query_ms_median_all_threads"] = _latency(flat, queries, package=False)
    nlist, _ = ivf_params(len(data))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    ivf.train(data)
    ivf.add(data)
    ivf.nprobe = min(NPROBE, nlist)
    out["ivf"] = {"nlist": nlist, "nprobe": ivf.nprobe, "build_s": round(time.perf_counter() - t0, 2),
                  "query_ms_median": _latency(ivf, queries)}

    if aerial is None:
        out["recall"] = f"skipped: no aerial sample at {sample}"
        print(json.dumps(out, indent=2))
        return
    offset = args.n
    recall = {}
    for name, angles in (("right_angle", lambda i: float(90 * (1 + i % 3))),
                         ("any_angle", lambda i: float(np.random.default_rng([1, i]).uniform(10, 350)))):
        q_tiles = np.stack([to_tile(rotate(im, angles(i)), scorer.size) for i, im in enumerate(imgs)])
        q = scorer.embed(q_tiles).astype(np.float32)
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        want = offset + np.arange(len(imgs))
        _, ids = flat.search(q, 5)
        _, ids_ivf = ivf.search(q, 5)
        r = {"queries": len(imgs), "recall@1": round(float(np.mean(ids[:, 0] == want)), 4),
             "recall@5": round(float(np.mean((ids == want[:, None]).any(1))), 4),
             "ivf_recall@1": round(float(np.mean(ids_ivf[:, 0] == want)), 4)}
        if args.rerank:
            k = args.rerank
            t0 = time.perf_counter()
            prep = {}

            def prepared(i):
                if i not in prep:
                    prep[i] = scorer.prepare(imgs[i - offset]) if i >= offset else None
                return prep[i]
            top1 = []
            for qi in range(len(imgs)):
                pq = scorer.prepare(rotate(imgs[qi], angles(qi)))
                cand = [int(i) for i in ids[qi, :k] if i >= offset]  # random vectors have no image to judge
                js = scorer.judge([(pq, prepared(i)) for i in cand]) if cand else []
                top1.append(cand[int(np.argmin([j.score for j in js]))] if js else -1)
            r[f"recall@1_reranked_top{k}"] = round(float(np.mean(np.array(top1) == want)), 4)
            r["rerank_ms_per_query"] = round(1000 * (time.perf_counter() - t0) / len(imgs), 1)
        recall[name] = r
    out["recall"] = recall
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
