"""Models, losses and training runs: the seed preset is the reference, saving is safe, runs record all."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from siamese_core.core.config import ModelConfig


def test_seed_matches_reference_parameter_count():
    from siamese_core.learn.model import build_model, tower_of
    m = build_model(ModelConfig(preset="seed", size=128))
    assert m.count_params() == 1_805_394
    assert tower_of(m).count_params() == 1_805_388
    kinds = [type(layer).__name__ for layer in tower_of(m).layers]
    assert kinds == ["InputLayer", "BatchNormalization", "Conv2D", "AveragePooling2D", "Conv2D", "AveragePooling2D",
                     "Conv2D", "AveragePooling2D", "Flatten", "BatchNormalization", "Dense"]
    assert m.layers[-1].activation.__name__ == "sigmoid"


def test_identical_inputs_give_zero_distance():
    from siamese_core.learn.model import build_model
    m = build_model(ModelConfig(preset="default", size=32))
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    d = np.asarray(m([x, x], training=False)).ravel()
    assert np.allclose(d, np.sqrt(1e-7), atol=1e-4)
    y = x[::-1].copy()
    assert np.all(np.asarray(m([x, y], training=False)).ravel()[[0, 3]] > 1e-3)


def test_disk_mask_keeps_only_the_inscribed_disc():
    """The mask is the disc a rotation keeps in frame: centre in, corners out, symmetric under 90°."""
    from siamese_core.learn.model import DiskMask
    x = np.ones((1, 16, 16, 3), "float32")
    m = np.asarray(DiskMask()(x))[0, :, :, 0]
    assert m[8, 8] == 1 and m[0, 0] == 0 and np.array_equal(m, np.rot90(m))


def test_contrastive_loss_closed_form():
    from siamese_core.learn.losses import contrastive_loss
    y = np.array([0.0, 1.0, 1.0], "float32")
    d = np.array([0.5, 0.25, 2.0], "float32")
    want = np.mean([0.25, 0.75 ** 2, 0.0])
    assert float(contrastive_loss(y, d, 1.0)) == pytest.approx(want, rel=1e-6)


def _rescore(model, ds, scores: dict, batch_size: int, distort_seed=None):
    """The model's scores of stored pairs again, tile B distorted with ``distort_seed`` (None: undistorted)."""
    from siamese_core.data.pairs import Pairs
    from siamese_core.learn.train import predict_scores
    n = len(scores["a"])
    pairs = Pairs(scores["a"], scores["b"], scores["label"], np.zeros(n, bool))
    return predict_scores(model, np.asarray(ds.images), pairs, batch_size, distort_seed=distort_seed)


def test_run_directory_contents(tiny_ws):
    from siamese_core.data.pairs import Pairs
    from siamese_core.data.store import open_dataset
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    g = open_dataset("tiny", tiny_ws).groups
    for rid, preset in (("seed1", "seed"), ("def1", "default")):
        d = run_path(rid, tiny_ws)
        run = Run(d)
        st = run.status()
        assert st["status"] == "finished", st
        assert st["device"], st  # the GPU's name, or "CPU (n cores)"
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["model"]["preset"] == preset and cfg["dataset"] == "tiny"
        assert cfg["pairs"]["test_fraction"] == 0.1
        m = run.metrics()
        batches = [r for r in m if r["kind"] == "batch"]
        epochs = [r for r in m if r["kind"] == "epoch"]
        assert len(batches) == 3 and len(epochs) == 1
        assert {"loss", "accuracy", "val_loss", "cal_accuracy", "cal_roc_auc", "cal_threshold"} <= set(epochs[0])
        # the calibration scores are of the calibration pairs, the test scores of the test pairs: disjoint places
        p = Pairs.load(d / "pairs.npz")
        cal, test = run.val_scores(), run.test_scores()
        assert np.array_equal(cal["a"], p.calibration.a) and np.array_equal(test["a"], p.testing.a)
        assert len(cal["score"]) > 0 and len(test["score"]) > 0
        assert not set(g[cal["a"]]) & set(g[test["a"]]) and not set(g[test["a"]]) & set(g[p.train.a])
        assert st["pair_counts"] == p.counts()
        t = run.threshold()
        assert (t == 0.2) if preset == "seed" else (0 <= t <= 2)
        assert (d / "model.keras").exists() and run.checkpoint_path() is not None


