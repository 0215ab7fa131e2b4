"""The PoLAR paper's published numbers that the notebooks set their results beside (docs/benchmarks.md).

``COMMONSENSE``: accuracy % per (r, method, task) of the commonsense table (Llama-2-7B, one seed; the
README table of the PoLAR code), task names as in ``polar_lib.data``; ``COMMONSENSE_AVERAGE``: the
table's average column; ``COMMONSENSE_TASKS``: its eight tasks, in the table's order.
``STABLE_RANK``: the stable ranks the paper reports (Fig. 1 and the README's panels).
``MATH``: exact match % of the math experiment (Gemma-3-27B-pt on MetaMathQA) per (method, task); only MATH
(``hendrycks_math``) is known to us, from a secondary source (docs/benchmarks.md, 'PoLAR math').
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

_TABLE = pd.read_csv(Path(__file__).with_name("paper_commonsense.csv"))  # r, method, the eight tasks, average
COMMONSENSE_TASKS = tuple(_TABLE.columns[2:-1])
COMMONSENSE = _TABLE.drop(columns="average").melt(id_vars=["r", "method"], var_name="task", value_name="accuracy")
COMMONSENSE_AVERAGE = _TABLE[["r", "method", "average"]].rename(columns={"average": "accuracy"})

STABLE_RANK = {
    "figure_1": {"model": "Llama-2-7B", "task": "social_iqa", "module": "down_proj", "r": 32,
                 "lora": 1.06, "polar": 5.49},
    "readme_hellaswag_polar_median": {4: 2.7, 8: 4.1, 16: 6.4, 32: 11.0},  # median over layers, per r
    "readme_hellaswag_lora_median": (2.2, 2.5),  # its range over r = 4, 8, 16, 32
}

MATH = pd.DataFrame([{"model": "Gemma-3-27B-pt", "task": "hendrycks_math", "method": "lora", "accuracy": 41.94},
                     {"model": "Gemma-3-27B-pt", "task": "hendrycks_math", "method": "polar", "accuracy": 42.70}])


def commonsense_differences(baseline: str = "lora") -> pd.DataFrame:
    """``COMMONSENSE`` with ``baseline``'s accuracy on the same (r, task) and the difference to it (points)."""
    base = COMMONSENSE[COMMONSENSE.method == baseline].drop(columns="method")
    table = COMMONSENSE.merge(base, on=["r", "task"], suffixes=("", " baseline"))
    return table.assign(difference=table.accuracy - table["accuracy baseline"])
