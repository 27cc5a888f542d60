"""Where the tool keeps what it can compute again but need not: compiled templates, pre-parsed AWS models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_directory(name: str, root: Path) -> Path | None:
    """The writable cache directory `name`: in $DMP_CACHE_DIR when set; else in .dmp-cache/ under `root` (the
    repository root), or, where the checkout is read-only, in the user's cache directory ($XDG_CACHE_HOME, default
    ~/.cache, /dmp-deploy); None if no such directory is writable (the callers then work without a cache)."""
    if os.environ.get("DMP_CACHE_DIR"):
        candidates = [Path(os.environ["DMP_CACHE_DIR"])]
    else:
        user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dmp-deploy"
        candidates = [root / ".dmp-cache", user_cache]
    for base in candidates:
        directory = base / name
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory
    return None
