"""Keras callbacks that connect a training process to the outside: live metrics, checkpoints, stop.

The dashboard never talks to the training process; it reads what these callbacks write into the run
directory (``metrics.jsonl``, ``status.json``, ``checkpoint.keras``) and writes a ``stop`` file.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path

from ._backend import keras

from .runs import CHECKPOINT_FILES, checkpoint_path, stop_requested, write_status
from .store import write_json_atomic


ETA_WINDOW = 20  # steps the ETA's speed is measured over


def _clean(logs: dict | None) -> dict:
    return {k: float(v) for k, v in (logs or {}).items()}


class LiveMetrics(keras.callbacks.Callback):
    """Append one JSON line per batch and per epoch to ``metrics.jsonl``, flushed as it happens.

    Batch lines: ``{"kind": "batch", "epoch", "step", "steps", "loss", "accuracy", "time"}``; epoch
    lines add ``val_loss`` and ``val_accuracy``. Status (epoch, step, ETA) is refreshed every
    ``status_every`` seconds.
    """

    def __init__(self, run_dir, steps_per_epoch: int, epochs: int, status_every: float = 1.0):
        super().__init__()
        self.run_dir = Path(run_dir)
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
        self._f = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
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
            write_status(self.run_dir, "running", epoch=self._epoch + 1, epochs=self.epochs, step=batch + 1,
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


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the whole model (weights + optimizer) after every epoch, for resume, so that a kill at any
    moment leaves a consistent pair: the model goes to whichever of two files ``checkpoint.json`` does
    not point to, and only then does ``checkpoint.json`` (replaced atomically) point to it and name its
    epoch. Until that moment the previous pair is untouched (as Keras' BackupAndRestore keeps its own)."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, epoch, logs=None):
        current = checkpoint_path(self.run_dir)
        name = CHECKPOINT_FILES[1] if current is not None and current.name == CHECKPOINT_FILES[0] else CHECKPOINT_FILES[0]
        tmp = self.run_dir / f".{name}.tmp.keras"
        self.model.save(tmp)
        os.replace(tmp, self.run_dir / name)
        write_json_atomic(self.run_dir / "checkpoint.json", {"epoch": epoch + 1, "file": name, **_clean(logs)})


class StopOnRequest(keras.callbacks.Callback):
    """End training after the current batch once a ``stop`` file appears in the run directory."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if stop_requested(self.run_dir):
            self.stopped = True
            self.model.stop_training = True
