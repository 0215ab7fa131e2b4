"""What the notebooks share: one look (``notebook_style``), saving a figure with the numbers behind it
(PNG + CSV side by side), and silencing a library's own output while a notebook prints one line per run."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd


def notebook_style() -> None:
    """The notebooks' common setup: seaborn's whitegrid theme, no ``FutureWarning`` in their outputs, and
    lm-eval's logger at ERROR (its per-task INFO and WARNING lines would bury the notebook's own)."""
    import logging
    import warnings

    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


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


@contextlib.contextmanager
def quiet():
    """Swallow stdout and stderr inside the block (the Trainer's log lines, lm-eval's progress bars)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
