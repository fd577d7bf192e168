"""Rasters as analysts have them (GeoTIFF, COG, JPEG 2000, any format GDAL reads), read through rasterio.

Satellite and aerial products are rarely 8-bit RGB: 16-bit or floating-point values, 4 to 13 bands, nodata
values or masks, internal overviews, a CRS and a geotransform. This module turns one into what the rest of the
project reads, a uint8 RGB array, without losing where it lies: the bands chosen (``--bands 3,2,1``, ``rgb``,
``sentinel2``), a per-band percentile stretch with nodata left out (limits shareable between windows of one
scene), and only the window asked for, at the overview level that fits ``out_side`` (GDAL picks it from the
``out_shape`` of the read), so a large scene is never held in memory whole. The transform returned is that of
the returned array's pixels, so callers can put pixels back on the map at whatever size they read.

:mod:`siamese_core.data.images` sends every such file here; plain 8-bit PNG/JPEG/TIFF keep their PIL path.
rasterio is an optional dependency (``pip install "siamese-tiles[geo]"``), imported only when a file needs it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ImageError

BAND_PRESETS = {"rgb": (1, 2, 3), "sentinel2": (4, 3, 2)}
RASTER_EXTENSIONS = (".jp2", ".j2k", ".vrt", ".img", ".ntf", ".nitf")
MAX_READ_PIXELS = 40_000_000  # a read larger than this is taken from an overview (or decimated) instead
LIMITS_SIDE = 1024            # stretch limits are measured on a read this size (an overview of a large scene)
# what an upload (bytes) may be opened as: no VRT, whose XML could point GDAL at the server's own files
UPLOAD_DRIVERS = ["GTiff", "COG", "JP2OpenJPEG", "HFA", "NITF", "PNG", "JPEG", "GIF", "BMP", "WEBP"]
_GEO_TAGS = {33550, 33922, 34264, 34735, 42113}  # pixel scale, tie point, transformation, geokeys, GDAL nodata
_JP2 = (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")
# GDAL's warnings reach Python's logging; we report problems as one ImageError line, so keep Python's last-resort
# handler from printing them too (an app's own logging config still sees them)
logging.getLogger("rasterio").addHandler(logging.NullHandler())


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` → (3, 2, 1); a preset name (``rgb``, ``sentinel2``) → its bands; None or "" → None."""
    if text is None or not str(text).strip():
        return None
    s = str(text).strip().lower()
    if s in BAND_PRESETS:
        return BAND_PRESETS[s]
    try:
        bands = tuple(int(p) for p in s.split(","))
    except ValueError:
        raise ImageError(f"--bands {text!r} is not a list of band numbers; give 1 or 3 numbers from 1 "
                         f"(e.g. --bands 3,2,1) or a preset: {', '.join(BAND_PRESETS)}") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ImageError(f"--bands {text!r}: give 1 band (grey) or 3 bands (red,green,blue), each 1 or more "
                         f"(e.g. --bands 3,2,1 or --bands rgb)")
    return bands


@dataclass(frozen=True)
class RasterInfo:
    """What a raster is, from its header only."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None            # "EPSG:32633", or WKT when there is no EPSG code; None without one
    transform: tuple | None    # affine (a, b, c, d, e, f) of the full-resolution pixels; None when not georeferenced
    nodata: float | None
    overviews: tuple           # decimation factors of band 1's overviews, e.g. (2, 4, 8)


@dataclass
class Raster:
    """A read: ``image`` uint8 (H, W, 3); ``transform`` maps the pixels of ``image`` (not of the file) to ``crs``."""

    image: np.ndarray
    transform: tuple | None
    crs: str | None
    valid: np.ndarray | None = None  # bool (H, W): False where the file has nodata (None: every pixel valid)


def _name(source, name) -> str:
    if name:
        return str(name).replace("\n", "\\n")
    return str(source).replace("\n", "\\n") if isinstance(source, (str, os.PathLike)) else "<upload>"


def _head(source, n: int = 16) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:n])
    try:
        if not stat.S_ISREG(os.stat(source).st_mode):  # a FIFO would block, a folder cannot be read
            return b""
        with open(source, "rb") as f:
            return f.read(n)
    except (OSError, TypeError, ValueError):
        return b""


def _tiff_tags(f, order: str) -> dict | None:
    """Tag → first values of a classic TIFF's first directory (None when unreadable)."""
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}
    codes = {1: "B", 2: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 16: "Q"}
    f.seek(4)
    first = int.from_bytes(f.read(4), order)
    f.seek(first)
    raw = f.read(2)
    if len(raw) < 2:
        return None
    tags = {}
    entries = f.read(12 * int.from_bytes(raw, order))
    for i in range(0, len(entries) - 11, 12):
        e = entries[i:i + 12]
        tag, typ, count = int.from_bytes(e[0:2], order), int.from_bytes(e[2:4], order), int.from_bytes(e[4:8], order)
        size = sizes.get(typ, 1) * count
        if typ not in codes or tag not in (258, 277, 338, 339):
            tags[tag] = None
            continue
        if size <= 4:
            data = e[8:8 + size]
        else:
            here = f.tell()
            f.seek(int.from_bytes(e[8:12], order))
            data = f.read(min(size, 64))
            f.seek(here)
        step = sizes[typ]
        tags[tag] = [int.from_bytes(data[j:j + step], order) for j in range(0, len(data) - step + 1, step)]
    return tags


