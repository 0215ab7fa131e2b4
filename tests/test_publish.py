"""publish: an executed notebook's outputs land in its committed source, machine details removed."""
import nbformat
import pytest

from polar_lib.publish import publish


def notebook(cells):
    return nbformat.v4.new_notebook(cells=cells)


def test_outputs_are_copied_cell_by_cell_without_machine_details(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "notebooks").mkdir(parents=True)
    parameters = nbformat.v4.new_code_cell("x = 1")
    parameters.metadata["tags"] = ["parameters"]
    target = checkout / "notebooks" / "nb.ipynb"
    nbformat.write(notebook([nbformat.v4.new_markdown_cell("# title"), parameters,
                             nbformat.v4.new_code_cell("print(x)")]), target)

    injected = nbformat.v4.new_code_cell("# Parameters\nx = 2")
    injected.metadata["tags"] = ["injected-parameters"]
    ran = notebook([nbformat.v4.new_markdown_cell("# title"), nbformat.v4.new_code_cell("x = 1"), injected,
                    nbformat.v4.new_code_cell("print(x)")])
    ran.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"2 from {checkout}/runs/a\n")]
    ran.cells[3].execution_count = 7
    ran.cells[3].metadata["papermill"] = {"duration": 1.5}
    executed = tmp_path / "executed.ipynb"
    nbformat.write(ran, executed)

    assert publish(executed, target) == 1
    result = nbformat.read(target, as_version=4)
    assert [c.source for c in result.cells] == ["# title", "x = 1", "print(x)"]  # the source's cells, no injection
    last = result.cells[2]
    assert last.outputs[0]["text"] == "2 from …/runs/a\n"
    assert last.execution_count == 2 and "papermill" not in last.metadata  # renumbered in order
    nbformat.validate(result)


def test_a_stale_executed_notebook_is_refused(tmp_path):
    target, executed = tmp_path / "nb.ipynb", tmp_path / "run.ipynb"
    nbformat.write(notebook([nbformat.v4.new_code_cell("print(1)")]), target)
    nbformat.write(notebook([nbformat.v4.new_code_cell("print(2)")]), executed)
    with pytest.raises(ValueError, match="not a run of"):
        publish(executed, target)
