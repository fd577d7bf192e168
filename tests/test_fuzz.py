"""Fuzzing the two parsers that read untrusted files: ``decode_image`` and ``read_pairs_csv``.

Whatever the bytes, they either give a valid result or raise a :class:`SiameseError` subclass with a
one-line message; no other exception, no hang (examples are small, so a slow one would show as a slow
test). Example counts keep the whole file well under 20 s.

A fuzz check that accepts an error line passes a parser that refuses everything, so every family of inputs also
has a positive control: valid inputs of that family, which must be accepted (``_check_decode`` and ``_check_csv``
with ``valid=True``).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from siamese_core.core.errors import SiameseError
from siamese_core.data.images import decode_image, load_tile
from siamese_core.data.pairs_csv import read_pairs_csv

def fuzz(max_examples: int) -> settings:
    """No per-example deadline (a loaded CI machine is slow), a fixed example budget; derandomised on CI."""
    return settings(max_examples=max_examples, deadline=None, derandomize=bool(os.environ.get("CI")),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd8\xff\xdb", b"\xff\xd8\xff\xc0",
         b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"II*\x00\x08\x00\x00\x00", b"II+\x00", b"BM",
         b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x24\x00\x00\x00WEBPVP8L", b"%PDF-1.4", b"<html>", b"\x00\x00\x01\x00"]


def _encode(fmt: str, mode: str, size=(12, 12), **kw) -> bytes:
    rng = np.random.default_rng(len(fmt) + len(mode))
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


VALID = [
    _encode("PNG", "RGB"), _encode("PNG", "P"), _encode("PNG", "LA"), _encode("PNG", "RGBA"),
    _encode("JPEG", "RGB", quality=80), _encode("JPEG", "RGB", progressive=True), _encode("JPEG", "CMYK"),
    _encode("GIF", "P"), _encode("TIFF", "RGB"), _encode("TIFF", "RGB", compression="tiff_lzw"),
    _encode("TIFF", "CMYK"), _encode("TIFF", "1"), _encode("BMP", "RGB"), _encode("WEBP", "RGB"),
    _encode("TIFF", "RGB", compression="tiff_deflate"), _encode("PNG", "RGB", size=(20, 9)),
]


def _check_decode(data: bytes, max_side, valid: bool = False) -> None:
    """A valid RGB image or one error line naming the file; with ``valid``, it must be the image."""
    try:
        img = decode_image(data, name="fuzz.bin", max_side=max_side)
    except SiameseError as e:
        msg = str(e)
        assert not valid, f"a valid input was refused: {msg}"
        assert msg.startswith("fuzz.bin: ") and "\n" not in msg, msg
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 8


@fuzz(400)
@given(data=st.binary(max_size=600), max_side=st.sampled_from([None, 16, 128]))
def test_random_bytes(data, max_side):
    _check_decode(data, max_side)


@fuzz(600)
@given(magic=st.sampled_from(MAGIC), rest=st.binary(max_size=400), max_side=st.sampled_from([None, 32]))
def test_image_magic_followed_by_random_bytes(magic, rest, max_side):
    _check_decode(magic + rest, max_side)


@st.composite
def corrupted(draw):
    """A valid small image with a few bytes overwritten, a slice cut out or inserted, or truncated."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "cut", "insert", "truncate", "header"]))
        n = len(data)
        if n == 0:
            break
        i = draw(st.integers(0, n - 1))
        if kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "header":  # aim at the header, where sizes, band counts and offsets live
            j = draw(st.integers(0, min(n, 64) - 1))
            data[j] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "cut":
            del data[i:i + draw(st.integers(1, 32))]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[i:]
    return bytes(data)


@fuzz(1200)
@given(data=corrupted(), max_side=st.sampled_from([None, 16]))
def test_corrupted_valid_images(data, max_side):
    _check_decode(data, max_side)


@fuzz(150)
@given(data=corrupted())
def test_load_tile_on_corrupted_images(data):
    try:
        tile = load_tile(data, 16, name="fuzz.bin")
    except SiameseError:
        return
    assert tile.shape == (16, 16, 3) and tile.dtype == np.uint8


