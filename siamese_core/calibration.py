"""Labelled pairs in, numbers out: fit a run's fusion on them, or measure a run on them, per kind of pair.

A labelled pairs CSV has ``image_a,image_b,label`` (0 = same place, 1 = different) and optionally
``kind`` (e.g. ``two_dates``, ``rotated``) to report each kind of pair on its own: a tool that is
perfect on rotated copies and at chance on two dates must not hide behind one average.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from .errors import SiameseError
from .evaluate import metrics_at, roc_auc
from .fusion import feature_row, fit_fusion
from .inference import Judgement, Scorer, judge_rows, read_pairs_csv
from .runs import is_bundled, run_path, save_threshold
from .store import check_name, write_json_atomic


def read_labelled(path: Path) -> tuple[list[dict], list[int], list[int]]:
    """Rows, labels (0/1) and line numbers of a labelled pairs CSV; a bad label refuses the file."""
    rows, cols, lines = read_pairs_csv(path)
    if "label" not in cols:
        raise SiameseError(f"{path}: no 'label' column; a labelled pairs CSV needs image_a,image_b,label "
                           f"(0 = same place, 1 = different)")
    labels = []
    for r, n in zip(rows, lines):
        v = r["label"].strip()
        if v not in ("0", "1"):
            raise SiameseError(f"{path}: line {n}: label {v!r} is not 0 (same place) or 1 (different)")
        labels.append(int(v))
    if not rows:
        raise SiameseError(f"{path}: no pairs")
    return rows, labels, lines


def judged(scorer: Scorer, path: Path, progress=None) -> tuple[list[dict], np.ndarray, list[Judgement]]:
    """Judge every row of a labelled CSV; rows whose images cannot be read are refused (named)."""
    path = Path(path)
    rows, labels, lines = read_labelled(path)
    js = judge_rows(scorer, rows, path.parent, progress=progress)
    bad = [(n, j) for n, j in zip(lines, js) if not isinstance(j, Judgement)]
    if bad:
        raise SiameseError(f"{path}: line {bad[0][0]}: {bad[0][1]}"
                           + (f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else "") + "; fix or drop them")
    return rows, np.array(labels), js


def calibrate(scorer: Scorer, pairs_csv: Path, into: str | None = None, workspace=None, progress=None) -> dict:
    """Fit the run's fusion on labelled pairs and save it (``fusion.json`` + the threshold).

    The bundled run is read-only: its calibration goes into a copy named ``into`` in the workspace."""
    rows, y, js = judged(scorer, pairs_csv, progress)
    feats = [feature_row(j.distance, j.geo) for j in js]
    fusion = fit_fusion(feats, y, fitted_on=f"{Path(pairs_csv).name}: {len(y)} pairs, "
                                            f"{int(np.sum(y == 0))} same, {int(np.sum(y == 1))} different")
    run_dir = scorer.run_dir
    if into or is_bundled(run_dir):
        if not into:
            raise SiameseError("the bundled run is read-only; give --as NAME to save a calibrated copy")
        check_name(into, "run")
        target = run_path(into, workspace)
        if target.exists():
            raise SiameseError(f"run {into!r} already exists; choose another --as NAME")
        shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("MODEL_CARD.md", "*.tmp*"))
        run_dir = target
    fused = fusion.scores(feats)
    save_calibration_scores(run_dir, fused, y, rows, Path(pairs_csv).parent, js)
    fusion.save(run_dir / "fusion.json")
    save_threshold(run_dir, fusion.threshold, "calibrated (fusion)")
    rep = {"run": run_dir.name, "fusion": fusion.to_dict(), "pairs": len(y),
           "roc_auc": roc_auc(fused, y), "accuracy": metrics_at(fused, y, fusion.threshold).accuracy}
    return rep


CALIBRATION_SCORES = "calibration_scores.npz"


def save_calibration_scores(run_dir: Path, scores, labels, rows, base: Path, js) -> None:
    """The fused scores of the calibration pairs, with their labels, kinds, image paths and evidence:
    what the Threshold page sweeps for a fused run (the model is not run again)."""
    def path(p):
        q = Path(p.strip())
        return str(q if q.is_absolute() else (base / q).resolve())
    tmp = Path(run_dir) / f".{CALIBRATION_SCORES}.tmp.npz"
    np.savez(tmp, score=np.asarray(scores, np.float32), label=np.asarray(labels, np.uint8),
             kind=np.array([r.get("kind", "").strip() for r in rows]),
             path_a=np.array([path(r["image_a"]) for r in rows]), path_b=np.array([path(r["image_b"]) for r in rows]),
             distance=np.array([j.distance for j in js], np.float32),
             inliers=np.array([j.geo.inliers for j in js], np.int32))
    tmp.replace(Path(run_dir) / CALIBRATION_SCORES)


def evaluate_pairs(scorer: Scorer, pairs_csv: Path, threshold: float | None = None, progress=None) -> dict:
    """ROC-AUC and accuracy of the run on labelled pairs, overall and per ``kind`` (fused score, and each
    piece of evidence alone). Stored under the run as ``evaluations/<csv name>.json`` when writable."""
    rows, y, js = judged(scorer, pairs_csv, progress)
    t = scorer.threshold if threshold is None else threshold
    kinds = [r.get("kind", "").strip() or "all" for r in rows]
    parts = {"score": np.array([j.score for j in js]), "distance": np.array([j.distance for j in js]),
             "inliers": -np.array([j.geo.inliers for j in js], float),
             "structure": -np.array([j.geo.structure for j in js])}
    out = {"pairs_csv": str(pairs_csv), "threshold": t, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "kinds": {}}
    for k in sorted(set(kinds)) + (["all"] if len(set(kinds)) > 1 else []):
        m = np.array([kk == k for kk in kinds]) if k != "all" or len(set(kinds)) == 1 else np.ones(len(y), bool)
        yk = y[m]
        entry = {"pairs": int(m.sum()), "same": int(np.sum(yk == 0)), "different": int(np.sum(yk == 1))}
        both = 0 < entry["same"] < entry["pairs"]
        for name, v in parts.items():
            entry[f"roc_auc_{name}"] = round(roc_auc(v[m], yk), 4) if both else None
        mt = metrics_at(parts["score"][m], yk, t)
        entry.update(accuracy=round(mt.accuracy, 4), tp=mt.tp, fp=mt.fp, tn=mt.tn, fn=mt.fn)
        out["kinds"][k] = entry
    if not is_bundled(scorer.run_dir):
        (scorer.run_dir / "evaluations").mkdir(exist_ok=True)
        write_json_atomic(scorer.run_dir / "evaluations" / f"{Path(pairs_csv).stem}.json", out)
    return out


__all__ = ["read_labelled", "judged", "calibrate", "evaluate_pairs", "save_calibration_scores", "CALIBRATION_SCORES"]
