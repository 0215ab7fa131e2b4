"""What the command lines share."""
from __future__ import annotations

import sys
from pathlib import Path


def prog(module: str) -> str:
    """argparse's ``prog`` for ``polar_lib.<module>``: the command the user typed, ``polar-<module>`` when run
    as that installed script, else ``python -m polar_lib.<module>``."""
    command = f"polar-{module}"
    return command if Path(sys.argv[0]).stem == command else f"python -m polar_lib.{module}"
