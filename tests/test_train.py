"""The training path: a run's identity, validation before writing, reuse, resume, refusal to
overwrite, locking, DDP equivalence, the CLI."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from polar_lib import data as task_data
from polar_lib import methods
from polar_lib.finetune import main as finetune_main
from polar_lib.train import (RunConfig, collator, load_run, load_stable_ranks, load_trained, loss_curves,
                             run_identity, run_name, steps_for_epochs, tokenize_examples, train, train_all)

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
    metrics, straight_metrics = load_run(resumed)[1], load_run(straight)[1]
    assert metrics["resumed_from"].endswith("checkpoint-2")
    a, b = adapter(straight), adapter(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the mean over all 4 steps, not over the 2 trained after the resume (same losses: bit-identical run)
    assert metrics["loss_history"] == straight_metrics["loss_history"] and len(metrics["loss_history"]) == 4
    assert metrics["train_loss"] == pytest.approx(straight_metrics["train_loss"], rel=1e-12)
    # the stable-rank log: step 0 (ΔW₀ = 0: stable rank 0) and every checkpoint, the same after the resume
    ranks, straight_ranks = load_stable_ranks(resumed), load_stable_ranks(straight)
    assert sorted(set(ranks["step"])) == [0, 2, 4] and (ranks.loc[ranks["step"] == 0, "stable_rank"] == 0).all()
    assert ranks.equals(straight_ranks)


def test_finished_run_is_reused_and_never_overwritten(tmp_path, capsys):
    config = RunConfig(method="lora", max_steps=2, **TINY)
    run_dir = train(config, tmp_path, progress=False)
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert train(config, tmp_path, progress=False) == run_dir
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp
    assert f"reusing the finished run {run_dir}" in capsys.readouterr().err
    with pytest.raises(FileExistsError, match=r"holds a different run \(config.max_steps: 2 -> 3"):
        train(RunConfig(method="lora", max_steps=3, **TINY), run_dir=run_dir, progress=False)
    model, _ = load_trained(run_dir)
    assert model.peft_config["default"].r == config.r and not model.training


class Seen(TrainerCallback):
    """What the Trainer trains: the base weights' dtypes, the adapters', and whether checkpointing is on."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        self.trained = {p.dtype for p in model.parameters() if p.requires_grad}
        self.checkpointing = model.is_gradient_checkpointing


def test_bf16_base_weights_and_gradient_checkpointing_reach_the_trainer(tmp_path):
    """The memory options of a large model's run (the paper-math sweep): the frozen weights in bf16, the
    adapters in fp32 (PEFT's autocast_adapter_dtype), activations recomputed; the reloaded run is bf16 too."""
    seen = Seen()
    config = RunConfig(method="polar", max_steps=1, model_dtype="bfloat16", gradient_checkpointing=True, **TINY)
    run_dir = train(config, tmp_path, progress=False, callbacks=[seen])
    assert (seen.frozen, seen.trained, seen.checkpointing) == ({torch.bfloat16}, {torch.float32}, True)
    assert {t.dtype for t in adapter(run_dir).values()} == {torch.float32}
    model, _ = load_trained(run_dir)
    assert model.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16


