"""The training path: reuse, resume, refusal to overwrite, DDP equivalence, the CLI."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from polar_lib.finetune import main as finetune_main
from polar_lib.train import RunConfig, load_run, load_trained, steps_for_epochs, train

TINY = dict(model="tiny-llama", task="arc_easy", train_limit=16, batch_size=4, max_length=64, lora_dropout=0.0)
RIEMANNIAN = ["polar", "stella", "lora+adaprelora", "lora+riemannian"]


def adapter(run_dir):
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


class Interrupt(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_adapter(tmp_path):
    config = RunConfig(method="polar", max_steps=4, save_steps=2, **{**TINY, "lora_dropout": 0.1})
    straight = train(config, tmp_path / "straight", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "interrupted", progress=False, callbacks=[Interrupt(3)])
    resumed = train(config, tmp_path / "interrupted", progress=False)
    assert load_run(resumed)[1]["resumed_from"].endswith("checkpoint-2")
    a, b = adapter(straight), adapter(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_is_reused_and_never_overwritten(tmp_path):
    config = RunConfig(method="lora", max_steps=2, **TINY)
    run_dir = train(config, tmp_path, progress=False)
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    assert train(config, tmp_path, progress=False) == run_dir
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="holds a different run"):
        train(RunConfig(method="lora", max_steps=3, **TINY), run_dir=run_dir, progress=False)
    model, _ = load_trained(run_dir)
    assert model.peft_config["default"].r == config.r and not model.training


def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) with batch 2 per process = one process with batch 4."""
    for method in RIEMANNIAN:
        train(RunConfig(method=method, max_steps=3, **TINY), run_dir=tmp_path / f"single-{method}", progress=False)
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys\nfrom polar_lib.train import RunConfig, train\n"
        f"for method in {RIEMANNIAN!r}:\n"
        f"    train(RunConfig(method=method, max_steps=3, **{{**{TINY!r}, 'batch_size': 2}}),"
        f" run_dir=sys.argv[1] + '/ddp-' + method, progress=False)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29533", str(script), str(tmp_path)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    for method in RIEMANNIAN:
        single, ddp = adapter(tmp_path / f"single-{method}"), adapter(tmp_path / f"ddp-{method}")
        for key in single:
            assert torch.allclose(single[key], ddp[key], atol=1e-5), (method, key)


def test_cli_help_and_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        finetune_main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--model", "--method", "--task", "--r", "--optimizer-options", "--loss-on"):
        assert option in help_text
    for args, listed in ((["--task", "hellaswag"], "arc_easy"), (["--method", "qlora"], "polar"),
                         (["--model", "gpt5"], "smollm2-135m"), (["--loss-on", "prompt"], "answer")):
        with pytest.raises(SystemExit) as exit_info:
            finetune_main(args + ["--runs-dir", str(tmp_path)])
        assert exit_info.value.code == 2
        assert listed in capsys.readouterr().err


@pytest.mark.parametrize("epochs, batch_size, grad_accum, steps", [
    (1, 4, 1, 8),      # 32 examples / 4
    (2, 4, 2, 8),      # 64 / 8
    (1.5, 5, 1, 10),   # 48 / 5 = 9.6, rounded up: the last batch counts
])
def test_steps_for_epochs(epochs, batch_size, grad_accum, steps):
    assert steps_for_epochs("arc_easy", epochs, batch_size, grad_accum, train_limit=32) == steps
    with pytest.raises(ValueError, match="epochs must be > 0"):
        steps_for_epochs("arc_easy", 0, batch_size)
