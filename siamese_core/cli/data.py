"""Commands that make data: ``prepare`` (a dataset from a source) and ``make-pairs`` (labelled pairs from your
own imagery).
"""

from __future__ import annotations

import sys

from ..core.config import DISTORTIONS, PAIR_KINDS, SOURCES, DataConfig
from .common import progress


def cmd_prepare(args) -> int:
    from ..runs.delete import prepare_dataset
    cfg = DataConfig(source=args.source, path=args.path or "", limit=args.limit, size=args.size,
                     variants=args.variants, distortions=tuple(args.distort or ()), seed=args.seed,
                     column=args.column or "", repo_id=args.repo_id, window=args.window, stride=args.stride,
                     bands=args.bands or "")
    skipped = []
    bar = progress(f"prepare {args.name}", "tile")
    try:
        ds = prepare_dataset(cfg, args.name, args.workspace, overwrite=args.overwrite, progress=bar,
                             on_skip=lambda f, why: skipped.append(why))
    finally:
        bar.close()  # skipped files are counted in the total: the bar may stop short of it
    for why in skipped[:20]:
        print(f"skipped: {why}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"... and {len(skipped) - 20} more (see {ds.path / 'skipped.csv'})", file=sys.stderr)
    info = ds.info
    what = "places/windows" if cfg.source == "ab" else "windows" if cfg.source == "scene" else "places" if cfg.source == "pairs-csv" else "tiles"
    print(f"dataset {ds.name}: {info['images']} images from {info['groups']} {what} "
          f"({cfg.variants} variant(s) each, {cfg.size} px), {len(skipped)} skipped -> {ds.path}")
    return 0


def cmd_make_pairs(args) -> int:
    from ..data.pairsets import make_pairset
    path = make_pairset(args.out, args.ab, args.tiles, per_place=args.per_place, n_tiles=args.tiles_n,
                        split=args.split, test_fraction=args.test_fraction, seed=args.seed,
                        kinds=args.kinds.split(",") if args.kinds else None)
    import csv
    from collections import Counter
    with open(path, newline="") as f:
        kinds = Counter(r["kind"] for r in csv.DictReader(f))
    print(f"{sum(kinds.values())} labelled pairs ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}) -> {path}")
    return 0


def add_prepare(sub) -> None:
    s = sub.add_parser("prepare", help="import tiles and their rotated variants into a dataset")
    s.add_argument("--source", choices=SOURCES, default="synthetic")
    s.add_argument("--path", help="folder, file or parquet path (ab: the folder holding A/ and B/; "
                                  "pairs-csv: the CSV; hf-hub: cache directory; scene: a GeoTIFF/COG)")
    s.add_argument("--name", required=True, help="dataset name (letters, digits, . _ -)")
    s.add_argument("--limit", type=int, default=0, help="at most this many source tiles (0 = all; synthetic: 600)")
    s.add_argument("--size", type=int, default=128, help="tile side in pixels (default 128)")
    s.add_argument("--variants", type=int, default=2, help="random-rotation variants per tile (default 2)")
    s.add_argument("--distort", nargs="*", choices=DISTORTIONS, help="extra distortions on every variant")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--column", help="parquet image column (default: imageA, else detected)")
    s.add_argument("--repo-id", default="huggan/maps", help="hub dataset for --source hf-hub")
    s.add_argument("--window", type=int, default=0,
                   help="ab, scene: cut each place (or the scene) into aligned square windows of this many source px "
                        "(0 = whole image); scene windows keep their bounds and CRS in the manifest")
    s.add_argument("--stride", type=int, default=0, help="ab, scene: step between windows in source px (0 = --window)")
    s.add_argument("--bands", help="scene, folder: raster bands as red,green,blue (e.g. 3,2,1) or a preset: rgb, "
                                   "sentinel2 (4,3,2); default 1,2,3 (band 1 as grey for 1-band files)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name (in one step, "
                                                            "once the new one is complete; refused while a training "
                                                            "job uses it)")
    s.set_defaults(func=cmd_prepare)


def add_make_pairs(sub) -> None:
    s = sub.add_parser("make-pairs", help="labelled pairs of every kind from your own imagery, for calibrate/evaluate")
    s.add_argument("--ab", help="folder with A/ and B/ (co-registered dates, matching file names)")
    s.add_argument("--tiles", help="folder of single tiles (rotated, distorted and simulated second dates)")
    s.add_argument("--out", required=True, help="output folder (tiles/ and pairs.csv)")
    s.add_argument("--split", choices=("all", "calibration", "test"), default="all",
                   help="keep only places/tiles hashed into this split (calibration and test never share one)")
    s.add_argument("--test-fraction", type=float, default=0.25)
    s.add_argument("--per-place", type=int, default=6, help="windows per A/B place (each gives 2 pairs of every kind)")
    s.add_argument("--tiles-n", type=int, default=150, help="tiles drawn from --tiles (each gives 2 pairs of every kind)")
    s.add_argument("--kinds", help=f"comma-separated kinds to write (default all: {','.join(PAIR_KINDS)})")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_make_pairs)
