"""A dataset on disk: every image as one memory-mappable uint8 array, plus a manifest table.

Layout of ``<workspace>/datasets/<name>/``::

    images.npy      (N, S, S, 3) uint8: memory-mapped for browsing, read by ``pread`` for training
    manifest.parquet one row per image: index, group, tile_id, source, variant, angle, transforms (JSON)
    groups.npy      (N,) int32: the manifest's group column again, so that the training process
                    need not load pandas and pyarrow (tens of MB of resident memory)
    dataset.json    the DataConfig it was built from, counts, creation time, and the fingerprint: a
                    SHA-256 of every image row and every group, which a run records when it starts
                    training and compares before it resumes (a rebuilt dataset invalidates its pairs)
    skipped.csv     files that could not be read, with the reason

A dataset is written into a temporary directory (``.tmp-<name>`` with its writer's owner tag), flushed to the disk
and renamed into place only when complete (:func:`~siamese_core.core.files.replace_dir`), so a crash, a kill, a full
disk or bad input never leaves a half-written dataset and never harms an existing one: ``--overwrite`` swaps the new
folder for the old one in one step, and what a killed build leaves is swept when the tool next starts
(:mod:`siamese_core.core.sweep`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..core.config import DataConfig, workspace_dir
from ..core.errors import DatasetError
from ..core.files import check_name, make_temp_dir, remove, replace_dir, write_json_atomic

_HEADER_LEN = 128  # fixed .npy header size, so the shape can be written once the count is known


def _text(s) -> str:
    """File names that are not valid UTF-8 (e.g. Latin-1 bytes from an old archive) as printable text:
    Python keeps their bytes as surrogates, which parquet and CSV writers refuse."""
    s = str(s)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def datasets_dir(workspace=None) -> Path:
    return workspace_dir(workspace) / "datasets"


def _npy_header(shape: tuple) -> bytes:
    d = "{'descr': '|u1', 'fortran_order': False, 'shape': %s, }" % (tuple(int(s) for s in shape),)
    body = d.ljust(_HEADER_LEN - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def _fingerprint(h, shape, groups) -> str:
    """Finish a dataset fingerprint: ``h`` (a sha256) has taken every image row's bytes in order; the array's
    shape and the group of every image follow. Same images and groups, same fingerprint."""
    h.update(repr(tuple(int(s) for s in shape)).encode())
    h.update(np.ascontiguousarray(groups, "<i8").tobytes())
    return h.hexdigest()


def images_fingerprint(images_path: Path, groups) -> str:
    """The fingerprint of a stored ``images.npy`` and its groups, read in 1 MiB blocks."""
    mm = np.load(images_path, mmap_mode="r")
    offset, shape = mm.offset, mm.shape
    del mm
    h = hashlib.sha256()
    with open(images_path, "rb") as f:
        f.seek(offset)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return _fingerprint(h, shape, groups)


class TileRows:
    """Rows of an ``images.npy`` read with ``pread`` into fresh arrays: ``rows[idx]`` for an index array.

    Training reads every tile many times. Through a memory map, each page read stays mapped, so the
    whole file ends up counted in the process's resident memory; read this way, it stays in the OS
    page cache, shared and reclaimable, and the process holds only the batch it asked for.
    """

    def __init__(self, path: Path):
        mm = np.load(path, mmap_mode="r")
        self.path, self.shape, self.dtype, self._offset = Path(path), mm.shape, mm.dtype, mm.offset
        self._row = int(np.prod(mm.shape[1:])) * mm.dtype.itemsize
        del mm
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"row index out of range 0..{self.shape[0] - 1} for {self.path}")
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        for k, i in enumerate(idx.tolist()):
            if os.preadv(self._fd, [out[k]], self._offset + i * self._row) != self._row:
                raise DatasetError(f"{self.path} is truncated at row {i}; prepare the dataset again")
        return out

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Dataset:
    """An opened dataset: ``images`` is a read-only memory map, ``manifest`` a DataFrame."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def info(self) -> dict:
        return json.loads((self.path / "dataset.json").read_text())

    @property
    def config(self) -> DataConfig:
        return DataConfig.from_dict(self.info["config"])

    @cached_property
    def images(self) -> np.ndarray:
        return np.load(self.path / "images.npy", mmap_mode="r")

    def rows(self) -> TileRows:
        """The images for reading by index many times over (training): see :class:`TileRows`."""
        return TileRows(self.path / "images.npy")

    @cached_property
    def manifest(self):
        import pandas as pd
        return pd.read_parquet(self.path / "manifest.parquet")

    @cached_property
    def groups(self) -> np.ndarray:
        """The group (source tile) of every image; images of one group show the same place."""
        p = self.path / "groups.npy"
        if p.exists():
            return np.load(p).astype(np.int64)
        return self.manifest["group"].to_numpy(np.int64)  # datasets made before groups.npy

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the images and groups (:func:`images_fingerprint`): computed when the dataset is built;
        for a dataset made before that, computed on first use and recorded in its ``dataset.json``."""
        fp = self.info.get("fingerprint")
        if not fp:
            fp = images_fingerprint(self.path / "images.npy", self.groups)
            self.info["fingerprint"] = fp
            try:  # unless the dataset was rebuilt meanwhile (then its own fingerprint is already there)
                info = json.loads((self.path / "dataset.json").read_text())
                if info.get("created") == self.info.get("created") and not info.get("fingerprint"):
                    write_json_atomic(self.path / "dataset.json", {**info, "fingerprint": fp})
            except (OSError, ValueError):
                pass  # a read-only dataset: computed again next time
        return fp

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def skipped(self) -> list[dict]:
        p = self.path / "skipped.csv"
        if not p.exists():
            return []
        import pandas as pd
        return pd.read_csv(p).to_dict("records")


def open_dataset(name: str, workspace=None) -> Dataset:
    check_name(name)
    path = datasets_dir(workspace) / name
    if not (path / "dataset.json").exists():
        have = list_datasets(workspace)
        raise DatasetError(f"dataset {name!r} not found in {datasets_dir(workspace)}; "
                           + (f"available: {', '.join(have)}" if have else "create one with: python -m siamese_core prepare"))
    return Dataset(path)


def list_datasets(workspace=None) -> list[str]:
    d = datasets_dir(workspace)
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / "dataset.json").exists() and not p.name.startswith("."))


def build_dataset(cfg: DataConfig, name: str, workspace=None, overwrite: bool = False,
                  progress=None, on_skip=None, swap_guard=None, recorded_path: str | None = None,
                  clean=None) -> Dataset:
    """Import tiles from ``cfg.source`` with ``cfg.variants`` rotated variants each, atomically.

    Each item of the source is one group (one place): a single tile, or several real views of the
    place (sources ``ab``, ``pairs-csv``: see :mod:`siamese_core.data.sources`); every view of a group and
    every variant of a view share the group number. A view's extra info (place, view, date, window
    x/y...) becomes extra manifest columns. ``progress(done_groups, total_or_None)`` is called as
    groups are processed; ``on_skip(name, reason)`` for each unreadable input (also recorded in
    ``skipped.csv``).

    ``swap_guard()``, when given, is a context manager entered just before an existing dataset is replaced
    (``overwrite``); it may refuse by raising (the runs layer refuses while a training job uses the dataset:
    :func:`siamese_core.runs.delete.prepare_dataset`), and then nothing changes. ``recorded_path`` is the source
    path written into ``dataset.json`` instead of ``cfg.path`` and ``clean(text)`` rewrites the text of every skip
    reason (an upload names the archive, not its temporary folder); both are applied before the dataset is
    published, so it is never visible with a temporary path in it.
    """
    import pandas as pd

    from .augment import make_variant
    from .sources import as_views, count_tiles, iter_tiles

    check_name(name)
    root = datasets_dir(workspace)
    final = root / name
    if final.exists() and not overwrite:
        raise DatasetError(f"dataset {name!r} already exists in {root}; choose another --name or pass --overwrite")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(root, f".tmp-{name}")
    except OSError as e:
        raise DatasetError(f"cannot write to workspace {root}: {e.strerror or e}") from None

    skipped: list[dict] = []
    clean = clean or (lambda text: text)

    def skip(item, reason):
        item, reason = clean(_text(item)), clean(_text(reason))
        skipped.append({"file": item, "reason": reason})
        if on_skip:
            on_skip(item, reason)

    rows = []
    core = ("index", "group", "tile_id", "source", "variant", "angle", "transforms")
    try:
        total = count_tiles(cfg)
        n = 0
        h = hashlib.sha256()  # the fingerprint, over the rows as they are written
        with open(tmp / "images.npy", "wb") as f:
            f.write(b"\0" * _HEADER_LEN)
            t = 0  # the group number: groups are numbered 0, 1, 2... in the order the source gives them
            for item in iter_tiles(cfg, on_skip=skip):
                views = as_views(item)
                if not views:
                    continue
                for view, (tile_id, tile, provenance, info) in enumerate(views):
                    variants = [(tile, {"angle": 0.0})]
                    if cfg.variants:
                        # per tile (and view): the same variants whatever the order; view 0 seeds as a lone tile
                        seq = [cfg.seed, t] if view == 0 else [cfg.seed, t, view]
                        rng = np.random.default_rng(seq)
                        variants += [make_variant(tile, rng, cfg.distortions) for _ in range(cfg.variants)]
                    extra = {c: (_text(x) if isinstance(x, str) else x)
                             for c, x in (info or {}).items() if c not in core}
                    for v, (img, params) in enumerate(variants):
                        row = np.ascontiguousarray(img, dtype=np.uint8).tobytes()
                        f.write(row)
                        h.update(row)
                        rows.append({"index": n, "group": t, "tile_id": _text(tile_id), "source": _text(provenance),
                                     "variant": v, "angle": params["angle"],
                                     "transforms": json.dumps({k: p for k, p in params.items() if k != "angle"}),
                                     **extra})
                        n += 1
                t += 1
                if progress:
                    progress(t, total)
            if n == 0:
                raise DatasetError(f"no readable tiles in {cfg.path or cfg.source}"
                                   + (f" ({len(skipped)} file(s) skipped, first: {skipped[0]['reason']})" if skipped else ""))
            f.seek(0)
            f.write(_npy_header((n, cfg.size, cfg.size, 3)))
            f.flush()
        pd.DataFrame(rows).to_parquet(tmp / "manifest.parquet", index=False)
        groups = np.array([r["group"] for r in rows], np.int32)
        np.save(tmp / "groups.npy", groups)
        from .pairs_csv import csv_text
        with open(tmp / "skipped.csv", "w", newline="", encoding="utf-8") as f:
            f.write(csv_text(skipped, ["file", "reason"]))  # file names: no cell a spreadsheet would run
        recorded = cfg.to_dict() if recorded_path is None else {**cfg.to_dict(), "path": recorded_path}
        write_json_atomic(tmp / "dataset.json", {
            "name": name, "config": recorded, "images": n, "groups": rows[-1]["group"] + 1,
            "skipped": len(skipped), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "fingerprint": _fingerprint(h, (n, cfg.size, cfg.size, 3), groups),
        })
        if final.exists() and not overwrite:  # made meanwhile by another process
            raise DatasetError(f"dataset {name!r} already exists in {root}; choose another --name or pass --overwrite")
        with (swap_guard() if swap_guard is not None and final.exists() else contextlib.nullcontext()):
            replace_dir(tmp, final)  # whole and flushed; an old dataset is swapped out in one step
    except OSError as e:
        remove(tmp)
        raise DatasetError(f"cannot write dataset {name!r} to {root}: {e.strerror or e}; nothing was saved") from None
    except BaseException:
        remove(tmp)
        raise
    return Dataset(final)
