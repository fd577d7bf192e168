"""Tile sources: folders of mixed formats, pix2pix A|B images, huggan/maps-style parquet, the hub."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from siamese_core.core.config import DataConfig
from siamese_core.core.errors import DatasetError, ImageError, SiameseError
from siamese_core.data.images import decode_image, load_tile
from siamese_core.data.sources import iter_tiles
from siamese_core.data.sources.synthetic import synthetic_tile
from siamese_core.data.store import build_dataset, list_datasets


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(seed=0, size=40):
    return Image.fromarray(synthetic_tile(seed, size, seed=1))


def test_modes_become_rgb():
    base = rgb()
    cases = {
        "L.png": _save(base.convert("L"), "PNG"),
        "RGBA.png": _save(base.convert("RGBA"), "PNG"),
        "P.png": _save(base.convert("P"), "PNG"),
        "LA.png": _save(base.convert("LA"), "PNG"),
        "1.png": _save(base.convert("1"), "PNG"),
        "CMYK.jpg": _save(base.convert("CMYK"), "JPEG"),
        "I16.png": _save(Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257)), "PNG"),
        "rgb.tif": _save(base, "TIFF"),
        "rgb.webp": _save(base, "WEBP"),
        "rgb.bmp": _save(base, "BMP"),
    }
    for name, data in cases.items():
        img = decode_image(data, name=name)
        assert img.dtype == np.uint8 and img.shape == (40, 40, 3), name
        assert img.std() > 5, name  # content survived the conversion
    # 16-bit is scaled, not clipped: the 16-bit grey image matches the 8-bit one
    g8 = decode_image(cases["L.png"])
    g16 = decode_image(cases["I16.png"])
    assert np.abs(g8.astype(int) - g16.astype(int)).max() <= 1


def test_exif_orientation_is_honoured():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = decode_image(_save(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (40, 20, 3)
    assert out[:20].mean() > 200 and out[20:].mean() < 50  # white is now on top


@pytest.mark.parametrize("data, needle", [
    (b"", "empty"),
    (b"just some text", "not an image"),
    (b"%PDF-1.4 fake", "not an image"),
])
def test_bad_bytes(data, needle):
    with pytest.raises(ImageError, match=needle):
        decode_image(data, name="up.png")


def test_truncated_and_tiny_and_elongated():
    full = _save(rgb(size=64), "JPEG")
    with pytest.raises(ImageError, match="up.jpg: image data is truncated"):
        decode_image(full[: len(full) // 2], name="up.jpg")
    with pytest.raises(ImageError, match="at least 8 px"):
        decode_image(_save(Image.new("RGB", (5, 40)), "PNG"), name="x")
    with pytest.raises(ImageError, match="too elongated"):
        decode_image(_save(Image.new("RGB", (2000, 20)), "PNG"), name="x")


def test_folder_recursive_skips_bad(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.png").write_bytes(_save(rgb(1), "PNG"))
    (tmp_path / "a" / "b" / "two.JPG").write_bytes(_save(rgb(2), "JPEG"))
    (tmp_path / "a" / "b" / "bad.png").write_bytes(b"nope")
    (tmp_path / "readme.txt").write_text("ignored")
    skipped = []
    tiles = list(iter_tiles(DataConfig(source="folder", path=str(tmp_path), size=32),
                            on_skip=lambda n, r: skipped.append(r)))
    assert [t[0] for t in tiles] == ["a/b/two.JPG", "a/one.png"]
    assert all(t[1].shape == (32, 32, 3) for t in tiles)
    assert len(skipped) == 1 and "bad.png" in skipped[0] and "not an image" in skipped[0]


def test_folder_without_images(tmp_path, ws):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images found"):
        build_dataset(DataConfig(source="folder", path=str(tmp_path)), "x", ws)
    assert list_datasets(ws) == []


def test_all_files_bad_leaves_no_dataset(tmp_path, ws):
    (tmp_path / "a.png").write_bytes(b"xx")
    with pytest.raises(DatasetError, match="no readable tiles"):
        build_dataset(DataConfig(source="folder", path=str(tmp_path)), "x", ws)
    assert list_datasets(ws) == []


def test_pix2pix_takes_left_half(tmp_path):
    left = np.zeros((60, 60, 3), np.uint8)
    left[..., 0] = 200
    right = np.zeros((60, 60, 3), np.uint8)
    right[..., 2] = 200
    Image.fromarray(np.concatenate([left, right], axis=1)).save(tmp_path / "1.jpg", quality=95)
    (tile_id, tile, prov), = iter_tiles(DataConfig(source="pix2pix", path=str(tmp_path), size=32))
    assert tile[..., 0].mean() > 150 and tile[..., 2].mean() < 30 and prov.startswith("pix2pix:")


def _maps_parquet(path, n=5, column="imageA", start=0):
    import pyarrow as pa
    import pyarrow.parquet as pq
    sat = [{"bytes": _save(rgb(start + i, 60), "JPEG"), "path": f"{start + i}.jpg"} for i in range(n)]
    mp = [{"bytes": _save(Image.new("RGB", (60, 60), "white"), "JPEG"), "path": None} for _ in range(n)]
    pq.write_table(pa.table({column: sat, "imageB": mp}), path, row_group_size=2)


def test_parquet_reads_image_a_in_batches(tmp_path, ws):
    d = tmp_path / "data"
    d.mkdir()
    _maps_parquet(d / "train-00000-of-00002.parquet", 5)
    _maps_parquet(d / "train-00001-of-00002.parquet", 4, start=5)
    ds = build_dataset(DataConfig(source="hf-parquet", path=str(tmp_path), size=32), "maps", ws)
    assert len(ds) == 27 and ds.info["groups"] == 9
    assert ds.images[0].std() > 5  # the satellite column, not the white map
    assert ds.manifest["source"][0].startswith("hf-parquet:train-00000-of-00002.parquet:imageA:0")


def test_parquet_column_choice_and_errors(tmp_path):
    p = tmp_path / "x.parquet"
    _maps_parquet(p, 2, column="sat")
    tiles = list(iter_tiles(DataConfig(source="hf-parquet", path=str(p), size=32, column="sat")))
    assert len(tiles) == 2
    with pytest.raises(DatasetError, match="no column 'nope'"):
        list(iter_tiles(DataConfig(source="hf-parquet", path=str(p), column="nope")))
    import pyarrow as pa
    import pyarrow.parquet as pq
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), other)
    with pytest.raises(DatasetError, match="no image column"):
        list(iter_tiles(DataConfig(source="hf-parquet", path=str(other))))
    notpq = tmp_path / "fake.parquet"
    notpq.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable parquet"):
        list(iter_tiles(DataConfig(source="hf-parquet", path=str(notpq))))


def test_hub_download_uses_local_snapshot(tmp_path, ws, monkeypatch):
    """The network is the one thing mocked: snapshot_download returns a folder of local parquet files."""
    import huggingface_hub
    snap = tmp_path / "snap" / "data"
    snap.mkdir(parents=True)
    _maps_parquet(snap / "train-00000-of-00004.parquet", 3)
    calls = {}

    def fake_snapshot_download(**kw):
        calls.update(kw)
        return str(tmp_path / "snap")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    ds = build_dataset(DataConfig(source="hf-hub", size=32), "hub", ws)
    assert len(ds) == 9
    assert calls["repo_id"] == "huggan/maps" and calls["repo_type"] == "dataset"


def test_hub_offline_message(ws, monkeypatch):
    import huggingface_hub

    def offline(**kw):
        raise ConnectionError("no network")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(SiameseError, match="could not download huggan/maps.*--source hf-parquet"):
        build_dataset(DataConfig(source="hf-hub", size=32), "hub", ws)
    assert list_datasets(ws) == []


def test_load_tile_is_the_training_preprocessing():
    img = synthetic_tile(3, 96, seed=2)
    data = _save(Image.fromarray(img), "PNG")
    t = load_tile(data, 48)
    assert t.shape == (48, 48, 3)
    # a non-square image is centre-cropped, not squashed
    wide = np.concatenate([np.zeros((96, 48, 3), np.uint8), img, np.zeros((96, 48, 3), np.uint8)], axis=1)
    assert np.array_equal(load_tile(_save(Image.fromarray(wide), "PNG"), 48), t)


def test_hub_download_reports_progress(tmp_path, monkeypatch):
    import huggingface_hub

    from siamese_core.data.sources.hf import download_hub
    seen = []

    def fake_snapshot_download(**kw):
        bar = kw["tqdm_class"](total=2, disable=True)
        bar.update(1)
        bar.update(1)
        return str(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert download_hub(progress=lambda d, t: seen.append((d, t))) == tmp_path
    assert seen == [(1, 2), (2, 2)]
