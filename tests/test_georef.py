"""Map coordinates out of ``score`` (siamese_core.judge.georef) on real GeoTIFFs: the issue's "done when" check (two
4-band 16-bit tiled GeoTIFFs with nodata, two dates of one place, B cropped elsewhere: the offset within 3 m of the
truth, and 30 m east when B's geotransform is shifted 30 m east), two CRSs (B reprojected first), no CRS (no
georef), the GeoJSON, and the pixel scale between the file, the array read and the keypoints."""

from __future__ import annotations

import json
import warnings

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from siamese_core.cli import main
from siamese_core.data.sources.synthetic import synthetic_tile
from siamese_core.judge.georef import footprints_geojson, offset_sentence

PX = 1.5                      # metres a pixel, UTM zone 33 N
X0, Y0 = 500000.0, 4100000.0
COL, ROW = 96, 160            # where B's crop starts in A's pixels


def _bands16(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float64)
    return np.stack([300 + img[..., 0] * 30, 300 + img[..., 1] * 30, 300 + img[..., 2] * 30,
                     2000 + img.mean(axis=2) * 10]).astype(np.uint16)


def _write(path, bands, crs, transform):
    count, h, w = bands.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=str(bands.dtype), crs=crs,
                       transform=transform, nodata=0, tiled=True, blockxsize=128, blockysize=128,
                       compress="deflate") as ds:
        ds.write(bands)
    return path


def make_pair(tmp_path, shift_east_m: float = 0.0, crs_b: str = "EPSG:32633"):
    """A: 400 px of a 512 px real-looking tile (a nodata corner); B: 320 px cropped at (COL, ROW) of the same
    tile on another date (darker, warmer), its geotransform shifted ``shift_east_m`` metres east."""
    base = synthetic_tile(7, 512, 0).astype(np.float64)
    a = _bands16(base[:400, :400])
    a[:, :24, :24] = 0
    b = _bands16(np.clip(base[ROW:ROW + 320, COL:COL + 320] * 0.8 + np.array([20, 5, -10]), 0, 255))
    pa = _write(tmp_path / "a.tif", a, "EPSG:32633", from_origin(X0, Y0, PX, PX))
    tb = from_origin(X0 + COL * PX + shift_east_m, Y0 - ROW * PX, PX, PX)
    if crs_b == "EPSG:32633":
        return pa, _write(tmp_path / "b.tif", b, crs_b, tb)
    t, w, h = calculate_default_transform("EPSG:32633", crs_b, 320, 320, *rasterio.transform.array_bounds(320, 320, tb))
    out = np.zeros((4, h, w), np.uint16)
    reproject(b, out, src_transform=tb, src_crs="EPSG:32633", dst_transform=t, dst_crs=crs_b, src_nodata=0,
              dst_nodata=0, resampling=Resampling.bilinear)
    return pa, _write(tmp_path / "b_wgs84.tif", out, crs_b, t)


