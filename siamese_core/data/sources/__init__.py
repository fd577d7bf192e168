"""Where tiles come from: one iterator per source.

Each item an iterator yields is one *group* (one place) of the dataset, in one of two forms:

- ``(tile_id, uint8 tile, provenance)``: a group of one view (``synthetic``, ``folder``, ``pix2pix``,
  ``hf-parquet``, ``hf-hub``), whose same-place partners are its rotated variants;
- a ``list`` of :class:`View`: a group of several real views of one place (``ab``: the same window
  of every date; ``pairs-csv``: images linked by same-place pairs; ``scene``: one window of a large
  georeferenced raster, with its bounds and CRS), each also given its variants.

Sources yield one group at a time, so memory holds one group (``ab``: one place), never a folder.
"""

from __future__ import annotations

from ...core.config import DataConfig
from .views import View, as_views

SYNTHETIC_DEFAULT_LIMIT = 600


def count_tiles(cfg: DataConfig) -> int | None:
    """How many groups (source tiles) the source will yield at most (for progress bars); None when unknown."""
    if cfg.source == "synthetic":
        return cfg.limit or SYNTHETIC_DEFAULT_LIMIT
    if cfg.source in ("folder", "pix2pix"):
        from .files import count_files
        return count_files(cfg.path, cfg.limit)
    if cfg.source == "hf-parquet":
        from .hf import count_parquet
        return count_parquet(cfg.path, cfg.limit)
    if cfg.source == "ab":
        from .temporal import count_ab
        return count_ab(cfg.path, cfg.window, cfg.stride, cfg.limit)
    if cfg.source == "scene":
        from .scene import count_scene
        return count_scene(cfg.path, cfg.window, cfg.stride, cfg.limit)
    if cfg.source == "pairs-csv":
        from .temporal import count_pairs_csv
        return count_pairs_csv(cfg.path, cfg.limit)
    return cfg.limit or None


def iter_tiles(cfg: DataConfig, on_skip=None):
    """Yield one group per item for the source named in ``cfg`` (a 3-tuple or a list of :class:`View`,
    see the module docstring); ``on_skip(name, reason)`` for bad items."""
    if cfg.source == "synthetic":
        from .synthetic import iter_synthetic
        yield from iter_synthetic(limit=cfg.limit or SYNTHETIC_DEFAULT_LIMIT, size=cfg.size, seed=cfg.seed)
    elif cfg.source in ("folder", "pix2pix"):
        from .files import iter_files
        from ..rasters import parse_bands
        yield from iter_files(cfg.path, cfg.size, cfg.limit, half=cfg.source == "pix2pix", on_skip=on_skip,
                              bands=parse_bands(cfg.bands))
    elif cfg.source == "hf-parquet":
        from .hf import iter_parquet
        yield from iter_parquet(cfg.path, cfg.size, cfg.limit, cfg.column, on_skip=on_skip)
    elif cfg.source == "hf-hub":
        from .hf import download_hub, iter_parquet
        local = download_hub(cfg.repo_id, cfg.path or None)
        yield from iter_parquet(local, cfg.size, cfg.limit, cfg.column, on_skip=on_skip)
    elif cfg.source == "ab":
        from .temporal import iter_ab
        yield from iter_ab(cfg.path, cfg.size, cfg.window, cfg.stride, cfg.limit, on_skip=on_skip)
    elif cfg.source == "scene":
        from .scene import iter_scene
        yield from iter_scene(cfg.path, cfg.size, cfg.window, cfg.stride, cfg.limit, cfg.bands, on_skip=on_skip)
    elif cfg.source == "pairs-csv":
        from .temporal import iter_pairs_csv
        yield from iter_pairs_csv(cfg.path, cfg.size, cfg.limit, on_skip=on_skip)


__all__ = ["View", "as_views", "count_tiles", "iter_tiles", "SYNTHETIC_DEFAULT_LIMIT"]
