"""The training callbacks on their own: live metrics and ETA, the per-epoch calibration metric, stop on request."""

from __future__ import annotations

import json

import numpy as np
import pytest

from siamese_core.core.backend import keras
from siamese_core.learn import callbacks as cb
from siamese_core.runs.run import Run


def _tiny_model():
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    m.compile(optimizer="sgd", loss="mse")
    return m


def test_live_metrics_writes_every_batch_and_epoch(tmp_path):
    Run(tmp_path).write_status("running", reset=True)
    x, y = np.random.default_rng(0).normal(size=(40, 4)), np.zeros((40, 1))
    live = cb.LiveMetrics(tmp_path, steps_per_epoch=5, epochs=2, status_every=0.0)
    _tiny_model().fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[live], validation_data=(x, y))
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    batches = [r for r in recs if r["kind"] == "batch"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert len(batches) == 10 and [b["step"] for b in batches[:5]] == [1, 2, 3, 4, 5]
    assert [e["epoch"] for e in epochs] == [1, 2] and "val_loss" in epochs[0] and "loss" in batches[0]
    st = json.loads((tmp_path / "status.json").read_text())
    assert st["epoch"] == 2 and st["step"] == 5 and st["eta_s"] >= 0 and st["steps_per_s"] > 0


def test_eta_is_measured_on_recent_steps_not_on_the_first_traced_one(tmp_path, monkeypatch):
    Run(tmp_path).write_status("running", reset=True)
    clock = [1000.0]
    monkeypatch.setattr(cb.time, "time", lambda: clock[0])
    live = cb.LiveMetrics(tmp_path, steps_per_epoch=10, epochs=1, status_every=0.0)
    live.on_train_begin()
    live.on_epoch_begin(0)
    clock[0] += 10.0  # the first step traces the graph: 10 s
    live.on_train_batch_end(0, {"loss": 1.0})
    for k in range(1, 5):  # then 1 s a step
        clock[0] += 1.0
        live.on_train_batch_end(k, {"loss": 1.0})
    live.on_train_end()
    st = json.loads((tmp_path / "status.json").read_text())
    assert st["steps_per_s"] == 1.0
    assert abs(st["eta_s"] - 5.0) < 1e-6  # 5 steps left at 1 s each (averaging from the start would say 14 s)


def test_stop_on_request_ends_training_after_the_current_batch(tmp_path):
    x, y = np.zeros((80, 4)), np.zeros((80, 1))
    stop = cb.StopOnRequest(tmp_path)
    (tmp_path / "stop").touch()
    hist = _tiny_model().fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[stop])
    assert stop.stopped and len(hist.history["loss"]) == 1
    stop2 = cb.StopOnRequest(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    hist = _tiny_model().fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[stop2])
    assert not stop2.stopped and len(hist.history["loss"]) == 3


def test_calibration_metrics_add_the_accuracy_at_the_run_threshold_and_roc_auc_to_every_epoch(tmp_path):
    """A real model scoring real pairs each epoch: the epoch lines carry the calibration pairs' accuracy at the
    best threshold (or the fixed one) and ROC-AUC, equal to what the evaluation functions give on those scores."""
    from siamese_core.learn.evaluate import metrics_at, roc_auc, suggest_thresholds
    keras.utils.set_random_seed(0)  # the model's first weights: not whatever the tests before this one drew
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")  # label 1 (different) when the first feature is positive
    identical = np.zeros(64, bool)
    identical[:4] = True  # left out of the metric, as the threshold's fit leaves them out
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    seen = []

    def score():
        s = np.asarray(model(x, training=False)).ravel()
        seen.append(s)
        return s

    Run(tmp_path).write_status("running", reset=True)
    cal = cb.CalibrationMetrics(score, y, identical)
    live = cb.LiveMetrics(tmp_path, steps_per_epoch=4, epochs=3, status_every=0.0)
    hist = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cal, live])
    epochs = [r for r in Run(tmp_path).metrics() if r["kind"] == "epoch"]
    assert len(epochs) == 3 and len(seen) == 3
    for rec, s in zip(epochs, seen):
        k = ~identical
        t = suggest_thresholds(s[k], y[k]).best_accuracy
        assert rec["cal_threshold"] == pytest.approx(t)
        assert rec["cal_accuracy"] == pytest.approx(metrics_at(s[k], y[k], t).accuracy)
        assert rec["cal_roc_auc"] == pytest.approx(roc_auc(s[k], y[k])) and rec["cal_pairs"] == 60
    assert epochs[-1]["cal_accuracy"] > 0.9  # a separable problem, learned: the metric follows the model
    assert hist.history["cal_accuracy"][-1] == pytest.approx(epochs[-1]["cal_accuracy"])

    fixed = cb.CalibrationMetrics(score, y, identical, threshold=0.2)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[fixed])
    k = ~identical
    assert fixed.last["cal_threshold"] == 0.2
    assert fixed.last["cal_accuracy"] == pytest.approx(metrics_at(seen[-1][k], y[k], 0.2).accuracy)


def test_calibration_metrics_of_one_label_have_no_roc_auc():
    out = cb.calibration_metrics(np.array([0.1, 0.4, 0.2]), np.array([0, 0, 0]), np.zeros(3, bool))
    assert out["cal_roc_auc"] is None and out["cal_accuracy"] == 1.0 and out["cal_pairs"] == 3
    assert cb.calibration_metrics(np.array([0.0]), np.array([0]), np.array([True])) == {"cal_pairs": 0}
