"""Committed notebooks that show their results: copy an executed notebook's outputs into its source.

``make figures`` runs each notebook with papermill at the ``cpu`` profile; ``publish(executed,
target)`` then writes those outputs into the committed ``notebooks/<name>.ipynb`` so that GitHub,
Colab and Binder show the figures without a run. The cells stay the source's (the parameters cell
keeps the CI defaults that nbval runs, so the .py and .ipynb stay a jupytext pair; papermill's
injected-parameters cell is dropped — the profile file names its values), and what depends on the
machine is removed: timings, papermill's metadata and the paths of the checkout, the home
directory, the temporary directory and the Python prefix; execution counts are renumbered 1, 2, ...
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

INJECTED = "injected-parameters"  # papermill's tag on the cell it adds


def scrub(text: str, roots: list[str]) -> str:
    """``text`` with each of the paths ``roots`` (longest first) replaced by ``…/``."""
    for root in sorted(roots, key=len, reverse=True):
        text = re.sub(re.escape(root.rstrip("/")) + r"/?", "…/", text)
    return text


def _clean_output(output, roots: list[str], count: int):
    if "execution_count" in output:
        output["execution_count"] = count
    output.get("metadata", {}).pop("papermill", None)
    if "text" in output:
        output["text"] = scrub(output["text"], roots)
    for kind, value in output.get("data", {}).items():
        if kind.startswith("text/") and isinstance(value, str):
            output["data"][kind] = scrub(value, roots)
    return output


def publish(executed: str | Path, target: str | Path, checkout: str | Path | None = None) -> int:
    """Copy the outputs of ``executed`` (a papermill run of ``target``'s source) into ``target``,
    cell by cell in order (the injected-parameters cell skipped); return the cells given outputs.
    Raises ``ValueError`` if the two notebooks' code cells differ (a stale executed notebook)."""
    run = nbformat.read(executed, as_version=4)
    source = nbformat.read(target, as_version=4)
    roots = [str(Path(checkout or Path(target).resolve().parents[1])), str(Path.home()), tempfile.gettempdir(),
             sys.prefix]
    injected = [c for c in run.cells if INJECTED in c.metadata.get("tags", [])]
    ran = [c for c in run.cells if c.cell_type == "code" and c not in injected]
    code = [c for c in source.cells if c.cell_type == "code"]
    if [c.source for c in ran] != [c.source for c in code]:
        raise ValueError(f"{executed} is not a run of {target}'s current code cells; run make figures again")
    for count, (cell, done) in enumerate(zip(code, ran), start=1):
        cell.outputs = [_clean_output(output, roots, count) for output in done.outputs]
        cell.execution_count = count  # in order, as a clean top-to-bottom run numbers them (nbval wants one)
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    source.metadata.pop("papermill", None)
    nbformat.write(source, target)
    return sum(bool(c.outputs) for c in code)


def main(argv=None) -> None:
    """``python -m polar_lib.publish EXECUTED TARGET``."""
    executed, target = (argv or sys.argv[1:])[:2]
    print(f"{target}: outputs of {publish(executed, target, os.getcwd())} cells from {executed}")


if __name__ == "__main__":
    main()
