"""A run is a directory; :class:`Run` owns every file in it.

``<workspace>/runs/<run_id>/`` holds ``config.json``, ``status.json``, ``metrics.jsonl`` (appended
live by the training callback), two alternating checkpoints named by ``checkpoint.json``,
``model.keras``, ``pairs.npz``, ``val_scores.npz`` (the calibration pairs' scores: the threshold is fitted on
them), ``test_scores.npz`` (the test pairs': places never used for training or the threshold), ``verdict.json``
(what a score is judged with: the fusion, once calibrated, and the threshold — one file, so that a crash can never
pair a fused score with a threshold meant for the learned distance; runs from before it have ``fusion.json`` and
``threshold.json``, still read), ``evaluation.json`` (the report on the test pairs),
``data.json`` (the dataset's fingerprint when training began), ``train.log`` and, once calibrated,
``calibration_scores.npz``. Only :class:`Run` names these files. Status moves
queued → running → finishing (saving the model, scoring calibration and test pairs) → finished | failed | stopped; a
run whose process died without saying so is reported as ``interrupted`` (:mod:`.liveness`).

The score files (calibration and test scores, the report, stored evaluations) are read and written by the
methods of :class:`~siamese_core.runs.scores.RunScores`, and the verdict (fusion and threshold) by those of
:class:`~siamese_core.runs.verdict.RunVerdict`, both of which :class:`Run` inherits. Finding a run by id is
:mod:`.registry`; the one-job lock, :mod:`.lock`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..core.config import RunConfig
from ..core.errors import DatasetError, RunError
from ..core.files import atomic_file, read_json, write_json_atomic
from ..core.locks import file_lock
from .liveness import job_alive, job_is_ours
from .scores import RunScores
from .verdict import RunVerdict

# The model bundled with the package: a finished, read-only run that every workspace sees under this id
# (a workspace run of the same name takes precedence). See siamese_core/pretrained/MODEL_CARD.md.
PRETRAINED = "pretrained"
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "pretrained"


LIVE = ("queued", "running", "finishing")  # statuses of a run whose job has not ended
_LIVE_RANK = {s: k for k, s in enumerate(LIVE)}


class Run(RunScores, RunVerdict):
    """One run directory and every file in it: the only place that names a run's files.

    ``Run(path)`` (a path, or another Run) opens nothing; :func:`open_run` finds a run by id and checks
    it exists. Writes are atomic (written aside, then renamed), status writes are serialised by a
    per-run lock, and the bundled run refuses every write."""

    CONFIG = "config.json"
    STATUS = "status.json"
    STATUS_LOCK = "status.lock"
    METRICS = "metrics.jsonl"
    CHECKPOINT = "checkpoint.json"
    CHECKPOINT_FILES = ("checkpoint.keras", "checkpoint.b.keras")  # written in turn; CHECKPOINT names the latest
    MODEL = "model.keras"
    PAIRS = "pairs.npz"
    VAL_SCORES = "val_scores.npz"  # the calibration (validation) pairs' scores
    TEST_SCORES = "test_scores.npz"
    VERDICT = "verdict.json"  # the fusion and the threshold, one file
    THRESHOLD = "threshold.json"  # before verdict.json: the threshold alone (still read)
    EVALUATION = "evaluation.json"
    DATA = "data.json"
    FUSION = "fusion.json"  # before verdict.json: the fusion alone (still read)
    CALIBRATION_SCORES = "calibration_scores.npz"
    REFERENCE = "reference.npz"
    LOG = "train.log"
    STOP = "stop"
    EVALUATIONS = "evaluations"
    MODEL_CARD = "MODEL_CARD.md"
    BUILD = "build.json"
    # what a bundled run ships (scripts/build_pretrained.py), besides its model card and build record
    BUNDLE = (CONFIG, MODEL, VERDICT, STATUS, CALIBRATION_SCORES, REFERENCE)
    LEGACY_VERDICT = (FUSION, THRESHOLD)  # what a bundle or run made before verdict.json has instead
    STATUS_LOCK_WAIT_S = 30.0  # status and verdict writes hold the lock for microseconds

    def __init__(self, path):
        self.path = Path(path.path if isinstance(path, Run) else path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / self.CONFIG).exists()

    @property
    def is_bundled(self) -> bool:
        return self.path.resolve() == BUNDLED_DIR

    @property
    def workspace(self) -> Path:
        """The workspace a workspace run lives in (``<workspace>/runs/<id>``)."""
        return self.path.parent.parent

    def _writable(self) -> None:
        if self.is_bundled:
            raise RunError(f"the bundled run {PRETRAINED!r} is read-only; calibrate a copy for your imagery: "
                           f"python -m siamese_core calibrate --run {PRETRAINED} --pairs LABELLED.csv --as NAME")

    # --- config ---------------------------------------------------------------------------------
    @property
    def config(self) -> RunConfig:
        """The run's RunConfig, read fresh (training may rewrite the tile size)."""
        return RunConfig.from_dict(json.loads((self.path / self.CONFIG).read_text()))

    def write_config(self, cfg: RunConfig) -> None:
        self._writable()
        write_json_atomic(self.path / self.CONFIG, cfg.to_dict())

    def created(self) -> float:
        """When the run was made (its config's modification time; 0.0 when unknown)."""
        try:
            return (self.path / self.CONFIG).stat().st_mtime
        except OSError:
            return 0.0

    # --- status ---------------------------------------------------------------------------------
    @property
    def status_path(self) -> Path:
        """The raw status file, for a watcher that records every state it sees (read it with :meth:`status`)."""
        return self.path / self.STATUS

    def status(self) -> dict:
        """The run's status dict; a 'running'/'queued' run whose process is gone reads as 'interrupted'."""
        st = read_json(self.path / self.STATUS)
        if not isinstance(st, dict):
            return {"status": "unknown"}
        if st.get("status") in LIVE and not job_alive(st):
            if st.get("status") == "queued" and time.time() - st.get("updated", 0) < 30:
                return st  # just launched, child not yet reporting
            st = {**st, "status": "interrupted",
                  "error": "the training process ended without finishing (killed?); resume it to continue"}
        return st

    def is_live(self) -> bool:
        """Does a job (queued, running or finishing) still work on this run?"""
        return self.status().get("status") in LIVE

    def write_status(self, status: str, reset: bool = False, **fields) -> dict:
        """Merge ``fields`` into the status and set ``status``, under the run's status lock.

        Within one launch a status never goes backwards (queued → running → finishing → an end): the
        launcher's late 'queued' cannot undo the job's 'running'. ``reset`` marks the first write of a new
        launch or process (a run being created or resumed), which may start again from 'queued'/'running'."""
        self._writable()
        p = self.path / self.STATUS
        with self._locked():  # held for a read and an atomic rename: microseconds
            old = read_json(p)
            old = old if isinstance(old, dict) else {}
            prev = old.get("status")
            if not reset and prev in _LIVE_RANK and status in _LIVE_RANK and _LIVE_RANK[status] < _LIVE_RANK[prev]:
                status = prev
            st = {**old, **fields, "status": status, "updated": time.time()}
            write_json_atomic(p, st)
            return st

    def _locked(self):
        """The run's lock for a read-modify-write of its status or verdict (gives up, naming the holder)."""
        return file_lock(self.path / self.STATUS_LOCK, f"run {self.name!r}", self.STATUS_LOCK_WAIT_S,
                         fix="try again; if it stays, a process of this run is stuck: stop it", note=False)

    # --- stopping -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask a running job to stop after its current batch (it keeps its last checkpoint)."""
        (self.path / self.STOP).touch()

    def stop_requested(self) -> bool:
        return (self.path / self.STOP).exists()

    def clear_stop(self) -> None:
        (self.path / self.STOP).unlink(missing_ok=True)

    def stop(self, wait_s: float = 0.0) -> dict:
        """Request a stop; if the process is still training after ``wait_s`` seconds, terminate it (SIGTERM: the job
        then ends as 'stopped', keeping its last checkpoint).

        A job that is already saving its model ('finishing') is left to finish. Only the process the status names by
        pid *and* start time is ever signalled (:func:`~siamese_core.runs.liveness.job_is_ours`): a pid the job no
        longer holds, or a record without a start time, gets nothing."""
        import signal
        self.request_stop()
        deadline = time.time() + wait_s
        st = self.status()
        while wait_s and time.time() < deadline and st.get("status") in LIVE:
            time.sleep(0.2)
            st = self.status()
        if wait_s and st.get("status") in ("running", "queued") and job_is_ours(st):
            os.kill(int(st["pid"]), signal.SIGTERM)
        return st

    # --- live metrics and the log ---------------------------------------------------------------
    def metrics(self) -> list[dict]:
        """All complete lines of the metrics file (a line being written is skipped)."""
        p = self.path / self.METRICS
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def open_metrics(self):
        """The metrics file, opened to append one JSON line per record (line-buffered). A job killed while
        appending left half a line: it is ended first, so the next record starts a line of its own."""
        p = self.path / self.METRICS
        try:
            with open(p, "rb+") as f:
                if f.seek(0, os.SEEK_END):
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
        except FileNotFoundError:
            pass
        return open(p, "a", buffering=1)

    @property
    def log_path(self) -> Path:
        return self.path / self.LOG

    def append_log(self, text: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(text)

    # --- the model and its checkpoints ----------------------------------------------------------
    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    def has_model(self) -> bool:
        return self.model_path.exists()

    def save_model(self, model) -> None:
        """The trained model, written aside, flushed and renamed into place."""
        self._writable()
        with atomic_file(self.model_path) as tmp:
            model.save(tmp)

    def checkpoint_path(self) -> Path | None:
        """The run's latest complete checkpoint (named by the checkpoint record), or None."""
        info = read_json(self.path / self.CHECKPOINT)
        if info is None:
            return None
        name = info.get("file", self.CHECKPOINT_FILES[0]) if isinstance(info, dict) else self.CHECKPOINT_FILES[0]
        p = self.path / str(name)
        return p if name in self.CHECKPOINT_FILES and p.exists() else None

    def checkpoint_epoch(self) -> int:
        try:
            return int(read_json(self.path / self.CHECKPOINT)["epoch"])
        except (KeyError, TypeError, ValueError):
            return 0

    def save_checkpoint(self, model, epoch: int, logs: dict | None = None) -> None:
        """Save ``model`` as the checkpoint after ``epoch`` epochs so that a kill at any moment leaves a
        consistent pair: the model goes to whichever of the two files the record does not name, and only
        then does the record (replaced atomically) name it and its epoch. Until that moment the previous
        pair is untouched (as Keras' BackupAndRestore keeps its own)."""
        self._writable()
        current = self.checkpoint_path()
        a, b = self.CHECKPOINT_FILES
        name = b if current is not None and current.name == a else a
        with atomic_file(self.path / name) as tmp:
            model.save(tmp)
        write_json_atomic(self.path / self.CHECKPOINT, {"epoch": int(epoch), "file": name, **(logs or {})})

    # --- the pairs (the numbers they earned: scores.RunScores) -----------------------------------
    @property
    def pairs_path(self) -> Path:
        """The train, calibration and test pairs (index arrays into the dataset), drawn when training began."""
        return self.path / self.PAIRS

    # --- familiarity ----------------------------------------------------------------------------
    @property
    def reference_path(self) -> Path:
        """What the run was trained on, for the "unlike its training tiles" warning (:mod:`siamese_core.judge.familiarity`)."""
        return self.path / self.REFERENCE

    def copy_to(self, target: Path) -> "Run":
        """A full copy of the run at ``target`` (a new run; its model card, lock and temporary files stay behind).
        ``target`` should be a temporary folder that the caller publishes (``calibrate --as`` does, once the copy is
        calibrated): a crash midway then leaves no half run listed."""
        target = Path(target)
        skip = shutil.ignore_patterns(self.MODEL_CARD, "*.tmp*", self.STATUS_LOCK, ".*")
        for root, dirs, files in os.walk(self.path):  # file by file: a failure names its file (copytree's would not)
            dirs[:] = [d for d in dirs if d not in skip(root, dirs)]
            dest = target / Path(root).relative_to(self.path)
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted(set(files) - skip(root, files)):
                shutil.copy2(Path(root) / f, dest / f)
        return Run(target)

    def export_bundle(self, out: Path) -> "Run":
        """Copy what a bundled run ships (:attr:`BUNDLE`) to ``out``, without the paths of this machine: the
        calibration pairs keep their scores, not their image paths, and the status only its outcome."""
        import numpy as np
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for f in self.BUNDLE:
            if f != self.VERDICT:
                shutil.copy2(self.path / f, out / f)
        bundle = Run(out)
        v = self.verdict()
        write_json_atomic(bundle.verdict_path, {"format": 1, "fusion": v["fusion"], "threshold": v["threshold"]})
        for name in self.LEGACY_VERDICT:  # an older bundle's two files: verdict.json replaces them
            (out / name).unlink(missing_ok=True)
        with np.load(bundle.calibration_scores_path) as z:
            kept = {k: z[k] for k in z.files}
        kept["path_a"] = kept["path_b"] = np.array([""] * len(kept["score"]))
        with atomic_file(bundle.calibration_scores_path) as tmp:
            np.savez(tmp, **kept)
        st = read_json(bundle.path / self.STATUS) or {}
        write_json_atomic(bundle.path / self.STATUS,
                          {k: st[k] for k in ("status", "device", "started", "updated") if k in st})
        return bundle

    # --- the data it was trained on --------------------------------------------------------------
    def record_dataset(self, ds) -> None:
        """Record which data the run trains on: the dataset's name and content fingerprint."""
        self._writable()
        write_json_atomic(self.path / self.DATA, {"dataset": ds.name, "fingerprint": ds.fingerprint,
                                                  "dataset_created": ds.info.get("created")})

    def dataset_change(self, workspace=None) -> str | None:
        """Why the run's dataset no longer holds the images it was trained on, as one line; None when it does
        (or the run is the bundled one, trained elsewhere). Runs from before fingerprints were recorded fall
        back on dates: a dataset created after the run was, was rebuilt since."""
        if self.is_bundled:
            return None
        from ..data.store import open_dataset
        name = self.config.dataset
        try:
            ds = open_dataset(name, workspace if workspace is not None else self.workspace)
        except DatasetError:
            return f"dataset {name!r} of run {self.name!r} no longer exists"
        rec = read_json(self.path / self.DATA)
        if isinstance(rec, dict) and rec.get("fingerprint") and rec.get("dataset") == name:
            changed = rec["fingerprint"] != ds.fingerprint
        else:
            made = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.created()))
            changed = str(ds.info.get("created", "")) > made
        return f"dataset {name!r} changed since run {self.name!r} was trained (prepare --overwrite)" if changed else None

    # --- resuming -------------------------------------------------------------------------------
    def resume_check(self, workspace=None) -> None:
        """Refuse, in one line, to resume a run that is live, finished, has no checkpoint to continue from, or
        whose dataset changed since its pairs were drawn (they index images that are no longer there)."""
        st = self.status()
        if st.get("status") in LIVE:
            raise RunError(f"run {self.name} is still {st['status']}; stop it before resuming")
        if st.get("status") == "finished":
            raise RunError(f"run {self.name} already finished; start a new run to train more")
        if self.checkpoint_path() is None:
            raise RunError(f"run {self.name} has no checkpoint yet (it stopped during its first epoch); "
                           f"launch a new run instead")
        why = self.dataset_change(workspace)
        if why:
            raise RunError(f"{why}; its pairs no longer match the images, so it cannot resume: train a new run")


def bundled_run() -> Run:
    """The run bundled with the package (:data:`BUNDLED_DIR`, read at each call)."""
    return Run(BUNDLED_DIR)


__all__ = ["Run", "PRETRAINED", "BUNDLED_DIR", "LIVE", "bundled_run"]
