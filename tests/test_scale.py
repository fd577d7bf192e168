"""Embedding and scoring on Ray Data (siamese_core.scale: jobs, plan, shards, workers; the embed command, score --engine ray) and the FAISS
index over the shards (siamese_core.scale.shard_index): a local Ray on 2 CPUs, the bundled model, synthetic tiles.

The Ray results must equal the single-process ones (Scorer.embed, score --pairs) for the same inputs; a second
run must recompute nothing, and a run after a lost or damaged shard only that shard; bad input is one line.

Ray comes from requirements-scale.txt (./run.sh test installs it). On a developer machine without it these tests
are skipped; in CI (CI=true) a missing Ray is a failure.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cli

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    import ray
except ImportError:  # pragma: no cover - CI installs it
    ray = None
pytestmark = [pytest.mark.slow,  # Ray
              pytest.mark.skipif(ray is None and os.environ.get("CI") != "true",
                                 reason="needs Ray: pip install -r requirements-scale.txt")]


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session: 2 CPUs, no dashboard, worker output not copied here."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def scorer():
    from siamese_core.judge.inference import Scorer
    return Scorer.from_run(None)  # the bundled model


def _png(i: int, size: int = 64) -> bytes:
    from siamese_core.data.images import encode_png
    from siamese_core.data.sources.synthetic import synthetic_tile
    return encode_png(synthetic_tile(i, size, seed=3))


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """12 synthetic tiles, 2 more in a subfolder, and one file that is not an image (15 files)."""
    d = tmp_path_factory.mktemp("tiles")
    for i in range(12):
        (d / f"t{i:02d}.png").write_bytes(_png(i))
    (d / "sub").mkdir()
    for i in (12, 13):
        (d / "sub" / f"t{i:02d}.png").write_bytes(_png(i))
    (d / "broken.png").write_bytes(b"this is not a png")
    return d


def _expected(scorer, sources) -> np.ndarray:
    return scorer.embed(np.stack([scorer.load(s) for s in sources]))


def _embeddings(table) -> np.ndarray:
    col = table.column("embedding").combine_chunks()
    return col.flatten().to_numpy().reshape(-1, col.type.list_size)


def _mtimes(out: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("part-*.parquet"))}


def test_embed_folder_equals_single_process_resumes_and_indexes(ray_local, scorer, tiles, tmp_path, capsys):
    import shutil
    from siamese_core.core.errors import SiameseError
    from siamese_core.scale import jobs, shards
    from siamese_core.scale.shard_index import build_shard_index, open_shard_index
    tiles = shutil.copytree(tiles, tmp_path / "tiles")  # this test adds a tile
    out = tmp_path / "emb"
    assert cli("embed", "--images", tiles, "--out", out, "--shard-size", 4, "--workers", 2) == 0
    cap = capsys.readouterr()
    assert "embedded 14 tile(s), 1 unreadable (4 shard(s))" in cap.out
    assert "skipped: broken.png: not an image" in cap.err and "embed: 100%" in cap.err
    assert sorted(p.name for p in out.iterdir()) == [".lock", "job.json"] + [f"part-0000{i}.parquet" for i in range(4)]

    t = shards.read_shards(out)
    names = t.column("name").to_pylist()
    assert names == ["broken.png", "sub/t12.png", "sub/t13.png"] + [f"t{i:02d}.png" for i in range(12)]  # sorted
    assert t.column("row").to_pylist() == list(range(15))
    errors = t.column("error").to_pylist()
    assert errors[0].startswith("broken.png: ") and not any(errors[1:])
    assert t.column("embedding").null_count == 1 and t.column("embedding")[0].as_py() is None
    got = _embeddings(t)
    want = _expected(scorer, [tiles / n for n in names[1:]])
    assert got.shape == want.shape == (14, 128)
    np.testing.assert_allclose(got, want, atol=1e-5)
    job = json.loads((out / "job.json").read_text())
    assert job["kind"] == "embed" and job["shards"] == 4 and job["rows"] == 15 and job["errors"] == 1

    # the index from the shards: every tile finds its own embedding first
    meta = build_shard_index(out, "flat")
    assert (meta["status"], meta["kind"], meta["count"], meta["dim"]) == ("built", "flat", 14, 128)
    hits = open_shard_index(out).search(got, k=3)
    assert [h[0].row for h in hits] == list(range(1, 15))
    assert [h[0].name for h in hits] == names[1:]
    assert all(h[0].distance == pytest.approx(0.0, abs=1e-3) and h[0].distance <= h[1].distance for h in hits)
    assert build_shard_index(out, "flat")["status"] == "reused"
    # ... and from the command line: a query tile finds itself first
    assert cli("search", "--embeddings", out, "--image", tiles / "t03.png", "--k", 2, "--json") == 0
    found = json.loads(capsys.readouterr().out)
    assert found["run"] == "pretrained" and [h["name"] for h in found["hits"]][0] == "t03.png"
    assert found["hits"][0]["distance"] == pytest.approx(0.0, abs=1e-3)
    assert found["hits"][0]["distance"] < found["hits"][1]["distance"]
    assert cli("search", "--embeddings", out, "--row", 3) == 2
    assert "takes a query --image" in capsys.readouterr().err
    assert cli("search", "--embeddings", out, "--image", tiles / "t03.png", "--run", "other") == 2
    assert "was embedded by run 'pretrained'" in capsys.readouterr().err

    # a second run: every shard is complete, nothing is recomputed (no Ray job at all)
    before = _mtimes(out)
    res = jobs.embed(out, images=tiles, shard_size=4, workers=2)
    assert (res["kept"], res["computed"], res["rows"], res["errors"]) == (4, 0, 15, 1)
    assert _mtimes(out) == before

    # a truncated shard, a lost one, a tile added at the end (the last shard's inputs change), a temporary file of
    # a killed run: only those three shards are computed again
    (out / "part-00000.parquet").write_bytes((out / "part-00000.parquet").read_bytes()[:100])
    (out / "part-00001.parquet").unlink()
    (out / ".part-00002.999.tmp").write_bytes(b"half")
    (tiles / "t99.png").write_bytes(_png(99))
    res = jobs.embed(out, images=tiles, shard_size=4, workers=2)
    assert (res["kept"], res["computed"], res["rows"]) == (1, 3, 16)
    after = _mtimes(out)
    assert {k for k in after if after[k] == before[k]} == {"part-00002.parquet"}
    assert not list(out.glob(".part-*"))
    t = shards.read_shards(out)
    assert t.column("name").to_pylist() == names + ["t99.png"]
    np.testing.assert_allclose(_embeddings(t), np.concatenate([got, _expected(scorer, [tiles / "t99.png"])]), atol=1e-5)

    # the index built before is now older than the shards: refused until rebuilt
    with pytest.raises(SiameseError, match="the index is older than the shards"):
        open_shard_index(out)
    assert build_shard_index(out, "flat")["status"] == "built"
    assert [h[0].row for h in open_shard_index(out).search(_embeddings(t), k=1)] == list(range(1, 16))


def test_embed_dataset_and_parquet_bytes(ray_local, scorer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siamese_core.data.images import tiles_at
    from siamese_core.data.store import open_dataset
    from siamese_core.scale import jobs, shards

    ws = tmp_path / "ws"
    assert cli("--workspace", ws, "prepare", "--name", "d", "--limit", 5, "--size", 48) == 0
    ds = open_dataset("d", ws)
    res = jobs.embed(tmp_path / "ds", dataset="d", workspace=ws, shard_size=8, workers=1)
    assert (res["shards"], res["rows"], res["errors"]) == (2, len(ds), 0)
    t = shards.read_shards(tmp_path / "ds")
    assert t.column("name").to_pylist() == ds.manifest["tile_id"].astype(str).tolist()
    np.testing.assert_allclose(_embeddings(t), scorer.embed(tiles_at(np.asarray(ds.images), scorer.size)), atol=1e-5)

    cells = [_png(i) for i in range(5)] + [b""]
    pq.write_table(pa.table({"image": pa.array(cells, pa.binary()), "place": list(range(6))}),
                   tmp_path / "tiles.parquet", row_group_size=4)
    res = jobs.embed(tmp_path / "pq", parquet=tmp_path / "tiles.parquet", shard_size=3, workers=1)
    assert (res["shards"], res["rows"], res["errors"]) == (2, 6, 1)
    assert res["failures"] == [("tiles.parquet#5", "tiles.parquet#5: empty image cell in column 'image'")]
    t = shards.read_shards(tmp_path / "pq")
    np.testing.assert_allclose(_embeddings(t), _expected(scorer, cells[:5]), atol=1e-5)


def test_parquet_of_paths_embeds_what_the_paths_name(scorer, tiles, tmp_path):
    """The worker's own function, in this process: a string column of paths (relative to the parquet's folder,
    or absolute); a missing file is an error row that names it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siamese_core.scale import plan, workers
    (tmp_path / "t00.png").write_bytes((tiles / "t00.png").read_bytes())
    paths = ["t00.png", str(tiles / "sub" / "t12.png"), "gone.png"]
    pq.write_table(pa.table({"id": [1, 2, 3], "path": paths}), tmp_path / "paths.parquet")
    source, tasks = plan.parquet_tasks(tmp_path / "paths.parquet", 100)
    assert source["columns"] == ["path (paths)"] and len(tasks) == 1
    t = workers.embed_task(scorer, tasks[0][0], 128)
    assert t.column("name").to_pylist() == paths
    err = t.column("error").to_pylist()
    assert err[:2] == ["", ""] and "gone.png" in err[2]
    np.testing.assert_allclose(_embeddings(t), _expected(scorer, [tmp_path / "t00.png", tiles / "sub" / "t12.png"]),
                               atol=1e-5)


