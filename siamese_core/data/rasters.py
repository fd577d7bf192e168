"""Read large rasters (GeoTIFFs, PNG, JPEG) window by window, as uint8 RGB, with their georeferencing.

Why this module exists: a scene of 20,000 × 20,000 pixels (1.2 GB as RGB) must never be read whole, and a
GeoTIFF's values (uint16 reflectances, several bands) are not the uint8 RGB the model and the keypoints see. Every
reader of scenes goes through :func:`read_raster`: one window, at most ``out_side`` pixels a side (rasterio reads
the overview that fits), stretched to uint8 by per-band limits computed once for the whole scene
(:func:`stretch_limits`), so that every window of one scene is stretched alike.

NOTE (branch geo-locate): a minimal implementation of the API that the geo-read branch writes in full; same names
and signatures, to be reconciled when the branches merge. TIFFs are read with rasterio, PNG and JPEG with Pillow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ImageError

TIFF_SUFFIXES = (".tif", ".tiff")
LIMITS_SIDE = 1024  # stretch limits are computed on the scene read at most this many pixels a side


@dataclass(frozen=True)
class RasterInfo:
    """What a raster is, without reading its pixels."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple | None     # (a, b, c, d, e, f): x = a·col + b·row + c, y = d·col + e·row + f
    nodata: float | None
    overviews: tuple


@dataclass
class Raster:
    """A window of a raster as uint8 RGB, with the transform of the returned array (None when not georeferenced)."""

    image: np.ndarray
    transform: tuple | None
    crs: str | None
    valid: np.ndarray | None = None


def _name(source, name) -> str:
    return name or (str(source) if isinstance(source, (str, Path)) else "raster")


def _is_tiff(source, name) -> bool:
    return Path(_name(source, name)).suffix.lower() in TIFF_SUFFIXES


def _open_tiff(source, name):
    import rasterio
    try:
        return rasterio.open(source)
    except rasterio.errors.RasterioIOError as e:
        what = _name(source, name)
        if isinstance(source, (str, Path)) and not Path(source).is_file():
            raise ImageError(f"{what}: no such file; give the path of an existing GeoTIFF, PNG or JPEG") from None
        raise ImageError(f"{what}: cannot be read as a GeoTIFF ({str(e).splitlines()[0][:120]}); "
                         f"give a valid GeoTIFF, PNG or JPEG") from None


def _open_pil(source, name):
    from PIL import Image, UnidentifiedImageError
    what = _name(source, name)
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ImageError(f"{what}: no such file; give the path of an existing GeoTIFF, PNG or JPEG")
    try:
        im = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        im.load()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageError(f"{what}: cannot be read as an image ({str(e)[:120]}); give a valid GeoTIFF, PNG or JPEG") \
            from None
    return im


def raster_info(source, name=None) -> RasterInfo:
    """Size, bands, type and georeferencing of ``source`` (a path); ImageError (one line) when unreadable."""
    if _is_tiff(source, name):
        with _open_tiff(source, name) as src:
            t = src.transform
            geo = src.crs is not None or not t.is_identity
            return RasterInfo(_name(source, name), src.width, src.height, src.count, str(src.dtypes[0]),
                              src.crs.to_string() if src.crs else None,
                              (t.a, t.b, t.c, t.d, t.e, t.f) if geo else None, src.nodata,
                              tuple(src.overviews(1)))
    im = _open_pil(source, name)
    return RasterInfo(_name(source, name), im.width, im.height, len(im.getbands()), "uint8", None, None, None, ())


def _bands(count: int, bands) -> list[int]:
    if bands:
        return [int(b) for b in bands]
    return [1, 2, 3] if count >= 3 else [1, 1, 1]


def _read_array(source, name, bands, window, out_side) -> tuple[np.ndarray, tuple | None, str | None, float]:
    """(bands × h × w array, transform of it, crs, nodata) of a window read at most ``out_side`` a side."""
    if _is_tiff(source, name):
        from rasterio.enums import Resampling
        from rasterio.windows import Window
        with _open_tiff(source, name) as src:
            col, row, w, h = window or (0, 0, src.width, src.height)
            col, row = max(0, int(col)), max(0, int(row))
            w, h = max(1, min(int(w), src.width - col)), max(1, min(int(h), src.height - row))
            f = min(1.0, out_side / max(w, h)) if out_side else 1.0
            ow, oh = max(1, round(w * f)), max(1, round(h * f))
            win = Window(col, row, w, h)
            arr = src.read(_bands(src.count, bands), window=win, out_shape=(3, oh, ow),
                           resampling=Resampling.average if f < 1 else Resampling.nearest)
            from affine import Affine  # (rasterio's window_transform uses the deprecated `*` of affine)
            geo = src.crs is not None or not src.transform.is_identity
            t = src.transform @ Affine.translation(col, row) @ Affine.scale(w / ow, h / oh)
            return arr, ((t.a, t.b, t.c, t.d, t.e, t.f) if geo else None), \
                (src.crs.to_string() if src.crs else None), src.nodata
    im = _open_pil(source, name).convert("RGB")
    col, row, w, h = window or (0, 0, im.width, im.height)
    box = (int(col), int(row), min(im.width, int(col + w)), min(im.height, int(row + h)))
    im = im.crop(box)
    if out_side and max(im.size) > out_side:
        f = out_side / max(im.size)
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), resample=4)  # BOX
    return np.asarray(im).transpose(2, 0, 1), None, None, None


def stretch_limits(source, bands=None, percentiles=(2, 98), name=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) values to stretch to 0..255, from the scene read at most LIMITS_SIDE a side.
    uint8 rasters keep their values (0, 255)."""
    info = raster_info(source, name)
    if info.dtype == "uint8":
        return np.zeros(3, np.float64), np.full(3, 255.0)
    arr, _, _, nodata = _read_array(source, name, bands, None, LIMITS_SIDE)
    lo, hi = np.zeros(3), np.ones(3)
    for i, b in enumerate(arr.astype(np.float64)):
        v = b[np.isfinite(b) & (b != nodata)] if nodata is not None else b[np.isfinite(b)]
        if v.size:
            lo[i], hi[i] = np.percentile(v, percentiles)
        hi[i] = max(hi[i], lo[i] + 1e-6)
    return lo, hi


def read_raster(source, name=None, bands=None, window=None, out_side=None, limits=None,
                percentiles=(2, 98)) -> Raster:
    """One window ``(col_off, row_off, width, height)`` in full-resolution pixels (None: all of it) as uint8 RGB at
    most ``out_side`` pixels a side, stretched by ``limits`` (None: :func:`stretch_limits` of the raster)."""
    arr, t, crs, nodata = _read_array(source, name, bands, window, out_side)
    valid = None
    if nodata is not None:
        valid = ~np.all(arr == nodata, axis=0)
    if arr.dtype != np.uint8 or limits is not None:
        lo, hi = limits if limits is not None else stretch_limits(source, bands, percentiles, name)
        lo, hi = np.asarray(lo, np.float64)[:, None, None], np.asarray(hi, np.float64)[:, None, None]
        arr = np.clip((arr.astype(np.float64) - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)
    return Raster(np.ascontiguousarray(arr.transpose(1, 2, 0)), t, crs, valid)


__all__ = ["RasterInfo", "Raster", "raster_info", "stretch_limits", "read_raster"]
