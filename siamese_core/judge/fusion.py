"""One verdict from several kinds of evidence: a small logistic model, fitted on calibration pairs.

The learned distance knows what a place looks like; the geometric step (:mod:`siamese_core.judge.geometry`)
knows whether the layout of one tile reappears in the other under one rotation, scale and shift. Each
wins where the other is blind (see the README's "Which evidence wins"), so the score the tool reports is
``1 − P(same place)`` from a logistic model over both, fitted on labelled pairs and saved next to the
run as ``fusion.json`` — plain numbers, so it reloads safely anywhere. Lower = more alike, as always.

The fit is a pure NumPy function (Newton's method with a little L2), with one rule the data cannot
overturn: more inliers or better edge agreement never make "same place" less likely, and a larger
learned distance never makes it more likely. A feature whose fitted weight breaks that rule is dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import RunError, SiameseError

# name → sign its weight must have for "same place" (+1: more of it means more alike)
FEATURES = {"distance": -1, "sift": +1, "orb": +1, "structure": +1, "structure_identity": +1}


def feature_row(distance: float | None, geo) -> dict:
    """The fusion's inputs for one pair, from the learned distance and a :class:`~siamese_core.judge.geometry.GeoMatch`."""
    return {"distance": float(distance) if distance is not None else 0.0,
            "sift": math.log1p(geo.sift_inliers), "orb": math.log1p(geo.orb_inliers),
            "structure": float(geo.structure), "structure_identity": float(geo.structure_identity)}


def _matrix(rows, names) -> np.ndarray:
    return np.array([[float(r[n]) for n in names] for r in rows], np.float64).reshape(len(rows), len(names))


def _newton(x: np.ndarray, t: np.ndarray, l2: float, iters: int = 50) -> np.ndarray:
    """Logistic regression weights (bias last) for targets t ∈ {0, 1}; balanced class weights."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    pos = t.mean()
    sw = np.where(t > 0, 0.5 / max(pos, 1e-9), 0.5 / max(1 - pos, 1e-9))
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        g = xb.T @ (sw * (p - t)) / len(t) + reg * w
        h = (xb * (sw * p * (1 - p))[:, None]).T @ xb / len(t) + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


@dataclass(frozen=True)
class Fusion:
    """``P(same) = sigmoid(Σ w·(x − mean)/std + bias)``; ``score = 1 − P(same)``; same place if score ≤ threshold."""

    names: tuple
    mean: tuple
    std: tuple
    weights: tuple
    bias: float
    threshold: float = 0.5
    fitted_on: str = ""

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
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> "Fusion":
        try:
            if d.get("kind") != "logistic":
                raise ValueError(f"kind {d.get('kind')!r}")
            names = tuple(str(n) for n in d["names"])
            unknown = [n for n in names if n not in FEATURES]
            if unknown:
                raise ValueError(f"unknown feature(s) {unknown}")
            vals = [tuple(float(v) for v in d[k]) for k in ("mean", "std", "weights")]
            if any(len(v) != len(names) for v in vals) or not all(math.isfinite(x) for v in vals for x in v):
                raise ValueError("mean/std/weights do not match the names")
            return cls(names, *vals, bias=float(d["bias"]), threshold=float(d.get("threshold", 0.5)),
                       fitted_on=str(d.get("fitted_on", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise RunError(f"fusion model is malformed ({e}); refit it with `calibrate`") from None

    def save(self, path: Path) -> None:
        from ..core.files import write_json_atomic
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "Fusion":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise RunError(f"{path}: cannot read fusion model ({e}); refit it with `calibrate`") from None


def fit_fusion(rows, labels, names=None, l2: float = 1e-3, fitted_on: str = "") -> Fusion:
    """Fit the logistic fusion on feature rows and labels (0 = same place, 1 = different).

    Constant features are left out; features whose weight comes out with the wrong sign (see FEATURES)
    are dropped and the rest refitted.
    The threshold is the score with the best balanced accuracy on these pairs."""
    y = np.asarray(labels).astype(int).reshape(-1)
    if len(y) != len(rows) or len(y) == 0:
        raise SiameseError(f"need as many labels as rows (got {len(y)} labels for {len(rows)} rows)")
    if len(np.unique(y)) < 2:
        raise SiameseError(f"calibration needs both same-place (0) and different-place (1) pairs; got only "
                           f"label {int(y[0])} in {len(y)} pairs")
    names = list(names or FEATURES)
    t = (y == 0).astype(float)  # target: same place
    names = [n for n, sd in zip(names, _matrix(rows, names).std(0)) if sd > 1e-9] or names[:1]  # constant: no evidence
    while True:
        x = _matrix(rows, names)
        mean, std = x.mean(0), x.std(0)
        std[std < 1e-9] = 1.0
        w = _newton((x - mean) / std, t, l2)
        bad = [n for n, wi in zip(names, w[:-1]) if wi * FEATURES[n] < 0]
        if not bad or len(names) == 1:
            break
        names = [n for n in names if n not in bad]
    fusion = Fusion(tuple(names), tuple(mean.tolist()), tuple(std.tolist()), tuple(w[:-1].tolist()),
                    float(w[-1]), 0.5, fitted_on)
    s = fusion.scores(rows)
    cand = np.unique(s)
    diff = y == 1
    bal = [(np.mean(s[~diff] <= c) + np.mean(s[diff] > c)) / 2 for c in cand]
    return Fusion(fusion.names, fusion.mean, fusion.std, fusion.weights, fusion.bias,
                  float(cand[int(np.argmax(bal))]), fitted_on)


__all__ = ["FEATURES", "Fusion", "feature_row", "fit_fusion"]