def test_score_on_ray_equals_score_pairs(ray_local, tiles, tmp_path, capsys):
    import pandas as pd
    from siamese_core.scale import jobs, shards
    csv = tmp_path / "pairs.csv"
    names = [f"t{i:02d}.png" for i in range(8)]
    for n in names:
        (tmp_path / n).write_bytes((tiles / n).read_bytes())
    (tmp_path / "broken.png").write_bytes(b"nope")
    rows = [("t00.png", "t00.png", "a"), ("t00.png", "t01.png", "b, quoted"), ("broken.png", "t02.png", "c"),
            ("t03.png", "t04.png", ""), ("t05.png", "missing.png", "d"), ("t06.png", "t07.png", "e"),
            ("t07.png", "t06.png", "f")]
    csv.write_text("image_a,image_b,note\n" + "".join(f'{a},{b},"{c}"\n' for a, b, c in rows))

    assert cli("score", "--pairs", csv, "--out", tmp_path / "local.csv") == 0
    assert cli("score", "--pairs", csv, "--out", tmp_path / "ray", "--engine", "ray", "--shard-size", 3,
               "--workers", 2) == 0
    cap = capsys.readouterr()
    assert "scored 5 pair(s), 2 failed, threshold" in cap.out and "(3 shard(s))" in cap.out
    assert "line 4: broken.png: not an image" in cap.err and "line 6: missing.png: " in cap.err

    local = pd.read_csv(tmp_path / "local.csv", keep_default_na=False)
    got = shards.read_shards(tmp_path / "ray").to_pandas()
    assert got["line"].tolist() == list(range(2, 9))
    for c in ("image_a", "image_b", "note", "error", "geometry"):
        assert got[c].tolist() == local[c].astype(str).tolist(), c
    ok = local["error"] == ""
    assert ok.sum() == 5
    for c in ("score", "distance", "structure"):
        np.testing.assert_allclose(got.loc[ok, c].to_numpy(float), local.loc[ok, c].to_numpy(float), atol=2e-6)
    assert got.loc[ok, "same_place"].tolist() == (local.loc[ok, "same_place"] == "true").tolist()
    assert got.loc[ok, "inliers"].tolist() == local.loc[ok, "inliers"].astype(int).tolist()
    assert got.loc[~ok, "score"].isna().all() and got.loc[0, "same_place"] == True  # noqa: E712 (identical tiles)

    # run again: nothing to compute, no Ray job
    assert jobs.score_pairs(csv, tmp_path / "ray", shard_size=3)["computed"] == 0


