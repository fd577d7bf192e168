"""The ``locate`` command: where in a large scene (a GeoTIFF, PNG or JPEG) do these tiles lie?

Why this module exists: a face over :mod:`siamese_core.scale.locate`, like the other command groups. It builds (or
reuses) the scene's window index with a progress bar on stderr, locates each tile in the order given, and prints one
line a tile, or one JSON list with ``--json``; ``--geojson OUT`` writes the found polygons. ``--bands`` chooses the
raster bands the scene and the tiles are read with, as ``score --bands`` does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.errors import SiameseError
from ..core.files import write_text_atomic
from .common import bands_help, progress, scorer_for


def cmd_locate(args) -> int:
    from ..data.rasters import parse_bands
    from ..scale.locate import geojson, locate, read_tile
    bands = parse_bands(args.bands)  # a bad --bands is one line before any file is read or model loads
    scene = Path(args.scene)
    if not scene.is_file():
        raise SiameseError(f"scene {args.scene}: no such file; give --scene the path of a GeoTIFF, PNG or JPEG")
    tiles = []
    for t in args.tiles:  # every tile is read before the index is built: a bad one fails in seconds, not minutes
        if not Path(t).is_file():
            raise SiameseError(f"tile {t}: no such file; give the path of a GeoTIFF, PNG or JPEG tile")
        tiles.append((t, read_tile(t, bands=bands)))  # an unreadable one: ImageError, one line naming it and the fix
    scorer = scorer_for(args)
    index, locs = locate(scene, tiles, scorer, args.workspace, progress=progress(f"index {scene.name}", "step"),
                         bands=bands)
    if index.status != "reused":
        print(index.reason, file=sys.stderr)
    crs = index.info.transform is not None
    if args.geojson:
        write_text_atomic(Path(args.geojson), json.dumps(geojson(locs, index)))
    if args.json:
        print(json.dumps([loc.as_dict(crs) for loc in locs]))
        return 0
    for loc in locs:
        if loc.found:
            c = loc.centre
            where = f"centre ({c[0]:.1f}, {c[1]:.1f}) px, corners " + \
                ", ".join(f"({x:.0f}, {y:.0f})" for x, y in loc.polygon)
            if loc.polygon_crs:
                x, y = (sum(p[i] for p in loc.polygon_crs) / len(loc.polygon_crs) for i in (0, 1))
                where += f"; centre ({x:.2f}, {y:.2f}) in {index.info.crs or 'the scene coordinates'}"
            print(f"{loc.tile}: found, score {loc.score:.4f}, {where}")
        else:
            s = "" if loc.score is None else f" (best score {loc.score:.4f})"
            print(f"{loc.tile}: not found{s}")
    if args.geojson:
        print(f"wrote {sum(loc.found for loc in locs)} polygon(s) -> {args.geojson}", file=sys.stderr)
    return 0


def add_locate(sub) -> None:
    s = sub.add_parser("locate", help="where in a large scene (GeoTIFF, PNG, JPEG) does each tile lie? (index of "
                                      "the scene's windows and keypoints, cached; keypoint check of the best places)")
    s.add_argument("--scene", required=True, help="the scene: a GeoTIFF (its CRS is used), PNG or JPEG")
    s.add_argument("tiles", nargs="+", metavar="TILE", help="tile files to locate (any angle, date, resolution)")
    s.add_argument("--run", help="run id (default: the model bundled with the package)")
    s.add_argument("--bands", help=bands_help("for the scene and every raster tile (plain images ignore it)"))
    s.add_argument("--json", action="store_true", help="print one JSON list, one object per tile, in order")
    s.add_argument("--geojson", metavar="OUT", help="write the found polygons as GeoJSON (scene CRS if any)")
    s.set_defaults(func=cmd_locate)