def is_raster(path) -> bool:
    """Should this file (path or bytes) be read through rasterio? JPEG 2000, VRT, ERDAS IMG, NITF, BigTIFF, and
    any TIFF that is not plain 8-bit RGB or grey: georeferenced, 16-bit or float, more bands, a nodata value."""
    head = _head(path)
    if head.startswith(_JP2):
        return True
    if isinstance(path, (str, os.PathLike)) and Path(path).suffix.lower() in RASTER_EXTENSIONS:
        return True
    if head[:4] in (b"II+\x00", b"MM\x00+"):
        return True  # BigTIFF: PIL cannot read it
    if head[:4] not in (b"II*\x00", b"MM\x00*"):
        return False
    import io
    order = "little" if head[:2] == b"II" else "big"
    try:
        with (io.BytesIO(bytes(path)) if isinstance(path, (bytes, bytearray, memoryview))
              else open(path, "rb")) as f:
            tags = _tiff_tags(f, order)
    except (OSError, ValueError):
        return False
    if not tags:
        return False
    spp = (tags.get(277) or [1])[0]
    bits = set(tags.get(258) or [1])
    plain = (bits <= {8} and set(tags.get(339) or [1]) <= {1}
             and (spp in (1, 3) or (spp in (2, 4) and tags.get(338) is not None)))
    return not plain or bool(_GEO_TAGS & set(tags))


def _rasterio(name: str):
    try:
        import rasterio
    except ImportError:
        raise ImageError(f'{name}: reading this raster needs rasterio, which is not installed; '
                         f'pip install "siamese-tiles[geo]"') from None
    # a raster without a CRS is read as a plain image, so its warning is noise; set once for the process, since
    # catch_warnings is not thread-safe and the folder source reads files on several threads
    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)
    return rasterio


@contextlib.contextmanager
def _open(source, name: str):
    """The rasterio dataset of a path or bytes; every failure one ImageError line naming the file."""
    rasterio = _rasterio(name)
    from rasterio.errors import RasterioError
    stack = contextlib.ExitStack()
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            mem = stack.enter_context(rasterio.io.MemoryFile(bytes(source)))
            ds = stack.enter_context(mem.open(driver=UPLOAD_DRIVERS))
        else:
            ds = stack.enter_context(rasterio.open(os.fspath(source)))
    except (RasterioError, OSError, ValueError, TypeError) as e:
        stack.close()
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{name}: cannot open as a raster ({msg}); the file is corrupt or not a format GDAL reads: "
                         f"check it with gdalinfo, or export it again as GeoTIFF") from None
    with stack:
        if any(d.startswith("complex") for d in ds.dtypes):
            raise ImageError(f"{name}: pixel type {ds.dtypes[0]} (complex, e.g. SAR) is not supported; convert it "
                             f"to amplitude first (e.g. gdal_calc.py --calc='abs(A)')")
        try:
            yield ds
        except RasterioError as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ImageError(f"{name}: cannot read the raster's pixels ({msg}); the file is truncated or corrupt: "
                             f"check it with gdalinfo, or export it again") from None


def _crs_text(crs) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg() if crs.is_epsg_code else None
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _transform(ds) -> tuple | None:
    t = ds.transform
    if ds.crs is None and t.is_identity:
        return None
    return tuple(float(v) for v in (t.a, t.b, t.c, t.d, t.e, t.f))


