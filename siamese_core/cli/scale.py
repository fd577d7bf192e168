"""Commands for archives: ``embed`` (Ray), ``score --engine ray``, ``index`` and ``search`` (embedding search).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.errors import SiameseError
from .common import progress, ray_options, scorer_for


def _failures(res: dict, what: str) -> None:
    for name, why in res["failures"]:
        print(f"{what} {name}: {why}" if what == "line" else f"skipped: {why}", file=sys.stderr)
    if res["errors"] > len(res["failures"]):
        print(f"... and {res['errors'] - len(res['failures'])} more (the error column of the shards in {res['out']})",
              file=sys.stderr)


def _resumed(res: dict) -> str:
    return (f"{res['shards']} shard(s): {res['computed']} computed, {res['kept']} kept from an earlier run"
            if res["kept"] else f"{res['shards']} shard(s)")


def cmd_score_ray(args) -> int:
    """score --pairs IN.csv --out FOLDER --engine ray: the same judgements, as parquet shards, on Ray."""
    from ..scale.jobs import score_pairs
    if not (args.pairs and args.out):
        raise SiameseError("--engine ray scores a CSV: give --pairs IN.csv --out FOLDER (a folder of parquet shards)")
    if args.bands:
        raise SiameseError(f"--bands {args.bands} applies to --engine local; on Ray each raster is read with its default "
                           f"bands (those it marks red, green and blue, else 4,3,2 or 1,2,3): drop --bands, or score "
                           f"with --engine local")
    if not args.run:
        print("using the bundled model 'pretrained' (no --run given)", file=sys.stderr)
    bar = progress("score", "pair")
    try:
        res = score_pairs(args.pairs, args.out, args.run, args.workspace, args.threshold, args.shard_size,
                          args.workers, args.gpus_per_worker, args.ray_address, progress=bar)
    finally:
        bar.close()
    _failures(res, "line")
    print(f"scored {res['rows'] - res['errors']} pair(s), {res['errors']} failed, threshold {res['threshold']:.4f} "
          f"({_resumed(res)}) -> {res['out']}")
    return 0 if res["rows"] > res["errors"] else 2


def cmd_embed(args) -> int:
    from ..scale.jobs import embed
    if not args.run:
        print("using the bundled model 'pretrained' (no --run given)", file=sys.stderr)
    bar = progress("embed", "tile")
    try:
        res = embed(args.out, images=args.images, parquet=args.parquet, dataset=args.dataset,
                    column=args.column or "", run=args.run, workspace=args.workspace, shard_size=args.shard_size,
                    workers=args.workers, gpus_per_worker=args.gpus_per_worker, address=args.ray_address,
                    progress=bar)
    finally:
        bar.close()
    _failures(res, "skipped")
    print(f"embedded {res['rows'] - res['errors']} tile(s), {res['errors']} unreadable ({_resumed(res)}) -> {res['out']}")
    if res["rows"] == res["errors"]:
        return 2
    if args.index != "none":
        from ..scale.shard_index import build_shard_index
        meta = build_shard_index(args.out, args.index, nlist=args.nlist, m=args.pq_m,
                                 progress=progress("index", "shard"))
        what = (f"IVF-PQ {meta['factory']}, nprobe {meta['nprobe']}" if meta["kind"] == "ivfpq" else "exact")
        print(f"{meta['status']} the {meta['kind']} index of {meta['count']} embeddings ({what}) -> "
              f"{Path(args.out) / 'index'}")
    return 0


def cmd_index(args) -> int:
    from ..data.store import open_dataset
    from ..scale.search import build_index
    open_dataset(args.dataset, args.workspace)  # an unknown dataset fails before the model loads
    idx = build_index(scorer_for(args), args.dataset, args.workspace, progress=progress(f"index {args.dataset}", "tile"))
    print(f"{idx.reason} -> {idx.path}")
    return 0


def _search_shards(args) -> int:
    """``search --embeddings EMB --image X``: the nearest inputs of an ``embed`` job, from its shard index."""
    from ..scale.search import check_k
    from ..scale.shard_index import open_shard_index
    k = check_k(args.k)
    if args.image is None or args.check:
        raise SiameseError("search --embeddings EMB takes a query --image FILE (no --row, no --check: the inputs "
                           "of an embed job are not a dataset); use --dataset NAME for those")
    idx = open_shard_index(args.embeddings)
    made_by = idx.run
    if args.run and made_by and args.run != made_by:
        raise SiameseError(f"{args.embeddings} was embedded by run {made_by!r}; its distances mean nothing for run "
                           f"{args.run!r}: leave out --run, or embed again with --run {args.run}")
    from ..judge.inference import Scorer
    scorer = Scorer.from_run(args.run or made_by, args.workspace)
    hits = idx.search(scorer.embed(scorer.prepare(args.image).tile[None]), k)[0]
    if args.json:
        print(json.dumps({"run": scorer.name, "embeddings": str(args.embeddings), "query": {"image": args.image},
                          "k": k, "index": {"kind": idx.meta.get("kind"), "vectors": len(idx)},
                          "hits": [{"rank": h.rank, "row": h.row, "name": h.name, "distance": h.distance}
                                   for h in hits]}))
        return 0
    print(f"{len(hits)} nearest of {len(idx)} embedded inputs in {args.embeddings} to {args.image} "
          f"(run {scorer.name}; embedding distance, lower = more alike):")
    for h in hits:
        print(f"  {h.rank:>3}. distance {h.distance:.4f}  {h.name}")
    return 0


def cmd_search(args) -> int:
    if args.embeddings:
        return _search_shards(args)
    from ..data.store import open_dataset
    from ..scale.search import build_index, check_k, dataset_row, search
    k = check_k(args.k)
    open_dataset(args.dataset, args.workspace)
    scorer = scorer_for(args)
    idx = build_index(scorer, args.dataset, args.workspace, progress=progress(f"index {args.dataset}", "tile"))
    if idx.status != "reused":
        print(idx.reason, file=sys.stderr)
    if args.image is not None:
        prep = scorer.prepare(args.image)
        hits = search(idx, prep.tile, k, check=args.check, prepared=[prep])[0]
        query = {"image": args.image}
    else:
        hits = search(idx, dataset_row(idx, args.row), k, query_rows=[args.row], check=args.check)[0]
        query = {"row": args.row, "group": int(idx.groups[args.row])}
    if args.json:
        print(json.dumps({"run": scorer.name, "dataset": args.dataset, "query": query, "k": k,
                          "index": {"kind": idx.kind, "vectors": len(idx), "status": idx.status},
                          "threshold": scorer.threshold if args.check else None,
                          "hits": [h.as_dict() for h in hits]}))
        return 0
    what = args.image if args.image is not None else f"row {args.row} (group {query['group']})"
    print(f"{len(hits)} nearest of {len(idx)} images in dataset {args.dataset} to {what} "
          f"(run {scorer.name}; embedding distance, lower = more alike):")
    for h in hits:
        line = f"  {h.rank:>3}. row {h.row:<8} distance {h.distance:.4f}  group {h.group}"
        if h.same_group is not None:
            line += " (same place)" if h.same_group else ""
        if h.tile_id:
            line += f"  {h.tile_id}"
        if h.score is not None:
            line += (f"\n       check: score {h.score:.4f} -> {'same place' if h.same_place else 'different places'}; "
                     f"{h.evidence}")
        print(line)
    return 0


def add_embed(sub) -> None:
    s = sub.add_parser("embed", help="embed every tile of a folder, parquet or dataset into parquet shards, on Ray "
                                     "(resumable); optionally index them for search")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--images", help="folder of image files (recursive)")
    q.add_argument("--parquet", help="parquet file, or folder of them: a column of image bytes (binary, or a "
                                     "struct with 'bytes') or of image paths (strings, relative to the file)")
    q.add_argument("--dataset", help="workspace dataset name")
    s.add_argument("--column", help="parquet column (default: the image column, else path/image_path/file/filename)")
    s.add_argument("--out", required=True, help="output folder of parquet shards (run again to resume)")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.add_argument("--index", choices=("none", "auto", "flat", "ivfpq"), default="none",
                   help="then build a FAISS index in OUT/index: flat (exact), ivfpq (compressed, approximate; for "
                        "tens of millions), auto (flat up to 1,000,000)")
    s.add_argument("--nlist", type=int, default=0, help="ivfpq: cells (default ≈ 4·sqrt(N))")
    s.add_argument("--pq-m", type=int, default=0, help="ivfpq: bytes per vector (default embedding size / 4)")
    ray_options(s)
    s.set_defaults(func=cmd_embed)


def add_index(sub) -> None:
    s = sub.add_parser("index", help="embed every image of a dataset once for search (reused until model or data change)")
    s.add_argument("--dataset", required=True, help="dataset name")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.set_defaults(func=cmd_index)


def add_search(sub) -> None:
    s = sub.add_parser("search", help="which images of a dataset (or of an embed job) are nearest to this tile? "
                                      "(embedding search)")
    w = s.add_mutually_exclusive_group(required=True)
    w.add_argument("--dataset", help="dataset name (indexed on first use)")
    w.add_argument("--embeddings", metavar="EMB", help="the --out folder of an `embed ... --index` job (its index)")
    q = s.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", help="query image file")
    q.add_argument("--row", type=int, help="query with image ROW of the dataset itself")
    s.add_argument("--k", type=int, default=5, help="number of nearest images (default 5)")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.add_argument("--check", action="store_true", help="also judge each hit (keypoints and the fused verdict)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_search)
