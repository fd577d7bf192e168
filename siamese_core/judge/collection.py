"""The shape of a collection: a 2-D map of its embeddings, its near-duplicates and its outliers.

Why this module exists: an analyst who receives an archive wants to see at a glance whether it holds what
they think — clusters of one kind of land, tiles that are the same place twice under two names, and tiles
unlike anything else (a cloud, a corrupt file, another sensor). The tower's embeddings (one vector per
tile, already computed and cached by :func:`siamese_core.scale.search.build_index`) answer all three; this module
holds the arithmetic, as plain NumPy functions of an embedding matrix and the group (place) of each row,
so that the Map page only lays out widgets and the numbers can be tested without a model or a browser.

- :func:`pca` projects the embeddings on their principal axes (NumPy eigendecomposition of the D×D
  covariance; no extra dependency, deterministic signs).
- :func:`near_duplicates` finds pairs of *different* groups whose embeddings are closer than the 1st
  percentile of the distances between tiles of the *same* group: closer than almost any two views of one
  place, so probably one place filed twice (or two copies of one image).
- :func:`outliers` finds the tiles whose nearest neighbour (of another group, when groups are given) is
  farthest away: the top 1 % of those distances.

Distances are Euclidean between embeddings, lower = more alike, as everywhere in this package. Pairwise
work is done in row chunks, so memory stays bounded at tens of thousands of tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHUNK = 2048  # rows per block of the pairwise distance matrix (CHUNK × N floats at a time)


def _as_matrix(emb) -> np.ndarray:
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D matrix (N, D), got shape {x.shape}")
    return x


def _groups(groups, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups).reshape(-1)
    if len(g) != n:
        raise ValueError(f"{len(g)} groups for {n} embeddings")
    return g


def _block_distances(x: np.ndarray, sq: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Euclidean distances of rows lo..hi to every row, (hi - lo, N)."""
    d2 = sq[lo:hi, None] + sq[None, :] - 2.0 * (x[lo:hi] @ x.T)
    return np.sqrt(np.maximum(d2, 0.0))


@dataclass(frozen=True)
class Projection:
    """Rows projected on the first principal axes, and the share of the variance each axis explains."""

    coords: np.ndarray       # (N, k)
    explained: np.ndarray    # (k,) fractions of the total variance, largest first


def pca(emb, k: int = 2) -> Projection:
    """The first ``k`` principal components of the rows of ``emb`` (centred). Signs are fixed so that each
    axis's largest loading is positive: the same data always give the same picture."""
    x = _as_matrix(emb)
    n, d = x.shape
    k = int(k)
    if n == 0:
        return Projection(np.zeros((0, k)), np.zeros(k))
    xc = x - x.mean(axis=0)
    cov = xc.T @ xc / max(n - 1, 1)
    vals, vecs = np.linalg.eigh(cov)              # ascending
    order = np.argsort(vals)[::-1]
    vals, vecs = np.maximum(vals[order], 0.0), vecs[:, order]
    m = min(k, d)
    axes = vecs[:, :m]
    flip = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(m)])
    axes = axes * np.where(flip == 0, 1.0, flip)
    coords = np.zeros((n, k))
    coords[:, :m] = xc @ axes
    total = float(vals.sum())
    explained = np.zeros(k)
    explained[:m] = vals[:m] / total if total > 0 else 0.0
    return Projection(coords, explained)


def same_group_distances(emb, groups) -> np.ndarray:
    """Distances between every two rows of the same group (each pair once)."""
    x = _as_matrix(emb)
    g = _groups(groups, len(x))
    out = []
    for members in _members(g):
        if len(members) < 2:
            continue
        sub = x[members]
        sq = (sub ** 2).sum(axis=1)
        d = _block_distances(sub, sq, 0, len(sub))
        out.append(d[np.triu_indices(len(sub), 1)])
    return np.concatenate(out) if out else np.zeros(0)


