"""One verdict from several kinds of evidence: a small model fitted on calibration pairs of every kind.

The learned distance knows what a place looks like; the geometric step (:mod:`siamese_core.judge.geometry`)
knows whether the layout of one tile reappears in the other under one rotation, scale and shift, and how
well the two tiles' edges agree. Each wins where the other is blind (``docs/verdict.md``), so the score
the tool reports is ``1 − P(same place)`` from a model over all of them, fitted on labelled pairs and
saved next to the run as ``fusion.json``: plain numbers, so it reloads safely anywhere. Lower = more alike.

The model is a small boosted tree ensemble (scikit-learn's ``HistGradientBoostingClassifier``, used only to
fit; scoring walks the saved trees in NumPy) with one rule the data cannot overturn: evidence never counts
backwards. More inliers or better edge agreement never make "same place" less likely; a larger learned
distance, or more keypoints left unmatched, never make it more likely (monotone constraints). Unlike a
logistic model, the trees can learn that "no inliers" means little when nothing could match (a changed
place, a coarse tile) and much when both tiles had plenty to match.

Around the threshold lies a band where the verdict is ``uncertain`` (it moves with the threshold): chosen on out-of-fold predictions of
the calibration pairs so that the pairs outside it are decided with 99.5 % accuracy while as few as
possible (at most :data:`MAX_UNDECIDED`) fall inside. Runs calibrated before the trees (``"kind":
"logistic"``) still load and score as they did, with no band.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import RunError, SiameseError

# name → the sign its effect must have on "same place" (+1: more of it means more alike)
FEATURES = {"distance": -1, "sift": +1, "orb": +1, "structure": +1, "structure_identity": +1, "keypoints": -1,
            "structure_local": +1, "structure_peak": +1}
LOGISTIC_FEATURES = ("distance", "sift", "orb", "structure", "structure_identity")
DECIDED_ACCURACY = 0.995   # the band is as narrow as this accuracy outside it allows ...
MAX_UNDECIDED = 0.08       # ... and never holds more than this share of the calibration pairs
FALSE_SAME = 0.005         # the threshold lets at most this share of different places through (out of fold)


def feature_row(distance: float | None, geo) -> dict:
    """The fusion's inputs for one pair, from the learned distance and a :class:`~siamese_core.judge.geometry.GeoMatch`."""
    return {"distance": float(distance) if distance is not None else 0.0,
            "sift": math.log1p(geo.sift_inliers), "orb": math.log1p(geo.orb_inliers),
            "structure": float(geo.structure), "structure_identity": float(geo.structure_identity),
            "keypoints": math.log1p(min(geo.keypoints_a, geo.keypoints_b)),
            "structure_local": float(geo.structure_local), "structure_peak": float(geo.structure_peak)}


def _matrix(rows, names) -> np.ndarray:
    return np.array([[float(r[n]) for n in names] for r in rows], np.float64).reshape(len(rows), len(names))


@dataclass(frozen=True)
class Band:
    """Where the verdict is ``uncertain``: scores within ``below`` under and ``above`` over the threshold."""

    below: float = 0.0
    above: float = 0.0

    def verdict(self, score: float, threshold: float) -> str:
        if score <= threshold - self.below + 1e-9:  # the edges are calibration scores: float-safe
            return "same"
        if score > threshold + self.above + 1e-9:
            return "different"
        return "uncertain"

    def to_dict(self) -> dict:
        return {"below": self.below, "above": self.above}

    @classmethod
    def from_dict(cls, d) -> "Band":
        d = d or {}
        below, above = float(d.get("below", 0.0)), float(d.get("above", 0.0))
        if not (math.isfinite(below) and math.isfinite(above) and below >= 0 and above >= 0):
            raise ValueError(f"band {d} is not two widths >= 0")
        return cls(below, above)

    def outcome(self, scores, labels, threshold: float) -> dict:
        """How this band around ``threshold`` splits labelled scores (label 0 = same place): pairs, undecided
        pairs, their share, and the accuracy of the decided ones (None when none is decided)."""
        v = np.array([self.verdict(float(x), threshold) for x in np.asarray(scores, float)])
        y = np.asarray(labels)
        dec = v != "uncertain"
        return {"n": int(len(v)), "undecided": int((~dec).sum()), "share": float((~dec).mean()) if len(v) else 0.0,
                "accuracy": float(np.mean((v[dec] == "same") == (y[dec] == 0))) if dec.any() else None}