def score_json(capsys, *args) -> dict:
    assert main(["score", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_done_when_offset_matches_the_truth(tmp_path, capsys):
    a, b = make_pair(tmp_path)
    d = score_json(capsys, a, b)
    assert d["verdict"] == "same" and d["same_place"]
    g = d["georef"]
    print("offset (truth 0 m):", g["offset_m"], g["sentence"])
    assert g["crs"] == "EPSG:32633" and not g["reprojected"]
    assert g["offset_m"] < 3.0 and g["sentence"].startswith("the imagery agrees with the georeferencing within")
    # the footprint by the imagery lies on B's true frame (within 3 m at every corner)
    truth = [[X0 + COL * PX, Y0 - ROW * PX], [X0 + (COL + 320) * PX, Y0 - ROW * PX],
             [X0 + (COL + 320) * PX, Y0 - (ROW + 320) * PX], [X0 + COL * PX, Y0 - (ROW + 320) * PX]]
    assert np.abs(np.array(g["footprint"][:4]) - truth).max() < 3.0
    assert np.allclose(g["metadata_footprint"][:4], truth) and g["footprint"][0] == g["footprint"][-1]
    # the pixel scale: the arrays matched were 320 px reads (A's file is 400 px), yet the polygon and the scale are
    # in the files' pixels: B covers A's pixels 96..400 x 160..400 at scale 1
    assert abs(d["scale"] - 1.0) < 0.02, d["scale"]
    poly = np.array(d["polygon"])
    assert abs(poly[:, 0].min() - COL) < 2 and abs(poly[:, 1].min() - ROW) < 2 and abs(poly.max() - 400) < 2


def test_done_when_shifted_geotransform_reads_30_m_east(tmp_path, capsys):
    a, b = make_pair(tmp_path, shift_east_m=30.0)
    out = tmp_path / "footprints.geojson"
    d = score_json(capsys, a, b, "--geojson", out)
    g = d["georef"]
    print("offset (truth 30 m east):", g["offset_m"], g["offset_east_m"], g["offset_north_m"], g["sentence"])
    assert d["verdict"] == "same" and abs(g["offset_m"] - 30.0) <= 3.0
    # the metadata puts B 30 m east of the imagery; the imagery puts B 30 m west of its metadata
    assert abs(g["offset_east_m"] + 30.0) <= 3.0 and abs(g["offset_north_m"]) <= 3.0
    assert "30 m east of the imagery" in g["sentence"] and "west of where its metadata puts it" in g["sentence"]
    gj = json.loads(out.read_text())
    assert gj["type"] == "FeatureCollection" and [f["properties"]["footprint"] for f in gj["features"]] == \
        ["imagery", "metadata"]
    assert all(f["properties"]["crs"] == "EPSG:32633" for f in gj["features"])


def test_two_crs_b_is_reprojected_into_a(tmp_path, capsys):
    a, b = make_pair(tmp_path, crs_b="EPSG:4326")
    g = score_json(capsys, a, b)["georef"]
    print("offset after reprojection (truth 0 m):", g["offset_m"])
    assert g["reprojected"] and g["crs"] == "EPSG:32633"
    assert g["offset_m"] < 3.0
    assert abs(g["metadata_footprint"][0][0] - (X0 + COL * PX)) < 1.0  # B's corner brought into A's CRS


def test_no_crs_no_georef(tmp_path, capsys):
    a, _ = make_pair(tmp_path)
    with rasterio.open(a) as ds:
        data = ds.read()
    plain = tmp_path / "plain.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # no CRS on purpose
        with rasterio.open(plain, "w", driver="GTiff", width=400, height=400, count=4, dtype="uint16") as ds:
            ds.write(data)
    d = score_json(capsys, a, plain)
    assert d["georef"] is None and d["verdict"]
    assert main(["score", str(a), str(plain), "--geojson", str(tmp_path / "x.geojson")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --geojson ") and "both images must be rasters with a CRS" in err, err


def test_sentences_and_geojson_without_a_match():
    assert offset_sentence(1.2, 0.5, 4.0) == "the imagery agrees with the georeferencing within 2 m"
    assert offset_sentence(0.0, -31.0, 4.0).startswith("B lies 31 m south of where its metadata puts it")
    assert "north-east" in offset_sentence(20.0, 20.0, 4.0)
    g = {"crs": "EPSG:32633", "footprint": None, "metadata_footprint": [[0, 0], [1, 0], [1, 1], [0, 0]]}
    assert [f["properties"]["footprint"] for f in footprints_geojson(g)["features"]] == ["metadata"]


def test_compare_page_shows_the_georeferencing(app_ws, tmp_path):
    """Two GeoTIFF uploads on the Compare page: the verdict, then a short georeferencing section (sentence, offset,
    CRS) from the library; plain PNG uploads show none (tests/test_app_compare_geometry.py)."""
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from test_app_compare_geometry import _run_of, ok, open_compare, widget
    a, b = make_pair(tmp_path, shift_east_m=30.0)
    at = open_compare(_run_of(app_ws))
    widget(at, "file_uploader", "cmp_upload_a").set_value(("a.tif", a.read_bytes(), "image/tiff"))
    widget(at, "file_uploader", "cmp_upload_b").set_value(("b.tif", b.read_bytes(), "image/tiff"))
    at.run()
    ok(at)
    assert "Georeferencing" in [h.value for h in at.subheader]
    assert any("30 m east of the imagery" in m.value for m in at.markdown), [m.value for m in at.markdown]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["CRS"] == "EPSG:32633" and abs(float(metrics["Offset"].split()[0]) - 30) <= 3, metrics
