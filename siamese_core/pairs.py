"""Labelled pairs as index arrays (label 0 = same place, 1 = different), split by group.

Pairs are never materialised as images: a pair is two row numbers into the dataset's image array.
The split is by group (a source tile and its variants), so no place has images in both training
and validation, and negatives are drawn within the anchor's own split. Same seed, same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import PairsConfig
from .errors import DatasetError


@dataclass(frozen=True)
class Pairs:
    a: np.ndarray          # int64 image index
    b: np.ndarray          # int64 image index
    label: np.ndarray      # uint8: 0 same place, 1 different
    val: np.ndarray        # bool: True = validation

    def __len__(self) -> int:
        return int(self.a.shape[0])

    @property
    def identical(self) -> np.ndarray:
        return self.a == self.b

    def subset(self, mask: np.ndarray) -> "Pairs":
        return Pairs(self.a[mask], self.b[mask], self.label[mask], self.val[mask])

    @property
    def train(self) -> "Pairs":
        return self.subset(~self.val)

    @property
    def validation(self) -> "Pairs":
        return self.subset(self.val)

    def counts(self) -> dict:
        """Pair counts per split and label, e.g. {'train': {'same': 10, 'different': 9}, ...}."""
        out = {}
        for split, m in (("train", ~self.val), ("validation", self.val)):
            out[split] = {"same": int(np.sum(m & (self.label == 0))), "different": int(np.sum(m & (self.label == 1))),
                          "identical": int(np.sum(m & self.identical))}
        return out

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp.npz")
        np.savez(tmp, a=self.a, b=self.b, label=self.label, val=self.val)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Pairs":
        with np.load(path) as z:
            return cls(z["a"], z["b"], z["label"], z["val"])


def split_groups(groups: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Bool mask over images: True where the image's group is in validation (seeded shuffle of groups)."""
    uniq = np.unique(groups)
    rng = np.random.default_rng([seed, 1])
    n_val = int(round(len(uniq) * val_fraction))
    n_val = min(max(n_val, 1), len(uniq) - 1) if len(uniq) > 1 else 0
    val_groups = rng.permutation(uniq)[:n_val]
    return np.isin(groups, val_groups)


def make_pairs(groups: np.ndarray, cfg: PairsConfig) -> Pairs:
    """The reference's rules, per anchor image i (the first ``cfg.limit`` images, or all):

    1. (i, a random member of i's group) → 0 — i itself allowed only when ``identical`` is on;
    2. (i, a random image of another group, same split) → 1, ``cfg.negatives`` times;
    3. (i, i) → 0 when ``identical`` is on.
    """
    groups = np.asarray(groups, dtype=np.int64)
    n = len(groups)
    if n < 2 or len(np.unique(groups)) < 4:
        raise DatasetError(f"a dataset needs at least 4 source tiles to make pairs and a split; it has "
                           f"{len(np.unique(groups))}; import more tiles")
    rng = np.random.default_rng([cfg.seed, 2])
    is_val = split_groups(groups, cfg.val_fraction, cfg.seed)
    anchors = np.arange(min(n, cfg.limit) if cfg.limit else n)

    # members of each group as contiguous runs of `order`
    order = np.argsort(groups, kind="stable")
    starts = np.searchsorted(groups[order], groups, side="left")
    sizes = np.searchsorted(groups[order], groups, side="right") - starts

    a_parts, b_parts, l_parts = [], [], []
    # rule 1: a member of the same group
    g_start, g_size = starts[anchors], sizes[anchors]
    if cfg.identical:
        pick = order[g_start + rng.integers(0, g_size)]
    else:
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        own = rank[anchors] - g_start  # the anchor's slot within its group
        # draw among the other members: offset in [0, size-1), skipping the anchor's own slot
        off = rng.integers(0, np.maximum(g_size - 1, 1))
        off = np.where(off >= own, off + 1, off)
        off = np.where(g_size > 1, off, 0)
        pick = order[g_start + off]
    keep = cfg.identical | (pick != anchors)
    a_parts.append(anchors[keep]); b_parts.append(pick[keep]); l_parts.append(np.zeros(keep.sum(), np.uint8))

    # rule 2: images of other groups within the same split
    for split in (False, True):
        pool = np.flatnonzero(is_val == split)
        anc = anchors[is_val[anchors] == split]
        if len(anc) == 0:
            continue
        for _ in range(cfg.negatives):
            j = pool[rng.integers(0, len(pool), size=len(anc))]
            bad = groups[j] == groups[anc]
            for _retry in range(20):  # redraw collisions with the anchor's own group
                if not bad.any():
                    break
                j[bad] = pool[rng.integers(0, len(pool), size=int(bad.sum()))]
                bad = groups[j] == groups[anc]
            a_parts.append(anc[~bad]); b_parts.append(j[~bad]); l_parts.append(np.ones((~bad).sum(), np.uint8))

    # rule 3: identical pairs
    if cfg.identical:
        a_parts.append(anchors); b_parts.append(anchors); l_parts.append(np.zeros(len(anchors), np.uint8))

    a = np.concatenate(a_parts).astype(np.int64)
    b = np.concatenate(b_parts).astype(np.int64)
    label = np.concatenate(l_parts)
    perm = np.lexsort((np.arange(len(a)), a))  # anchor order, rules in order: stable and seed-determined
    a, b, label = a[perm], b[perm], label[perm]
    return Pairs(a, b, label, is_val[a])
