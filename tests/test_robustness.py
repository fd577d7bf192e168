"""Bad input is refused with one line that names the file and the problem: never a traceback, never a
half-written dataset, never an allocation the size of what a header merely claims.

Every bad file is made here, by the test (PIL where it can write the layout, a hand-written TIFF where it
cannot), in the three places a user meets them: ``decode_image``/``load_tile``, ``score`` on the command
line, and ``prepare --source folder``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamese_core.core.errors import DatasetError, ImageError, SiameseError
from siamese_core.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, decode_image, encode_png, load_tile
from siamese_core.data.sources.synthetic import synthetic_tile

ROOT = Path(__file__).resolve().parents[1]
# the subprocesses run as a user would: without TF_CPP_MIN_LOG_LEVEL (the CLI quietens TensorFlow itself)
ENV = {**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, "PYTHONPATH": str(ROOT)}


def cli(*args) -> int:
    from siamese_core.cli import main
    return main([str(a) for a in args])


# --- making bad files ---------------------------------------------------------------------------

def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _tile(seed: int = 0, size: int = 40) -> Image.Image:
    return Image.fromarray(synthetic_tile(seed, size, seed=3))


def make_tiff(arr: np.ndarray, photometric: int | None = None, sample_format: int = 1,
              extra: list[int] | None = None, size: tuple[int, int] | None = None) -> bytes:
    """A minimal little-endian TIFF with one uncompressed strip, written by hand for the layouts PIL
    cannot write (5 bands, float RGB, 16-bit RGB ...). ``extra`` is the ExtraSamples tag; ``size`` =
    (w, h) declares another size than the pixel data has (a TIFF 'bomb')."""
    a = np.ascontiguousarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, s = a.shape
    if size:
        w, h = size
    data = a.astype(a.dtype.newbyteorder("<")).tobytes()
    tags = {256: (4, [w]), 257: (4, [h]), 258: (3, [a.dtype.itemsize * 8] * s), 259: (3, [1]),
            262: (3, [photometric if photometric is not None else (2 if s >= 3 else 1)]),
            273: (4, [0]), 277: (3, [s]), 278: (4, [h]), 279: (4, [len(data)]), 284: (3, [1]),
            339: (3, [sample_format] * s)}
    if extra is not None:
        tags[338] = (3, list(extra))
    n = len(tags)
    ext_off = 8 + 2 + 12 * n + 4
    ext, entries = b"", []
    for tag in sorted(tags):
        typ, vals = tags[tag]
        raw = b"".join(struct.pack("<H" if typ == 3 else "<I", v) for v in vals)
        if len(raw) > 4:  # stored out of line
            off = ext_off + len(ext)
            ext += raw + b"\0" * (len(raw) % 2)
            raw = struct.pack("<I", off)
        entries.append([tag, typ, len(vals), raw])
    data_off = ext_off + len(ext)
    out = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", n)
    for tag, typ, count, raw in entries:
        if tag == 273:
            raw = struct.pack("<I", data_off)
        out += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0")
    return out + struct.pack("<I", 0) + ext + data


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(w: int, h: int) -> bytes:
    """A valid-looking PNG whose IHDR claims w×h RGB pixels; a few compressed rows follow (tiny on disk)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * min(w, 100_000)) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_declaring(w: int, h: int) -> bytes:
    """A 16×16 JPEG whose frame header (SOF0) is patched to claim w×h."""
    d = bytearray(_save(Image.new("RGB", (16, 16), (90, 120, 60)), "JPEG"))
    i = d.find(b"\xff\xc0")
    d[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(d)


def gif_declaring(w: int, h: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, w, h, 0)
            + b"\x08\x02\x4c\x01\x00;")