def test_a_worker_that_cannot_load_its_model_is_one_line(ray_local, tiles, tmp_path, capsys):
    import shutil
    from siamese_core.runs.run import BUNDLED_DIR
    ws = tmp_path / "ws"
    shutil.copytree(BUNDLED_DIR, ws / "runs" / "broken")
    (ws / "runs" / "broken" / "model.keras").write_bytes(b"not a keras file")
    assert cli("--workspace", ws, "embed", "--images", tiles, "--out", tmp_path / "o", "--run", "broken") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert len(err) == 1 and err[0].startswith("error: a Ray worker could not start: ")
    assert "broken/model.keras: refused to load model" in err[0]
    assert not (tmp_path / "o").exists()


def test_ivfpq_index_from_shards(tmp_path):
    """IVF-PQ over 3,000 normalised 32-d vectors written as embedding shards: a compressed index (8 bytes a
    vector instead of 128) that still finds each vector's own row first for nearly all of them."""
    import pyarrow as pa
    from siamese_core.scale import shards
    from siamese_core.scale.search import load_faiss
    from siamese_core.scale.shard_index import build_shard_index, open_shard_index
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3000, 32)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    out = tmp_path / "emb"
    out.mkdir()
    keys = []
    for s, lo in enumerate(range(0, 3000, 1000)):
        e = v[lo:lo + 1000]
        table = pa.table({"row": np.arange(lo, lo + 1000), "name": [f"r{i}" for i in range(lo, lo + 1000)],
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(e.reshape(-1)), 32),
                          "error": [""] * 1000})
        shards.write_shard(out, s, f"k{s}", table)
        keys.append(f"k{s}")
    (out / "job.json").write_text(json.dumps({"kind": "embed", "shards": 3, "keys": keys}))

    meta = build_shard_index(out, "ivfpq")
    assert (meta["kind"], meta["factory"], meta["m"], meta["nprobe"]) == ("ivfpq", "IVF76,PQ8np", 8, 16)
    # nlist: 4·sqrt(3000) = 219, capped at N/39 = 76 (at least 39 vectors a cell); m: 32 dims / 4
    idx = open_shard_index(out)
    assert load_faiss().extract_index_ivf(idx.faiss_index).code_size == 8 and len(idx) == 3000
    assert (out / "index" / "index.faiss").stat().st_size < 3000 * 32 * 4 / 2
    hits = idx.search(v, k=10)
    first = np.mean([h[0].row == i for i, h in enumerate(hits)])
    top10 = np.mean([i in [x.row for x in h] for i, h in enumerate(hits)])
    assert first >= 0.95 and top10 >= 0.99, (first, top10)
    assert idx.search(v[:1], k=1)[0][0].name == "r0"
    # auto picks flat below the exact limit, and the kind is part of what makes an index current
    flat = build_shard_index(out, "auto")
    assert (flat["kind"], flat["status"]) == ("flat", "built")
    assert build_shard_index(out, "auto")["status"] == "reused"
    assert [h[0].row for h in open_shard_index(out).search(v[:50], k=1)] == list(range(50))


