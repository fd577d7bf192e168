"""The one place that turns bytes or files into uint8 RGB tiles.

Everything that reads an image — dataset import, the Compare page, ``score`` on the command line —
goes through :func:`decode_image` and :func:`to_tile`, so training and scoring see exactly the same
preprocessing, and every failure is an :class:`ImageError` with a one-line message naming the file.
Huge images are never decoded at full size: JPEGs are shrunk while decoding (``draft``), anything
else above ``MAX_PIXELS`` is refused before its pixels are allocated. Rasters (GeoTIFF, COG, JPEG 2000, 16-bit,
float or many-band TIFFs: :func:`~siamese_core.data.rasters.is_raster`) are read through rasterio by
:mod:`siamese_core.data.rasters`, at the overview level that fits; plain 8-bit images keep the PIL path.
"""

from __future__ import annotations

import io
import logging
import math
import os
import stat
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.errors import ImageError, SiameseError
from .rasters import is_raster, raster_info, read_raster

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
MAX_PIXELS = 40_000_000  # decoded pixels allowed (≈ 120 MB as RGB); bigger JPEGs are shrunk on decode
MAX_BYTES = 200 * 1024 * 1024  # bigger files are refused unread
MIN_SIDE = 8
MAX_ASPECT = 10.0

_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"),
          (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"), (b"BM", "BMP"))

cv2.setNumThreads(1)  # decoding runs in worker threads/processes; avoid oversubscription
# PIL logs some refusals (e.g. too many TIFF bands) before raising; we report those as one ImageError line,
# so keep Python's last-resort handler from printing them too (an app's own logging config still sees them)
logging.getLogger("PIL").addHandler(logging.NullHandler())


def _name(source, name: str | None) -> str:
    if name:
        s = str(name)
    elif isinstance(source, (str, os.PathLike)):
        s = str(source)
    else:
        return "<upload>"
    return s.replace("\n", "\\n").replace("\r", "\\r")  # messages stay one line, whatever the file name


def _read_bytes(source, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            st = path.stat()
        except (OSError, ValueError) as e:
            raise ImageError(f"{name}: cannot read file ({getattr(e, 'strerror', None) or e})") from None
        if not stat.S_ISREG(st.st_mode):  # a FIFO or /dev/zero would block or never end
            raise ImageError(f"{name}: not a regular file")
        if st.st_size > MAX_BYTES:
            raise ImageError(f"{name}: file is {st.st_size / 1e6:.0f} MB, over the {MAX_BYTES / 1e6:.0f} MB limit")
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES + 1)  # the file may grow after stat
        except OSError as e:
            raise ImageError(f"{name}: cannot read file ({e.strerror or e})") from None
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise ImageError(f"{name}: expected a path or bytes, got {type(source).__name__}")
    if not data:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: file is {len(data) / 1e6:.0f} MB, over the {MAX_BYTES / 1e6:.0f} MB limit")
    return data


def _to_uint8_rgb(im: Image.Image, name: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if a.ndim != 2:
            raise ImageError(f"{name}: unsupported {mode} image layout {a.shape}")
        finite = np.isfinite(a)
        if not finite.any():
            raise ImageError(f"{name}: image contains no finite pixel values")
        if not finite.all():  # NaN / inf 'no data' pixels become the darkest valid value
            a = np.where(finite, a, a[finite].min())
        lo, hi = (0.0, 65535.0) if mode.startswith("I;16") else (float(a.min()), float(a.max()))
        if mode.startswith("I;16") and a.max() <= 4095:
            hi = 4095.0 if a.max() > 255 else 255.0  # 12-bit sensors stored in 16-bit files
        a = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if mode == "RGB":
        out = np.asarray(im, dtype=np.uint8)
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        out = np.asarray(im.convert("RGBA").convert("RGB"), dtype=np.uint8)
    else:  # 1, L, P, CMYK, YCbCr, LAB, HSV ...
        out = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if out.ndim != 3 or out.shape[2] != 3:
        raise ImageError(f"{name}: could not convert {mode} image to RGB")
    return out


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(data: bytes) -> tuple[int, int, int, bool] | None:
    """(width, height, components, progressive) from a JPEG's start-of-frame marker, or None."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF:
            h = int.from_bytes(data[i + 5:i + 7], "big")
            w = int.from_bytes(data[i + 7:i + 9], "big")
            return w, h, data[i + 9], marker in (0xC2, 0xC6, 0xCA, 0xCE)
        if marker == 0xDA or seg < 2:
            return None
        i += 2 + seg
    return None


def _jpeg_reduced(data: bytes, w: int, h: int, max_side: int) -> np.ndarray | None:
    """Fast path for complete baseline JPEGs: libjpeg's DCT scaling through OpenCV (which releases the
    GIL, so a thread pool decodes in parallel), at the same 1/2, 1/4 or 1/8 scale PIL's ``draft``
    picks; EXIF orientation applied. None when the file is not a complete JPEG (PIL then decides)."""
    if not data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        return None  # truncated: let PIL report it
    k = max(f for f in (1, 2, 4, 8) if f <= max(1, min(w // max_side, h // max_side)))
    if (w // k) * (h // k) > MAX_PIXELS:
        return None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[k])
    if bgr is None or bgr.ndim != 3:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _raster_image(source, name: str, max_side: int | None, bands) -> np.ndarray:
    """A raster through rasterio, read at the overview level that leaves at least ``max_side`` px on its short
    side (the whole raster under MAX_PIXELS when ``max_side`` is None)."""
    info = raster_info(source, name)
    w, h = info.width, info.height
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{name}: image is {w}x{h} px; tiles must be at least {MIN_SIDE} px on each side")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise ImageError(f"{name}: image is {w}x{h} px, too elongated for a tile "
                         f"(aspect ratio over {MAX_ASPECT:g}:1); crop it first (e.g. prepare --source scene --window)")
    side = math.ceil(max_side * max(w, h) / min(w, h)) if max_side else None
    return read_raster(source, name=name, bands=bands, out_side=side).image


def decode_image(source, name: str | None = None, max_side: int | None = None, bands=None) -> np.ndarray:
    """Decode a path, bytes or file-like into an (H, W, 3) uint8 RGB array.

    Honours EXIF orientation; converts grayscale, palette, RGBA, CMYK and 16-bit images to 8-bit RGB.
    ``max_side`` lets JPEGs decode at a reduced scale (at least ``max_side`` pixels on the short side), and
    rasters read an overview. ``bands`` (e.g. (3, 2, 1), see :func:`~siamese_core.data.rasters.parse_bands`)
    chooses a raster's bands (default 1,2,3, or band 1 as grey); plain images ignore it.
    Raises :class:`ImageError` with a one-line message on any problem.
    """
    name = _name(source, name)
    if isinstance(source, (str, os.PathLike)) and is_raster(source):  # read by window, never the whole file
        return _raster_image(source, name, max_side, bands)
    data = _read_bytes(source, name)
    if is_raster(data):
        return _raster_image(data, name, max_side, bands)
    head = _jpeg_header(data) if max_side else None
    if head and head[2] in (1, 3) and not head[3]:  # plain baseline JPEG: skip PIL, decode in OpenCV
        w, h = head[0], head[1]
        if min(w, h) >= MIN_SIDE and max(w, h) <= MAX_ASPECT * min(w, h) and w * h <= 16 * MAX_PIXELS:
            fast = _jpeg_reduced(data, w, h, max_side)
            if fast is not None:
                return fast
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limits below decide
        try:
            im = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            fmt = next((f for magic, f in _MAGIC if data.startswith(magic)), None)
            if fmt is None and _gdal_reads(data):  # another raster format GDAL knows
                return _raster_image(data, name, max_side, bands)
            if fmt:  # the right kind of file, but a layout PIL cannot read (e.g. 5-band or float-RGB TIFF)
                raise ImageError(f"{name}: a {fmt} file that cannot be read (corrupt, or an unsupported variant "
                                 f"such as more than 4 bands or floating-point colour); convert it to 8-bit RGB") from None
            raise ImageError(f"{name}: not an image (or an unsupported format); "
                             f"use JPEG, PNG, TIFF, BMP or WebP") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name}: declared size is too large (possible decompression bomb)") from None
        except Exception as e:  # PIL raises many types for malformed headers
            raise ImageError(f"{name}: cannot open image ({type(e).__name__}: {e})".splitlines()[0]) from None
        try:
            w, h = im.size
            if min(w, h) < MIN_SIDE:
                raise ImageError(f"{name}: image is {w}x{h} px; tiles must be at least {MIN_SIDE} px on each side")
            if max(w, h) / min(w, h) > MAX_ASPECT:
                raise ImageError(f"{name}: image is {w}x{h} px, too elongated for a tile "
                                 f"(aspect ratio over {MAX_ASPECT:g}:1); crop it first")
            if im.format == "JPEG" and im.info.get("progressive") and w * h > MAX_PIXELS:
                # libjpeg buffers every DCT coefficient of a progressive file: shrinking does not save memory
                raise ImageError(f"{name}: progressive JPEG of {w}x{h} px ({w * h / 1e6:.0f} MP) is over the "
                                 f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale it or save it as a baseline JPEG")
            if im.format == "JPEG" and max_side and im.mode in ("RGB", "L") and w * h <= 16 * MAX_PIXELS:
                fast = _jpeg_reduced(data, w, h, max_side)
                if fast is not None:
                    return fast
            if im.format == "JPEG" and max_side and im.mode in ("RGB", "L", "CMYK", "YCbCr"):
                im.draft(im.mode, (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale
                w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{name}: image is {w}x{h} px ({w * h / 1e6:.0f} MP), over the "
                                 f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale it first")
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # no copy when there is nothing to rotate
            return _to_uint8_rgb(im, name)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name}: declared size is too large (possible decompression bomb)") from None
        except MemoryError:
            raise ImageError(f"{name}: image is too large to decode in memory") from None
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "truncated" in msg.lower() or isinstance(e, (OSError, SyntaxError)):
                raise ImageError(f"{name}: image data is truncated or corrupt ({msg})") from None
            raise ImageError(f"{name}: cannot decode image ({type(e).__name__}: {msg})") from None


def _gdal_reads(data: bytes) -> bool:
    try:
        raster_info(data)
    except ImageError:
        return False
    return True


def to_tile(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square (when the aspect ratio differs by more than 5 %) and resize to size×size."""
    h, w = image.shape[:2]
    if max(h, w) > 1.05 * min(h, w):
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        image = image[y:y + s, x:x + s]
        h = w = s
    if (h, w) == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interp)


def load_tile(source, size: int, name: str | None = None, bands=None) -> np.ndarray:
    """Decode and resize in one step: the exact preprocessing used for training and scoring."""
    return to_tile(decode_image(source, name=name, max_side=size, bands=bands), size)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB array (for previews and test fixtures)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError("could not encode PNG")
    return buf.tobytes()


def tiles_at(tiles: np.ndarray, size: int) -> np.ndarray:
    """uint8 tiles (N, S, S, 3) at the model's size (resized only when they differ)."""
    tiles = np.asarray(tiles, np.uint8)
    if tiles.ndim == 3:
        tiles = tiles[None]
    if tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise SiameseError(f"query tiles must be RGB uint8 arrays (N, S, S, 3), got shape {tiles.shape}")
    if tiles.shape[1:3] == (size, size):
        return tiles
    return np.stack([to_tile(t, size) for t in tiles])