@dataclass(frozen=True)
class Fusion:
    """The logistic fusion of runs calibrated before the trees: ``P(same) = sigmoid(Σ w·(x − mean)/std + bias)``."""

    names: tuple
    mean: tuple
    std: tuple
    weights: tuple
    bias: float
    threshold: float = 0.5
    fitted_on: str = ""
    band: Band = field(default_factory=Band)

    def prob_same(self, rows) -> np.ndarray:
        x = (_matrix(rows, self.names) - np.array(self.mean)) / np.array(self.std)
        return 1.0 / (1.0 + np.exp(-np.clip(x @ np.array(self.weights) + self.bias, -30, 30)))

    def scores(self, rows) -> np.ndarray:
        """Fused scores, lower = more alike (0 … 1)."""
        return (1.0 - self.prob_same(rows)).astype(np.float32)

    def contributions(self, row: dict) -> dict:
        """Each feature's push toward "same" (+) or "different" (−), in log-odds, for one pair."""
        return {n: float(w * (float(row[n]) - m) / s)
                for n, w, m, s in zip(self.names, self.weights, self.mean, self.std)}

    def to_dict(self) -> dict:
        return {"kind": "logistic", "names": list(self.names), "mean": list(self.mean), "std": list(self.std),
                "weights": list(self.weights), "bias": self.bias, "threshold": self.threshold,
                "band": self.band.to_dict(), "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> "Fusion":
        names = _names(d)
        vals = [tuple(float(v) for v in d[k]) for k in ("mean", "std", "weights")]
        if any(len(v) != len(names) for v in vals) or not all(math.isfinite(x) for v in vals for x in v):
            raise ValueError("mean/std/weights do not match the names")
        return cls(names, *vals, bias=float(d["bias"]), threshold=float(d.get("threshold", 0.5)),
                   fitted_on=str(d.get("fitted_on", "")), band=Band.from_dict(d.get("band")))


@dataclass(frozen=True)
class Trees:
    """Boosted regression trees over the feature matrix, as flat arrays (one row per node, all trees)."""

    feature: np.ndarray    # int: the feature a node splits on (-1 at a leaf)
    threshold: np.ndarray  # float: go left when x <= threshold
    left: np.ndarray       # int: node index (absolute)
    right: np.ndarray
    value: np.ndarray      # float: the leaf's log-odds (inner nodes: the mean of the leaves below, by count)
    roots: np.ndarray      # int: each tree's root node
    depth: int

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """(rows, trees) leaf index each row reaches in each tree."""
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):
            f = self.feature[node]
            inner = f >= 0
            go_left = x[rows, np.maximum(f, 0)] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return node

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("feature", "threshold", "left", "right", "value", "roots")} | {
            "depth": self.depth}

    @classmethod
    def from_dict(cls, d: dict) -> "Trees":
        arr = {k: np.asarray(d[k], float if k in ("threshold", "value") else np.int64)
               for k in ("feature", "threshold", "left", "right", "value", "roots")}
        n = len(arr["feature"])
        if any(len(v) != n for k, v in arr.items() if k != "roots") or not n:
            raise ValueError("tree arrays of different lengths")
        inner = arr["feature"] >= 0
        if (np.any(arr["left"][inner] >= n) or np.any(arr["right"][inner] >= n) or np.any(arr["roots"] >= n)
                or not np.all(np.isfinite(arr["value"]))):
            raise ValueError("tree nodes point outside the tree")
        return cls(**arr, depth=int(d["depth"]))


@dataclass(frozen=True)
class BoostedFusion:
    """``P(same) = sigmoid(baseline + Σ trees(x))`` over :data:`FEATURES`; score = 1 − P(same)."""

    names: tuple
    trees: Trees
    baseline: float
    expected: float            # the log-odds of an average calibration pair (where contributions start)
    threshold: float = 0.5
    band: Band = field(default_factory=Band)
    fitted_on: str = ""

    def log_odds(self, rows) -> np.ndarray:
        x = _matrix(rows, self.names)
        return self.baseline + self.trees.value[self.trees.leaves(x)].sum(axis=1)

    def prob_same(self, rows) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.log_odds(rows), -30, 30)))

    def scores(self, rows) -> np.ndarray:
        """Fused scores, lower = more alike (0 … 1)."""
        return (1.0 - self.prob_same(rows)).astype(np.float32)

    def contributions(self, row: dict) -> dict:
        """Each feature's push toward "same" (+) or "different" (−), in log-odds, for one pair: along each
        tree's path, the change in the expected value at every split goes to the feature split on (the pushes
        add up to this pair's log-odds minus an average pair's)."""
        t = self.trees
        x = _matrix([row], self.names)[0]
        out = dict.fromkeys(self.names, 0.0)
        for node in t.roots:
            while t.feature[node] >= 0:
                f = int(t.feature[node])
                nxt = t.left[node] if x[f] <= t.threshold[node] else t.right[node]
                out[self.names[f]] += float(t.value[nxt] - t.value[node])
                node = nxt
        return out

    def to_dict(self) -> dict:
        return {"kind": "boosted", "names": list(self.names), "trees": self.trees.to_dict(),
                "baseline": self.baseline, "expected": self.expected, "threshold": self.threshold,
                "band": self.band.to_dict(), "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> "BoostedFusion":
        names = _names(d)
        trees = Trees.from_dict(d["trees"])
        if np.any(trees.feature >= len(names)):
            raise ValueError("a tree splits on a feature it does not name")
        return cls(names, trees, float(d["baseline"]), float(d["expected"]), float(d.get("threshold", 0.5)),
                   Band.from_dict(d.get("band")), str(d.get("fitted_on", "")))


def _names(d: dict) -> tuple:
    names = tuple(str(n) for n in d["names"])
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}")
    return names


