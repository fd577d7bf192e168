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
