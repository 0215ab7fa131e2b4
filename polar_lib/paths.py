"""Where polar_lib keeps what it makes: converted models, downloaded data, checksums, lm-eval task files."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$POLAR_CACHE``, else ``$XDG_CACHE_HOME/polar_lib``, else ``~/.cache/polar_lib``."""
    if os.environ.get("POLAR_CACHE"):
        return Path(os.environ["POLAR_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "polar_lib"
