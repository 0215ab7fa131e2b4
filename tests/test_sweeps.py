"""The sweeps shared by notebooks 01 and 03: the runs each group defines, shared identities, validation."""
import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from polar_lib.data import load_task
from polar_lib.sweeps import GROUPS, SWEEPS, Group, Sweep, get_sweep
from polar_lib import train
from polar_lib.train import run_identity, run_name

TRAINING = dict(model="tiny-llama", batch_size=2, train_limit=16, save_steps=2)


@pytest.mark.parametrize("name", ["ci", "cpu"])
def test_configs_are_the_product_of_each_group_without_repeats(name):
    sweep = SWEEPS[name]
    configs = sweep.configs()
    expected = {key for group in GROUPS for key in getattr(sweep, group).keys()}
    assert set(configs) == expected and len(configs) == len(expected)
    for (task, method, r, seed), config in configs.items():
        assert (config.task, config.method, config.r, config.seed) == (task, method, r, seed)
        assert config.max_steps == sweep.steps(task)
        assert {k: getattr(config, k) for k in sweep.training} == sweep.training


@pytest.mark.parametrize("name", ["ci", "cpu"])
def test_notebooks_01_and_03_share_the_runs_they_have_in_common(name):
    """Notebook 01 trains the rank sweep plus 03's runs on its task and first seed; each of those is the
    run 03 asks for — the same identity, hence the same cached run directory."""
    sweep = SWEEPS[name]
    nb01 = sweep.configs("rank_sweep") | sweep.configs("comparison", "others", tasks=sweep.rank_sweep.tasks,
                                                        seeds=sweep.rank_sweep.seeds[:1])
    nb03 = sweep.configs("comparison", "others")
    shared = set(nb01) & set(nb03)
    assert shared, "the notebooks share no run"
    for key in shared:
        assert run_name(run_identity(nb01[key])) == run_name(run_identity(nb03[key]))


def test_epochs_give_whole_steps_over_the_training_split():
    sweep = Sweep(training=TRAINING | dict(grad_accum=3), epochs=2,
                  rank_sweep=Group(("arc_easy",), ("lora",), (4,), (0,)))
    examples = len(load_task("arc_easy", "train", limit=16))
    assert sweep.steps("arc_easy") == math.ceil(2 * examples / (2 * 3))
    assert next(iter(sweep.configs().values())).max_steps == sweep.steps("arc_easy")


def test_yaml_file_round_trip(tmp_path):
    sweep = SWEEPS["cpu"]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(sweep)))
    assert get_sweep(path) == sweep and get_sweep(sweep) is sweep and get_sweep("cpu") is sweep


@pytest.mark.parametrize("make, message", [
    (lambda: Sweep(training=TRAINING), "exactly one of max_steps and epochs"),
    (lambda: Sweep(training=TRAINING, max_steps=2, epochs=1), "exactly one of max_steps and epochs"),
    (lambda: Sweep(training=TRAINING | {"r": 4}, max_steps=2), "training field must be one of"),
    (lambda: Sweep(training=TRAINING | {"max_lenght": 4}, max_steps=2), "'max_lenght'"),
    (lambda: SWEEPS["ci"].configs("rank"), "group must be one of"),
    (lambda: get_sweep("cpuu"), "'cpuu' is neither a sweep name (ci, cpu, paper, ci-glue, paper-glue, ci-math, paper-math)"),
])
def test_bad_input_is_named(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_a_bad_run_fails_when_the_configs_are_built():
    sweep = Sweep(training=TRAINING, max_steps=2, comparison=Group(("boolq",), ("lorra",), (4,), (0,)))
    with pytest.raises(ValueError, match="lorra"):
        sweep.configs()


def test_cli_counts_and_trains_one_run_per_index(tmp_path, capsys):
    from polar_lib import sweeps

    sweep = sweeps.smoke("ci", tasks=("boolq",), steps=1)
    path = sweep.save(tmp_path / "one.yaml")
    sweeps.main([str(path), "--count"])
    count = int(capsys.readouterr().out)
    assert count == len(sweep.configs()) > 1
    sweeps.main([str(path), "--index", "1", "--runs-dir", str(tmp_path / "runs")])
    run_dir = Path(capsys.readouterr().out.splitlines()[-1])  # the last line: the run directory
    assert run_dir.parent == tmp_path / "runs" and (run_dir / "metrics.json").is_file()
    assert train.load_run(run_dir)[0] == list(sweep.configs().values())[1]
    with pytest.raises(SystemExit):
        sweeps.main([str(path), "--index", str(count)])
    assert f"--index must be in 0..{count - 1}" in capsys.readouterr().err
