"""``python -m toolkit``: the ``toolkit`` command (see ``toolkit.cli``)."""

from __future__ import annotations

import sys

from toolkit.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
