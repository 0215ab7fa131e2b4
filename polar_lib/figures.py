"""Saving a figure together with the numbers behind it (PNG + CSV side by side)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def save_figure(fig, data: pd.DataFrame, name: str, figures_dir: str | Path) -> Path:
    """Write ``<figures_dir>/<name>.png`` and the data behind it as ``<name>.csv``; return the PNG path.

    Notebooks call this so that every committed figure can be re-plotted without re-running it.
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    png = figures_dir / f"{name}.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    data.to_csv(figures_dir / f"{name}.csv", index=False)
    return png
