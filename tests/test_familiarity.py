"""Say when the model is out of its depth (siamese_core.judge.familiarity): a reference built from the tiny dataset
with run def1 finds the dataset's own tiles familiar and a noise or solid-magenta tile unfamiliar, with a
reason; it survives a save/load round trip and is ignored once the model changes; the Scorer hook and the
Compare page warn only when the run has a reference; the bundled run ships one under 1 MB.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import AERIAL

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUN = "def1"


@pytest.fixture(scope="module")
def fam_base(tiny_ws, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("famws") / "ws"
    shutil.copytree(tiny_ws, base, ignore=shutil.ignore_patterns("train.lock"))
    return base


@pytest.fixture(scope="module")
def scorer(fam_base):
    from siamese_core.judge.inference import Scorer
    return Scorer.from_run(RUN, fam_base)


@pytest.fixture(scope="module")
def ref(scorer, fam_base):
    from siamese_core.data.store import open_dataset
    from siamese_core.judge.familiarity import build_reference
    ds = open_dataset("tiny", fam_base)
    return build_reference(scorer, ds.images, seed=0, groups=ds.groups)


def _noise(size: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _magenta(size: int) -> np.ndarray:
    t = np.zeros((1, size, size, 3), np.uint8)
    t[..., 0] = t[..., 2] = 255
    return t


def _check(scorer, ref, tiles):
    from siamese_core.judge.familiarity import familiarity
    return familiarity(ref, scorer.embed(tiles), tiles)


def test_reference_contents(ref, scorer, fam_base):
    from siamese_core.data.store import open_dataset
    n = len(open_dataset("tiny", fam_base))
    assert ref["count"] == n and ref["embeddings"].shape == (n, 128) and ref["embeddings"].dtype == np.float16
    assert ref["colour"].shape == (n, 7) and ref["colour_mean"].shape == (7,) and ref["colour_std"].shape == (7,)
    assert 0 < ref["nn_median"] <= ref["nn_p99"] < 2.0
    assert ref["size"] == scorer.size and len(ref["model_sha1"]) == 40


def test_dataset_tiles_are_familiar(ref, scorer, fam_base):
    from siamese_core.data.store import open_dataset
    tiles = np.asarray(open_dataset("tiny", fam_base).images[:10])
    got = _check(scorer, ref, tiles)
    assert len(got) == 10 and not any(f.unfamiliar for f in got), [f.reason for f in got]
    assert all(f.nn_distance < 0.05 and f.colour_z < 4 and f.reason.startswith("this tile is like") for f in got)


def test_noise_and_magenta_are_unfamiliar_with_a_reason(ref, scorer):
    magenta = _check(scorer, ref, _magenta(scorer.size))[0]
    assert magenta.unfamiliar and magenta.reason.startswith("this tile's")
    assert magenta.colour_z > 4 or magenta.nn_distance > ref["nn_p99"] * 1.25
    assert "." not in magenta.reason[-1:] and "\n" not in magenta.reason
    noise = _check(scorer, ref, _noise(scorer.size))
    assert all(f.unfamiliar for f in noise), [(f.nn_distance, f.colour_z, f.reason) for f in noise]
    assert all(f.reason.startswith("this tile's") for f in noise), [f.reason for f in noise]


def test_save_load_round_trip_and_stale_reference(ref, scorer, fam_base, tmp_path):
    from siamese_core.judge.familiarity import load_reference, save_reference
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    d = tmp_path / "run"
    shutil.copytree(run_path(RUN, fam_base), d)
    assert load_reference(Run(d).reference_path, Run(d).model_path) is None  # no reference yet
    path = save_reference(Run(d).reference_path, ref)
    assert path == d / Run.REFERENCE and path.is_file()
    back = load_reference(Run(d).reference_path, Run(d).model_path)
    assert back is not None and set(back) == set(ref)
    for k in ("embeddings", "colour", "colour_mean", "colour_std"):
        np.testing.assert_array_equal(back[k], ref[k])
    for k in ("nn_p99", "nn_median", "count", "seed", "size", "model_sha1"):
        assert back[k] == ref[k]
    # a damaged file or a retrained model: no reference, no warning
    with open(d / "model.keras", "ab") as f:
        f.write(b"\0")
    assert load_reference(Run(d).reference_path, Run(d).model_path) is None
    (d / Run.REFERENCE).write_bytes(b"not an npz")
    assert load_reference(Run(d).reference_path, Run(d).model_path) is None


def test_scorer_hook_is_none_without_a_reference(ref, fam_base, tmp_path):
    from siamese_core.judge.familiarity import save_reference
    from siamese_core.judge.inference import Scorer
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    ws = tmp_path / "ws"
    shutil.copytree(fam_base, ws)
    s = Scorer.from_run(RUN, ws)
    tile = np.asarray(s.prepare(_magenta(64)[0]).tile)
    assert s.familiarity([tile]) is None
    save_reference(Run(run_path(RUN, ws)).reference_path, ref)
    got = s.familiarity([s.prepare(_magenta(64)[0]), tile])  # Prepared or a tile; any size is resized
    assert got is not None and len(got) == 2 and all(f.unfamiliar for f in got)
    assert s.familiarity([]) == []


@pytest.mark.slow
def test_compare_page_warns_under_the_verdict(ref, fam_base, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from siamese_core.data.images import encode_png
    from siamese_core.data.sources.synthetic import synthetic_tile
    from siamese_core.judge.familiarity import save_reference
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    ws = tmp_path / "ws"
    shutil.copytree(fam_base, ws)
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)

    def run_compare():
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=180)
        at.query_params.update({"run": RUN})
        at.run()
        at.switch_page("app_pages/compare.py").run()
        for side, img in (("a", synthetic_tile(0, 128)), ("b", _magenta(128)[0])):
            [w] = [u for u in at.file_uploader if u.key == f"cmp_upload_{side}"]
            w.set_value((f"{side}.png", encode_png(img), "image/png"))
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return [w.value for w in at.warning if "unlike anything this model was trained on" in w.value]

    assert run_compare() == []  # no reference.npz: nothing is said
    save_reference(Run(run_path(RUN, ws)).reference_path, ref)
    warned = run_compare()
    assert len(warned) == 1 and warned[0].startswith("Tile B is unlike anything") and "caution" in warned[0]


def test_bundled_run_ships_a_small_reference():
    from siamese_core.judge.familiarity import load_reference
    from siamese_core.runs.run import BUNDLED_DIR, Run
    p = BUNDLED_DIR / Run.REFERENCE
    assert p.is_file() and p.stat().st_size < 1_000_000
    ref = load_reference(Run(BUNDLED_DIR).reference_path, Run(BUNDLED_DIR).model_path)
    assert ref is not None, "the bundled reference.npz does not match the bundled model.keras"
    assert ref["count"] == 2000 and ref["embeddings"].shape[0] == 2000


@pytest.mark.skipif(not AERIAL.is_dir(), reason="the aerial sample is not here")
def test_bundled_model_knows_aerial_tiles_but_not_noise():
    from siamese_core.data.images import IMAGE_EXTENSIONS, load_tile
    from siamese_core.judge.inference import Scorer
    s = Scorer.from_run(None)
    paths = sorted(p for p in AERIAL.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[::20][:20]
    tiles = np.stack([load_tile(p, s.size) for p in paths])
    aerial = s.familiarity(list(tiles))
    assert aerial is not None and sum(f.unfamiliar for f in aerial) <= 1, [f.reason for f in aerial if f.unfamiliar]
    bad = s.familiarity(list(_noise(s.size)) + [_magenta(s.size)[0]])
    assert all(f.unfamiliar for f in bad), [f.reason for f in bad]


@pytest.mark.slow
def test_batch_table_has_unfamiliar_but_the_download_does_not(ref, fam_base, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from siamese_core.judge.familiarity import save_reference
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    ws = tmp_path / "ws"
    shutil.copytree(fam_base, ws)
    save_reference(Run(run_path(RUN, ws)).reference_path, ref)
    monkeypatch.setenv("SIAMESE_WORKSPACE", str(ws))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=180)
    at.query_params.update({"dataset": "tiny", "run": RUN})
    at.run()
    at.switch_page("app_pages/batch.py").run()
    [n] = [w for w in at.number_input if w.key == "batch_n"]
    n.set_value(6).run()
    [go] = [b for b in at.button if b.key == "batch_random_go"]
    go.click().run()
    assert not at.exception, [e.value for e in at.exception]
    [table] = [d for d in at.dataframe if d.key == "batch_table"]
    assert "unfamiliar" in table.value.columns and table.value["unfamiliar"].dtype == bool
    assert not table.value["unfamiliar"].any()  # tiles of the dataset the reference was built from
    res = at.session_state["batch_result"]
    assert "unfamiliar" not in res["csv"].decode().splitlines()[0]
