"""Labelled pair sets of every kind the tool must judge, made from an analyst's own imagery.

A score means "same place" only if it is measured (and its fusion calibrated) on the pairs analysts
actually bring. From an A/B folder of co-registered dates (see ``--source ab``) and/or a folder of
single tiles, :func:`make_pairset` writes PNG tiles and a ``pairs.csv`` (``image_a,image_b,label,kind``;
label 0 = same place, 1 = different) with these kinds:

- ``two_dates``: the same window on two dates, same frame (A/B folders);
- ``two_dates_rot_scale``: the same, date B turned 2–90° and zoomed 0.5–2× (cut from the surrounding
  image, so mostly without black corners);
- ``rotated``: a tile and a copy turned by any angle (black corners, as the reference does);
- ``distorted``: the same, plus one distortion (flip, zoom, shear, blur, occlusion, exposure);
- ``simulated_dates``: a tile and a simulated second acquisition (season, haze, gain, resolution, …)
  turned and zoomed.

Different-place partners get exactly the same treatment: half of them come from another place or tile,
half from another window of the same place (or a tile of the same folder), which is harder. Places and
tiles are split into ``calibration`` and ``test`` by a hash of their name, so the two never share a place;
the same seed gives the same pairs.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import cv2
import numpy as np

from ..core.errors import SiameseError
from ..core.files import write_text_atomic
from .augment import acquisition, apply_distortion, draw_distortion, rotate
from .images import IMAGE_EXTENSIONS, decode_image
from .pairs_csv import csv_text

AB_KINDS = ("two_dates", "two_dates_rot_scale")
TILE_KINDS = ("rotated", "distorted", "simulated_dates")
COPY_DISTORTIONS = ("flip", "scale", "affine", "blur", "occlude", "brightness")


def split_of(name: str, test_fraction: float) -> str:
    """'test' or 'calibration' for a place or tile name: stable across runs, seeds and machines, so pair
    sets drawn with different seeds still never put one place on both sides."""
    h = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else "calibration"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _turn(img: np.ndarray, cx: float, cy: float, side: int, angle: float, zoom: float) -> np.ndarray:
    """A ``side·zoom`` square view of ``img`` centred on (cx, cy), turned by ``angle``°: as if a sensor at
    another resolution and heading had framed the same ground (black where the image ends)."""
    out = max(16, int(round(side * zoom)))
    m = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
    m[:, 2] += (out / 2.0 - cx, out / 2.0 - cy)
    return cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def _angle_zoom(rng) -> tuple[float, float]:
    return float(rng.uniform(2, 90) * rng.choice([-1, 1])), float(math.exp(rng.uniform(math.log(0.5), math.log(2.0))))


class _Writer:
    def __init__(self, out: Path):
        self.out, self.rows, self.n = out, [], 0
        (out / "tiles").mkdir(parents=True, exist_ok=True)

    def tile(self, img: np.ndarray) -> str:
        name = f"tiles/{self.n:06d}.png"
        self.n += 1
        cv2.imwrite(str(self.out / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        return name

    def pair(self, a: str, b: np.ndarray, label: int, kind: str) -> None:
        self.rows.append((a, self.tile(b), label, kind))


def _ab_pairs(w: _Writer, ab: Path, rng, per_place: int, split: str, test_fraction: float) -> int:
    a_dir, b_dir = ab / "A", ab / "B"
    if not (a_dir.is_dir() and b_dir.is_dir()):
        raise SiameseError(f"{ab}: needs folders A/ and B/ with matching file names (one place on two dates)")
    b_by_stem = {p.stem: p for p in _images(b_dir)}
    places = []
    for pa in _images(a_dir):
        pb = b_by_stem.get(pa.stem)
        if pb is not None and (split == "all" or split_of(pa.stem, test_fraction) == split):
            A, B = decode_image(pa), decode_image(pb)
            h, wd = min(A.shape[0], B.shape[0]), min(A.shape[1], B.shape[1])
            places.append((pa.stem, A[:h, :wd], B[:h, :wd]))
    if len(places) < 2:
        raise SiameseError(f"{ab}: need at least 2 places in split {split!r} with both A/ and B/ views")
    count = 0
    for _ in range(per_place):
        for i, (name, A, B) in enumerate(places):
            h, wd = A.shape[:2]
            side = int(min(rng.integers(160, 400), h, wd))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, wd - side + 1))
            # the different-place partner: another place, or a window of this one that does not overlap
            j = i
            if rng.random() < 0.5 or min(h, wd) < 2 * side:
                j = (i + int(rng.integers(1, len(places)))) % len(places)
            _, _, Bn = places[j]
            hn, wn = Bn.shape[:2]
            sn = min(side, hn, wn)
            for _try in range(20):
                yn, xn = int(rng.integers(0, hn - sn + 1)), int(rng.integers(0, wn - sn + 1))
                if j != i or abs(yn - y) >= side or abs(xn - x) >= side:
                    break
            else:
                j = (i + 1) % len(places)
                Bn = places[j][2]
                hn, wn = Bn.shape[:2]
                sn = min(side, hn, wn)
                yn, xn = 0, 0
            a = w.tile(A[y:y + side, x:x + side])
            w.pair(a, B[y:y + side, x:x + side], 0, "two_dates")
            w.pair(a, Bn[yn:yn + sn, xn:xn + sn], 1, "two_dates")
            ang, zm = _angle_zoom(rng)
            w.pair(a, _turn(B, x + side / 2, y + side / 2, side, ang, zm), 0, "two_dates_rot_scale")
            w.pair(a, _turn(Bn, xn + sn / 2, yn + sn / 2, sn, ang, zm), 1, "two_dates_rot_scale")
            count += 4
    return count


def _tile_pairs(w: _Writer, folder: Path, rng, n: int, split: str, test_fraction: float) -> int:
    files = [p for p in _images(folder)
             if split == "all" or split_of(str(p.relative_to(folder)), test_fraction) == split]
    if len(files) < 2:
        raise SiameseError(f"{folder}: need at least 2 readable tiles in split {split!r}")
    count = 0
    for k in range(min(n, len(files))):
        i = int(rng.integers(0, len(files)))
        same_folder = [f for f in files if f.parent == files[i].parent and f != files[i]]
        others = same_folder if same_folder and rng.random() < 0.5 else [f for f in files if f != files[i]]
        j = files.index(others[int(rng.integers(0, len(others)))])
        t, u = decode_image(files[i]), decode_image(files[j])
        a = w.tile(t)
        ang = float(rng.uniform(0, 360))
        w.pair(a, rotate(t, ang), 0, "rotated")
        w.pair(a, rotate(u, ang), 1, "rotated")
        kind = COPY_DISTORTIONS[k % len(COPY_DISTORTIONS)]
        p = draw_distortion(kind, rng)
        w.pair(a, apply_distortion(rotate(t, ang), kind, p), 0, "distorted")
        w.pair(a, apply_distortion(rotate(u, ang), kind, p), 1, "distorted")
        seed_k = int(rng.integers(0, 2**31))
        sims = []
        for img in (t, u):
            sim, _ = acquisition(img, np.random.default_rng(seed_k))
            ang2, zm = _angle_zoom(np.random.default_rng(seed_k + 1))
            h, wd = sim.shape[:2]
            sims.append(_turn(sim, wd / 2, h / 2, min(h, wd), ang2, zm))
        w.pair(a, sims[0], 0, "simulated_dates")
        w.pair(a, sims[1], 1, "simulated_dates")
        count += 6
    return count


def make_pairset(out: str | Path, ab: str | Path | None = None, tiles: str | Path | None = None,
                 per_place: int = 6, n_tiles: int = 150, split: str = "all", test_fraction: float = 0.25,
                 seed: int = 0) -> Path:
    """Write tiles and ``pairs.csv`` into ``out``; returns the CSV's path. ``split`` is 'all',
    'calibration' or 'test' (see :func:`split_of`)."""
    if split not in ("all", "calibration", "test"):
        raise SiameseError(f"split {split!r} is not one of all, calibration, test")
    if not ab and not tiles:
        raise SiameseError("give an A/B folder (--ab) and/or a folder of tiles (--tiles)")
    out = Path(out)
    w = _Writer(out)
    rng = np.random.default_rng(seed)
    if ab:
        _ab_pairs(w, Path(ab), rng, per_place, split, test_fraction)
    if tiles:
        _tile_pairs(w, Path(tiles), rng, n_tiles, split, test_fraction)
    path = out / "pairs.csv"
    cols = ["image_a", "image_b", "label", "kind"]
    write_text_atomic(path, csv_text([dict(zip(cols, r)) for r in w.rows], cols))  # whole, flushed, no formulas
    return path


__all__ = ["make_pairset", "split_of", "AB_KINDS", "TILE_KINDS"]