@pytest.mark.parametrize("args, msg", [
    (["embed", "--images", "{tmp}/nope", "--out", "{tmp}/o"], "{tmp}/nope: folder does not exist"),
    (["embed", "--images", "{tmp}/empty", "--out", "{tmp}/o"], "{tmp}/empty: no images found"),
    (["embed", "--parquet", "{tmp}/n.parquet", "--out", "{tmp}/o"], "no image column (binary, or a struct with 'bytes') "
                                                                    "and no path column"),
    (["embed", "--parquet", "{tmp}/n.parquet", "--column", "n", "--out", "{tmp}/o"],
     "column 'n' holds neither image bytes nor image paths"),
    (["embed", "--dataset", "nothere", "--out", "{tmp}/o"], "dataset 'nothere' not found"),
    (["embed", "--images", "{tmp}/empty", "--out", "{tmp}/o", "--shard-size", "0"], "shard size must be at least 1"),
    (["score", "--pairs", "{tmp}/none.csv", "--out", "{tmp}/o", "--engine", "ray"], "{tmp}/none.csv: pairs CSV does "
                                                                                     "not exist"),
    (["score", "--pairs", "{tmp}/none.csv", "--out", "{tmp}/o.csv", "--workers", "2"], "apply to --engine ray"),
    (["embed", "--images", "{tmp}/one", "--out", "{tmp}/o", "--ray-address", "127.0.0.1:1"],
     "--ray-address '127.0.0.1:1': nothing answers there"),
    (["embed", "--images", "{tmp}/one", "--out", "{tmp}/one/t.png"], "exists and is not a folder"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, msg, tmp_path, capsys, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "empty").mkdir()
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "t.png").write_bytes(_png(0))
    pq.write_table(pa.table({"n": [1, 2]}), tmp_path / "n.parquet")
    if "--ray-address" in args:  # a session open in this process would be used whatever the address
        monkeypatch.setattr("siamese_core.scale.jobs.ray_connected", lambda: False)
    assert cli("--workspace", tmp_path / "ws", *[a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and msg.format(tmp=tmp_path) in err[-1], err
    assert not (tmp_path / "o").exists()


def test_without_ray_one_line_says_what_to_install(tiles, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    assert cli("embed", "--images", tiles, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: this command runs on Ray, which is not installed; install it with: " \
                  "pip install -r requirements-scale.txt"
    assert not (tmp_path / "o").exists()
