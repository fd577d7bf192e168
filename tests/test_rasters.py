"""Reading rasters (siamese_core.data.rasters) on real files written by rasterio: 16-bit many-band tiled GeoTIFFs with
nodata, a COG with overviews, no CRS, float32 with NaN, and the bad ones (corrupt, complex, a band that is not
there, an all-nodata window), each refused in one line naming the file and the fix."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from PIL import Image
from rasterio.transform import from_origin

from siamese_core.core.errors import ImageError
from siamese_core.data.images import decode_image, load_tile
from siamese_core.data.rasters import (BAND_PRESETS, is_raster, parse_bands, raster_info, read_raster,
                                       stretch_limits)
from siamese_core.data.sources.synthetic import synthetic_tile

PX = 1.5
ORIGIN = (500000.0, 4100000.0)


def write_tif(path, bands: np.ndarray, crs="EPSG:32633", nodata=None, transform=None, **extra):
    """Write (count, h, w) ``bands`` as a tiled deflate GeoTIFF."""
    count, h, w = bands.shape
    prof = dict(driver="GTiff", width=w, height=h, count=count, dtype=str(bands.dtype), tiled=True, blockxsize=128,
                blockysize=128, compress="deflate", **extra)
    if crs:
        prof.update(crs=crs, transform=transform or from_origin(*ORIGIN, PX, PX))
    if nodata is not None:
        prof["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # crs=None on purpose
        with rasterio.open(path, "w", **prof) as ds:
            ds.write(bands)
    return path


def four_band(size=256, index=3) -> np.ndarray:
    """A real-looking tile as 4 bands of 16-bit counts (B, G, R, NIR order is not assumed: 1,2,3 = R,G,B)."""
    img = synthetic_tile(index, size, 0).astype(np.uint16)
    return np.stack([500 + img[..., 0] * 30, 500 + img[..., 1] * 30, 500 + img[..., 2] * 30,
                     3000 + img.mean(axis=2).astype(np.uint16) * 5]).astype(np.uint16)


@pytest.fixture
def geotiff(tmp_path):
    a = four_band()
    a[:, :32, :32] = 0  # a nodata corner
    return write_tif(tmp_path / "scene16.tif", a, nodata=0)


def test_sixteen_bit_four_band_with_nodata(geotiff):
    info = raster_info(geotiff)
    assert (info.width, info.height, info.count, info.dtype) == (256, 256, 4, "uint16")
    assert info.crs == "EPSG:32633" and info.nodata == 0.0
    assert info.transform == (PX, 0.0, ORIGIN[0], 0.0, -PX, ORIGIN[1])
    assert is_raster(geotiff) and is_raster(geotiff.read_bytes())
    r = read_raster(geotiff, bands=(3, 2, 1))
    assert r.image.shape == (256, 256, 3) and r.image.dtype == np.uint8
    assert r.valid is not None and not r.valid[:32, :32].any() and r.valid[32:, 32:].all()
    assert r.image[:32, :32].max() == 0 and r.image[32:, 32:].std() > 20
    lo, hi = stretch_limits(geotiff)
    assert (lo >= 500).all() and (hi > lo).all()  # the nodata zeros are left out of the percentiles
    # band order: 3,2,1 swaps red and blue of 1,2,3
    rgb = read_raster(geotiff, bands=BAND_PRESETS["rgb"]).image
    assert np.array_equal(rgb[..., 0], r.image[..., 2])
    # an upload (bytes) reads the same
    assert np.array_equal(read_raster(geotiff.read_bytes(), bands=(3, 2, 1)).image, r.image)


def test_window_and_out_side_scale_the_transform(geotiff):
    r = read_raster(geotiff, window=(64, 32, 128, 128), out_side=64)
    assert r.image.shape == (64, 64, 3)
    a, b, c, d, e, f = r.transform  # the returned array's pixels: 2 file pixels each, from the window's corner
    assert (a, e) == (2 * PX, -2 * PX) and (c, f) == (ORIGIN[0] + 64 * PX, ORIGIN[1] - 32 * PX)
    full = read_raster(geotiff, window=(64, 32, 128, 128))
    assert full.image.shape == (128, 128, 3) and full.transform[0] == PX
    # decode_image (every caller's way in) reads a raster at the size asked for, never enlarged
    assert decode_image(geotiff, max_side=100).shape == (100, 100, 3)
    assert decode_image(geotiff, max_side=1000).shape == (256, 256, 3)
    assert load_tile(geotiff, 64, bands=(4,)).shape == (64, 64, 3)


def test_cog_read_with_out_side_uses_the_overview(tmp_path):
    # a checkerboard of 0 and 1000: its overviews (nearest) hold one of the two values, an average of the full
    # resolution holds 500; with the stretch fixed at 0..1000 the two read apart (0 or 255 vs 127)
    board = ((np.indices((512, 512)).sum(axis=0) % 2) * 1000).astype(np.uint16)[None]
    src = write_tif(tmp_path / "plain.tif", board)
    cog = tmp_path / "cog.tif"
    with rasterio.open(src) as ds:
        rasterio.shutil.copy(ds, cog, driver="COG", OVERVIEW_RESAMPLING="NEAREST", BLOCKSIZE=128)
    info = raster_info(cog)
    assert info.overviews and info.overviews[0] == 2, info
    limits = (np.array([0.0]), np.array([1000.0]))
    over = read_raster(cog, out_side=256, limits=limits).image
    assert over.shape == (256, 256, 3) and set(np.unique(over)) <= {0, 255}, np.unique(over)
    plain = read_raster(src, out_side=256, limits=limits).image  # no overview: the average of full resolution
    assert abs(int(np.median(plain)) - 127) <= 1


def test_no_crs_is_a_plain_image(tmp_path):
    path = write_tif(tmp_path / "nocrs.tif", four_band(), crs=None)
    info = raster_info(path)
    assert info.crs is None and info.transform is None
    r = read_raster(path)
    assert r.crs is None and r.transform is None and r.image.std() > 20


def test_float32_with_nan(tmp_path):
    f = four_band().astype(np.float32) / 10000
    f[:, 100:120, :] = np.nan
    path = write_tif(tmp_path / "reflectance.tif", f)
    r = read_raster(path)
    assert not r.valid[100:120].any() and r.valid[:100].all() and r.image[:100].std() > 20


def test_one_band_is_grey_and_presets():
    assert parse_bands("3,2,1") == (3, 2, 1) and parse_bands("RGB") == (1, 2, 3)
    assert parse_bands("sentinel2") == (4, 3, 2) and parse_bands(None) is None and parse_bands("7") == (7,)
    for bad in ("red", "1,2", "0,1,2"):
        with pytest.raises(ImageError, match=rf"--bands '{bad}'.*e\.g\. --bands 3,2,1"):
            parse_bands(bad)


def test_grey_raster_becomes_rgb(tmp_path):
    path = write_tif(tmp_path / "pan.tif", four_band()[:1])
    img = decode_image(path)
    assert img.shape == (256, 256, 3) and np.array_equal(img[..., 0], img[..., 2])


def test_bad_rasters_one_line_naming_file_and_fix(tmp_path, geotiff):
    with pytest.raises(ImageError) as e:
        read_raster(geotiff, bands=(5,))
    assert str(e.value) == (f"{geotiff}: band 5 requested, but the file has 4 band(s); choose 1 or 3 bands within "
                            f"1..4 (e.g. --bands 3,2,1)")
    with pytest.raises(ImageError, match=r"window \(0, 0, 32, 32\) has no finite pixel values outside nodata"):
        read_raster(geotiff, window=(0, 0, 32, 32))
    corrupt = tmp_path / "cut.tif"
    corrupt.write_bytes(geotiff.read_bytes()[:1500])
    for call in (lambda: read_raster(corrupt), lambda: decode_image(corrupt), lambda: load_tile(str(corrupt), 64)):
        with pytest.raises(ImageError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{corrupt}: ") and "\n" not in msg and "corrupt" in msg, msg
    cplx = write_tif(tmp_path / "sar.tif", (np.ones((1, 32, 32)) * (1 + 2j)).astype(np.complex64))
    with pytest.raises(ImageError, match=r"sar\.tif: pixel type complex64 \(complex, e\.g\. SAR\) is not supported"):
        decode_image(cplx)


def test_plain_tiffs_and_pngs_keep_the_pil_path(tmp_path):
    img = synthetic_tile(1, 64, 0)
    Image.fromarray(img).save(tmp_path / "plain.tif")
    Image.fromarray(img).save(tmp_path / "plain.png")
    assert not is_raster(tmp_path / "plain.tif") and not is_raster(tmp_path / "plain.png")
    assert np.array_equal(decode_image(tmp_path / "plain.tif"), img)


def test_missing_rasterio_names_the_extra(geotiff, monkeypatch):
    monkeypatch.setitem(sys.modules, "rasterio", None)  # as if not installed: `import rasterio` fails
    with pytest.raises(ImageError) as e:
        decode_image(geotiff)
    assert str(e.value) == (f"{geotiff}: reading this raster needs rasterio, which is not installed; "
                            f'pip install "siamese-tiles[geo]"')


def test_prepare_scene_window_by_window_keeps_bounds_and_crs(tmp_path, capsys):
    from siamese_core.cli import main
    from siamese_core.data.store import open_dataset
    scene = np.concatenate([four_band(256, 3), four_band(256, 5)], axis=2)[:, :, :448]  # 256 x 448 px
    scene[:, :, 384:] = 0  # a nodata strip: the windows over it keep their valid part
    path = write_tif(tmp_path / "scene.tif", scene, nodata=0)
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "prepare", "--source", "scene", "--path", str(path), "--window", "128",
                 "--stride", "64", "--name", "sc", "--size", "32", "--variants", "0", "--bands", "3,2,1"]) == 0
    cap = capsys.readouterr()
    # windows start at x = 0, 64, ..., 320 (6) and y = 0, 64, 128 (3); each keeps its bounds in the scene's CRS
    ds = open_dataset("sc", ws)
    m = ds.manifest
    assert len(m) == 18 and set(m.crs) == {"EPSG:32633"}, cap.err
    row = m[(m.x == 64) & (m.y == 128)].iloc[0]
    assert (row.left, row.top) == (ORIGIN[0] + 64 * PX, ORIGIN[1] - 128 * PX)
    assert (row.right, row.bottom) == (ORIGIN[0] + 192 * PX, ORIGIN[1] - 256 * PX)
    assert ds.images.shape == (18, 32, 32, 3)
    # one stretch for the whole scene: the same ground reads the same in two overlapping windows
    a, b = (ds.images[int(m[(m.x == x) & (m.y == 0)].index[0])] for x in (0, 64))
    assert np.abs(a[:, 16:].astype(int) - b[:, :16].astype(int)).mean() < 3


def test_prepare_scene_skips_nodata_windows_and_refuses_bad_bands(tmp_path, capsys):
    from siamese_core.cli import main
    scene = four_band(256, 3)
    scene[:, :, 128:] = 0
    path = write_tif(tmp_path / "half.tif", scene, nodata=0)
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "prepare", "--source", "scene", "--path", str(path), "--window", "128",
                 "--name", "h", "--size", "32", "--variants", "0"]) == 0
    cap = capsys.readouterr()
    assert "2 images from 2 windows" in cap.out and "2 skipped" in cap.out
    assert "skipped: half.tif@128,0: window (128, 0, 128, 128) has no finite pixel values outside nodata" in cap.err
    assert main(["--workspace", str(ws), "prepare", "--source", "scene", "--path", str(path), "--window", "128",
                 "--name", "h2", "--bands", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: {path}: band 5 requested, but the file has 4 band(s); choose 1 or 3 bands within 1..4 "
                   f"(e.g. --bands 3,2,1)"), err


def test_default_bands_follow_the_files_colour_marks(tmp_path):
    """No --bands: red, green and blue as the file marks them (colour interpretation, else band descriptions), 4,3,2
    for a 13-band Sentinel-2 stack, else 1,2,3."""
    from rasterio.enums import ColorInterp
    a = four_band()
    bgrn = a[[2, 1, 0, 3]]  # stored blue, green, red, NIR
    plain = read_raster(write_tif(tmp_path / "rgbn.tif", a)).image
    marked = write_tif(tmp_path / "bgrn.tif", bgrn)
    with rasterio.open(marked, "r+") as ds:
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    assert np.array_equal(read_raster(marked).image, plain)
    described = write_tif(tmp_path / "described.tif", bgrn)
    with rasterio.open(described, "r+") as ds:
        for i, d in enumerate(("B02", "B03", "B04", "B08"), 1):
            ds.set_band_description(i, d)
    assert np.array_equal(read_raster(described).image, plain)
    stack = np.zeros((13,) + a.shape[1:], np.uint16)
    stack[[3, 2, 1]] = a[:3]  # B4, B3, B2 hold red, green, blue; band 1 (coastal) stays flat
    assert np.array_equal(read_raster(write_tif(tmp_path / "s2.tif", stack)).image, plain)
    assert np.array_equal(read_raster(marked, bands=(1, 2, 3)).image, plain[..., ::-1])  # asked for: as asked


def test_score_pairs_reads_every_raster_with_the_bands_asked_for(tmp_path, capsys):
    """`score --pairs --bands 4,3,2`: each raster of the CSV read through those bands, exactly as `score A B --bands`
    reads the two; without --bands the unmarked files read as 1,2,3 (here NIR, blue, green) and score otherwise;
    a band a file lacks fails its row, naming the file; --engine ray --bands and --pairs --geojson are each one
    error line."""
    import csv
    import json
    from siamese_core.cli import main
    nbgr = [3, 2, 1, 0]  # stored NIR, blue, green, red: red, green, blue are bands 4, 3, 2
    a = write_tif(tmp_path / "a.tif", four_band(256, 3)[nbgr])
    b = write_tif(tmp_path / "b.tif", np.rot90(four_band(256, 3)[nbgr], 1, axes=(1, 2)).copy())
    c = write_tif(tmp_path / "c.tif", four_band(256, 8)[nbgr])
    write_tif(tmp_path / "grey.tif", four_band(256, 3)[:1])
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image_a,image_b\na.tif,b.tif\na.tif,c.tif\na.tif,grey.tif\n")
    ws = ["--workspace", str(tmp_path / "ws")]

    def scored(*extra):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*.csv')))}.csv"
        main([*ws, "score", "--pairs", str(pairs), "--out", str(out), *extra])
        return list(csv.DictReader(open(out)))

    asked = scored("--bands", "4,3,2")
    assert [r["verdict"] for r in asked[:2]] == ["same", "different"], asked
    assert asked[2]["score"] == "" and asked[2]["error"] == (  # the file as the CSV names it
        "grey.tif: band 4 requested, but the file has 1 band(s); choose 1 or 3 bands within 1..1 (e.g. --bands 1)")
    for row, other in zip(asked, (b, c)):
        capsys.readouterr()
        assert main([*ws, "score", str(a), str(other), "--bands", "4,3,2", "--json"]) == 0
        one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert abs(float(row["score"]) - one["score"]) < 1e-4 and float(row["distance"]) == pytest.approx(
            one["distance"], abs=1e-4)
    default = scored()
    assert [r["distance"] for r in default[:2]] != [r["distance"] for r in asked[:2]]
    capsys.readouterr()
    assert main([*ws, "score", "--pairs", str(pairs), "--out", str(tmp_path / "shards"), "--engine", "ray",
                 "--bands", "4,3,2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: --bands 4,3,2 applies to --engine local; on Ray each raster is read with its default bands")
    assert main([*ws, "score", "--pairs", str(pairs), "--out", str(tmp_path / "g.csv"), "--geojson",
                 str(tmp_path / "g.geojson")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --geojson applies to two images (score A.tif B.tif), not to --pairs")
    assert not (tmp_path / "g.csv").exists() and not (tmp_path / "g.geojson").exists()