def raster_info(source, name: str | None = None) -> RasterInfo:
    """The header of a raster (path or bytes): size, bands, type, CRS, transform, nodata, overviews."""
    name = _name(source, name)
    with _open(source, name) as ds:
        return RasterInfo(name, ds.width, ds.height, ds.count, str(ds.dtypes[0]), _crs_text(ds.crs), _transform(ds),
                          None if ds.nodata is None else float(ds.nodata), tuple(ds.overviews(1)))


_BAND_NAMES = {"red": ("red", "b4", "b04", "band4"), "green": ("green", "b3", "b03", "band3"),
               "blue": ("blue", "b2", "b02", "band2")}


def default_bands(ds) -> tuple[int, ...]:
    """The bands to show when none are asked for: those the file marks red, green and blue (its colour
    interpretation, else band descriptions such as ``B04``/``red``), else Sentinel-2's 4,3,2 for a 12- or 13-band
    file, else 1,2,3 (band 1 alone for fewer than three). A 4-band blue-green-red-NIR product is then not shown
    with red and blue swapped, nor a Sentinel-2 stack through its 60 m coastal band."""
    count = ds.count
    if count < 3:
        return (1,)
    interp = [str(getattr(c, "name", c)).lower() for c in (ds.colorinterp or ())]
    desc = [str(d or "").strip().lower().replace(" ", "") for d in (ds.descriptions or ())]
    for names in (interp, desc):
        found = [next((i + 1 for i, n in enumerate(names) if n in _BAND_NAMES[c]), None) for c in ("red", "green", "blue")]
        if None not in found and len(set(found)) == 3:
            return tuple(found)
    return BAND_PRESETS["sentinel2"] if count in (12, 13) else (1, 2, 3)


def _bands(bands, ds, name: str) -> tuple[int, ...]:
    count = ds.count
    if bands is None:
        return default_bands(ds)
    bands = tuple(int(b) for b in bands)
    bad = [b for b in bands if not 1 <= b <= count]
    if bad or len(bands) not in (1, 3):
        what = f"band {bad[0]}" if bad else f"{len(bands)} bands"
        raise ImageError(f"{name}: {what} requested, but the file has {count} band(s); choose 1 or 3 bands "
                         f"within 1..{count} (e.g. --bands {'3,2,1' if count >= 3 else '1'})")
    return bands


def _window(window, ds, name: str):
    from rasterio.windows import Window
    if window is None:
        return Window(0, 0, ds.width, ds.height)
    c, r, w, h = (int(v) for v in window)
    if w < 1 or h < 1 or c >= ds.width or r >= ds.height or c + w <= 0 or r + h <= 0:
        raise ImageError(f"{name}: window {tuple(window)} (col, row, width, height) lies outside the raster's "
                         f"{ds.width}x{ds.height} pixels; choose one inside it")
    return Window(c, r, w, h)


def _read(ds, bands, win, out_side: int | None, name: str):
    """Masked float64 (bands, h, w) read of ``win`` at most ``out_side`` px a side (and MAX_READ_PIXELS)."""
    from rasterio.enums import Resampling
    w, h = int(win.width), int(win.height)
    f = 1.0 if not out_side else min(1.0, out_side / max(w, h))
    f = min(f, math.sqrt(MAX_READ_PIXELS / (w * h)))
    ow, oh = max(1, round(w * f)), max(1, round(h * f))
    a = ds.read(list(bands), window=win, out_shape=(len(bands), oh, ow), masked=True, boundless=False,
                resampling=Resampling.average if f < 1 else Resampling.nearest)
    data = np.ma.getdata(a).astype(np.float64)
    bad = np.ma.getmaskarray(a) | ~np.isfinite(data)
    return data, ~bad.any(axis=0), (w / ow, h / oh)


def _limits(data: np.ndarray, valid: np.ndarray, percentiles) -> tuple[np.ndarray, np.ndarray]:
    vals = data[:, valid]
    lo = np.percentile(vals, percentiles[0], axis=1)
    hi = np.percentile(vals, percentiles[1], axis=1)
    return lo, np.where(hi > lo, hi, lo + 1.0)


