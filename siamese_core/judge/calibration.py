"""Labelled pairs in, numbers out: fit a run's fusion on them, or measure a run on them, per kind of pair.

A labelled pairs CSV has ``image_a,image_b,label`` (0 = same place, 1 = different) and optionally
``kind`` (e.g. ``two_dates``, ``rotated``) to report each kind of pair on its own: a tool that is
perfect on rotated copies and at chance on two dates must not hide behind one average.

Calibrating saves the fusion and its threshold as one verdict (:meth:`Run.save_verdict
<siamese_core.runs.run.Run.save_verdict>`); ``--as NAME`` builds the calibrated copy in a temporary folder and
publishes it whole. A stored evaluation is keyed on what its scores depend on (:func:`evaluation_key`: the model,
the fusion, the input files, the code's format) and reused while the key holds; a new threshold only recomputes the
summary from the stored scores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..core.errors import SiameseError
from ..core.files import check_name, make_temp_dir, publish, remove
from ..core.keys import digest, file_stamp
from ..data.pairs_csv import read_pairs_csv, resolve_image
from ..learn.evaluate import metrics_at, roc_auc
from ..runs.registry import run_path
from ..runs.run import Run
from ..runs.verdict import FUSED_SOURCE
from .fusion import Band, feature_row, fit_fusion
from .inference import Judgement, Scorer, judge_rows

EVAL_FORMAT = 2  # raise when a change of the code changes what a stored evaluation holds: older ones are recomputed


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
    """Fit the run's fusion on labelled pairs and save it: the fused scores of these pairs, then the fusion and its
    threshold as one verdict (a crash between leaves the old verdict, whole, and scores that are not served).

    The bundled run is read-only: its calibration goes into a copy named ``into`` in the workspace, built in a
    temporary folder and renamed into place once calibrated (a crash leaves no half run)."""
    rows, y, js = judged(scorer, pairs_csv, progress)
    feats = [feature_row(j.distance, j.geo) for j in js]
    kinds = sorted({r.get("kind", "").strip() for r in rows} - {""})
    fusion = fit_fusion(feats, y, groups=[r["image_a"].strip() for r in rows],  # one tile A: one fold
                        fitted_on=f"{Path(pairs_csv).name}: {len(y)} pairs, {int(np.sum(y == 0))} same, "
                                  f"{int(np.sum(y == 1))} different" + (f" ({', '.join(kinds)})" if kinds else ""))
    fdict = json.loads(json.dumps(fusion.to_dict()))  # exactly what the verdict file will hold (its key too)
    fused = fusion.scores(feats)
    base = Path(pairs_csv).parent

    def save(run: Run) -> None:
        save_calibration_scores(run, fused, y, rows, base, js, fdict)
        run.save_verdict(fdict, fusion.threshold, FUSED_SOURCE)

    run = scorer.run
    if into or run.is_bundled:
        if not into:
            raise SiameseError("the bundled run is read-only; give --as NAME to save a calibrated copy")
        check_name(into, "run")
        target = run_path(into, workspace)
        if target.exists():
            raise SiameseError(f"run {into!r} already exists; choose another --as NAME")
        tmp = make_temp_dir(target.parent, f".tmp-{into}")
        try:
            save(run.copy_to(tmp))
            if target.exists():
                raise SiameseError(f"run {into!r} was made meanwhile by another process; choose another --as NAME")
            publish(tmp, target)
        except BaseException:
            remove(tmp)
            raise
        run = Run(target)
    else:
        save(run)
    split = fusion.band.outcome(fused, y, fusion.threshold)
    return {"run": run.name, "fusion": fdict, "pairs": len(y), "roc_auc": roc_auc(fused, y),
            "accuracy": metrics_at(fused, y, fusion.threshold).accuracy, "undecided": split["share"],
            "accuracy_decided": split["accuracy"]}


def save_calibration_scores(run, scores, labels, rows, base: Path, js, fusion: dict | None) -> None:
    """The fused scores of the calibration pairs, with their labels, kinds, image paths and evidence:
    what the Threshold page sweeps for a fused run (the model is not run again). Keyed on ``fusion`` (its dict)."""
    def path(p):
        q = Path(p.strip())
        return str(q if q.is_absolute() else (base / q).resolve())
    Run(run).save_calibration_scores(dict(
        score=np.asarray(scores, np.float32), label=np.asarray(labels, np.uint8),
        kind=np.array([r.get("kind", "").strip() for r in rows]),
        path_a=np.array([path(r["image_a"]) for r in rows]), path_b=np.array([path(r["image_b"]) for r in rows]),
        distance=np.array([j.distance for j in js], np.float32),
        inliers=np.array([j.geo.inliers for j in js], np.int32)), fusion)


EVAL_SEED = 0          # the pairs drawn from a dataset by evaluate_dataset: same dataset, same pairs
EVAL_MAX_PAIRS = 2000  # at most this many of them (a seeded sample)
EVIDENCE_PARTS = ("distance", "inliers", "structure", "structure_identity")  # each reported alone too
FALSE_SAME_AT = 0.01   # each piece of evidence alone: its recall where it lets this share of different places by


def _evidence(js: list) -> dict:
    """The fused score and each piece of evidence as a score where lower = more alike (for a ROC-AUC of each
    alone): the learned distance, the keypoint inliers, the edge agreement once aligned and as laid."""
    return {"score": np.array([j.score for j in js], float), "distance": np.array([j.distance for j in js], float),
            "inliers": -np.array([j.geo.inliers for j in js], float),
            "structure": -np.array([j.geo.structure for j in js], float),
            "structure_identity": -np.array([j.geo.structure_identity for j in js], float)}


def _recall_at_false_same(v: np.ndarray, y: np.ndarray, rate: float = FALSE_SAME_AT) -> float | None:
    """Share of same places scored below the point that lets ``rate`` of the different places through."""
    same, diff = v[y == 0], np.sort(v[y == 1])
    if not len(same) or not len(diff):
        return None
    cut = diff[int(rate * len(diff))]  # strictly below the k-th lowest different place
    return round(float(np.mean(same < cut)), 4)


def _summary(kinds: list, y: np.ndarray, parts: dict, t: float, band: Band | None = None) -> dict:
    """Per kind (and "all" when there are several), for the fused verdict at the threshold ``t``: recall of
    "same place", the false "same" rate, the undecided share (inside ``band``) and the accuracy on the decided
    pairs, accuracy and confusion counts; and for the fused score and each piece of evidence alone: ROC-AUC
    and the recall at 1 % false "same"."""
    band = band or Band()
    out = {}
    for k in sorted(set(kinds)) + (["all"] if len(set(kinds)) > 1 else []):
        m = np.array([kk == k for kk in kinds]) if k != "all" or len(set(kinds)) == 1 else np.ones(len(y), bool)
        yk, sk = y[m], parts["score"][m]
        entry = {"pairs": int(m.sum()), "same": int(np.sum(yk == 0)), "different": int(np.sum(yk == 1))}
        both = 0 < entry["same"] < entry["pairs"]
        for name, v in parts.items():
            entry[f"roc_auc_{name}"] = round(roc_auc(v[m], yk), 4) if both else None
            entry[f"recall_at_1pct_{name}"] = _recall_at_false_same(v[m], yk) if both else None
        split = band.outcome(sk, yk, t)
        entry.update(
            recall=round(float(np.mean(sk[yk == 0] <= t)), 4) if entry["same"] else None,
            false_same=round(float(np.mean(sk[yk == 1] <= t)), 4) if entry["different"] else None,
            undecided=round(split["share"], 4),
            accuracy_decided=None if split["accuracy"] is None else round(split["accuracy"], 4))
        mt = metrics_at(sk, yk, t)
        entry.update(accuracy=round(mt.accuracy, 4), tp=mt.tp, fp=mt.fp, tn=mt.tn, fn=mt.fn)
        out[k] = entry
    return out


def scored_with(scorer: Scorer) -> dict:
    """What the scores of ``scorer`` depend on besides their inputs: the model file (size, mtime), the fusion (a digest
    of its dict) and the code's format (:data:`EVAL_FORMAT`)."""
    fusion = scorer.fusion_key or digest(scorer.fusion.to_dict() if scorer.fusion is not None else None)
    return {"format": EVAL_FORMAT, "model": file_stamp(scorer.run.model_path), "fusion": fusion}


