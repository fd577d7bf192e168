"""Tiles from image files on disk: any folder of images (``folder``) or pix2pix A|B pairs (``pix2pix``).

Files are decoded in a small thread pool (decoding releases the GIL), in a stable sorted order, so
the same folder always gives the same dataset. Unreadable files are reported and skipped.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...core.errors import DatasetError, ImageError
from ..images import IMAGE_EXTENSIONS, decode_image, to_tile


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, symlinks not followed out of the folder)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: folder does not exist")
    if root.is_file():
        return [root] if root.suffix.lower() in IMAGE_EXTENSIONS else []
    out = []  # plain strings until the end: a Path per file costs more than the walk
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in filenames
                   if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    return [Path(p) for p in sorted(out, key=lambda p: p.split(os.sep))]  # the order Path sorting gives


def _decode(path: Path, size: int, half: bool, bands=None):
    try:
        img = decode_image(path, name=str(path), max_side=None if half else size, bands=bands)
        if half:
            w = img.shape[1]
            if w < 2 * img.shape[0] * 0.9:
                raise ImageError(f"{path}: not a side-by-side A|B image ({img.shape[1]}x{img.shape[0]} px); "
                                 f"use --source folder for single tiles")
            img = img[:, : w // 2]
        return to_tile(img, size), None
    except ImageError as e:
        return None, str(e)


def iter_files(root: str | os.PathLike, size: int, limit: int = 0, half: bool = False, on_skip=None, workers: int = 0,
               bands=None):
    """Yield (tile_id, uint8 tile, provenance) for each readable image under ``root``.

    ``half`` takes the left (satellite) half of pix2pix A|B images. ``bands`` (e.g. (3, 2, 1)) chooses the
    bands of rasters (GeoTIFFs...). ``on_skip(path, reason)`` is called for each file that cannot be read.
    """
    root = Path(root).expanduser().resolve()
    paths = list_images(root)
    if not paths:
        raise DatasetError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    base = root if root.is_dir() else root.parent
    workers = workers or min(4, (os.cpu_count() or 1) + 1)
    made = 0
    prefix = len(str(base).rstrip("/")) + 1
    with ThreadPoolExecutor(workers) as pool:
        chunk = 64
        for start in range(0, len(paths), chunk):
            batch = paths[start:start + chunk]
            for path, (tile, err) in zip(batch, pool.map(lambda p: _decode(p, size, half, bands), batch)):
                rel = str(path)[prefix:]  # relative to base (paths come from os.walk under it)
                if tile is None:
                    if on_skip:
                        on_skip(str(path), err)
                    continue
                yield rel, tile, f"{'pix2pix' if half else 'folder'}:{rel}"
                made += 1
                if limit and made >= limit:
                    return


def count_files(root, limit: int = 0) -> int:
    n = len(list_images(root))
    return min(n, limit) if limit else n