def bmp_declaring(w: int, h: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\0" * 16


def _geotiff() -> bytes:
    """A 64x64 4-band 16-bit tiled deflate GeoTIFF, written by rasterio."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin
    rng = np.random.default_rng(2)
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=64, height=64, count=4, dtype="uint16", crs="EPSG:32633", tiled=True,
                      blockxsize=32, blockysize=32, compress="deflate",
                      transform=from_origin(500000, 4000000, 1.5, 1.5)) as ds:
            ds.write(rng.integers(0, 4000, (4, 64, 64), dtype=np.uint16))
        assert rasterio.__version__
        return mem.read()


def _readable_rasters() -> dict[str, bytes]:
    """Layouts PIL refuses and rasterio reads since TIFFs go through data/rasters.py: 5 and 8 bands, 16-bit
    with 5 bands, float RGB and float64 grey (bands 1,2,3, or band 1 as grey, stretched to 8 bits)."""
    rng = np.random.default_rng(0)
    return {
        "five_band.tif": make_tiff(rng.integers(0, 255, (20, 20, 5), dtype=np.uint8)),
        "eight_band.tif": make_tiff(rng.integers(0, 255, (20, 20, 8), dtype=np.uint8), extra=[0] * 5),
        "sixteen_bit_5band.tif": make_tiff(rng.integers(0, 65535, (20, 20, 5), dtype=np.uint16), extra=[0, 0]),
        "float_rgb.tif": make_tiff(rng.random((20, 20, 3)).astype(np.float32), sample_format=3),
        "float64.tif": make_tiff(rng.random((20, 20)), sample_format=3),
    }


def _bad_files() -> dict[str, tuple[bytes, str]]:
    """file name → (bytes, regex the one-line message must match)."""
    rng = np.random.default_rng(0)
    jpg = _save(_tile(1, 64), "JPEG", quality=90)
    png = _save(_tile(2, 64), "PNG")
    nan = np.full((20, 20), np.nan, np.float32)
    return {
        "notes.jpg": (b"just some text, no pixels here\n" * 20, "not an image"),
        "report.png": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "not an image"),
        "page.jpg": (b"<!DOCTYPE html><html><body><img src='tile.jpg'></body></html>\n", "not an image"),
        "empty.png": (b"", r"empty \(0 bytes\)"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "tiny.png": (_save(Image.new("RGB", (5, 5)), "PNG"), "at least 8 px"),
        "thin.tif": (_save(Image.new("RGB", (7, 40)), "TIFF"), "at least 8 px"),
        "strip.png": (_save(Image.new("RGB", (440, 40)), "PNG"), r"too elongated.*10:1"),
        # a 16-bit tiled GeoTIFF cut short: GDAL opens its header, its pixels are gone
        "truncated_geotiff.tif": (_geotiff()[:900], "truncated or corrupt|corrupt"),
        "garbage.tif": (b"II*\x00\x08\x00\x00\x00" + bytes(range(256)) * 4, "corrupt"),
        "all_nan.tif": (_save(Image.fromarray(nan), "TIFF"), "no finite pixel values"),
        "bomb.png": (png_declaring(100_000, 100_000), "too large"),
        "bomb.jpg": (jpeg_declaring(65_000, 65_000), "too large"),
        "bomb.gif": (gif_declaring(65_535, 65_535), "too large"),
        "bomb.bmp": (bmp_declaring(100_000, 100_000), "too large"),
        "bomb.tif": (make_tiff(np.zeros((8, 8), np.uint8), size=(60_000, 60_000)), "too large|over the 40 MP limit"),
        "big.png": (png_declaring(9_000, 9_000), "9000x9000 px .*over the 40 MP limit"),
    }


BAD = _bad_files()


def _convertible() -> dict[str, bytes]:
    """Unusual but valid layouts that must become (H, W, 3) uint8 RGB."""
    rng = np.random.default_rng(1)
    base = _tile(4, 40)
    grey = np.asarray(base.convert("L"))
    u16 = grey.astype(np.uint16) * 257
    f = grey.astype(np.float32) / 255.0
    f_nodata = f.copy()
    f_nodata[:4, :4] = np.nan  # 'no data' corners, as GeoTIFF exports have
    f_nodata[-4:, -4:] = np.inf
    rgb16 = (np.asarray(base).astype(np.uint16) * 257)
    pal_t = base.convert("P")
    pal_t.info["transparency"] = 0
    frames = [base, _tile(5, 40)]
    anim = io.BytesIO()
    frames[0].save(anim, "GIF", save_all=True, append_images=frames[1:])
    return {
        "one_bit.tif": _save(base.convert("1"), "TIFF"),
        "grey.png": _save(base.convert("L"), "PNG"),
        "grey_alpha.png": _save(base.convert("LA"), "PNG"),
        "grey_alpha.tif": _save(base.convert("LA"), "TIFF"),
        "rgba.tif": _save(base.convert("RGBA"), "TIFF"),
        "four_band_unspecified.tif": make_tiff(np.dstack([np.asarray(base), grey]), extra=[0]),
        "five_band_with_extras.tif": make_tiff(np.dstack([np.asarray(base), grey, grey]), extra=[0, 0]),
        "sixteen_bit.tif": _save(Image.fromarray(u16), "TIFF"),
        "sixteen_bit.png": _save(Image.fromarray(u16), "PNG"),
        "sixteen_bit_rgb.tif": make_tiff(rgb16),
        "sixteen_bit_rgba.tif": make_tiff(np.dstack([rgb16, u16]), extra=[2]),
        "signed16.tif": make_tiff(grey.astype(np.int16) - 100, sample_format=2),
        "float.tif": _save(Image.fromarray(f), "TIFF"),
        "float_nodata.tif": _save(Image.fromarray(f_nodata), "TIFF"),
        "cmyk.jpg": _save(base.convert("CMYK"), "JPEG"),
        "cmyk.tif": _save(base.convert("CMYK"), "TIFF"),
        "palette.png": _save(base.convert("P"), "PNG"),
        "palette_transparent.png": _save(pal_t, "PNG"),
        "animated.gif": anim.getvalue(),
        "noise.webp": _save(Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)), "WEBP"),
    }


GOOD = _convertible()


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    for name, (data, _) in BAD.items():
        (d / name).write_bytes(data)
    return d


def _one_line(msg: str) -> str:
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    return msg


# --- 1. decode_image / load_tile -----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_refused_with_one_line_naming_it(bad_dir, name):
    path = bad_dir / name
    needle = BAD[name][1]
    for call in (lambda: decode_image(path), lambda: load_tile(path, 32), lambda: load_tile(str(path), 128)):
        with pytest.raises(ImageError) as e:
            call()
        msg = _one_line(str(e.value))
        assert msg.startswith(f"{path}: "), msg
        assert re.search(needle, msg), msg
    with pytest.raises(ImageError) as e:  # bytes (an upload) with a display name
        decode_image(path.read_bytes(), name=name)
    assert _one_line(str(e.value)).startswith(f"{name}: ") and re.search(needle, str(e.value))


@pytest.mark.parametrize("name", sorted(_readable_rasters()))
def test_rasters_pil_refuses_are_read_through_rasterio(name):
    img = decode_image(_readable_rasters()[name], name=name)
    assert img.dtype == np.uint8 and img.shape == (20, 20, 3), (name, img.shape)
    assert img.std() > 5, name


@pytest.mark.parametrize("name", sorted(GOOD))
def test_unusual_layouts_become_rgb(name):
    img = decode_image(GOOD[name], name=name)
    assert img.dtype == np.uint8 and img.shape == (40, 40, 3), (name, img.shape)
    assert img.std() > 5, name  # the picture survived the conversion
    assert load_tile(GOOD[name], 32, name=name).shape == (32, 32, 3)


def test_nodata_pixels_in_float_tiff_do_not_spoil_the_rest():
    img = decode_image(GOOD["float_nodata.tif"], name="f.tif")[..., 0].astype(int)
    ref = decode_image(GOOD["float.tif"], name="f.tif")[..., 0].astype(int)
    inside = (slice(4, -4), slice(4, -4))
    # valid pixels keep their relative values; NaN/inf corners become the darkest valid value
    assert np.corrcoef(img[inside].ravel(), ref[inside].ravel())[0, 1] > 0.99
    assert img[:4, :4].max() == img.min() and img[-4:, -4:].max() == img.min()


def _returns_within(fn, seconds: float):
    """Run ``fn`` in a daemon thread; (finished, result-or-exception)."""
    box = {}

    def target():
        try:
            box["r"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["r"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), box.get("r")


def test_special_paths_are_refused_not_read(tmp_path):
    """A directory, a FIFO (reading it would block forever) and a missing file named like images."""
    (tmp_path / "folder.png").mkdir()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path, needle in ((tmp_path / "folder.png", "not a regular file"), (fifo, "not a regular file"),
                         (tmp_path / "missing.png", "cannot read file")):
        done, r = _returns_within(lambda p=path: decode_image(p), 10)
        assert done, f"decode_image({path}) blocked"
        assert isinstance(r, ImageError), r
        assert _one_line(str(r)).startswith(f"{path}: ") and needle in str(r)


def test_file_name_with_newline_still_gives_one_line(tmp_path):
    p = tmp_path / "two\nlines.png"
    p.write_bytes(b"not a picture")
    with pytest.raises(ImageError) as e:
        decode_image(p)
    assert _one_line(str(e.value)).startswith(str(tmp_path / "two\\nlines.png"))


# --- 1. the command line: score ------------------------------------------------------------------

@pytest.fixture(scope="module")
def score_ws(tmp_path_factory) -> Path:
    """A workspace with run 'r': an (untrained) default model for 32 px tiles, saved as training saves it. Its score
    is the distance between the two tiles' embeddings, so an identical pair scores the floor (≈ 3·10⁻⁴) whatever
    the weights: below the threshold, the same place."""
    from siamese_core.core.config import ModelConfig, RunConfig
    from siamese_core.learn.model import build_model
    from siamese_core.runs.run import Run
    ws = tmp_path_factory.mktemp("score_ws")
    run = ws / "runs" / "r"
    run.mkdir(parents=True)
    cfg = RunConfig(dataset="none", model=ModelConfig(preset="default", size=32))
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    build_model(cfg.model).save(run / "model.keras")
    Run(run).save_threshold(0.5, "test")
    Run(run).write_status("finished")
    return ws


@pytest.fixture
def cached_scorer(score_ws, monkeypatch):
    """``Scorer.from_run`` loads the model once for the whole table (the CLI path is otherwise unchanged)."""
    from siamese_core.judge.inference import Scorer
    scorer = Scorer.from_run("r", score_ws)
    monkeypatch.setattr(Scorer, "from_run", classmethod(lambda cls, run_id, workspace=None: scorer))
    return scorer


@pytest.fixture(scope="module")
def good_png(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("good") / "good.png"
    p.write_bytes(encode_png(synthetic_tile(0, 48)))
    return p


def test_cli_score_refuses_every_bad_file_with_one_error_line(score_ws, cached_scorer, bad_dir, good_png, capsys):
    for name, (_, needle) in sorted(BAD.items()):
        for a, b in ((good_png, bad_dir / name), (bad_dir / name, good_png)):
            code = cli("--workspace", score_ws, "score", "--run", "r", a, b)
            out = capsys.readouterr()
            lines = [ln for ln in out.err.splitlines() if ln.strip()]
            assert code == 2, (name, out)
            assert len(lines) == 1 and lines[0].startswith(f"error: {bad_dir / name}: "), (name, out.err)
            assert re.search(needle, lines[0]) and out.out == "", (name, out)


@pytest.mark.slow
def test_cli_score_in_real_processes(score_ws, bad_dir, good_png, tmp_path):
    """Two real ``python -m siamese_core score`` processes, side by side.

    One pair with a bad file: exit 2 and exactly one ``error:`` line on stderr (nothing from TensorFlow's
    start-up or PIL's logger). ``--pairs`` over a CSV full of problems: the valid rows are scored, each
    bad row is named with its reason on stderr and in the ``error`` column, no traceback."""
    d = tmp_path / "tiles"
    d.mkdir()
    (d / "café.png").write_bytes(good_png.read_bytes())
    (d / "b, with comma.png").write_bytes(good_png.read_bytes())
    for name in BAD:
        (d / name).write_bytes((bad_dir / name).read_bytes())
    lines = ["image_a,image_b,note", f"{good_png},\"b, with comma.png\",quoted comma", "",
             "café.png,café.png,latin-1 name", "café.png,gone.png,missing file", ",café.png,empty cell"]
    lines += [f"café.png,{name},{name}" for name in sorted(BAD)]
    inp = d / "pairs.csv"  # relative names are relative to the CSV
    inp.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))  # a Windows spreadsheet export
    out = tmp_path / "out.csv"
    base = [sys.executable, "-m", "siamese_core", "--workspace", str(score_ws), "score", "--run", "r"]
    procs = [subprocess.Popen(base + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=ENV) for args in ([str(good_png), str(bad_dir / "garbage.tif")],
                                                    ["--pairs", str(inp), "--out", str(out)])]
    (one_out, one_err), (out_text, err_text) = (p.communicate(timeout=300) for p in procs)
    assert procs[0].returncode == 2 and one_out == ""
    assert one_err.splitlines() == [f"error: {bad_dir / 'garbage.tif'}: cannot open as a raster (garbage.tif: "
                                    f"TIFFReadDirectory:Failed to read directory at offset 8); the file is corrupt "
                                    f"or not a format GDAL reads: check it with gdalinfo, or export it again as "
                                    f"GeoTIFF"], one_err
    r = subprocess.CompletedProcess(procs[1].args, procs[1].returncode, out_text, err_text)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    n_bad = 2 + len(BAD)
    assert f"scored 2 pair(s), {n_bad} failed" in r.stdout
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [row["note"] for row in rows][:5] == ["quoted comma", "latin-1 name", "missing file", "empty cell",
                                                   sorted(BAD)[0]]
    assert all(row["score"] and row["error"] == "" for row in rows[:2])
    assert "gone.png" in rows[2]["error"] and "empty" in rows[3]["error"]
    err_lines = [ln for ln in re.split(r"[\r\n]", r.stderr) if ln.startswith("line ")]
    assert len(err_lines) == n_bad, r.stderr
    others = [ln for ln in re.split(r"[\r\n]", r.stderr) if ln.strip() and not ln.startswith(("line ", "score"))]
    assert others == [], others  # nothing else: no library log lines, no warnings (only the progress bar)
    for row in rows[4:]:
        name, needle = row["note"], BAD[row["note"]][1]
        assert row["score"] == "" and row["error"].startswith(f"{name}: ") and re.search(needle, row["error"])
        assert any(ln.endswith(row["error"]) for ln in err_lines), name


# --- 1. the command line: prepare --source folder -------------------------------------------------

def test_prepare_folder_skips_bad_files_and_imports_the_rest(ws, bad_dir, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    for i in range(3):
        (src / f"tile{i}.png").write_bytes(encode_png(synthetic_tile(i, 40)))
    good = {n for n in GOOD if Path(n).suffix in IMAGE_EXTENSIONS}  # .gif is not imported from folders
    bad = {n for n in BAD if Path(n).suffix in IMAGE_EXTENSIONS}
    for name in good:
        (src / "nested" / name).write_bytes(GOOD[name])
    for name in bad | (set(BAD) - bad):
        (src / "nested" / name).write_bytes((bad_dir / name).read_bytes())
    # names that are not UTF-8 (Latin-1 bytes from an old archive): one good, one bad
    root = os.fsencode(src / "nested")
    Path(os.fsdecode(root + b"/caf\xe9.png")).write_bytes(encode_png(synthetic_tile(9, 40)))
    Path(os.fsdecode(root + b"/d\xe9j\xe0.png")).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert cli("--workspace", ws, "prepare", "--source", "folder", "--path", src, "--name", "mixed",
               "--size", 32, "--variants", 1) == 0
    out = capsys.readouterr()
    n_good, n_bad = 3 + len(good) + 1, len(bad) + 1
    assert f"{2 * n_good} images from {n_good} tiles" in out.out and f"{n_bad} skipped" in out.out, out
    skipped_lines = [ln for ln in out.err.splitlines() if ln.startswith("skipped: ")]
    assert len(skipped_lines) == min(n_bad, 20)
    from siamese_core.data.store import open_dataset
    ds = open_dataset("mixed", ws)
    skipped = {Path(s["file"]).name: s["reason"] for s in ds.skipped()}
    assert set(skipped) == bad | {"d\\xe9j\\xe0.png"}
    for name in bad:
        assert re.search(BAD[name][1], skipped[name]) and "\n" not in skipped[name], (name, skipped[name])
    tile_ids = set(ds.manifest["tile_id"])
    assert {f"nested/{n}" for n in good} | {"nested/caf\\xe9.png"} <= tile_ids
    assert ds.images.shape == (2 * n_good, 32, 32, 3)


def test_prepare_folder_does_not_hang_on_a_fifo(ws, tmp_path):
    from siamese_core.core.config import DataConfig
    from siamese_core.data.store import build_dataset
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(encode_png(synthetic_tile(1, 40)))
    os.mkfifo(src / "b.png")
    skipped = []
    done, r = _returns_within(lambda: build_dataset(DataConfig(source="folder", path=str(src), size=32), "f", ws,
                                                    on_skip=lambda f, why: skipped.append(why)), 20)
    assert done, "prepare blocked on a FIFO"
    assert not isinstance(r, BaseException), r
    assert len(r) == 3 and len(skipped) == 1 and "b.png: not a regular file" in skipped[0]


# --- 2. decompression bombs and huge images: bounded memory ----------------------------------------

# Peak memory is VmHWM (the high-water mark of this process's own address space). Not ru_maxrss: Linux
# carries the *parent's* peak over fork+exec into the child's ru_maxrss, so under pytest (with TensorFlow
# loaded, ~1 GB) every measurement would read as "no growth".
MEASURE = r"""
import json, sys
from siamese_core.core.errors import SiameseError
from siamese_core.data.images import load_tile

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

before = hwm_mb()
try:
    out = {"shape": list(load_tile(sys.argv[1], int(sys.argv[2])).shape)}
except SiameseError as e:
    out = {"error": str(e)}
out["growth_mb"] = hwm_mb() - before
print(json.dumps(out))
"""

MAKE_HUGE = r"""
import sys
import numpy as np
from PIL import Image
small = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
small.resize((12000, 12000), Image.NEAREST).save(sys.argv[1], quality=80)          # 144 MP baseline
small.resize((7000, 7000), Image.NEAREST).save(sys.argv[2], quality=80, progressive=True)  # 49 MP progressive
"""

MEMORY_BOUND_MB = 100


def _peak_growth(paths_and_sizes) -> list[dict]:
    """Peak-RSS growth (MB) of ``load_tile(path, size)``, each in a fresh process, run side by side."""
    procs = [subprocess.Popen([sys.executable, "-c", MEASURE, str(p), str(s)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV) for p, s in paths_and_sizes]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.fixture(scope="module")
def huge_jpegs(tmp_path_factory):
    d = tmp_path_factory.mktemp("huge")
    base, prog = d / "huge_12000.jpg", d / "huge_7000_progressive.jpg"
    subprocess.run([sys.executable, "-c", MAKE_HUGE, str(base), str(prog)], check=True, timeout=120)
    return base, prog


@pytest.mark.slow
def test_bombs_are_refused_without_allocating(bad_dir):
    names = ["bomb.png", "bomb.jpg", "bomb.gif", "bomb.bmp", "bomb.tif", "big.png"]
    for name, res in zip(names, _peak_growth([(bad_dir / n, 128) for n in names])):
        assert "error" in res and re.search(BAD[name][1], res["error"]), (name, res)
        assert res["growth_mb"] < MEMORY_BOUND_MB, (name, res)


@pytest.mark.slow
def test_largest_accepted_image_costs_about_six_bytes_per_pixel(tmp_path):
    """An image just under MAX_PIXELS (6300×6300 ≈ 39.7 MP) is decoded at full size; the pixels are held
    at most twice (PIL's 4-byte RGBX + the 3-byte array), not once more for an EXIF 'copy'."""
    p = tmp_path / "large.png"
    p.write_bytes(png_declaring(6300, 6300))  # the missing rows decode as black: a tiny file
    (res,) = _peak_growth([(p, 128)])
    assert res.get("shape") == [128, 128, 3], res
    assert res["growth_mb"] < 8 * 6300 * 6300 / 2 ** 20, res  # < 8 bytes per pixel (≈ 300 MB)


@pytest.mark.slow
def test_huge_jpeg_is_shrunk_while_decoding_with_bounded_memory(huge_jpegs):
    """A valid 12000×12000 JPEG (144 MP: over MAX_PIXELS and over PIL's bomb warning) decodes through
    JPEG draft mode at 1/8 scale; a 49 MP *progressive* JPEG cannot be shrunk while decoding (libjpeg
    keeps every coefficient), so it is refused instead of costing ~150 MB."""
    base, prog = huge_jpegs
    r_base, r_prog, r_full = _peak_growth([(base, 128), (prog, 128), (base, 1024)])
    assert r_base.get("shape") == [128, 128, 3], r_base
    assert r_base["growth_mb"] < MEMORY_BOUND_MB, r_base
    assert r_full.get("shape") == [1024, 1024, 3], r_full  # 1/8 scale is 1500 px ≥ 1024
    assert r_full["growth_mb"] < MEMORY_BOUND_MB, r_full
    assert "progressive JPEG of 7000x7000 px" in r_prog.get("error", ""), r_prog
    assert r_prog["growth_mb"] < MEMORY_BOUND_MB, r_prog
    # without a target size (as for pix2pix halves) nothing shrinks it: refused by the pixel limit
    with pytest.raises(ImageError, match=r"12000x12000 px \(144 MP\), over the 40 MP limit"):
        decode_image(base)
    assert MAX_PIXELS == 40_000_000


# --- 3. pairs CSV ------------------------------------------------------------------------------

CSV_CASES = {
    "bom.csv": ("\ufeffimage_a,image_b\na.png,b.png\n".encode("utf-8"), [("a.png", "b.png")]),
    "blank_lines.csv": (b"\n \nimage_a,image_b\n\n  \na.png,b.png\n\n", [("a.png", "b.png")]),
    "quoted.csv": (b'image_a,image_b,note\n"a, 1.png","b ""x"".png","two\nlines"\n', [("a, 1.png", 'b "x".png')]),
    "latin1.csv": ("image_a,image_b\ncafé.png,déjà vu.png\n".encode("latin-1"), [("café.png", "déjà vu.png")]),
    "cp1252.csv": ("image_a,image_b\nwait\u2026.png,b.png\n".encode("cp1252"), [("wait\u2026.png", "b.png")]),
    "utf16.csv": ("image_a,image_b\na.png,b.png\n".encode("utf-16"), [("a.png", "b.png")]),
    "crlf_and_cr.csv": (b"image_a,image_b\r\na.png,b.png\rc.png,d.png\r\n", [("a.png", "b.png"), ("c.png", "d.png")]),
    "short_and_long_rows.csv": (b"image_a,image_b,x\na.png\nc.png,d.png,1,extra\n", [("a.png", ""), ("c.png", "d.png")]),
    "nul_bytes.csv": (b"image_a,image_b\na.png\0,b.png\n", [("a.png", "b.png")]),
    "header_only.csv": (b" image_a , image_b \n", []),
}


@pytest.mark.parametrize("name", sorted(CSV_CASES))
def test_read_pairs_csv_variants(tmp_path, name):
    from siamese_core.data.pairs_csv import read_pairs_csv
    data, expected = CSV_CASES[name]
    p = tmp_path / name
    p.write_bytes(data)
    rows, cols, _ = read_pairs_csv(p)
    assert cols[:2] == ["image_a", "image_b"]
    assert [(r["image_a"], r["image_b"]) for r in rows] == expected


@pytest.mark.parametrize("data, needle", [
    (b"a,b\n1.png,2.png\n", r"missing column\(s\) \['image_a', 'image_b'\].*found \['a', 'b'\]"),
    (b"image_a;image_b\n1.png;2.png\n", r"missing column"),
    (b"image_a,img_b\n1.png,2.png\n", r"missing column\(s\) \['image_b'\]"),
    (b"", r"missing column.*no header"),
    (b"\n\n", r"missing column.*no header"),
    (b"image_a,image_b\n" + b"x" * 200_000 + b",b.png\n", r"not a readable CSV \(line 2"),
])
def test_read_pairs_csv_refuses_with_one_line(tmp_path, data, needle):
    from siamese_core.data.pairs_csv import read_pairs_csv
    p = tmp_path / "pairs.csv"
    p.write_bytes(data)
    with pytest.raises(SiameseError) as e:
        read_pairs_csv(p)
    assert _one_line(str(e.value)).startswith(f"{p}: ") and re.search(needle, str(e.value)), str(e.value)
    with pytest.raises(SiameseError, match="cannot read CSV"):
        read_pairs_csv(tmp_path / "nope.csv")


def test_cli_score_pairs_missing_columns_is_one_line(score_ws, cached_scorer, tmp_path, capsys):
    p = tmp_path / "pairs.csv"
    p.write_text("left,right\na.png,b.png\n")
    out = tmp_path / "out.csv"
    assert cli("--workspace", score_ws, "score", "--run", "r", "--pairs", p, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {p}: missing column(s)"), err
    assert not out.exists()


def test_score_csv_scores_valid_rows_and_explains_bad_ones(cached_scorer, good_png, tmp_path):
    from siamese_core.judge.inference import score_csv
    (tmp_path / "déjà.png").write_bytes(good_png.read_bytes())
    (tmp_path / "text.png").write_text("hello")
    inp = tmp_path / "in.csv"
    inp.write_bytes("image_a,image_b\n\ndéjà.png,déjà.png\ndéjà.png,nope.png\ntext.png,déjà.png\n"
                    .encode("latin-1"))
    res = score_csv(cached_scorer, inp, tmp_path / "out.csv")
    assert res["scored"] == 1 and len(res["failed"]) == 2
    rows = list(csv.DictReader((tmp_path / "out.csv").open(encoding="utf-8")))
    assert rows[0]["image_a"] == "déjà.png" and rows[0]["error"] == ""
    # the same file twice: the learned distance is its floor and the pair is judged the same place
    assert float(rows[0]["distance"]) < 1e-3 and float(rows[0]["score"]) <= res["threshold"], rows[0]
    assert rows[0]["same_place"] == "true", rows[0]
    assert rows[1]["error"].startswith("nope.png: cannot read file") and rows[1]["score"] == ""
    assert rows[2]["error"].startswith("text.png: not an image")
    assert [why for _, why in res["failed"]] == [rows[1]["error"], rows[2]["error"]]
    assert [n for n, _ in res["failed"]] == [4, 5]  # the input's own line numbers (line 2 is blank)


# --- 4. sources that are wrong as a whole: clear message, nothing written ---------------------------

def _parquet(path: Path, table: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(table), path)
    return path


def _nothing_written(ws: Path) -> None:
    d = ws / "datasets"
    assert not d.exists() or list(d.iterdir()) == [], list(d.iterdir())


@pytest.mark.parametrize("kind", ["other_schema", "wrong_column", "not_parquet", "no_images", "bad_cells"])
def test_wrong_source_gives_clear_message_and_writes_nothing(ws, tmp_path, kind, capsys):
    if kind == "other_schema":
        src = _parquet(tmp_path / "x.parquet", {"id": [1, 2], "caption": ["a", "b"]})
        args, needle = ("--source", "hf-parquet", "--path", src), r"x.parquet: no image column.*\['id', 'caption'\]"
    elif kind == "wrong_column":
        src = _parquet(tmp_path / "x.parquet", {"imageA": [{"bytes": b"x", "path": "p"}], "n": [1]})
        args, needle = ("--source", "hf-parquet", "--path", src, "--column", "imageB"), "no column 'imageB'"
    elif kind == "not_parquet":
        src = tmp_path / "x.parquet"
        src.write_text("id,caption\n1,a\n")
        args, needle = ("--source", "hf-parquet", "--path", src), "not a readable parquet file"
    elif kind == "no_images":
        src = tmp_path / "empty"
        src.mkdir()
        (src / "readme.txt").write_text("no tiles here")
        (src / "sub").mkdir()
        args, needle = ("--source", "folder", "--path", src), "no images found"
    else:
        src = _parquet(tmp_path / "x.parquet", {"imageA": [{"bytes": b"junk", "path": "p"}, {"bytes": b"", "path": "q"}]})
        args, needle = ("--source", "hf-parquet", "--path", src), r"no readable tiles .*2 file\(s\) skipped"
    assert cli("--workspace", ws, "prepare", "--name", "d", "--size", 32, *args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and re.search(needle, err[0]), err
    _nothing_written(ws)


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "x..y", "/abs", "", "a" * 65, "tab\tname"])
def test_bad_dataset_names_write_nothing(ws, name, capsys):
    assert cli("--workspace", ws, "prepare", "--name", name, "--limit", 12, "--size", 32) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: invalid dataset name"), err
    assert not ws.exists() or list(ws.rglob("*")) == []
    assert not (ws.parent / "evil").exists()


# --- 6. atomic writes -----------------------------------------------------------------------------

def _snapshot(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_crash_while_overwriting_a_dataset_keeps_the_old_one(ws, monkeypatch):
    from siamese_core.core.config import DataConfig
    from siamese_core.data import augment, store
    store.build_dataset(DataConfig(limit=12, size=32), "d", ws)
    before = _snapshot(ws / "datasets" / "d")
    calls = {"n": 0}
    real = augment.make_variant

    def crash_midway(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("power cut")
        return real(*a, **k)
    monkeypatch.setattr(augment, "make_variant", crash_midway)
    with pytest.raises(RuntimeError, match="power cut"):
        store.build_dataset(DataConfig(limit=12, size=32, seed=5), "d", ws, overwrite=True)
    monkeypatch.undo()

    def half_json(obj, f, **kw):  # writes half the document, then the disk 'fills up'
        text = json.dumps(obj, **kw)
        f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(json, "dump", half_json)
    with pytest.raises(DatasetError, match="No space left on device; nothing was saved"):
        store.build_dataset(DataConfig(limit=12, size=32, seed=5), "d", ws, overwrite=True)
    monkeypatch.undo()
    assert _snapshot(ws / "datasets" / "d") == before
    assert sorted(p.name for p in (ws / "datasets").iterdir()) == ["d"]  # no temporary leftovers
    assert len(store.open_dataset("d", ws)) == 36


@pytest.mark.parametrize("target", ["status", "threshold", "config"])
@pytest.mark.parametrize("failure", ["json.dump", "os.replace", "fsync"])
def test_crash_while_writing_run_json_keeps_the_previous_file(tmp_path, monkeypatch, target, failure):
    from siamese_core.data import store
    from siamese_core.runs.run import Run
    run = tmp_path / "run"
    run.mkdir()
    Run(run).write_status("running", pid=123, epoch=3)
    Run(run).save_threshold(0.25, "calibrated")
    store.write_json_atomic(run / "config.json", {"dataset": "d"})
    before = _snapshot(run)
    if failure == "json.dump":
        def boom(obj, f, **kw):
            f.write('{"status": "fini')
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(json, "dump", boom)
    elif failure == "os.replace":
        monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    else:
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        if target == "status":
            Run(run).write_status("finished", ended="now")
        elif target == "threshold":
            Run(run).save_threshold(0.9, "user")
        else:
            store.write_json_atomic(run / "config.json", {"dataset": "other"})
    monkeypatch.undo()
    assert _snapshot(run) == before  # old content intact, no temporary file left behind
    assert Run(run).status()["epoch"] == 3 and Run(run).threshold() == 0.25


def test_unwritable_workspace_is_one_line_and_leaves_nothing(tmp_path, capsys):
    """As root chmod does not stop writes, so the workspace lies under a regular *file*."""
    from siamese_core.core.config import DataConfig
    from siamese_core.data.store import build_dataset
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    ws = blocker / "ws"
    with pytest.raises(DatasetError) as e:
        build_dataset(DataConfig(limit=12, size=32), "d", ws)
    assert _one_line(str(e.value)).startswith(f"cannot write to workspace {ws}/datasets: Not a directory")
    for args, needle in ((("prepare", "--name", "d", "--limit", 12, "--size", 32), "cannot write to workspace"),
                         (("train", "--dataset", "d", "--epochs", 1), "cannot write to workspace")):
        assert cli("--workspace", ws, *args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert blocker.read_text() == "I am a file" and sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]
