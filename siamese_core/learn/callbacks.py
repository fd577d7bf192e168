"""Keras callbacks that connect a training process to the outside: live metrics, the calibration pairs'
accuracy per epoch, checkpoints, stop.

The dashboard never talks to the training process; it reads what these callbacks write through the
:class:`~siamese_core.runs.run.Run` (live metrics, status, checkpoints) and asks for a stop through it.
"""

from __future__ import annotations

import json
import time
from collections import deque

import numpy as np

from ..core.backend import keras

from ..runs.run import Run


ETA_WINDOW = 20  # steps the ETA's speed is measured over


def _clean(logs: dict | None) -> dict:
    return {k: float(v) for k, v in (logs or {}).items()}


class LiveMetrics(keras.callbacks.Callback):
    """Append one JSON line per batch and per epoch to the run's metrics, flushed as it happens.

    Batch lines: ``{"kind": "batch", "epoch", "step", "steps", "loss", "accuracy", "time"}``; epoch
    lines add ``val_loss`` and ``val_accuracy`` (Keras' metrics at a fixed 0.5) and whatever callbacks
    earlier in the list put in the epoch's logs (:class:`CalibrationMetrics`: ``cal_accuracy``, ...).
    Status (epoch, step, ETA) is refreshed every ``status_every`` seconds.
    """

    def __init__(self, run, steps_per_epoch: int, epochs: int, status_every: float = 1.0):
        super().__init__()
        self.run = Run(run)
        self.steps = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.status_every = status_every
        self._f = None
        self._epoch = 0
        self._t0 = time.time()
        self._last_status = 0.0
        self._done_steps = 0

    def _write(self, rec: dict) -> None:
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def on_train_begin(self, logs=None):
        self._f = self.run.open_metrics()
        self._t0 = time.time()
        self._done_steps = 0
        self._ends = deque(maxlen=ETA_WINDOW + 1)  # end times of the latest steps

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        self._write({"kind": "batch", "epoch": self._epoch + 1, "step": batch + 1, "steps": self.steps,
                     "time": round(now, 3), **_clean(logs)})
        self._done_steps += 1
        self._ends.append(now)
        if now - self._last_status >= self.status_every:
            self._last_status = now
            remaining = (self.epochs - self._epoch) * self.steps - (batch + 1)
            rate = self.steps_per_s(now)
            self.run.write_status("running", epoch=self._epoch + 1, epochs=self.epochs, step=batch + 1,
                         steps=self.steps, eta_s=round(remaining / max(rate, 1e-6), 1),
                         steps_per_s=round(rate, 2))

    def steps_per_s(self, now: float) -> float:
        """Measured speed: over the latest ETA_WINDOW steps once there are two, so the first step's
        graph tracing (often many times a step) does not stretch the ETA; before that, since the start."""
        if len(self._ends) >= 2:
            return (len(self._ends) - 1) / max(self._ends[-1] - self._ends[0], 1e-6)
        return self._done_steps / max(now - self._t0, 1e-6)

    def on_epoch_end(self, epoch, logs=None):
        self._write({"kind": "epoch", "epoch": epoch + 1, "time": round(time.time(), 3), **_clean(logs)})

    def on_train_end(self, logs=None):
        if self._f:
            self._f.close()
            self._f = None


def calibration_metrics(scores, labels, identical, threshold: float = 0.0) -> dict:
    """What the per-epoch metric reports on scored calibration pairs (identical pairs left out, as the
    threshold's fit leaves them out): ``cal_threshold`` (``threshold`` when > 0, else the best-accuracy
    threshold on these pairs, as the run's threshold is fitted when training ends), ``cal_accuracy`` at it,
    ``cal_roc_auc`` (None with one label only) and ``cal_pairs``."""
    from .evaluate import metrics_at, roc_auc, suggest_thresholds
    keep = ~np.asarray(identical, bool)
    s, y = np.asarray(scores, np.float64)[keep], np.asarray(labels)[keep]
    if not len(s):
        return {"cal_pairs": 0}
    t = float(threshold) if threshold and threshold > 0 else float(suggest_thresholds(s, y).best_accuracy)
    auc = roc_auc(s, y)
    return {"cal_threshold": t, "cal_accuracy": float(metrics_at(s, y, t).accuracy),
            "cal_roc_auc": None if auc != auc else float(auc), "cal_pairs": int(len(s))}


class CalibrationMetrics(keras.callbacks.Callback):
    """At every epoch's end, score the calibration pairs with the model as it is now and add
    :func:`calibration_metrics` to the epoch's logs (so :class:`LiveMetrics` records them and the Train page
    plots them): the same quantity the Threshold page shows, unlike Keras' in-batch accuracy at 0.5.

    ``score_fn()`` returns the scores of the pairs whose ``labels`` and ``identical`` flags are given (the
    training loop passes at most 1,000 calibration pairs, seeded, with the distortion the final scores get);
    ``threshold`` > 0 is the run's fixed threshold (a preset's), else each epoch's best-accuracy threshold.
    Put it before the callbacks that record the logs."""

    def __init__(self, score_fn, labels, identical, threshold: float = 0.0):
        super().__init__()
        self.score_fn = score_fn
        self.labels = np.asarray(labels)
        self.identical = np.asarray(identical, bool)
        self.threshold = float(threshold or 0.0)
        self.last: dict = {}

    def on_epoch_end(self, epoch, logs=None):
        if not len(self.labels):
            return
        self.last = calibration_metrics(self.score_fn(), self.labels, self.identical, self.threshold)
        if logs is not None:
            logs.update({k: v for k, v in self.last.items() if v is not None})


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the whole model (weights + optimizer) after every epoch, for resume, as a pair that a kill at
    any moment leaves consistent (:meth:`Run.save_checkpoint <siamese_core.runs.run.Run.save_checkpoint>`)."""

    def __init__(self, run):
        super().__init__()
        self.run = Run(run)

    def on_epoch_end(self, epoch, logs=None):
        self.run.save_checkpoint(self.model, epoch + 1, _clean(logs))


class StopOnRequest(keras.callbacks.Callback):
    """End training after the current batch once a stop is requested (:meth:`Run.request_stop`)."""

    def __init__(self, run):
        super().__init__()
        self.run = Run(run)
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if self.run.stop_requested():
            self.stopped = True
            self.model.stop_training = True
