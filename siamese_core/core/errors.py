"""One error type for every problem a user can fix, so the CLI and the dashboard can show a
one-line message (naming the file or value and the fix) instead of a traceback."""


class SiameseError(Exception):
    """A problem with the user's input or environment; ``str(err)`` is a complete one-line message."""


class ImageError(SiameseError):
    """An image file or upload could not be decoded into an RGB tile."""


class DatasetError(SiameseError):
    """A dataset is missing, malformed, or cannot be written."""


class RunError(SiameseError):
    """A run is missing, malformed, or cannot be started (e.g. another job holds the lock)."""


def count_of(value, name: str, unit: str, meaning: str) -> int:
    """``value`` as a whole number ≥ 1, or a one-line error naming ``name`` and what was received, e.g.
    count_of("0", "k", "results", "the number of nearest tiles to return")."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise SiameseError(f"{name} must be a whole number of {unit}, got {value!r}") from None
    if n < 1:
        raise SiameseError(f"{name} must be at least 1 ({meaning}), got {n}")
    return n