KINDS = {"logistic": Fusion, "boosted": BoostedFusion}


def fusion_from_dict(d: dict):
    """A fusion from its saved dict (either kind); a malformed one is a one-line RunError."""
    try:
        kind = d.get("kind")
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}")
        return KINDS[kind].from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RunError(f"fusion model is malformed ({e}); refit it with `calibrate`") from None


def band_of(fusion: dict | None) -> Band | None:
    """The uncertain band of a saved fusion (a run's ``fusion_dict()``), or None when there is none (no fusion,
    or one calibrated before the band existed)."""
    if fusion is None:
        return None
    b = fusion_from_dict(fusion).band
    return b if b.below > 0 or b.above > 0 else None


def load_fusion(path: Path):
    try:
        return fusion_from_dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: cannot read fusion model ({e}); refit it with `calibrate`") from None


def save_fusion(fusion, path: Path) -> None:
    from ..core.files import write_json_atomic
    write_json_atomic(Path(path), fusion.to_dict())


# --- fitting ---------------------------------------------------------------------------------------

def _boost(x: np.ndarray, same: np.ndarray, signs: list, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier  # only needed to fit
    return HistGradientBoostingClassifier(
        max_iter=100, learning_rate=0.1, max_leaf_nodes=8, min_samples_leaf=20, l2_regularization=1.0,
        monotonic_cst=signs, class_weight="balanced", early_stopping=False, random_state=seed).fit(x, same)


def _export(model) -> tuple[Trees, float]:
    """The fitted trees as flat arrays (inner nodes get the count-weighted mean of their leaves)."""
    cols = {k: [] for k in ("feature", "threshold", "left", "right", "value")}
    roots, depth = [], 0
    for (tree,) in model._predictors:  # scikit-learn keeps the fitted trees here (pinned in requirements)
        nodes, base = tree.nodes, len(cols["feature"])
        value = nodes["value"].astype(float).copy()
        for i in range(len(nodes) - 1, -1, -1):  # children come after their parent
            if not nodes["is_leaf"][i]:
                l, r = nodes["left"][i], nodes["right"][i]
                cl, cr = nodes["count"][l], nodes["count"][r]
                value[i] = (cl * value[l] + cr * value[r]) / max(cl + cr, 1)
        leaf = nodes["is_leaf"].astype(bool)
        cols["feature"] += np.where(leaf, -1, nodes["feature_idx"]).tolist()
        cols["threshold"] += nodes["num_threshold"].astype(float).tolist()
        cols["left"] += np.where(leaf, 0, nodes["left"] + base).tolist()
        cols["right"] += np.where(leaf, 0, nodes["right"] + base).tolist()
        cols["value"] += value.tolist()
        roots.append(base)
        depth = max(depth, int(nodes["depth"].max()))
    trees = Trees(np.array(cols["feature"], np.int64), np.array(cols["threshold"]), np.array(cols["left"], np.int64),
                  np.array(cols["right"], np.int64), np.array(cols["value"]), np.array(roots, np.int64), depth)
    return trees, float(np.ravel(model._baseline_prediction)[0])


def _folds(groups, n: int, k: int, seed: int) -> np.ndarray:
    """A fold number per row; rows of one group (e.g. pairs sharing tile A) share a fold."""
    keys = np.asarray(groups if groups is not None else np.arange(n))
    uniq, inv = np.unique(keys, return_inverse=True)
    return np.random.default_rng(seed).permutation(len(uniq))[inv] % k


def out_of_fold(x: np.ndarray, same: np.ndarray, signs: list, groups=None, k: int = 5, seed: int = 0) -> np.ndarray:
    """P(same) of every row from a model fitted without its fold: honest scores to place the threshold on."""
    fold = _folds(groups, len(same), k, seed)
    p = np.zeros(len(same))
    for f in range(k):
        test = fold == f
        if test.any() and len(np.unique(same[~test])) == 2:
            p[test] = _boost(x[~test], same[~test], signs, seed).predict_proba(x[test])[:, 1]
        elif test.any():
            p[test] = same[~test].mean() if (~test).any() else 0.5
    return p


def choose_threshold(scores: np.ndarray, different: np.ndarray, false_same: float = FALSE_SAME) -> float:
    """A threshold that calls at most ``false_same`` of the different places "same": half-way between the
    lowest-scored different place it must keep out and the highest-scored pair below that one."""
    neg = np.sort(scores[different])
    if not len(neg):
        return float(np.max(scores))
    k = int(math.floor(false_same * len(neg)))
    if k >= len(neg):
        return float(neg[-1])
    below = scores[scores < neg[k]]
    return float((below.max() + neg[k]) / 2) if len(below) else float(neg[k]) - 1e-6


def choose_band(scores: np.ndarray, different: np.ndarray, t: float, accuracy: float = DECIDED_ACCURACY,
                max_undecided: float = MAX_UNDECIDED) -> Band:
    """The narrowest band around ``t`` outside of which the calls reach ``accuracy`` (or, if no band holding at
    most ``max_undecided`` of the pairs does, the most accurate band of that size)."""
    order = np.argsort(scores, kind="stable")
    s, diff = np.asarray(scores, float)[order], np.asarray(different, bool)[order]
    n = len(s)
    if not n:
        return Band()
    # a band holds sorted positions a..b-1: everything below a is called "same", from b on "different"
    diff_below = np.concatenate([[0], np.cumsum(diff)])        # different places among the first a
    same_from = np.concatenate([np.cumsum((~diff)[::-1])[::-1], [0]])  # same places from position b on
    at_t = int(np.searchsorted(s, t, side="right"))
    widest = int(max_undecided * n)
    best = (-1.0, n + 1, 0, 0)  # (accuracy, undecided, a, b)
    for a in range(at_t, max(-1, at_t - widest - 1), -1):
        b = np.arange(at_t, min(n, a + widest) + 1)
        decided = n - (b - a)
        acc = 1.0 - (diff_below[a] + same_from[b]) / np.maximum(decided, 1)
        ok = np.flatnonzero(acc >= accuracy)
        if ok.size:
            k = ok[0]
            cand = (float(acc[k]), int(b[k] - a), a, int(b[k]))
            if best[0] < accuracy or cand[1] < best[1]:
                best = cand
        elif best[0] < accuracy:
            k = int(np.argmax(acc))
            if acc[k] > best[0]:
                best = (float(acc[k]), int(b[k] - a), a, int(b[k]))
    _, _, a, b = best
    lo = s[a - 1] if a > 0 else min(t, s[0]) - 1e-6        # the highest score still called "same"
    hi = s[b - 1] if b > a else t                           # the highest score inside the band
    return Band(float(max(0.0, t - lo)), float(max(0.0, hi - t)))


def fit_fusion(rows, labels, groups=None, names=None, fitted_on: str = "", seed: int = 0) -> BoostedFusion:
    """Fit the fused verdict on feature rows and labels (0 = same place, 1 = different).

    ``groups`` (e.g. tile A's name) keeps related pairs in one fold of the out-of-fold predictions that
    place the threshold (:func:`choose_threshold`) and the uncertain band (:func:`choose_band`). Constant
    features are left out."""
    y = np.asarray(labels).astype(int).reshape(-1)
    if len(y) != len(rows) or len(y) == 0:
        raise SiameseError(f"need as many labels as rows (got {len(y)} labels for {len(rows)} rows)")
    if len(np.unique(y)) < 2:
        raise SiameseError(f"calibration needs both same-place (0) and different-place (1) pairs; got only "
                           f"label {int(y[0])} in {len(y)} pairs")
    names = list(names or FEATURES)
    names = [n for n, sd in zip(names, _matrix(rows, names).std(0)) if sd > 1e-9] or names[:1]
    x, same = _matrix(rows, names), (y == 0).astype(int)
    signs = [FEATURES[n] for n in names]
    trees, baseline = _export(_boost(x, same, signs, seed))
    expected = float(np.mean(baseline + trees.value[trees.roots].sum()))
    scores = 1.0 - out_of_fold(x, same, signs, groups, seed=seed)
    t = choose_threshold(scores, y == 1)
    return BoostedFusion(tuple(names), trees, baseline, expected, t, choose_band(scores, y == 1, t), fitted_on)


__all__ = ["FEATURES", "Band", "Fusion", "BoostedFusion", "Trees", "feature_row", "fit_fusion", "fusion_from_dict",
           "load_fusion", "save_fusion", "band_of", "choose_threshold", "choose_band", "out_of_fold"]
