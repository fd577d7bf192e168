"""Where tiles come from: one iterator per source, all yielding (tile_id, uint8 tile, provenance)."""

from __future__ import annotations

from ..config import DataConfig

SYNTHETIC_DEFAULT_LIMIT = 600


def count_tiles(cfg: DataConfig) -> int | None:
    """How many tiles the source will yield at most (for progress bars); None when unknown."""
    if cfg.source == "synthetic":
        return cfg.limit or SYNTHETIC_DEFAULT_LIMIT
    if cfg.source in ("folder", "pix2pix"):
        from .files import count_files
        return count_files(cfg.path, cfg.limit)
    if cfg.source == "hf-parquet":
        from .hf import count_parquet
        return count_parquet(cfg.path, cfg.limit)
    return cfg.limit or None


def iter_tiles(cfg: DataConfig, on_skip=None):
    """Yield (tile_id, image, provenance) for the source named in ``cfg``; ``on_skip(name, reason)`` for bad items."""
    if cfg.source == "synthetic":
        from .synthetic import iter_synthetic
        yield from iter_synthetic(limit=cfg.limit or SYNTHETIC_DEFAULT_LIMIT, size=cfg.size, seed=cfg.seed)
    elif cfg.source in ("folder", "pix2pix"):
        from .files import iter_files
        yield from iter_files(cfg.path, cfg.size, cfg.limit, half=cfg.source == "pix2pix", on_skip=on_skip)
    elif cfg.source == "hf-parquet":
        from .hf import iter_parquet
        yield from iter_parquet(cfg.path, cfg.size, cfg.limit, cfg.column, on_skip=on_skip)
    elif cfg.source == "hf-hub":
        from .hf import download_hub, iter_parquet
        local = download_hub(cfg.repo_id, cfg.path or None)
        yield from iter_parquet(local, cfg.size, cfg.limit, cfg.column, on_skip=on_skip)
