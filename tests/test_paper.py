"""The paper's numbers in polar_lib.paper: the same as docs/benchmarks.md's table, internally consistent."""
import re
from pathlib import Path

import pytest

from polar_lib.paper import COMMONSENSE, COMMONSENSE_AVERAGE, COMMONSENSE_TASKS, MATH, commonsense_differences

DOC = Path(__file__).parents[1] / "docs" / "benchmarks.md"


def doc_table():
    section = DOC.read_text().split("## PoLAR commonsense (Llama-2-7B)")[1].split("\n## ")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    return {(int(r), m.strip().lower()): [float(v) for v in values] for r, m, *values in rows}


def test_the_table_is_the_documented_one():
    table = doc_table()
    assert len(table) == 12
    for (r, method), values in table.items():
        row = COMMONSENSE[(COMMONSENSE.r == r) & (COMMONSENSE.method == method)].set_index("task").accuracy
        assert [row[t] for t in COMMONSENSE_TASKS] == values[:-1]
        average = COMMONSENSE_AVERAGE[(COMMONSENSE_AVERAGE.r == r) & (COMMONSENSE_AVERAGE.method == method)]
        assert average.accuracy.item() == values[-1]


def test_the_average_column_is_the_mean_of_the_eight_tasks():
    """Each entry is rounded to 0.01, so the mean of eight and the printed average agree to 0.01."""
    means = COMMONSENSE.groupby(["r", "method"]).accuracy.mean()
    for row in COMMONSENSE_AVERAGE.itertuples():
        assert means[row.r, row.method] == pytest.approx(row.accuracy, abs=0.01)


def test_differences_to_lora():
    table = commonsense_differences("lora")
    assert (table[table.method == "lora"].difference == 0).all()
    winogrande = table[(table.task == "winogrande") & (table.method == "polar")].difference
    assert winogrande.between(5.7, 9.4).all()  # the paper's "+6 to +9" on WinoGrande


def test_the_math_numbers_are_the_documented_ones():
    section = DOC.read_text().split("## PoLAR math (Gemma-3-27B)")[1].split("\n## ")[0]
    lora, polar = re.search(r"Reported MATH: LoRA ([\d.]+) → PoLAR ([\d.]+)", section).groups()
    reported = MATH.set_index("method").accuracy
    assert (reported["lora"], reported["polar"]) == (float(lora), float(polar))
    assert set(MATH.task) == {"hendrycks_math"}
