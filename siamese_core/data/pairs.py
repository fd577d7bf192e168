"""Labelled pairs as index arrays (label 0 = same place, 1 = different), split by group into three.

Pairs are never materialised as images: a pair is two row numbers into the dataset's image array.
The split is by group (a source tile and its variants, i.e. a place) into train, calibration (where
the threshold is fitted) and test (never used for training or the threshold: what is reported), so no
place has images in two splits, and negatives are drawn within the anchor's own split. Same seed, same
pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import PairsConfig
from ..core.errors import DatasetError


SPLITS = ("train", "calibration", "test")
TRAIN, CALIBRATION, TEST = range(3)


@dataclass(frozen=True)
class Pairs:
    a: np.ndarray          # int64 image index
    b: np.ndarray          # int64 image index
    label: np.ndarray      # uint8: 0 same place, 1 different
    val: np.ndarray        # bool: True = calibration (the validation pairs, where the threshold is fitted)
    test: np.ndarray | None = None  # bool: True = test (None, e.g. pairs saved before the test split: no test pairs)

    def __post_init__(self):
        if self.test is None:
            object.__setattr__(self, "test", np.zeros(len(self.a), bool))

    def __len__(self) -> int:
        return int(self.a.shape[0])

    @property
    def identical(self) -> np.ndarray:
        return self.a == self.b

    def subset(self, mask: np.ndarray) -> "Pairs":
        return Pairs(self.a[mask], self.b[mask], self.label[mask], self.val[mask], self.test[mask])

    def mask(self, split: str) -> np.ndarray:
        """Bool mask of the pairs in ``split`` (one of SPLITS)."""
        if split == "train":
            return ~self.val & ~self.test
        if split == "calibration":
            return self.val.copy()
        if split == "test":
            return self.test.copy()
        raise ValueError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")

    @property
    def train(self) -> "Pairs":
        return self.subset(self.mask("train"))

    @property
    def calibration(self) -> "Pairs":
        """The calibration pairs: Keras' validation data during training, then the threshold is fitted on them."""
        return self.subset(self.val)

    @property
    def testing(self) -> "Pairs":
        """The test pairs: places never used for training or the threshold (empty for pairs drawn before them)."""
        return self.subset(self.test)

    def counts(self) -> dict:
        """Pair counts per split and label, e.g. {'train': {'same': 10, 'different': 9, 'identical': 0}, ...}:
        'same' includes the 'identical' pairs (an image with itself)."""
        out = {}
        for split in SPLITS:
            m = self.mask(split)
            out[split] = {"same": int(np.sum(m & (self.label == 0))), "different": int(np.sum(m & (self.label == 1))),
                          "identical": int(np.sum(m & self.identical))}
        return out

    def save(self, path: Path) -> None:
        """Written aside, flushed and renamed into place (:func:`~siamese_core.core.files.atomic_file`)."""
        from ..core.files import atomic_file
        with atomic_file(path) as tmp:
            np.savez(tmp, a=self.a, b=self.b, label=self.label, val=self.val, test=self.test)

    @classmethod
    def load(cls, path: Path) -> "Pairs":
        """Pairs saved by :meth:`save`; pairs saved before the test split load with no test pairs."""
        with np.load(path) as z:
            return cls(z["a"], z["b"], z["label"], z["val"], z["test"] if "test" in z.files else None)


def assign_splits(groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split code per image (TRAIN, CALIBRATION or TEST) by its group, from a seeded shuffle of the groups:
    the first ``val_fraction`` of them calibrate, the next ``test_fraction`` test, the rest train.

    Each requested split gets at least one group when there are enough (two for a calibration split alone,
    three with a test split) and training always keeps one. ``test_fraction`` 0 gives the same calibration
    groups as before the test split existed."""
    uniq = np.unique(groups)
    n = len(uniq)
    rng = np.random.default_rng([seed, 1])
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction)) if test_fraction > 0 else 0
    if n > 1:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    if test_fraction > 0:
        n_test = min(max(n_test, 1), n - 1 - n_val) if n >= 3 else 0
    order = rng.permutation(uniq)
    code = np.full(len(groups), TRAIN, np.int8)
    code[np.isin(groups, order[:n_val])] = CALIBRATION
    code[np.isin(groups, order[n_val:n_val + n_test])] = TEST
    return code


def split_groups(groups: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Bool mask over images: True where the image's group is in calibration (two-way split, no test)."""
    return assign_splits(groups, val_fraction, 0.0, seed) == CALIBRATION


def make_pairs(groups: np.ndarray, cfg: PairsConfig) -> Pairs:
    """The reference's rules, per anchor image i (the first ``cfg.limit`` images, or all):

    1. (i, a random member of i's group) → 0 — i itself allowed only when ``identical`` is on;
    2. (i, a random image of another group, same split) → 1, ``cfg.negatives`` times;
    3. (i, i) → 0 when ``identical`` is on.

    The split (train / calibration / test) is by group: :func:`assign_splits`.
    """
    groups = np.asarray(groups, dtype=np.int64)
    n = len(groups)
    if n < 2 or len(np.unique(groups)) < 4:
        raise DatasetError(f"a dataset needs at least 4 source tiles to make pairs and a split; it has "
                           f"{len(np.unique(groups))}; import more tiles")
    rng = np.random.default_rng([cfg.seed, 2])
    split = assign_splits(groups, cfg.val_fraction, cfg.test_fraction, cfg.seed)
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
    for code in (TRAIN, CALIBRATION, TEST):
        pool = np.flatnonzero(split == code)
        anc = anchors[split[anchors] == code]
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
    return Pairs(a, b, label, split[a] == CALIBRATION, split[a] == TEST)
