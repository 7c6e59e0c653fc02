"""Where lowbit keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of lowbit's on-disk cache: ``$LOWBIT_CACHE``, else ``$XDG_CACHE_HOME/lowbit``."""
    env = os.environ.get("LOWBIT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lowbit"
