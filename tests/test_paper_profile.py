"""The paper profile runs: every notebook executed with ``notebooks/profiles/paper/<name>.yaml``, only the
model swapped for the tiny random model of its family and the amount of work shrunk (steps, examples,
questions, iterations, sizes); everything else is the profile's — bf16 autocast, the cosine schedule,
16-step accumulation, the loss on the sequence, the ranks, targets, methods, batch sizes and the
evaluation batch of 32. The hub-only training splits come from a local copy in the hub's layout
(tests/hub_fixtures.py). A GPU-only value (``device: cuda``) becomes the CPU.

One task and one seed of the paper's sweep (the code path of every task is the same; each task's data
is tested in test_data.py and test_hub_data.py): Social IQa, the paper's Fig. 1 task, whose training
split is hub-only and whose test split is a local file. Notebook 05's GLUE sweep (``paper-glue``: DeBERTa
swapped for ``tiny-deberta``) keeps one seed and the first learning rate of its grid, on three tasks whose
heads differ: CoLA (two classes, Matthews), STS-B (one output, regression), MNLI (three classes, its
``validation_matched`` split). Notebook 06's math sweep (``paper-math``: Gemma-3-27B swapped for ``tiny-gemma3``, an
image-text model of the same architecture) trains on MetaMathQA's hub copy and is scored by lm-eval's stock
``gsm8k`` and ``hendrycks_math`` on theirs, one question per (sub)task.
"""
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest
import yaml

from polar_lib.sweeps import get_sweep, smoke

from .hub_fixtures import write_hub_copy

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PROFILES = NOTEBOOKS / "profiles" / "paper"
TASK = "social_iqa"
# Per sweep a paper profile names: its smoke version (polar_lib.sweeps.smoke's arguments).
SMOKE = {"paper": dict(tasks=(TASK,)), "paper-glue": dict(tasks=("cola", "stsb", "mnli"), lrs=1), "paper-math": {}}

# Per notebook: the profile's values that set the amount of work, and their smoke values.
SHRUNK = {
    "01_stable_rank": {"heatmap_rows": 32},
    "02_toy_problem": {"iterations": 60, "plot_every": 6},
    "03_finetune": {"eval_limit": 4},
    "05_glue": {"eval_limit": 4, "eval_batch_size": 2},
    "06_math": {"eval_limit": 1},
    "04_runtime": {"model": "tiny-llama", "seq_len": 32, "warmup": 1, "repeats": 1, "micro_sizes": [64, 128],
                   "micro_ranks": [4, 32], "micro_repeats": 1, "stable_rank_size": 64, "stable_rank_k": 8,
                   "device": "cpu", "threads": 1},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The smoke sweep files, one runs folder shared by 01 and 03 (as in make figures), the hub copy."""
    root = tmp_path_factory.mktemp("paper-profile")
    sweeps = {name: smoke(name, **options).save(root / f"{name}-smoke.yaml") for name, options in SMOKE.items()}
    return root, sweeps, write_hub_copy(root / "hub")


def test_smoke_sweep_keeps_the_profile_but_model_and_work(tmp_path):
    paper, shrunk = get_sweep("paper"), smoke("paper", tasks=(TASK,))
    assert shrunk.training == paper.training | {"model": "tiny-llama", "train_limit": 8 * 16, "save_steps": 1}
    assert (shrunk.max_steps, shrunk.epochs) == (2, None)
    for name in ("rank_sweep", "comparison", "others"):
        full, small = getattr(paper, name), getattr(shrunk, name)
        assert (small.methods, small.ranks, small.tasks, small.seeds) == (full.methods, full.ranks, (TASK,), full.seeds[:1])
    assert get_sweep(shrunk.save(tmp_path / "smoke.yaml")) == shrunk  # the YAML round trip


def test_glue_smoke_sweep_keeps_the_profile_but_model_and_work():
    paper, shrunk = get_sweep("paper-glue"), smoke("paper-glue", **SMOKE["paper-glue"])
    assert shrunk.training == paper.training | {"model": "tiny-deberta", "train_limit": 32, "save_steps": 1}
    assert (shrunk.max_steps, shrunk.epochs, shrunk.method_options) == (2, None, paper.method_options)
    full, small = paper.glue, shrunk.glue
    assert (small.methods, small.ranks, small.tasks, small.seeds, small.lrs) == (
        full.methods, full.ranks, SMOKE["paper-glue"]["tasks"], full.seeds[:1], full.lrs[:1])


def test_math_smoke_sweep_keeps_the_profile_but_model_and_work():
    paper, shrunk = get_sweep("paper-math"), smoke("paper-math")
    assert shrunk.training == paper.training | {"model": "tiny-gemma3", "train_limit": 8 * 15, "save_steps": 1}
    assert (shrunk.max_steps, shrunk.epochs, shrunk.method_options) == (2, None, paper.method_options)
    assert shrunk.math == paper.math


@pytest.mark.parametrize("name", sorted(SHRUNK))
def test_notebook_runs_at_its_paper_profile(name, workspace, monkeypatch):
    root, sweeps, hub = workspace
    monkeypatch.setenv("POLAR_HUB_DATA", str(hub))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    profile = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    assert set(SHRUNK[name]) <= set(profile), f"{name}: shrinks a value its paper profile does not set"
    parameters = profile | SHRUNK[name] | {"figures_dir": str(root / "figures" / name)}
    if "sweep" in profile:
        assert profile["sweep"] in SMOKE, f"{name}: its paper profile's sweep {profile['sweep']!r} has no smoke version"
        parameters |= {"sweep": str(sweeps[profile["sweep"]]), "runs_dir": str(root / "runs")}
    source = root / f"{name}.ipynb"
    nbformat.write(jupytext.read(NOTEBOOKS / f"{name}.py"), source)
    papermill.execute_notebook(source, root / f"{name}.ran.ipynb", parameters=parameters, kernel_name="python3",
                               cwd=str(NOTEBOOKS), progress_bar=False, log_output=False)
    assert any((root / "figures" / name).glob("*.png")), f"{name}: no figure written"