def evaluation_key(scorer: Scorer, inputs: dict) -> str:
    """The key of a stored evaluation: :func:`scored_with` and the inputs' stamps (files' size and mtime)."""
    return digest(scored_with(scorer), inputs)


def _reused(scorer: Scorer, stem: str, key: str, t: float, workspace, kinds_of) -> dict | None:
    """The stored evaluation ``stem`` when its key is ``key`` (None otherwise): as stored when its threshold is ``t``,
    else with its summary recomputed at ``t`` from the stored scores (the pairs are not judged again)."""
    run = scorer.run
    info = run.stored_evaluations(workspace).get(stem)
    if not info or info.get("key") != key or run.stored_evaluation_key(stem, workspace) != key:
        return None
    if info.get("threshold") == t:
        return {**info, "reused": "all"}
    v = run.stored_evaluation(stem, workspace)
    parts = {"score": v["score"], "distance": v["distance"], "inliers": -v["inliers"], "structure": -v["structure"],
             "structure_identity": -v["structure_identity"]}
    info = {**info, "threshold": t, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "kinds": _summary(kinds_of(v), v["label"], parts, t, scorer.band)}
    run.save_stored_summary(stem, info, workspace)
    return {**info, "reused": "scores"}


def evaluate_pairs(scorer: Scorer, pairs_csv: Path, threshold: float | None = None, progress=None,
                   workspace=None) -> dict:
    """ROC-AUC and accuracy of the run on labelled pairs, overall and per ``kind`` (fused score, and each
    piece of evidence alone). Stored as ``<csv name>.json`` + ``.npz`` (score, label, kind, image paths,
    distance, inliers, structure) under :meth:`Run.evaluations_dir <siamese_core.runs.run.Run.evaluations_dir>` (the
    workspace's for the bundled run), keyed (:func:`evaluation_key`) on the CSV and every image it names: reused while
    nothing changed (``reused`` says what was)."""
    pairs_csv = Path(pairs_csv)
    rows, _, _ = read_labelled(pairs_csv)
    t = scorer.threshold if threshold is None else threshold
    base = pairs_csv.parent
    names = sorted({r.get(c, "").strip() for r in rows for c in ("image_a", "image_b")})
    key = evaluation_key(scorer, {"csv": str(pairs_csv.resolve()), "csv_file": file_stamp(pairs_csv),
                                  "images": [file_stamp(resolve_image(n, base)) if n else None for n in names]})
    stem = pairs_csv.stem
    got = _reused(scorer, stem, key, t, workspace, lambda v: [str(k).strip() or "all" for k in v["kind"]])
    if got is not None:
        return {**got, "stored": str(scorer.run.evaluations_dir(workspace) / f"{stem}.json")}
    rows, y, js = judged(scorer, pairs_csv, progress)
    kinds = [r.get("kind", "").strip() or "all" for r in rows]
    parts = _evidence(js)
    out = {"pairs_csv": str(pairs_csv), "threshold": t, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "fused": scorer.fusion is not None, "key": key, "scored_with": scored_with(scorer),
           "kinds": _summary(kinds, y, parts, t, scorer.band)}

    def path(p):
        q = Path(p.strip())
        return str(q if q.is_absolute() else (base / q).resolve())
    arrays = {"score": parts["score"].astype(np.float32), "label": np.asarray(y, np.uint8),
              "kind": np.array([r.get("kind", "").strip() for r in rows]),
              "path_a": np.array([path(r["image_a"]) for r in rows]),
              "path_b": np.array([path(r["image_b"]) for r in rows]),
              "distance": parts["distance"].astype(np.float32),
              "inliers": np.array([j.geo.inliers for j in js], np.int32),
              "structure": np.array([j.geo.structure for j in js], np.float32),
              "structure_identity": np.array([j.geo.structure_identity for j in js], np.float32)}
    out["stored"] = str(scorer.run.save_stored_evaluation(stem, out, arrays, workspace))
    return out


