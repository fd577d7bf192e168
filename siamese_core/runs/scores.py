"""The numbers a run keeps: its calibration and test pairs' scores, the report on them, the fused scores of the pairs
it was calibrated on, and the evaluations stored by ``evaluate --pairs`` / ``--dataset``.

Part of :class:`~siamese_core.runs.run.Run` (which inherits :class:`RunScores`), kept in a file of its own: the run
directory's layout, status, model and lock are one concern, the arrays of scores another. Every reader returns
plain NumPy arrays with the same keys whatever the file's age, and says in one line what to do when a file is
missing or unreadable; the pages, the CLI and training never open these ``.npz`` files themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.config import workspace_dir
from ..core.errors import RunError
from ..core.files import atomic_file, read_json, write_json_atomic
from ..core.keys import digest

# what a run's numbers are labelled with when they come from the pairs its threshold was fitted on
VALIDATION_LABEL = "validation pairs (the threshold was fitted on them: optimistic)"

# the arrays of a calibration scores file and of a stored evaluation; text and evidence columns a file lacks
# (an older one) come back blank or NaN
CALIBRATION_KEYS = ("score", "label", "kind", "path_a", "path_b", "distance", "inliers")
EVALUATION_KEYS = ("score", "label", "kind", "path_a", "path_b", "a", "b", "distance", "inliers", "structure",
                   "structure_identity")


def _filled(v: dict, n: int) -> dict:
    """``v`` with its text columns (kind, image paths) and evidence columns (distance, inliers) of length ``n``:
    blank and NaN where the file lacks them; score as float64 and label as int64."""
    for k in ("kind", "path_a", "path_b"):
        v[k] = np.asarray(v[k]).astype(str) if k in v and len(v[k]) == n else np.full(n, "", dtype=str)
    for k in ("distance", "inliers", "structure", "structure_identity"):
        v[k] = np.asarray(v[k], dtype=float) if k in v and len(v[k]) == n else np.full(n, np.nan)
    v["score"] = v["score"].astype(np.float64)
    v["label"] = v["label"].astype(np.int64)
    return v


class RunScores:
    """The score files of a run (mixed into :class:`~siamese_core.runs.run.Run`, which names them)."""

    @property
    def val_scores_path(self) -> Path:
        """The calibration pairs' scores (``val_scores.npz``; a run from before the test split: its validation pairs)."""
        return self.path / self.VAL_SCORES

    @property
    def test_scores_path(self) -> Path:
        return self.path / self.TEST_SCORES

    def has_val_scores(self) -> bool:
        return self.val_scores_path.exists()

    def has_test_scores(self) -> bool:
        return self.test_scores_path.exists()

    def _save_scores(self, path: Path, score, label, a, b, distort_seed: int | None) -> None:
        self._writable()
        with atomic_file(path) as tmp:
            np.savez(tmp, score=score, label=label, a=a, b=b,
                     distort_seed=-1 if distort_seed is None else int(distort_seed))

    def _scores(self, path: Path, what: str) -> dict:
        if not path.exists():
            raise RunError(f"run {self.name!r} has no {what} scores yet; wait for it to finish")
        try:
            with np.load(path) as z:
                out = {k: np.asarray(z[k]) for k in ("score", "label", "a", "b")}
                seed = int(z["distort_seed"]) if "distort_seed" in z.files else -1
        except (OSError, ValueError, KeyError) as e:
            raise RunError(f"run {self.name!r}: {what} scores are unreadable ({type(e).__name__})") from None
        out["score"] = out["score"].astype(np.float64)
        out["identical"] = out["a"] == out["b"]
        out["distort_seed"] = None if seed < 0 else seed
        return out

    def save_val_scores(self, score, label, a, b, distort_seed: int | None = None) -> None:
        """The calibration pairs' scores; ``distort_seed``: the seed of the distortion tile B got (None: none)."""
        self._save_scores(self.val_scores_path, score, label, a, b, distort_seed)

    def save_test_scores(self, score, label, a, b, distort_seed: int | None = None) -> None:
        """The test pairs' scores (as :meth:`save_val_scores`)."""
        self._save_scores(self.test_scores_path, score, label, a, b, distort_seed)

    def val_scores(self) -> dict:
        """A finished run's calibration (validation) scores: score, label, a, b, identical (numpy arrays) and
        distort_seed (None when tile B was not distorted)."""
        return self._scores(self.val_scores_path, "validation")

    def test_scores(self) -> dict:
        """A finished run's test scores (as :meth:`val_scores`); a RunError for a run without test pairs."""
        if not self.has_test_scores() and self.has_val_scores():
            raise RunError(f"run {self.name!r} has no test pairs (it was trained before the three-way split); "
                           f"its validation scores are what it has")
        return self._scores(self.test_scores_path, "test")

    def evaluation(self) -> dict:
        """The report written when training ended ({} before): on the test pairs, or on the validation pairs
        for a run from before the test split (see :meth:`evaluation_pairs`)."""
        ev = read_json(self.path / self.EVALUATION)
        return ev if isinstance(ev, dict) else {}

    def evaluation_pairs(self) -> dict:
        """Which pairs :meth:`evaluation` reports: ``{"split": "test" | "validation", "pairs", "places",
        "distorted", "label"}``. ``label`` is the one line every page and the CLI show with the numbers."""
        ev = self.evaluation()
        info = ev.get("pairs")
        if isinstance(info, dict) and info.get("split") == "test":
            return info
        n = (ev.get("all") or {}).get("n_pairs")
        return {"split": "validation", "pairs": n, "places": None, "distorted": False,
                "label": VALIDATION_LABEL}

    def save_evaluation(self, report: dict) -> None:
        self._writable()
        write_json_atomic(self.path / self.EVALUATION, report)

    def evaluations_dir(self, workspace=None) -> Path:
        """Where the run's stored evaluations live: ``<run>/evaluations/`` for a workspace run, and
        ``<workspace>/evaluations/<run>/`` for the bundled run, which is read-only."""
        if self.is_bundled:
            return workspace_dir(workspace) / self.EVALUATIONS / self.name
        return self.path / self.EVALUATIONS

    @property
    def calibration_scores_path(self) -> Path:
        """The fused scores of the pairs the run was calibrated on (what the Threshold page sweeps)."""
        return self.path / self.CALIBRATION_SCORES

    def has_calibration_scores(self) -> bool:
        return self.calibration_scores_path.exists()


    def save_calibration_scores(self, arrays: dict, fusion: dict | None) -> None:
        """Write the fused scores of the calibration pairs (``score``, ``label``, ``kind``, ``path_a``, ``path_b``,
        ``distance``, ``inliers``), aside and then renamed into place, keyed on the ``fusion`` (its dict) that scored
        them: until the run's verdict holds that fusion (calibrate saves it just after), they are not served."""
        self._writable()
        with atomic_file(self.calibration_scores_path) as tmp:
            np.savez(tmp, **arrays, fusion_key=np.array(digest(fusion)))

    def calibration_scores(self) -> dict:
        """The fused scores of the pairs the run was calibrated on: :data:`CALIBRATION_KEYS` as arrays of one length
        (score float64, label int64; a file without kinds, paths or evidence gives blanks and NaN). A RunError
        naming the fix when the file is missing, unreadable or without scores and labels."""
        try:
            with np.load(self.calibration_scores_path, allow_pickle=False) as z:
                v = {k: np.asarray(z[k]) for k in CALIBRATION_KEYS if k in z.files}
                key = str(z["fusion_key"]) if "fusion_key" in z.files else None
        except FileNotFoundError:
            raise RunError(f"run {self.name!r} has no calibration scores; run "
                           f"`python -m siamese_core calibrate --run {self.name} --pairs LABELLED.csv`") from None
        except (OSError, ValueError, KeyError) as e:
            raise RunError(f"run {self.name!r}: calibration scores are unreadable ({type(e).__name__}); "
                           f"calibrate the run again") from None
        if "score" not in v or "label" not in v or len(v["score"]) != len(v["label"]) or not len(v["score"]):
            raise RunError(f"run {self.name!r}: calibration scores lack scores or labels; calibrate the run again")
        if key is not None and key != self.verdict_key():
            raise RunError(f"run {self.name!r}: its calibration scores are not those of its present fusion (a "
                           f"calibration was interrupted); calibrate the run again")
        return _filled(v, len(v["score"]))

    # --- stored evaluations (evaluate --pairs / --dataset) ----------------------------------------
    def save_stored_evaluation(self, stem: str, summary: dict, arrays: dict, workspace=None) -> Path:
        """``<stem>.json`` (the summary) and ``<stem>.npz`` (the raw scores, for the Threshold page) under
        :meth:`evaluations_dir`; returns the json's path. Allowed for the bundled run: its evaluations live in the
        workspace."""
        d = self.evaluations_dir(workspace)
        d.mkdir(parents=True, exist_ok=True)
        key = str(summary.get("key", ""))
        with atomic_file(d / f"{stem}.npz") as tmp:
            np.savez(tmp, **arrays, key=np.array(key))
        write_json_atomic(d / f"{stem}.json", summary)
        return d / f"{stem}.json"

    def save_stored_summary(self, stem: str, summary: dict, workspace=None) -> None:
        """Replace the summary of stored evaluation ``stem`` (its scores stay): a new threshold's numbers."""
        write_json_atomic(self.evaluations_dir(workspace) / f"{stem}.json", summary)

    def stored_evaluation_key(self, stem: str, workspace=None) -> str | None:
        """The key the scores file of stored evaluation ``stem`` was written with (None: none, or unreadable)."""
        try:
            with np.load(self.stored_evaluation_path(stem, workspace), allow_pickle=False) as z:
                return str(z["key"]) if "key" in z.files else None
        except (OSError, ValueError, KeyError):
            return None

    def stored_evaluation_path(self, stem: str, workspace=None) -> Path:
        """The scores file of stored evaluation ``stem`` (its modification time keys the pages' caches)."""
        return self.evaluations_dir(workspace) / f"{stem}.npz"

    def stored_evaluations(self, workspace=None) -> dict:
        """``{stem: summary}`` of every stored evaluation that has its scores file, in name order (the summary is
        {} when its json is missing, unreadable, or not that of the scores beside it: a crash between the two)."""
        d = self.evaluations_dir(workspace)
        out = {}
        for npz in sorted(d.glob("*.npz")) if d.is_dir() else []:
            if not npz.name.startswith("."):
                out[npz.stem] = self._summary_of(npz.stem, workspace)
        return out

    def _summary_of(self, stem: str, workspace=None) -> dict:
        info = read_json(self.evaluations_dir(workspace) / f"{stem}.json")
        if not isinstance(info, dict):
            return {}
        if "key" in info and info["key"] != self.stored_evaluation_key(stem, workspace):
            return {}
        return info

    def stored_evaluation(self, stem: str, workspace=None) -> dict:
        """Stored evaluation ``stem``: :data:`EVALUATION_KEYS` present in its file as arrays (score float64, label
        int64, blanks and NaN for missing text and evidence) and ``info``, its summary. A RunError naming the fix
        when it is unreadable or has no scores and labels."""
        p = self.stored_evaluation_path(stem, workspace)
        try:
            with np.load(p, allow_pickle=False) as z:
                v = {k: np.asarray(z[k]) for k in EVALUATION_KEYS if k in z.files}
        except (OSError, ValueError, KeyError) as e:
            raise RunError(f"the stored evaluation {p.stem!r} is unreadable ({type(e).__name__}); run "
                           f"`evaluate` again") from None
        if "score" not in v or "label" not in v or len(v["score"]) != len(v["label"]) or not len(v["score"]):
            raise RunError(f"the stored evaluation {p.stem!r} lacks scores or labels; run `evaluate` again")
        return {**_filled(v, len(v["score"])), "info": self._summary_of(stem, workspace)}


__all__ = ["RunScores", "VALIDATION_LABEL", "CALIBRATION_KEYS", "EVALUATION_KEYS"]
