"""The two forms a source's item takes: one tile, or a group of several real views of one place (:class:`View`).

A module of its own so that the sources (``temporal``) and the dispatcher in ``sources/__init__`` both use it
without importing each other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class View(NamedTuple):
    """One image of a multi-view group; ``info`` becomes extra manifest columns (place, view, x, y...)."""

    tile_id: str
    image: np.ndarray
    provenance: str
    info: dict | None = None


def as_views(item) -> list[View]:
    """Either item form as a list of views (a 3-tuple becomes one view with no extra info)."""
    if isinstance(item, list):
        return item
    tile_id, image, provenance = item
    return [View(tile_id, image, provenance)]


__all__ = ["View", "as_views"]
