"""Where cltune caches its built-in models (``tiny``, ``smol``) once they are built."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CLTUNE_CACHE"


def cache_dir() -> Path:
    """``$CLTUNE_CACHE``, or ``~/.cache/cltune`` when it is unset."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cltune")