def dataset_pairs(groups: np.ndarray, max_pairs: int = EVAL_MAX_PAIRS):
    """Validation-like pairs over all of a dataset's groups: one other member of the anchor's group (label 0)
    and one image of another group (label 1) per image, no identical pairs, seed ``EVAL_SEED``; a seeded
    sample of ``max_pairs`` when there are more."""
    from ..core.config import PairsConfig
    from ..data.pairs import make_pairs
    p = make_pairs(groups, PairsConfig(identical=False, negatives=1, seed=EVAL_SEED, test_fraction=0.0))
    p = p.subset(~p.identical)
    if max_pairs and len(p) > max_pairs:
        keep = np.zeros(len(p), bool)
        keep[np.random.default_rng([EVAL_SEED, 3]).choice(len(p), max_pairs, replace=False)] = True
        p = p.subset(keep)
    if not len(p) or not (p.label == 0).any() or not (p.label == 1).any():
        raise SiameseError("the dataset gives no pairs of both kinds (same place and different places); "
                           "it needs groups with at least two images")
    return p


def evaluate_dataset(scorer: Scorer, dataset, workspace=None, progress=None, threshold: float | None = None,
                     max_pairs: int = EVAL_MAX_PAIRS, chunk: int = 128) -> dict:
    """The run on pairs drawn from a dataset (:func:`dataset_pairs`), judged like ``score`` does (the fused
    verdict when the run has one). Stored as ``dataset-<name>.json`` (the structure of
    :func:`evaluate_pairs`, kind "all") and ``dataset-<name>.npz`` (score, label, a, b, distance, inliers)
    under :meth:`Run.evaluations_dir <siamese_core.runs.run.Run.evaluations_dir>`. ``dataset`` is a name or an open Dataset."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from ..data.store import open_dataset
    ds = open_dataset(dataset, workspace) if isinstance(dataset, str) else dataset
    t = scorer.threshold if threshold is None else threshold
    stem = f"dataset-{ds.name}"
    key = evaluation_key(scorer, {"dataset": ds.name, "images": file_stamp(ds.path / "images.npy"),
                                  "groups": file_stamp(ds.path / "groups.npy"), "fingerprint": ds.info.get("fingerprint"),
                                  "max_pairs": max_pairs, "seed": EVAL_SEED})
    got = _reused(scorer, stem, key, t, workspace, lambda v: ["all"] * len(v["score"]))
    if got is not None:
        return {**got, "stored": str(scorer.run.evaluations_dir(workspace) / f"{stem}.json")}
    p = dataset_pairs(np.asarray(ds.groups), max_pairs)
    images = ds.images
    js: list = []
    cache: dict = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for lo in range(0, len(p), chunk):
            a, b = p.a[lo:lo + chunk], p.b[lo:lo + chunk]
            need = sorted({int(i) for i in np.concatenate([a, b])} - set(cache))
            for i, prep in zip(need, pool.map(lambda i: scorer.prepare(np.asarray(images[i])), need)):
                cache[i] = prep
            js += scorer.judge([(cache[int(i)], cache[int(j)]) for i, j in zip(a, b)], t)
            if len(cache) > 4 * chunk:  # bounded memory: keep only what the next chunk needs
                nxt = slice(lo + chunk, lo + 2 * chunk)
                keep = {int(i) for i in np.concatenate([p.a[nxt], p.b[nxt]])}
                cache = {i: v for i, v in cache.items() if i in keep}
            if progress:
                progress(min(lo + chunk, len(p)), len(p))
    y = np.asarray(p.label, np.int64)
    parts = _evidence(js)
    info = ds.info
    out = {"dataset": ds.name, "dataset_images": int(info.get("images", len(ds.groups))), "threshold": t,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "fused": scorer.fusion is not None, "key": key,
           "scored_with": scored_with(scorer),
           "pairs_rule": f"every image with another of its group and one of another group; no identical pairs; "
                         f"seed {EVAL_SEED}; at most {max_pairs}",
           "kinds": _summary(["all"] * len(y), y, parts, t, scorer.band)}
    arrays = {"score": parts["score"].astype(np.float32), "label": np.asarray(y, np.uint8),
              "a": p.a.astype(np.int64), "b": p.b.astype(np.int64), "distance": parts["distance"].astype(np.float32),
              "inliers": np.array([j.geo.inliers for j in js], np.int32),
              "structure": np.array([j.geo.structure for j in js], np.float32),
              "structure_identity": np.array([j.geo.structure_identity for j in js], np.float32)}
    out["stored"] = str(scorer.run.save_stored_evaluation(stem, out, arrays, workspace))
    return out


__all__ = ["read_labelled", "judged", "calibrate", "evaluate_pairs", "evaluate_dataset", "dataset_pairs",
           "save_calibration_scores", "scored_with", "evaluation_key", "EVAL_MAX_PAIRS", "EVAL_SEED", "EVAL_FORMAT"]
