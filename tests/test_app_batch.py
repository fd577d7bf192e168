"""The Batch page with Streamlit's AppTest: a pairs CSV and a zip of tiles made here (synthetic tiles, a
rotated copy, a tile named by base name only, a missing tile, a non-image file, a broken PNG) are scored by
a tiny trained run; bad rows are listed with their line numbers while the others are scored; the verdict
filter changes what is shown; the download is byte for byte what ``score_csv`` (= ``score --pairs``)
writes for the same inputs; a CSV without image_a/image_b or a zip that is not one gives one error line.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from streamlit.runtime.media_file_manager import MediaFileManager  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from siamese_core.data.augment import rotate  # noqa: E402
from siamese_core.data.images import encode_png  # noqa: E402
from siamese_core.data.sources.synthetic import synthetic_tile  # noqa: E402
from apptools import ok, widget  # noqa: E402

APP = str(ROOT / "streamlit_app.py")
TIMEOUT = 180
RUN = "def1"

CSV_TEXT = (
    "image_a,image_b,label\n"        # line 1
    "a0.png,a0_rot.png,1\n"          # line 2: a tile and its rotated copy
    "a0.png,sub/b1.png,0\n"          # line 3: path inside the zip
    "b1.png,b2.png,0\n"              # line 4: b1.png only matches sub/b1.png by its base name
    "a0.png,missing.png,1\n"         # line 5: not in the zip
    "notes.txt,a0.png,0\n"           # line 6: not an image file
    "broken.png,b2.png,0\n"          # line 7: an image name, but not image bytes
    "sub/b1.png,a0_rot.png,0\n"      # line 8
)
SCORED_LINES = [2, 3, 4, 8]
BAD = {5: "missing.png", 6: "notes.txt", 7: "broken.png"}


def _members() -> dict[str, bytes]:
    t0 = synthetic_tile(0, 128)
    return {"a0.png": encode_png(t0), "a0_rot.png": encode_png(rotate(t0, 30)),
            "sub/b1.png": encode_png(synthetic_tile(1, 128)), "b2.png": encode_png(synthetic_tile(2, 128)),
            "notes.txt": b"these are not pixels\n", "broken.png": b"\x89PNG\r\n\x1a\nnot really a png"}


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def batch_ws(tiny_ws, tmp_path, monkeypatch) -> Path:
    """A private copy of the tiny workspace (dataset 'tiny', runs 'seed1' and 'def1')."""
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("train.lock"))
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    return ws


@pytest.fixture
def downloads(monkeypatch) -> list:
    """The bytes each download button hands to Streamlit's media file manager."""
    got = []
    real = MediaFileManager.add

    def add(self, path_or_data, mimetype, *args, **kwargs):
        if mimetype == "text/csv":
            got.append(path_or_data)
        return real(self, path_or_data, mimetype, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add", add)
    return got


def open_batch() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = RUN
    at.run()
    ok(at)
    at.switch_page("app_pages/batch.py").run()
    ok(at)
    return at


def upload_and_score(at: AppTest, csv_bytes: bytes, zip_bytes: bytes, csv_name="pairs.csv", zip_name="tiles.zip"):
    widget(at, "file_uploader", "batch_csv").set_value((csv_name, csv_bytes, "text/csv"))
    widget(at, "file_uploader", "batch_zip").set_value((zip_name, zip_bytes, "application/zip"))
    at.run()
    ok(at)
    widget(at, "button", "batch_go").click()
    at.run()
    ok(at)
    return at


def table_rows(at: AppTest):
    tables = [d for d in at.dataframe if d.key == "batch_table"]
    return tables[0].value if tables else None


def reference_csv(tmp_path: Path, ws: Path) -> str:
    """What `score --pairs` writes for the same CSV next to the same files (b1.png also at the root,
    where score_csv, which does not match by base name, looks for it)."""
    from siamese_core.judge.inference import Scorer, score_csv
    d = tmp_path / "ref"
    for name, data in _members().items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    shutil.copy(d / "sub" / "b1.png", d / "b1.png")
    (d / "pairs.csv").write_text(CSV_TEXT)
    score_csv(Scorer.from_run(RUN, ws), d / "pairs.csv", d / "out.csv")
    return (d / "out.csv").read_text(encoding="utf-8")


def _parse(text: str) -> tuple[list[str], list[dict]]:
    r = csv.DictReader(io.StringIO(text))
    rows = list(r)
    return r.fieldnames, rows


def test_batch_page_is_in_the_navigation(batch_ws):
    at = open_batch()
    assert any("Batch" in t.value for t in at.title)
    widget(at, "file_uploader", "batch_csv")
    widget(at, "file_uploader", "batch_zip")
    assert "Lower score = more alike" in "\n".join(m.value for m in [*at.markdown, *at.caption])
    assert not at.error, [e.value for e in at.error]


def test_batch_scores_good_rows_lists_bad_ones_filters_and_downloads(batch_ws, tmp_path, downloads, monkeypatch):
    # one worker: the keypoint step shares OpenCV objects (CLAHE, SIFT, ORB) between threads, and about one
    # call in 25 then finds different inliers for the same pair — a library problem, not the page's
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    at = upload_and_score(open_batch(), CSV_TEXT.encode(), _zip(_members()))
    assert not at.error, [e.value for e in at.error]

    # every row is in the table; the good ones have a score, the bad ones an error
    df = table_rows(at)
    assert df is not None and len(df) == 7
    assert sorted(df.loc[df.score.notna(), "line"].tolist()) == SCORED_LINES
    assert sorted(df.loc[df.score.isna(), "line"].tolist()) == sorted(BAD)

    # one line per problem, with its line number and what is wrong
    lines = [m.value for m in at.markdown if m.value.startswith("- line ")]
    assert len(lines) == len(BAD), lines
    for n, name in BAD.items():
        hit = [ln for ln in lines if ln.startswith(f"- line {n}:")]
        assert hit and name in hit[0], (n, lines)
    assert "not in tiles.zip" in next(ln for ln in lines if "missing.png" in ln)
    assert "not an image" in next(ln for ln in lines if "notes.txt" in ln)
    assert all(str(batch_ws) not in ln and "/tmp" not in ln for ln in lines)

    # the filter changes the visible count, without rescoring
    scored = at.session_state["batch_result"]
    widget(at, "radio", "batch_filter").set_value("errors")
    at.run()
    ok(at)
    assert len(table_rows(at)) == len(BAD)
    assert at.session_state["batch_result"] is scored
    widget(at, "radio", "batch_filter").set_value("same")
    at.run()
    ok(at)
    same = table_rows(at)
    assert same is None or len(same) < 7
    widget(at, "radio", "batch_filter").set_value("all")
    widget(at, "selectbox", "batch_sort").set_value("score ↑ (most alike first)")
    at.run()
    ok(at)
    shown = table_rows(at).score.tolist()
    assert shown[:4] == sorted(shown[:4]) and len(shown) == 7

    # picking a row shows its two tiles and its geometry sentence
    first_line2 = [i for i in widget(at, "selectbox", "batch_row").options if i.startswith("line 2 ")]
    assert first_line2
    widget(at, "selectbox", "batch_row").set_value(0)  # row 0 of the CSV = line 2
    at.run()
    ok(at)
    assert len(at.image) >= 2
    body = "\n".join(m.value for m in at.markdown)
    assert "**Keypoints:**" in body and ("matched at" in body or "no geometric match" in body)

    # the download is what score_csv writes for the same inputs
    assert downloads, "no CSV went to the download button"
    data = downloads[-1]
    got = data.decode("utf-8") if isinstance(data, bytes) else data
    assert got.encode("utf-8") == scored["csv"]
    ref = reference_csv(tmp_path, batch_ws)
    got_cols, got_rows = _parse(got)
    ref_cols, ref_rows = _parse(ref)
    assert got_cols == ref_cols
    assert got_cols == ["image_a", "image_b", "label", "score", "same_place", "verdict", "reason", "distance",
                        "inliers", "sift_inliers", "orb_inliers", "angle", "scale", "overlap", "polygon", "structure",
                        "geometry", "error"]
    assert len(got_rows) == len(ref_rows) == 7
    for g, r in zip(got_rows, ref_rows):
        assert {k: v for k, v in g.items() if k != "error"} == {k: v for k, v in r.items() if k != "error"}
        assert bool(g["error"]) == bool(r["error"])
    assert [r["score"] != "" for r in got_rows] == [True, True, True, False, False, False, True]


@pytest.mark.slow
def test_batch_zip_with_a_single_top_folder_matches_by_base_name(batch_ws):
    members = {f"export/{k}": v for k, v in _members().items() if k.endswith(".png") and k != "broken.png"}
    text = "image_a,image_b\na0.png,a0_rot.png\n/etc/passwd,a0.png\n../b2.png,sub/b1.png\n"
    at = upload_and_score(open_batch(), text.encode(), _zip(members))
    df = table_rows(at)
    assert df.loc[df.score.notna(), "line"].tolist() == [2, 4]  # ../b2.png is b2.png of the zip, nothing more
    lines = [m.value for m in at.markdown if m.value.startswith("- line ")]
    assert lines == ["- line 3: /etc/passwd: not in tiles.zip"], lines


@pytest.mark.parametrize("csv_bytes,zip_bytes,expect", [
    (b"left,right\na0.png,b2.png\n", None, "missing column"),
    (None, b"this is not a zip", "not a zip"),
])
def test_batch_bad_csv_or_zip_gives_one_error_line(batch_ws, csv_bytes, zip_bytes, expect):
    at = upload_and_score(open_batch(), csv_bytes or CSV_TEXT.encode(), zip_bytes or _zip(_members()))
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and expect in errors[0].lower(), errors
    assert "\n" not in errors[0] and str(batch_ws) not in errors[0] and "/tmp" not in errors[0]
    assert (("pairs.csv" in errors[0]) if csv_bytes else ("tiles.zip" in errors[0]))
    assert table_rows(at) is None
    assert "batch_result" not in at.session_state


@pytest.mark.slow
def test_batch_random_pairs_from_the_active_dataset(batch_ws):
    at = open_batch()
    widget(at, "number_input", "batch_n").set_value(6)
    widget(at, "button", "batch_random_go").click()
    at.run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    df = table_rows(at)
    assert len(df) == 6 and df.score.notna().all() and set(df.truth) <= {"same", "different"}
    assert any("agrees with the dataset's truth" in c.value for c in at.caption)


@pytest.mark.slow
def test_batch_leaves_no_temporary_files(batch_ws):
    upload_and_score(open_batch(), CSV_TEXT.encode(), _zip(_members()))
    left = list((batch_ws / ".uploads").glob("*")) if (batch_ws / ".uploads").exists() else []
    assert left == []


def test_batch_page_on_an_empty_workspace_explains_what_is_missing(tmp_path, monkeypatch):
    ws = tmp_path / "empty"
    (ws / "datasets").mkdir(parents=True)
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    ok(at)
    at.switch_page("app_pages/batch.py").run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    from siamese_core.runs.run import BUNDLED_DIR
    body = "\n".join(m.value for m in [*at.markdown, *at.info])
    if (BUNDLED_DIR / "model.keras").exists():  # the bundled model answers; there is no dataset to draw from
        assert "pretrained" in body and "no dataset yet" in body.lower()
        widget(at, "file_uploader", "batch_csv")
    else:
        assert "no trained run" in body.lower()
    assert list((ws / "datasets").iterdir()) == []
