"""Tiles from one large georeferenced scene (``scene``): a GeoTIFF or COG cut into square windows.

A scene is too large to hold in memory, so it is read window by window (each at the overview level that fits the
tile size: :func:`~siamese_core.data.rasters.read_raster`), with one stretch for all windows, measured once on an
overview (:func:`~siamese_core.data.rasters.stretch_limits`): the same ground reads the same grey in every tile.
Each window keeps where it lies: its pixel offset, its geographic bounds (``left``, ``bottom``, ``right``, ``top``,
in the scene's CRS) and the CRS, as manifest columns. A window with no valid pixel (all nodata) is skipped with
its reason.
"""

from __future__ import annotations

from pathlib import Path

from ...core.errors import DatasetError, ImageError
from ..images import to_tile
from ..rasters import parse_bands, raster_info, read_raster, stretch_limits
from .views import View


def scene_windows(width: int, height: int, window: int, stride: int = 0) -> list[tuple[int, int]]:
    """(col, row) of each window's top-left corner, left to right then top to bottom; ``window`` 0 = the whole
    scene as one window."""
    if not window:
        return [(0, 0)]
    step = stride or window
    return [(x, y) for y in range(0, height - window + 1, step) for x in range(0, width - window + 1, step)]


def _open_scene(path):
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"{path}: scene file does not exist; give --path SCENE.tif (a GeoTIFF, COG or any raster "
                           f"GDAL reads)")
    try:
        return p, raster_info(p)
    except ImageError as e:
        raise DatasetError(str(e)) from None


def count_scene(path, window: int, stride: int = 0, limit: int = 0) -> int:
    _, info = _open_scene(path)
    n = len(scene_windows(info.width, info.height, window, stride))
    return min(n, limit) if limit else n


def iter_scene(path, size: int, window: int = 0, stride: int = 0, limit: int = 0, bands: str = "", on_skip=None):
    """Yield one group (a list of one :class:`View`) per window of the scene at ``path``."""
    p, info = _open_scene(path)
    if window and window > min(info.width, info.height):
        raise DatasetError(f"{path}: --window {window} is larger than the scene ({info.width}x{info.height} px); "
                           f"choose at most {min(info.width, info.height)}")
    try:
        b = parse_bands(bands)
        limits = stretch_limits(p, b)
    except ImageError as e:
        raise DatasetError(str(e)) from None
    made = 0
    for x, y in scene_windows(info.width, info.height, window, stride):
        w, h = (window, window) if window else (info.width, info.height)
        tid = f"{p.name}@{x},{y}"
        try:
            r = read_raster(p, name=tid, bands=b, window=(x, y, w, h), out_side=size, limits=limits)
        except ImageError as e:
            if on_skip:
                on_skip(tid, str(e))
            continue
        extra = {"x": x, "y": y, "window": window, "crs": info.crs or ""}
        if r.transform is not None:
            a, _, c, _, e, f = r.transform
            rows, cols = r.image.shape[:2]
            xs, ys = (c, c + a * cols), (f, f + e * rows)
            extra.update(left=min(xs), bottom=min(ys), right=max(xs), top=max(ys))
        yield [View(tid, to_tile(r.image, size), f"scene:{p.name}:x={x}:y={y}:window={window}", extra)]
        made += 1
        if limit and made >= limit:
            return


__all__ = ["iter_scene", "count_scene", "scene_windows"]
