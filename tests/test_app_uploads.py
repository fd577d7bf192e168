"""Uploaded zips of tiles (siamese_core.data.uploads): unsafe archives are refused with one line, and a
good one becomes a ``folder`` dataset whose records name the zip, never the temporary folder."""

from __future__ import annotations

import io
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from siamese_core.core.errors import SiameseError  # noqa: E402
from siamese_core.data.images import encode_png  # noqa: E402
from siamese_core.data.uploads import UploadError, build_from_zip, extract_zip  # noqa: E402


def _png(seed: int, size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _zip(members: dict, symlinks: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buf.getvalue()


def test_extracts_images_in_subfolders_and_skips_the_rest(tmp_path):
    data = _zip({"a.png": _png(0), "sub/b.png": _png(1), "readme.txt": b"hi", "__MACOSX/._a.png": b"x",
                 ".hidden.png": _png(2)}, symlinks={"link.png": "/etc/passwd"})
    res = extract_zip(data, tmp_path / "out")
    assert res.files == 2
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()) \
        == ["a.png", "sub/b.png"]
    reasons = dict(res.skipped)
    assert "symbolic link" in reasons["link.png"] and "not an image" in reasons["readme.txt"]
    assert not (tmp_path / "out" / "link.png").exists()


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/abs/evil.png", "..\\evil.png", "C:/evil.png"])
def test_refuses_paths_that_escape(tmp_path, name):
    data = _zip({"ok.png": _png(0), name: _png(1)})
    with pytest.raises(UploadError, match="unsafe path"):
        extract_zip(data, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists()


def test_refuses_nested_archives_by_name_and_by_content(tmp_path):
    inner = _zip({"x.png": _png(0)})
    with pytest.raises(UploadError, match="nested archive"):
        extract_zip(_zip({"a.png": _png(0), "more.zip": inner}), tmp_path / "o1")
    with pytest.raises(UploadError, match="zip archive; nested"):
        extract_zip(_zip({"a.png": _png(0), "disguised.png": inner}), tmp_path / "o2")


def test_caps_member_count_and_size_and_says_the_limits(tmp_path):
    data = _zip({f"t{i}.png": _png(i) for i in range(5)})
    with pytest.raises(UploadError, match=r"at most 3 files"):
        extract_zip(data, tmp_path / "o1", max_members=3)
    with pytest.raises(UploadError, match=r"uncompressed"):
        extract_zip(data, tmp_path / "o2", max_total_bytes=1000)
    big = _zip({"zeros.png": b"\0" * 5_000_000})  # compresses to almost nothing
    with pytest.raises(UploadError, match="GB"):
        extract_zip(big, tmp_path / "o3", max_total_bytes=1_000_000)


@pytest.mark.parametrize("data,match", [(b"not a zip", "not a zip"), (b"", "not a zip"),
                                        (_zip({"a.txt": b"x"}), "no image files")])
def test_bad_archives_are_one_line_errors(tmp_path, data, match):
    with pytest.raises(SiameseError, match=match) as e:
        extract_zip(data, tmp_path / "o", name="tiles.zip")
    assert "\n" not in str(e.value) and str(e.value).startswith("tiles.zip")


def test_build_from_zip_records_the_zip_and_removes_the_temp_folder(tmp_path):
    ws = tmp_path / "ws"
    members = {f"tiles/t{i}.png": _png(i, 40) for i in range(6)}
    members["tiles/broken.png"] = b"\x89PNG\r\n\x1a\n garbage"
    skipped = []
    ds, res = build_from_zip(_zip(members), "z", ws, zip_name="my.zip", size=32, variants=1,
                             on_skip=lambda f, why: skipped.append((f, why)))
    assert len(ds) == 12 and ds.info["groups"] == 6
    assert ds.config.path == "upload:my.zip" and ds.config.source == "folder"
    assert skipped and all("my.zip:" in why and str(ws) not in why for _, why in skipped)
    assert "my.zip:" in (ds.path / "skipped.csv").read_text()
    assert list((ws / ".uploads").iterdir()) == []  # the temporary folder is gone
    assert set(ds.manifest["source"].str.split(":").str[0]) == {"folder"}
    with pytest.raises(SiameseError, match="already exists"):
        build_from_zip(_zip(members), "z", ws, zip_name="my.zip", size=32)


def test_build_from_zip_cleans_up_after_a_refused_archive(tmp_path):
    ws = tmp_path / "ws"
    with pytest.raises(UploadError):
        build_from_zip(_zip({"a.png": _png(0), "../x.png": _png(1)}), "z", ws)
    assert list((ws / ".uploads").iterdir()) == []
    assert not (ws / "datasets" / "z").exists()
