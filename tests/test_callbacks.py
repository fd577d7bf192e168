"""The training callbacks on their own: live metrics and ETA, stop on request."""

from __future__ import annotations

import json

import numpy as np

from siamese_core import callbacks as cb
from siamese_core._backend import keras
from siamese_core.runs import Run


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
