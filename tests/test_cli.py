"""The installed commands, the top-level API and the CLI options of issue #20 (epochs, a bare model)."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import polar_lib
from polar_lib import evaluate, finetune
from polar_lib.train import steps_for_epochs
from .conftest import run_fresh_process

MODULES = ("finetune", "evaluate", "bench", "export")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def installed_usage() -> dict[str, str]:
    """The first line of ``polar-<module> --help`` for each installed script, the four run side by side."""
    processes = {module: subprocess.Popen([str(Path(sys.executable).parent / f"polar-{module}"), "--help"],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
                 for module in MODULES}
    usage = {}
    for module, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        usage[module] = out.splitlines()[0]
    return usage


@pytest.mark.parametrize("module", MODULES)
def test_installed_command_names_itself(module, installed_usage):
    assert installed_usage[module].startswith(f"usage: polar-{module} ")


@pytest.mark.parametrize("module", MODULES)
def test_module_run_names_python_m(module, monkeypatch, capsys):
    """``python -m polar_lib.<module>`` sets argv[0] to the module's file; in this process, as it is cheaper."""
    main = importlib.import_module(f"polar_lib.{module}").main
    monkeypatch.setattr(sys, "argv", [str(Path(polar_lib.__file__).with_name(f"{module}.py"))])
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m polar_lib.{module} ")


def test_top_level_api(monkeypatch):
    from polar_lib import METHODS, RunConfig, evaluate_run, load_model, make_optimizer, prepare, train

    from polar_lib.methods import METHODS as methods, make_optimizer as optimizer, prepare as prepare_
    from polar_lib.models import load_model as load
    from polar_lib.train import RunConfig as config

    assert (METHODS, RunConfig, evaluate_run, load_model, make_optimizer, prepare) == (
        methods, config, evaluate.evaluate_run, load, optimizer, prepare_)
    assert {"load_model", "train", "RunConfig", "evaluate_run", "prepare", "make_optimizer", "METHODS"} <= set(
        polar_lib.__all__)
    module = sys.modules["polar_lib.train"]  # the module, callable as its function train
    assert train is polar_lib.train is module
    monkeypatch.setattr(module, "train", lambda *args, **kwargs: (args, kwargs))
    assert train("config", "runs", progress=False) == (("config", "runs"), {"progress": False})
    # a fresh process: the lazy names are imported on first use, train is the module there too
    out = run_fresh_process("""
        import sys, polar_lib
        print(sorted(m for m in ("polar_lib.train", "polar_lib.evaluate") if m in sys.modules))
        from polar_lib import *
        print(train is sys.modules["polar_lib.train"], callable(train), RunConfig.__module__, load_model.__module__)
    """)
    assert out.splitlines() == ["[]", "True True polar_lib.train polar_lib.models"]


FINETUNE = ["--model", "tiny-llama", "--task", "arc_easy", "--train-limit", "8", "--batch-size", "2",
            "--target-modules", "q_proj"]


def test_epochs_sets_max_steps(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(finetune, "execute", lambda plan, progress: plan.config.max_steps)
    finetune.main(FINETUNE + ["--epochs", "1.5", "--grad-accum", "2", "--runs-dir", str(tmp_path)])
    expected = steps_for_epochs("arc_easy", 1.5, batch_size=2, grad_accum=2, train_limit=8)
    assert capsys.readouterr().out.split() == [str(expected)] == ["3"]  # ⌈1.5 · 8 / (2 · 2)⌉
    finetune.main(FINETUNE + ["--runs-dir", str(tmp_path)])  # neither: RunConfig's default
    assert capsys.readouterr().out.split() == [str(polar_lib.RunConfig.max_steps)]
    assert not any(tmp_path.iterdir())


def one_error_line(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("args, message", [
    (["--epochs", "1", "--max-steps", "5"], "argument --max-steps: not allowed with argument --epochs"),
    (["--epochs", "0"], "epochs must be > 0"),
])
def test_epochs_errors(args, message, capsys, tmp_path):
    assert message in one_error_line(finetune.main, FINETUNE + args + ["--runs-dir", str(tmp_path)], capsys)
    assert not any(tmp_path.iterdir())


def test_evaluate_bare_model(capsys):
    evaluate.main(["--model", "tiny-llama", "--task", "arc_easy", "--limit", "4"])
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == evaluate.COLUMNS)
    row = dict(zip(evaluate.COLUMNS, lines[header + 1].split()))
    assert (row["task"], row["metric"], row["n"]) == ("arc_easy", "acc_norm", "4")


@pytest.mark.parametrize("argv, message", [
    ([], "one of the arguments --run --model is required"),
    (["--run", "x", "--model", "tiny-llama", "--tasks", "arc_easy"], "argument --model: not allowed with argument --run"),
    (["--model", "tiny-llama"], "--tasks is required with --model"),
    (["--model", "no-such-model", "--tasks", "arc_easy"], "unknown model 'no-such-model'"),
])
def test_evaluate_needs_a_run_or_a_model(argv, message, capsys):
    assert message in one_error_line(evaluate.main, argv, capsys)
