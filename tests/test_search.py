"""Search an archive (siamese_core.scale.search, the index/search commands, the Search page) on a private copy of
the tiny workspace: a dataset row finds itself first, the saved index is reused until the model or the
dataset changes, the IVF kind answers too, the CLI prints JSON and one-line errors, and the page shows k hits.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import cli

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def search_base(tiny_ws, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("searchws") / "ws"
    shutil.copytree(tiny_ws, base, ignore=shutil.ignore_patterns("train.lock"))
    return base


@pytest.fixture
def sws(search_base, tmp_path) -> Path:
    """A private copy of the tiny workspace (tests change its datasets and indexes)."""
    ws = tmp_path / "ws"
    shutil.copytree(search_base, ws)
    return ws


@pytest.fixture(scope="module")
def scorer(search_base):
    from siamese_core.judge.inference import Scorer
    return Scorer.from_run("def1", search_base)


def test_a_dataset_row_finds_itself_first(sws, scorer):
    from siamese_core.scale import search as srch
    idx = srch.build_index(scorer, "tiny", sws)
    assert idx.status == "built" and idx.kind == "flat" and idx.meta["metric"] == "ip"
    assert idx.path == sws / "indexes" / "def1" / "tiny"
    for f in ("embeddings.npy", "index.faiss", "meta.json"):
        assert (idx.path / f).is_file()
    n = len(idx.dataset)
    assert idx.meta["count"] == n and np.load(idx.path / "embeddings.npy").shape == (n, idx.meta["dim"])
    for row in (0, 7, n - 1):
        hits = srch.search(idx, srch.dataset_row(idx, row), k=5, query_rows=[row])[0]
        assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert hits[0].row == row and hits[0].distance == pytest.approx(0.0, abs=1e-3)
        assert hits[0].same_group is True and hits[0].group == int(idx.groups[row])
        assert all(a.distance <= b.distance + 1e-6 for a, b in zip(hits, hits[1:]))
    # several queries at once, k larger than the dataset: every image, once
    many = srch.search(idx, idx.dataset.rows()[[1, 2]], k=n + 10)
    assert len(many) == 2 and sorted(h.row for h in many[0]) == list(range(n))
    # the geometric check: the row against itself is the same place
    checked = srch.search(idx, srch.dataset_row(idx, 4), k=3, query_rows=[4], check=True)[0]
    assert all(h.score is not None and h.evidence for h in checked)
    assert checked[0].row == 4 and checked[0].same_place is True


def test_index_is_reused_then_rebuilt_when_the_dataset_changes(sws, scorer):
    from siamese_core.scale import search as srch
    first = srch.build_index(scorer, "tiny", sws)
    meta = (first.path / "meta.json").read_text()
    stamp = (first.path / "index.faiss").stat().st_mtime_ns
    again = srch.build_index(scorer, "tiny", sws, progress=lambda d, t: pytest.fail("no rebuild expected"))
    assert again.status == "reused" and "reused" in again.reason
    assert (again.path / "meta.json").read_text() == meta
    assert (again.path / "index.faiss").stat().st_mtime_ns == stamp
    # the dataset's images change (same shape): its images.npy is rewritten
    p = sws / "datasets" / "tiny" / "images.npy"
    imgs = np.load(p)
    imgs[0] = 255 - imgs[0]
    time.sleep(0.01)
    np.save(p, imgs)
    seen = []
    rebuilt = srch.build_index(scorer, "tiny", sws, progress=lambda d, t: seen.append((d, t)))
    assert rebuilt.status == "rebuilt" and "dataset 'tiny' changed" in rebuilt.reason
    assert seen and seen[-1] == (len(imgs), len(imgs))
    assert json.loads((rebuilt.path / "meta.json").read_text())["images"]["mtime_ns"] == p.stat().st_mtime_ns
    assert not [q for q in (sws / "indexes" / "def1").iterdir() if q.name.startswith(".")]  # no temporary folders left


def test_ivf_index_beyond_the_exact_limit(sws, scorer):
    from siamese_core.scale import search as srch
    idx = srch.build_index(scorer, "tiny", sws, exact_max=10)
    assert idx.kind == "ivf" and idx.meta["nlist"] >= 1 and idx.meta["nprobe"] >= 1
    hits = srch.search(idx, srch.dataset_row(idx, 3), k=3, query_rows=[3])[0]
    assert hits[0].row == 3 and hits[0].distance == pytest.approx(0.0, abs=1e-3)
    assert srch.build_index(scorer, "tiny", sws).kind == "flat"  # back under the limit: exact again
    assert srch.ivf_params(1_000_000) == (4000, 16)


def test_errors_are_one_line(sws, scorer):
    from siamese_core.core.errors import SiameseError
    from siamese_core.scale import search as srch
    with pytest.raises(SiameseError, match="not found"):
        srch.build_index(scorer, "nope", sws)
    idx = srch.build_index(scorer, "tiny", sws)
    for bad in (0, -3):
        with pytest.raises(SiameseError, match="at least 1"):
            srch.search(idx, srch.dataset_row(idx, 0), k=bad)
    with pytest.raises(SiameseError, match="out of range"):
        srch.dataset_row(idx, len(idx.dataset))
    # an empty dataset
    empty = sws / "datasets" / "empty"
    shutil.copytree(sws / "datasets" / "tiny", empty)
    np.save(empty / "images.npy", np.zeros((0, 48, 48, 3), np.uint8))
    with pytest.raises(SiameseError, match="no images"):
        srch.build_index(scorer, "empty", sws)


def test_cli_index_and_search_json(sws, capsys):
    assert cli("--workspace", sws, "index", "--dataset", "tiny", "--run", "def1") == 0
    out = capsys.readouterr().out
    assert "built the index" in out and "indexes/def1/tiny" in out
    assert cli("--workspace", sws, "index", "--dataset", "tiny", "--run", "def1") == 0
    assert "reused" in capsys.readouterr().out
    assert cli("--workspace", sws, "search", "--dataset", "tiny", "--run", "def1", "--row", 6, "--k", 4,
               "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["run"] == "def1" and res["k"] == 4 and res["query"]["row"] == 6 and len(res["hits"]) == 4
    assert res["hits"][0]["row"] == 6 and res["hits"][0]["distance"] == pytest.approx(0.0, abs=1e-3)
    assert res["index"] == {"kind": "flat", "vectors": 72, "status": "reused"}
    # a query file with the check
    from siamese_core.data.images import encode_png
    from siamese_core.data.store import open_dataset
    png = sws / "q.png"
    png.write_bytes(encode_png(np.asarray(open_dataset("tiny", sws).images[9])))
    assert cli("--workspace", sws, "search", "--dataset", "tiny", "--run", "def1", "--image", png,
               "--k", 2, "--check", "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["hits"][0]["row"] == 9 and "score" in res["hits"][0] and "same_place" in res["hits"][0]
    # text output
    assert cli("--workspace", sws, "search", "--dataset", "tiny", "--run", "def1", "--row", 0) == 0
    out = capsys.readouterr().out
    assert "5 nearest of 72 images" in out and "row 0 " in out


@pytest.mark.parametrize("args, msg", [
    (("--dataset", "tiny", "--run", "def1", "--row", 0, "--k", 0), "k must be at least 1"),
    (("--dataset", "nope", "--run", "def1", "--row", 0), "dataset 'nope' not found"),
    (("--dataset", "tiny", "--run", "def1", "--row", 500), "out of range"),
    (("--dataset", "tiny", "--run", "def1", "--image", "/no/such.png"), ""),
])
def test_cli_errors_are_one_line_exit_2(sws, capsys, args, msg):
    assert cli("--workspace", sws, "search", *args) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and msg in err[0]


def test_cli_index_unknown_dataset(sws, capsys):
    assert cli("--workspace", sws, "index", "--dataset", "nope") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset 'nope' not found")


def test_search_page_shows_k_results(sws, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(sws))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    at.query_params.update({"dataset": "tiny", "run": "def1"})
    at.run()
    at.switch_page("app_pages/search.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    keys = {w.key for w in at.number_input} | {w.key for w in at.slider} | {w.key for w in at.checkbox}
    assert {"search_row", "search_k", "search_check"} <= keys
    assert (sws / "indexes" / "def1" / "tiny" / "index.faiss").is_file()  # built on first use
    [row] = [w for w in at.number_input if w.key == "search_row"]
    row.set_value(11).run()
    [k] = [w for w in at.slider if w.key == "search_k"]
    k.set_value(3).run()
    assert not at.exception, [e.value for e in at.exception]
    [table] = [d for d in at.dataframe if d.key == "search_table"] or at.dataframe[:1]
    assert len(table.value) == 3 and int(table.value["row"].iloc[0]) == 11
    assert len(at.image) == 1 + 3  # the query and its 3 hits
    [c] = [w for w in at.checkbox if w.key == "search_check"]
    c.check().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0]
    assert "verdict" in table.value.columns and table.value["verdict"].iloc[0] == "same place"
