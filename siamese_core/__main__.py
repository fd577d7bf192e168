"""Entry point for ``python -m siamese_core``."""

import sys

from .cli import main

sys.exit(main())