def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) with batch 2 per process = one process with batch 4; AdaPreLoRA's
    exact statistics too (each rank's captured m×n gradient summed over the ranks; the least-squares scale
    absorbs DDP's averaging of the factors' gradients)."""
    runs = {method: {"method": method} for method in RIEMANNIAN} | {
        "adaprelora-exact": {"method": "lora+adaprelora", "optimizer_options": {"exact_statistics": True}}}
    for name, fields in runs.items():
        train(RunConfig(max_steps=3, **fields, **TINY), run_dir=tmp_path / f"single-{name}", progress=False)
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys\nfrom polar_lib.train import RunConfig, train\n"
        f"for name, fields in {runs!r}.items():\n"
        f"    train(RunConfig(max_steps=3, **fields, **{{**{TINY!r}, 'batch_size': 2}}),"
        f" run_dir=sys.argv[1] + '/ddp-' + name, progress=False)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29533", str(script), str(tmp_path)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in runs:
        single, ddp = adapter(tmp_path / f"single-{name}"), adapter(tmp_path / f"ddp-{name}")
        for key in single:
            assert torch.allclose(single[key], ddp[key], atol=1e-5), (name, key)


def test_registry_default_lr_is_part_of_the_identity(tmp_path, monkeypatch):
    config = RunConfig(method="lora", max_steps=1, **TINY)
    first = train(config, tmp_path, progress=False)
    assert run_identity(config)["resolved"]["optimizer"]["lr"] == methods.METHODS["lora"].lr
    monkeypatch.setitem(methods.METHODS, "lora", dataclasses.replace(methods.METHODS["lora"], lr=1e-3))
    second = train(config, tmp_path, progress=False)
    assert second != first and (second / "metrics.json").exists()
    assert json.loads((second / "config.json").read_text())["resolved"]["optimizer"]["lr"] == 1e-3


def test_code_version_is_part_of_the_identity(monkeypatch):
    config = RunConfig(method="polar", **TINY)
    before = run_name(run_identity(config))
    monkeypatch.setattr("polar_lib.train.__version__", "9.9.9")
    assert run_name(run_identity(config)) != before


def test_edited_training_record_gives_a_new_run(tmp_path, monkeypatch):
    relative = task_data.get_task("arc_easy").files["train"]
    records = json.loads((task_data.SHARED_DATA / relative).read_text())
    records[-1]["answer"] = "answer1" if records[-1]["answer"] != "answer1" else "answer2"  # not within train_limit
    (tmp_path / "data" / relative).parent.mkdir(parents=True)
    (tmp_path / "data" / relative).write_text(json.dumps(records))
    config = RunConfig(method="lora", max_steps=1, **TINY)
    original = train(config, tmp_path / "runs", progress=False)
    with pytest.raises(task_data.DataError, match="does not match data/sources.csv"):
        train(config, tmp_path / "runs", data_dir=tmp_path / "data", progress=False)
    monkeypatch.setenv("POLAR_DATA_VERIFY", "0")  # edited on purpose
    edited = train(config, tmp_path / "runs", data_dir=tmp_path / "data", progress=False)
    assert edited != original and (edited / "metrics.json").exists()


BAD_OPTIONS = [
    (["--model", "gpt5"], "unknown model 'gpt5'"),
    (["--task", "nope"], "unknown task 'nope'; valid tasks: boolq"),
    (["--task", "gsm8k"], "task 'gsm8k' has no train split; tasks with one: boolq"),
    (["--method", "qlora"], "unknown method 'qlora'; known methods: lora"),
    (["--loss-on", "prompt"], "loss_on must be one of ('answer', 'sequence')"),
    (["--scheduler", "foo"], "scheduler must be one of ('linear', 'cosine'"),
    (["--model-dtype", "float16"], "model_dtype must be one of ('float32', 'bfloat16')"),
    (["--data-dir", "/no/such/dir"], "data directory /no/such/dir (from the data_dir argument) does not exist"),
    (["--target-modules", "nothing_proj"], "target_modules ['nothing_proj'] match no layer"),
    (["--target-modules", "embed_tokens"], "model.embed_tokens is a Embedding; polar_lib adapts nn.Linear"),
] + [(["--method", method, "--r", "5000"], "min(in_features, out_features) = 64 for every target (a 64->64 nn.Linear model.layers.0")
     for method in ("lora", "dora", "polar", "stella", "toplora")]


@pytest.mark.parametrize("args, message", BAD_OPTIONS)
def test_cli_bad_option_is_one_error_line_and_writes_nothing(args, message, capsys, tmp_path):
    argv = ["--model", "tiny-llama", "--train-limit", "4", "--runs-dir", str(tmp_path / "runs")] + args
    with pytest.raises(SystemExit) as exit_info:
        finetune_main(argv + (["--target-modules", "q_proj,down_proj"] if "--target-modules" not in args else []))
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "runs").exists()


def test_cli_help_and_required_model(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        finetune_main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--model", "--method", "--task", "--r", "--optimizer-options", "--loss-on"):
        assert option in help_text
    with pytest.raises(SystemExit) as exit_info:  # no silent default model
        finetune_main(["--method", "polar", "--runs-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "required: --model" in capsys.readouterr().err


def test_two_concurrent_trainings_of_one_config_train_it_once(tmp_path):
    code = ("from polar_lib.train import RunConfig, train\n"
            f"train(RunConfig(method='lora', max_steps=3, **{TINY!r}), {str(tmp_path)!r}, progress=False)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    errors = [p.communicate()[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    assert sum("reusing the finished run" in e for e in errors) == 1, errors  # the other one trained
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 1


@pytest.mark.parametrize("epochs, batch_size, grad_accum, steps", [
    (1, 4, 1, 8),      # 32 examples / 4
    (2, 4, 2, 8),      # 64 / 8
    (1.5, 5, 1, 10),   # 48 / 5 = 9.6, rounded up: the last batch counts
])
def test_steps_for_epochs(epochs, batch_size, grad_accum, steps):
    assert steps_for_epochs("arc_easy", epochs, batch_size, grad_accum, train_limit=32) == steps
    with pytest.raises(ValueError, match="epochs must be > 0"):
        steps_for_epochs("arc_easy", 0, batch_size)


def test_train_all_trains_in_workers_then_reuses(tmp_path, monkeypatch):
    configs = [RunConfig(method=method, max_steps=2, **TINY) for method in ("lora", "polar")]
    run_dirs = train_all(configs, tmp_path, workers=2, progress=False)
    assert [load_run(d)[0] for d in run_dirs] == configs
    single = train(configs[1], tmp_path / "single", progress=False)  # the same run in this process
    a, b = adapter(run_dirs[1]), adapter(single)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # fp32, 2 steps: BLAS-order noise only
    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", lambda *a, **k: pytest.fail("trained again"))
    assert train_all(configs, tmp_path, workers=2, progress=False) == run_dirs
    keyed = {("arc_easy", config.method): config for config in configs}  # a sweep's key -> config
    assert train_all(keyed, tmp_path, workers=2, progress=False) == dict(zip(keyed, run_dirs))
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        train_all(configs, tmp_path, workers=0)


def test_loss_curves_are_the_rolling_means_of_each_runs_history(tmp_path):
    histories = {("boolq", "lora", 4, 0): [4.0, 2.0, 6.0, 0.0], ("boolq", "polar", 4, 0): [1.0, 3.0]}
    run_dirs = {}
    for key, history in histories.items():
        run_dir = run_dirs[key] = tmp_path / "-".join(map(str, key))
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps({"config": RunConfig(method=key[1]).to_dict()}))
        (run_dir / "metrics.json").write_text(json.dumps({"loss_history": history}))
    curves = loss_curves(run_dirs, window=2)
    lora = curves[curves.method == "lora"]
    assert lora.step.tolist() == [1, 2, 3, 4] and lora["training loss"].tolist() == histories["boolq", "lora", 4, 0]
    assert lora["smoothed loss"].tolist() == [4.0, 3.0, 4.0, 3.0]  # mean of the last ≤ 2 losses
    assert curves[curves.method == "polar"]["smoothed loss"].tolist() == [1.0, 2.0]
    assert set(curves.columns) == {"task", "method", "r", "seed", "step", "training loss", "smoothed loss"}


@pytest.mark.parametrize("model_task", ["causal-lm", "sequence-classification"])
def test_collator_right_pads_and_masks_padding_out_of_the_loss(model_task, tiny_llama):
    _, tokenizer = tiny_llama
    examples = task_data.load_task("arc_easy", "train", limit=3)
    rows = tokenize_examples(examples, tokenizer, model_task, max_length=64, loss_on="answer")
    batch = collator(tokenizer, model_task)(rows)
    lengths = [len(row["input_ids"]) for row in rows]
    assert len(set(lengths)) > 1  # padding happens
    assert batch["input_ids"].shape == (3, max(lengths))
    for i, (row, n) in enumerate(zip(rows, lengths)):
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
        assert (batch["input_ids"][i, n:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (max(lengths) - n)
        if model_task == "causal-lm":
            assert batch["labels"][i].tolist() == row["labels"] + [-100] * (max(lengths) - n)
            assert (batch["labels"][i, :n] == -100).sum() > 0  # the prompt is out of the answer-only loss
        else:
            assert batch["labels"][i].item() == examples[i].label