def test_saved_model_reloads_safely_and_scores_the_same(tiny_ws):
    from siamese_core.data.store import open_dataset
    from siamese_core.judge.inference import Scorer
    from siamese_core.runs.run import Run
    s = Scorer.from_run("def1", tiny_ws)
    ds = open_dataset("tiny", tiny_ws)
    z = Run(tiny_ws / "runs" / "def1").val_scores()
    assert z["distort_seed"] is not None  # default preset, augmentation on: tile B carries a training distortion
    again = _rescore(s.model, ds, z, 16, z["distort_seed"])
    assert np.allclose(again, z["score"], atol=1e-5)  # the reloaded model gives the stored scores
    plain = _rescore(s.model, ds, z, 16)
    got = s.score_tiles(np.asarray(ds.images[z["a"]]), np.asarray(ds.images[z["b"]]))
    assert np.allclose(got, plain, atol=1e-5)  # and the Scorer is that model
    assert not np.allclose(plain, z["score"], atol=1e-3)  # the distortion changed the stored scores


def test_lambda_model_is_refused(tiny_ws, tmp_path):
    import keras

    from siamese_core.core.errors import RunError
    from siamese_core.learn.model import load_model_safe
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda t: t * 2)(inp)
    path = tmp_path / "evil.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(RunError, match="refused"):
        load_model_safe(path)
    # an unknown class
    bad = tmp_path / "unknown.keras"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                data = data.replace(b'"Lambda"', b'"NoSuchLayer"')
            zout.writestr(item, data)
    with pytest.raises(RunError, match="refused"):
        load_model_safe(bad)


@pytest.mark.slow
def test_training_is_seeded(tiny_ws, tmp_path):
    """The same command with the same seed gives the same pairs, split and trained scores; another seed does not."""
    import shutil
    from conftest import cli
    from siamese_core.data.pairs import Pairs
    from siamese_core.data.store import open_dataset
    a = Pairs.load(tiny_ws / "runs" / "seed1" / "pairs.npz")
    b = Pairs.load(tiny_ws / "runs" / "def1" / "pairs.npz")
    # same dataset, same pair seed → the same split (presets differ in rules, not in split)
    g = open_dataset("tiny", tiny_ws).groups
    assert set(g[a.a[a.val]]) == set(g[b.a[b.val]])
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws, ignore=shutil.ignore_patterns("train.lock"))
    out = {}
    for rid, seed in (("s1", 3), ("s1again", 3), ("s2", 4)):
        assert cli("--workspace", ws, "train", "--dataset", "tiny", "--epochs", 1, "--steps-per-epoch", 3,
                   "--batch-size", 16, "--seed", seed, "--run-id", rid, "--verbose", 0) == 0
        with np.load(ws / "runs" / rid / "val_scores.npz") as z:
            out[rid] = (z["a"], z["b"], z["score"])
    assert all(np.array_equal(x, y) for x, y in zip(out["s1"][:2], out["s1again"][:2]))
    assert np.allclose(out["s1"][2], out["s1again"][2], atol=1e-6)  # the same training, not only the same pairs
    same_pairs = len(out["s1"][0]) == len(out["s2"][0]) and np.array_equal(out["s1"][0], out["s2"][0])
    assert not same_pairs or not np.allclose(out["s1"][2], out["s2"][2], atol=1e-6)


def test_batch_contrastive_loss_closed_form():
    """Two pairs of 1-d embeddings: a=[0, 2], b=[0, 0.5]; groups differ, so (0,0) and (1,1) are same-place."""
    from siamese_core.learn.losses import BatchPairAccuracy, batch_contrastive_loss
    emb = np.array([[0.0, 0.0], [2.0, 0.5]], "float32")  # rows: [e(a_i) | e(b_i)]
    groups = np.array([7, 9], "float32")
    # distances a_i–b_j: d00=0, d01=0.5, d10=2, d11=1.5; positives d00, d11; negatives d01, d10
    want = (0.0 + 1.5 ** 2) / 2 + ((1 - 0.5) ** 2 + 0.0) / 2
    assert float(batch_contrastive_loss(groups, emb, 1.0)) == pytest.approx(want, abs=1e-3)
    # same group id for both pairs: all four are positives
    want_all_pos = (0 + 0.25 + 4 + 2.25) / 4
    assert float(batch_contrastive_loss(np.array([3, 3], "float32"), emb, 1.0)) == pytest.approx(want_all_pos, abs=1e-3)
    acc = BatchPairAccuracy(threshold=1.0)
    acc.update_state(groups, emb)  # positives: d00 ok, d11 wrong → 0.5; negatives: d01 wrong, d10 ok → 0.5
    assert float(acc.result()) == pytest.approx(0.5)