def _members(g: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(g, kind="stable")
    _, starts = np.unique(g[order], return_index=True)
    return np.split(order, starts[1:]) if len(order) else []


@dataclass(frozen=True)
class Duplicates:
    """Pairs (i < j) of different groups closer than ``threshold``, closest first."""

    pairs: np.ndarray        # (M, 2) int rows
    distances: np.ndarray    # (M,)
    threshold: float | None  # the percentile of same-group distances used; None: no group has two rows


def near_duplicates(emb, groups, percentile: float = 1.0, max_pairs: int = 1000) -> Duplicates:
    """Pairs of rows of different groups whose distance is below the ``percentile``-th percentile of the
    distances between rows of the same group (at most ``max_pairs``, closest first)."""
    x = _as_matrix(emb)
    g = _groups(groups, len(x))
    same = same_group_distances(x, g)
    if len(same) == 0:
        return Duplicates(np.zeros((0, 2), np.int64), np.zeros(0), None)
    thr = float(np.percentile(same, percentile))
    sq = (x ** 2).sum(axis=1)
    found_i, found_j, found_d = [], [], []
    for lo in range(0, len(x), CHUNK):
        hi = min(len(x), lo + CHUNK)
        d = _block_distances(x, sq, lo, hi)
        rows = np.arange(lo, hi)[:, None]
        hit = (d < thr) & (np.arange(len(x))[None, :] > rows) & (g[lo:hi, None] != g[None, :])
        i, j = np.nonzero(hit)
        found_i.append(i + lo)
        found_j.append(j)
        found_d.append(d[i, j])
    i, j, d = (np.concatenate(v) for v in (found_i, found_j, found_d))
    order = np.argsort(d, kind="stable")[:max_pairs]
    return Duplicates(np.stack([i[order], j[order]], axis=1).astype(np.int64), d[order], thr)


def nearest_neighbour_distances(emb, groups=None) -> np.ndarray:
    """For every row, the distance to its nearest other row; with ``groups``, to the nearest row of another
    group (a place's other views are not its neighbours), falling back to any other row when every row is of
    one group. ``inf`` for a lone row."""
    x = _as_matrix(emb)
    g = _groups(groups, len(x))
    n = len(x)
    sq = (x ** 2).sum(axis=1)
    out = np.full(n, np.inf)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        d = _block_distances(x, sq, lo, hi)
        d[np.arange(hi - lo), np.arange(lo, hi)] = np.inf
        any_other = d.min(axis=1) if n > 1 else np.full(hi - lo, np.inf)
        if g is not None:
            d[g[lo:hi, None] == g[None, :]] = np.inf
            other = d.min(axis=1)
            out[lo:hi] = np.where(np.isfinite(other), other, any_other)
        else:
            out[lo:hi] = any_other
    return out


@dataclass(frozen=True)
class Outliers:
    """Rows whose nearest neighbour is farthest away, farthest first."""

    rows: np.ndarray         # (M,) int
    distances: np.ndarray    # (M,) nearest-neighbour distance of each
    threshold: float         # the nearest-neighbour distance of the least remote one listed


def outliers(emb, groups=None, percent: float = 1.0) -> Outliers:
    """The ``percent`` % of rows (at least one, when there are two rows or more) with the largest distance to
    their nearest neighbour (of another group, when ``groups`` are given)."""
    nn = nearest_neighbour_distances(emb, groups)
    finite = np.isfinite(nn)
    if finite.sum() < 2:
        return Outliers(np.zeros(0, np.int64), np.zeros(0), float("nan"))
    m = max(1, int(math.ceil(finite.sum() * percent / 100.0)))
    cand = np.nonzero(finite)[0]
    order = cand[np.argsort(-nn[cand], kind="stable")][:m]
    return Outliers(order.astype(np.int64), nn[order], float(nn[order[-1]]))


def sample_rows(n: int, max_rows: int, seed: int = 0) -> np.ndarray:
    """All of ``range(n)``, or ``max_rows`` of them drawn without replacement (seeded, sorted)."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def coarse_labels(values, max_labels: int = 20) -> np.ndarray:
    """Short categories for colouring by a manifest's ``source`` (``kind:path:…`` strings): the source kind
    and the path's first folder (``folder · agricultural``, ``ab · A``, ``synthetic``). Past ``max_labels``
    categories the rarest become ``other``."""
    out = []
    for v in values:
        parts = str(v).split(":")
        label = parts[0]
        if len(parts) > 1 and "/" in parts[1]:
            label += " · " + parts[1].split("/")[0]
        out.append(label)
    out = np.asarray(out, dtype=object)
    names, counts = np.unique(out, return_counts=True)
    if len(names) > max_labels:
        keep = set(names[np.argsort(-counts, kind="stable")[: max_labels - 1]])
        out = np.where(np.isin(out, list(keep)), out, "other")
    return out