def stretch_limits(source, bands=None, percentiles=(2, 98), name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (lo, hi) of the whole raster at the given percentiles, nodata left out, from a read of at most
    LIMITS_SIDE px a side (an overview of a large scene): one stretch for every window of a scene."""
    name = _name(source, name)
    with _open(source, name) as ds:
        b = _bands(bands, ds, name)
        data, valid, _ = _read(ds, b, _window(None, ds, name), LIMITS_SIDE, name)
        nodata = ds.nodata
    if not valid.any():
        raise ImageError(f"{name}: the raster has no finite pixel values outside nodata (nodata value {nodata}); "
                         f"check the file's nodata setting or pick other bands")
    return _limits(data, valid, percentiles)


def read_raster(source, name: str | None = None, bands=None, window=None, out_side: int | None = None,
                limits=None, percentiles=(2, 98)) -> Raster:
    """Read ``window`` = (col_off, row_off, width, height) in full-resolution pixels (None: all of it) of bands
    ``bands`` (None: :func:`default_bands`) at most ``out_side`` px a side (never enlarged), stretched to
    8 bits per band between ``limits`` (from :func:`stretch_limits`) or this read's own percentiles; nodata
    pixels are black and False in ``valid``. Raises ImageError (one line) on any problem."""
    name = _name(source, name)
    with _open(source, name) as ds:
        b = _bands(bands, ds, name)
        win = _window(window, ds, name)
        win = win.intersection(_window(None, ds, name))
        data, valid, (sx, sy) = _read(ds, b, win, out_side, name)
        t, crs = _transform(ds), _crs_text(ds.crs)
        if t is not None:
            wt = ds.window_transform(win)
            t = (wt.a * sx, wt.b * sy, wt.c, wt.d * sx, wt.e * sy, wt.f)
        nodata = ds.nodata
    if not valid.any():
        where = "the raster" if window is None else f"window {tuple(window)}"
        raise ImageError(f"{name}: {where} has no finite pixel values outside nodata (nodata value {nodata}); "
                         f"choose a window inside the imaged area, or check the file's nodata value")
    lo, hi = _limits(data, valid, percentiles) if limits is None else (np.asarray(limits[0], np.float64),
                                                                       np.asarray(limits[1], np.float64))
    if len(lo) != len(b):
        raise ImageError(f"{name}: stretch limits for {len(lo)} band(s) given for a read of {len(b)} band(s); "
                         f"compute them with the same bands")
    scaled = (data - lo[:, None, None]) / (hi - lo)[:, None, None] * 255.0
    img = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
    img[:, ~valid] = 0
    img = np.repeat(img, 3, axis=0) if len(b) == 1 else img
    return Raster(np.ascontiguousarray(img.transpose(1, 2, 0)), t, crs, None if valid.all() else valid)


def reproject_raster(raster: Raster, crs: str) -> Raster:
    """``raster`` resampled into ``crs`` (a north-up grid of about the same pixel count, black where it has no
    data), with its transform in that CRS. The same raster when it is in ``crs`` already."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import Resampling, calculate_default_transform, reproject
    src, dst = CRS.from_user_input(raster.crs), CRS.from_user_input(crs)
    if src == dst:
        return raster
    h, w = raster.image.shape[:2]
    st = Affine(*raster.transform)
    a, b, c, d, e, f = raster.transform
    xs, ys = [c, a * w + c, b * h + c, a * w + b * h + c], [f, d * w + f, e * h + f, d * w + e * h + f]
    t, ow, oh = calculate_default_transform(src, dst, w, h, left=min(xs), bottom=min(ys), right=max(xs), top=max(ys))
    out = np.zeros((3, oh, ow), np.uint8)
    reproject(np.ascontiguousarray(raster.image.transpose(2, 0, 1)), out, src_transform=st, src_crs=src,
              dst_transform=t, dst_crs=dst, resampling=Resampling.bilinear, src_nodata=None, dst_nodata=0)
    valid = np.zeros((oh, ow), np.uint8)
    reproject(np.ones((h, w), np.uint8) if raster.valid is None else raster.valid.astype(np.uint8), valid,
              src_transform=st, src_crs=src, dst_transform=t, dst_crs=dst, resampling=Resampling.nearest,
              src_nodata=None, dst_nodata=0)
    return Raster(np.ascontiguousarray(out.transpose(1, 2, 0)), tuple(float(v) for v in tuple(t)[:6]),
                  _crs_text(dst), valid.astype(bool))


__all__ = ["BAND_PRESETS", "RASTER_EXTENSIONS", "parse_bands", "RasterInfo", "Raster", "is_raster", "raster_info",
           "stretch_limits", "read_raster", "reproject_raster", "UPLOAD_DRIVERS", "default_bands"]