@pytest.mark.parametrize("max_side", [None, 16, 32, 128])
def test_positive_control_every_valid_image_is_accepted(max_side):
    """The control of every image family above: the starting points of the corruption fuzz, one valid file for
    each supported magic number, decode through the same check at each ``max_side`` the fuzz uses."""
    for data in VALID:
        _check_decode(data, max_side, valid=True)
    supported = [m for m in MAGIC if any(v.startswith(m[:4]) for v in VALID)]
    assert len(supported) >= 8  # PNG, JPEG (3 markers), GIF, TIFF, BMP, WebP: each has a valid file


def test_positive_control_load_tile_accepts_the_valid_corpus():
    for data in VALID:
        tile = load_tile(data, 16, name="fuzz.bin")
        assert tile.shape == (16, 16, 3) and tile.dtype == np.uint8


# --- pairs CSV ----------------------------------------------------------------------------------

# CSV-ish tokens: the column names, separators, quotes, every kind of line break, BOM, NUL, non-ASCII
CSV_TEXT = st.lists(st.sampled_from(list('image_ab,"\n\r \t;\ufeff\x00\x85\u2028éß…') + ["image_a", "image_b", "\r\n"]),
                    max_size=80).map("".join)


def _check_csv(raw: bytes, valid: bool = False):
    """The rows of a well-formed pairs CSV, or one error line naming the file; with ``valid``, it must parse.
    Returns the rows (None after an error)."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "pairs.csv"
        p.write_bytes(raw)
        try:
            rows, cols, lines = read_pairs_csv(p)
        except SiameseError as e:
            assert not valid, f"a valid CSV was refused: {e}"
            assert str(e).startswith(f"{p}: ") and "\n" not in str(e), str(e)
            return None
    assert "image_a" in cols and "image_b" in cols
    assert len(lines) == len(rows) and lines == sorted(set(lines)) and all(n >= 2 for n in lines)
    for r in rows:
        assert isinstance(r["image_a"], str) and isinstance(r["image_b"], str)
        assert set(r) == set(cols)
    return rows


VALID_CSV = "image_a,image_b,note\r\na.png,b.png,first\r\n\r\n\"c, d.png\",e.png,\"two\nlines\"\r\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"])
def test_positive_control_a_valid_csv_in_every_encoding_is_read(encoding):
    """The control of the random-bytes and random-text families: a well-formed pairs CSV (quoted comma, quoted
    newline, blank line, CRLF), in each encoding the text fuzz writes, gives its two rows."""
    rows = _check_csv(VALID_CSV.encode(encoding), valid=True)
    assert [(r["image_a"], r["image_b"], r["note"]) for r in rows] == [("a.png", "b.png", "first"),
                                                                       ("c, d.png", "e.png", "two\nlines")]


@fuzz(300)
@given(raw=st.binary(max_size=300))
def test_csv_random_bytes(raw):
    _check_csv(raw)


@fuzz(400)
@given(text=CSV_TEXT, encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]))
def test_csv_random_text(text, encoding):
    _check_csv(text.encode(encoding, errors="replace"))


@fuzz(150)
@given(body=st.lists(st.lists(st.text(max_size=12), min_size=0, max_size=4), max_size=6),
       header=st.sampled_from(["image_a,image_b", "image_b,image_a,note", "\ufeffimage_a,image_b", " image_a ,image_b"]))
def test_csv_header_with_random_rows(body, header):
    """Every input here is a well-formed CSV under a valid header (written by the csv module), so it must parse:
    this family is its own positive control."""
    import csv
    buf = io.StringIO()
    csv.writer(buf).writerows(body)
    _check_csv((header + "\n" + buf.getvalue()).encode("utf-8", errors="surrogatepass"), valid=True)


@pytest.mark.parametrize("raw", [b"image_a,image_b\n" + b"x" * 300_000 + b",y\n", b'image_a,image_b\n"' + b"q" * 300_000])
def test_csv_oversized_field(raw):
    _check_csv(raw)


def test_positive_control_a_large_field_under_the_limit_is_read():
    rows = _check_csv(b"image_a,image_b\n" + b"x" * 100_000 + b",y\n", valid=True)
    assert len(rows) == 1 and len(rows[0]["image_a"]) == 100_000 and rows[0]["image_b"] == "y"
