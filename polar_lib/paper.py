"""The PoLAR paper's published numbers that the notebooks set their results beside (docs/benchmarks.md).

``COMMONSENSE``: accuracy % per (r, method, task) of the commonsense table (Llama-2-7B, one seed; the
README table of the PoLAR code), task names as in ``polar_lib.data`` (HellaSwag, not in the data
registry, as ``"hellaswag"``); ``COMMONSENSE_AVERAGE``: the table's average column.
``STABLE_RANK``: the stable ranks the paper reports (Fig. 1 and the README's panels).
"""
from __future__ import annotations

import pandas as pd

COMMONSENSE_TASKS = ("boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                     "openbookqa")
_ROWS = [  # r, method, the eight tasks in COMMONSENSE_TASKS order, average
    (4, "lora", 87.16, 81.01, 58.85, 82.36, 74.35, 81.90, 57.68, 56.80, 72.51),
    (4, "dora", 87.22, 80.30, 58.96, 82.39, 75.22, 81.69, 57.85, 56.80, 72.55),
    (4, "polar", 87.49, 82.59, 59.31, 81.23, 81.77, 81.61, 56.31, 55.80, 73.26),
    (8, "lora", 87.34, 81.07, 58.80, 82.68, 74.66, 82.24, 58.11, 55.80, 72.59),
    (8, "dora", 87.49, 80.58, 58.39, 82.32, 75.22, 82.24, 58.19, 55.60, 72.50),
    (8, "polar", 87.74, 82.70, 59.62, 82.14, 82.40, 81.36, 56.91, 55.20, 73.51),
    (16, "lora", 86.94, 81.18, 58.96, 82.57, 76.01, 82.58, 57.85, 56.00, 72.76),
    (16, "dora", 86.85, 81.34, 58.29, 82.39, 74.59, 82.62, 57.68, 55.40, 72.39),
    (16, "polar", 88.01, 82.92, 59.93, 82.68, 81.77, 81.82, 57.51, 57.40, 74.00),
    (32, "lora", 87.89, 81.56, 59.06, 82.51, 72.61, 82.37, 56.83, 54.60, 72.18),
    (32, "dora", 87.61, 81.45, 58.70, 82.50, 74.43, 82.28, 57.17, 55.60, 72.47),
    (32, "polar", 88.13, 82.64, 60.03, 83.12, 82.00, 81.99, 56.14, 55.60, 73.71),
]
COMMONSENSE = (pd.DataFrame([row[:-1] for row in _ROWS], columns=["r", "method", *COMMONSENSE_TASKS])
               .melt(id_vars=["r", "method"], var_name="task", value_name="accuracy"))
COMMONSENSE_AVERAGE = pd.DataFrame([(r, m, avg) for r, m, *_, avg in _ROWS], columns=["r", "method", "accuracy"])

STABLE_RANK = {
    "figure_1": {"model": "Llama-2-7B", "task": "social_iqa", "module": "down_proj", "r": 32,
                 "lora": 1.06, "polar": 5.49},
    "readme_hellaswag_polar_median": {4: 2.7, 8: 4.1, 16: 6.4, 32: 11.0},  # median over layers, per r
    "readme_hellaswag_lora_median": (2.2, 2.5),  # its range over r = 4, 8, 16, 32
}


def commonsense_differences(baseline: str = "lora") -> pd.DataFrame:
    """``COMMONSENSE`` with ``baseline``'s accuracy on the same (r, task) and the difference to it (points)."""
    base = COMMONSENSE[COMMONSENSE.method == baseline].drop(columns="method")
    table = COMMONSENSE.merge(base, on=["r", "task"], suffixes=("", " baseline"))
    return table.assign(difference=table.accuracy - table["accuracy baseline"])