@pytest.mark.slow
def test_training_process_does_not_load_pandas_or_opencv():
    """Keras imports pandas (with pyarrow) and OpenCV when it can; the training modules hide them
    (about 85 MB of resident memory), and they stay importable afterwards."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("import sys; import siamese_core.cli, siamese_core.learn.train; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'cv2') if m in sys.modules)); "
            "import pandas, cv2; print(pandas.DataFrame({'a': [1]}).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[]", "(1, 1)"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["seed", "default"])
def test_mixed_precision_run_trains_saves_and_scores(tiny_copy, preset):
    """--precision mixed_bfloat16 (the mixed policy a CPU can run): layers compute in bfloat16, the
    run finishes with finite float32 scores, reloads and scores, and the global policy is restored."""
    import keras

    from conftest import cli
    from siamese_core.judge.inference import Scorer
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    rid = f"bf16-{preset}"
    assert cli("--workspace", tiny_copy, "train", "--dataset", "tiny", "--preset", preset, "--epochs", 1,
               "--steps-per-epoch", 2, "--batch-size", 8, "--precision", "mixed_bfloat16",
               "--run-id", rid, "--verbose", 0) == 0
    d = run_path(rid, tiny_copy)
    assert Run(d).status()["status"] == "finished"
    assert Run(d).config.train.precision == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    z = np.load(d / "val_scores.npz")
    assert z["score"].dtype == np.float32 and np.all(np.isfinite(z["score"]))
    s = Scorer.from_run(rid, tiny_copy)
    convs = [x for x in s.model.get_layer("tower").layers if type(x).__name__ == "Conv2D"]
    assert convs and all(x.compute_dtype == "bfloat16" and x.variable_dtype == "float32" for x in convs)
    from siamese_core.data.store import open_dataset
    ds = open_dataset("tiny", tiny_copy)
    v = Run(d).val_scores()
    stored = _rescore(s.model, ds, v, 8, v["distort_seed"])  # how training scored them (distorted for default)
    assert stored.dtype == np.float32 and np.allclose(stored, v["score"], atol=0.05)
    got = s.score_tiles(np.asarray(ds.images[z["a"]]), np.asarray(ds.images[z["b"]]))
    assert got.dtype == np.float32 and np.allclose(got, _rescore(s.model, ds, v, 8), atol=0.05)


def test_unknown_precision_is_refused():
    from siamese_core.core.config import TrainConfig
    from siamese_core.core.errors import SiameseError
    with pytest.raises(SiameseError, match="precision='float8' is not one of float32, mixed_float16, mixed_bfloat16"):
        TrainConfig(precision="float8")


@pytest.mark.slow
def test_mixed_float16_run_resumes_with_its_loss_scaling(tiny_copy):
    """A mixed_float16 checkpoint must come back with its LossScaleOptimizer (and step count) on --resume."""
    from conftest import cli
    from siamese_core.learn.model import load_model_safe
    from siamese_core.runs.registry import run_path
    from siamese_core.runs.run import Run
    rid = "f16-resume"
    assert cli("--workspace", tiny_copy, "train", "--dataset", "tiny", "--preset", "default", "--epochs", 1,
               "--steps-per-epoch", 2, "--batch-size", 8, "--precision", "mixed_float16",
               "--run-id", rid, "--verbose", 0) == 0
    d = run_path(rid, tiny_copy)
    cfg = json.loads((d / "config.json").read_text())
    cfg["train"]["epochs"] = 2  # as if it had been stopped after its first of two epochs
    (d / "config.json").write_text(json.dumps(cfg))
    Run(d).write_status("stopped")
    assert cli("--workspace", tiny_copy, "train", "--resume", rid, "--verbose", 0) == 0
    assert Run(d).status()["status"] == "finished"
    assert [r["epoch"] for r in Run(d).metrics() if r["kind"] == "epoch"] == [1, 2]
    import keras
    keras.mixed_precision.set_global_policy("mixed_float16")  # as run_training loads it
    try:
        opt = load_model_safe(Run(d).checkpoint_path(), compile=True).optimizer
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert type(opt).__name__ == "LossScaleOptimizer" and int(opt.iterations.numpy()) == 4


@pytest.mark.slow
def test_threshold_is_fitted_on_calibration_pairs_and_the_report_is_on_test_pairs(tiny_ws, tmp_path):
    """The default run: threshold = best accuracy on its (distorted) calibration pairs, which is also what the
    last epoch's calibration metric found; evaluation.json is the report on the test pairs and says so. The seed
    run keeps its preset threshold. With --test-fraction 0 the report is on the calibration pairs, labelled so."""
    import shutil
    from conftest import cli
    from siamese_core.data.store import open_dataset
    from siamese_core.learn.evaluate import ThresholdSweep, report, suggest_thresholds
    from siamese_core.runs.run import Run
    from siamese_core.runs.scores import VALIDATION_LABEL
    g = open_dataset("tiny", tiny_ws).groups
    run = Run(tiny_ws / "runs" / "def1")
    cal, test = run.val_scores(), run.test_scores()
    keep = ~cal["identical"]
    info = run.threshold_info()
    assert info["source"] == "calibrated"
    assert info["threshold"] == suggest_thresholds(cal["score"][keep], cal["label"][keep]).best_accuracy
    last = [r for r in run.metrics() if r["kind"] == "epoch"][-1]
    assert last["cal_threshold"] == pytest.approx(info["threshold"], abs=1e-9)
    assert last["cal_accuracy"] == pytest.approx(
        ThresholdSweep(cal["score"][keep], cal["label"][keep]).at(info["threshold"]).accuracy, abs=1e-12)
    ev = run.evaluation()
    places = len(set(g[test["a"]]))
    assert ev["pairs"] == {"split": "test", "pairs": len(test["score"]), "places": places, "distorted": True,
                           "label": f"test pairs: {places} places never used for training or the threshold"}
    assert ev["threshold_source"] == "calibrated"
    want = report(test["score"], test["label"], info["threshold"], identical=test["identical"])
    assert ev["all"] == json.loads(json.dumps(want["all"]))
    assert test["distort_seed"] is not None and test["distort_seed"] != cal["distort_seed"]

    seed = Run(tiny_ws / "runs" / "seed1")
    assert seed.threshold_info()["source"] == "preset" and seed.threshold() == 0.2
    assert seed.val_scores()["distort_seed"] is None and seed.evaluation_pairs()["split"] == "test"

    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws / "datasets", ws / "datasets")
    assert cli("--workspace", ws, "train", "--dataset", "tiny", "--epochs", 1, "--steps-per-epoch", 2,
               "--batch-size", 16, "--test-fraction", 0, "--run-id", "notest", "--verbose", 0) == 0
    nt = Run(ws / "runs" / "notest")
    assert not nt.has_test_scores() and nt.evaluation_pairs()["label"] == VALIDATION_LABEL
    assert nt.evaluation()["all"]["n_pairs"] == len(nt.val_scores()["score"])


def test_inference_tower_folds_batchnorm_and_scores_the_same():
    from siamese_core.core.backend import keras
    from siamese_core.learn.model import build_model, inference_tower, tower_of
    tower = tower_of(build_model(ModelConfig(preset="default", size=64, width=8, embedding=16, normalize=True)))
    rng = np.random.default_rng(0)
    for layer in tower.layers:  # trained-looking statistics, so that folding has something to get wrong
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n), rng.uniform(0.2, 3, n)])
    folded = inference_tower(tower)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    x = rng.uniform(0, 1, (4, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(folded(x, training=False), tower(x, training=False), atol=1e-5)
    seed = tower_of(build_model(ModelConfig(preset="seed", size=64)))
    assert inference_tower(seed) is seed  # its BatchNormalizations follow no convolution: nothing to fold
