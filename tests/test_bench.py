"""The runtime benchmark: its command line's output and results file (structure, never timings)."""
import json
import subprocess
import sys

import pytest
import torch

import pandas as pd

from polar_lib.bench import (PER_LAYER, QUICK, BenchConfig, batched_speedups, goal_verdicts, load_results,
                             noisy_ratios, padded_tokens, save_results, summarize_steps)
from polar_lib.methods import METHODS

HOOKED = ("polar", "stella", "lora+adaprelora")  # timed twice: batched and per layer
TIMED = set(METHODS) | {f"{m} {PER_LAYER}" for m in HOOKED}


def test_quick_cli_prints_ratios_json_and_writes_results(tmp_path):
    output = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "polar_lib.bench", "--quick", "--output", str(output)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ratios = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(ratios) == TIMED
    for method, entry in ratios.items():
        assert set(entry) == {"r", "step_time", "optimizer_time", "peak_memory"}, method
        assert all(isinstance(v, (int, float)) and v > 0 for v in entry.values()), (method, entry)  # structure only
    assert ratios["lora"] == {"r": 8, "step_time": 1.0, "optimizer_time": 1.0, "peak_memory": 1.0}
    assert "threads" in run.stderr and "per layer against batched" in run.stdout
    assert all(line.startswith("  ") or "threads" in line or line.startswith("step benchmark") or
               line.startswith("stable rank") for line in run.stderr.splitlines()), run.stderr  # only its own log

    results = load_results(output)
    assert results["environment"]["threads"] == 2
    summary, micro = results["summary"], results["micro_summary"]
    assert set(summary.method) == TIMED
    assert {"step_s", "step_ratio", "optimizer_s", "peak_bytes", "memory_ratio"} <= set(summary.columns)
    assert len(results["steps"]) == len(TIMED) * QUICK.repeats  # QUICK: max_repeats = repeats
    assert {(row.n, row.r) for row in micro.itertuples()} == {(768, 4), (768, 32)}
    assert (micro[["landing_us", "svd_retraction_us", "qr_retraction_us", "speedup_svd"]] > 0).all().all()
    # fp64 stable rank at 768², rank 8, factored vs dense SVD: ≈ 2k·EPS64·√(mn) ≈ 3e-12 (measured 1.8e-15)
    assert results["stable_rank"]["abs_difference"] < 1e-10

    written = output.read_text()
    again = subprocess.run([sys.executable, "-m", "polar_lib.bench", "--quick", "--output", str(output)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and f"--output {output} exists" in again.stderr and "--overwrite" in again.stderr
    assert output.read_text() == written
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_results(results, output)
    save_results(results, output, overwrite=True)
    assert load_results(output)["environment"] == results["environment"]


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": ("polar",)}, "include 'lora'"),
    ({"methods": ("lora", "nope")}, "nope"),
    ({"dtype": "float64"}, "dtype must be one of"),
    ({"ranks": (0,)}, "ranks must be"),
    ({"repeats": 0}, "repeats must be >= 1"),
    ({"repeats": 5, "max_repeats": 3}, "max_repeats must be >= repeats=5"),
    ({"target_spread": 0}, "target_spread must be > 0"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(**kwargs)


def test_padded_tokens_counts_each_batch_at_its_longest():
    lengths = [1, 100] * 100  # two lengths, interleaved: a random batch of 2 mixes them half the time
    assert padded_tokens(lengths, 1, "random") == padded_tokens(lengths, 1, "group_by_length") == sum(lengths)
    assert padded_tokens(lengths, 4, "max_length", max_length=128) == 200 * 128
    grouped, shuffled = padded_tokens(lengths, 2, "group_by_length"), padded_tokens(lengths, 2, "random")
    # grouped: at most one mixed batch per megabatch of 50 × 2 sorted examples (2 megabatches) → ≤ 2 × 99
    # extra tokens over the 10,100 of the sequences; random: ≈ 50 mixed batches × 99 (a 3000-token margin).
    assert sum(lengths) <= grouped <= sum(lengths) + 2 * 99 < shuffled - 2000
    with pytest.raises(ValueError, match="padding must be one of"):
        padded_tokens(lengths, 2, "longest")


def test_config_from_a_notebook_namespace_takes_only_its_fields():
    namespace = {"model": "tiny-llama", "ranks": [4, 8], "threads": 1, "figures_dir": "x", "np": object()}
    assert BenchConfig.from_namespace(namespace) == BenchConfig(model="tiny-llama", ranks=(4, 8), threads=1)


def synthetic_steps(spreads: dict[str, float]) -> pd.DataFrame:
    """Four rounds: LoRA 1 s; each method 2 s × (1 ± its spread) in alternate rounds (its ratio's IQR)."""
    rows = []
    for round_ in range(4):
        for method, spread in {"lora": 0.0, **spreads}.items():
            factor = 1 if method == "lora" else 2 * (1 + spread * (-1) ** round_)
            rows.append({"method": method, "r": 8, "round": round_, "step_s": factor, "optimizer_s": factor / 10,
                         "peak_bytes": 1, "excess_bytes": 1, "trainable_params": 1})
    return pd.DataFrame(rows)


def test_noisy_ratios_names_those_whose_interquartile_range_is_too_wide():
    summary = summarize_steps(synthetic_steps({"polar": 0.01, "stella": 0.2}))
    # ratios 2(1 ± s) in alternate rounds: quartiles at 2(1 − s) and 2(1 + s), IQR/median = 2s
    assert noisy_ratios(summary, 0.1) == ["stella r=8 step", "stella r=8 optimizer"]
    assert noisy_ratios(summary, 0.5) == [] and noisy_ratios(summary, 0.01) == [
        "polar r=8 step", "polar r=8 optimizer", "stella r=8 step", "stella r=8 optimizer"]


def test_batched_speedups_pairs_each_per_layer_row_with_its_batched_row():
    steps = synthetic_steps({"polar": 0.0, f"polar {PER_LAYER}": 0.0})
    steps.loc[steps.method == f"polar {PER_LAYER}", "optimizer_s"] *= 3
    table = batched_speedups(summarize_steps(steps))
    assert table[["method", "r"]].values.tolist() == [["polar", 8]]
    assert table.speedup.iloc[0] == pytest.approx(3.0)


def test_random_shape_model_is_built_on_the_device_in_the_dtype():
    from polar_lib.bench import RANDOM_SHAPES, _bench_model

    config = BenchConfig(model="random:smollm2-135m", layers=1, dtype="bfloat16")
    model = _bench_model(config, torch.device("cpu"))
    shape = RANDOM_SHAPES["smollm2-135m"]
    assert model.training and len(model.model.layers) == 1
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.model.layers[0].mlp.up_proj.weight.shape == (shape["intermediate_size"], shape["hidden_size"])
    assert torch.get_default_dtype() == torch.float32  # restored


def test_gpu_presets_and_a_missing_gpu(capsys):
    from polar_lib.bench import GPU, GPU_QUICK, main

    assert (GPU.model, GPU.dtype, GPU.device, GPU.ranks) == ("random:llama-2-7b", "bfloat16", "cuda", (4, 8, 16, 32))
    assert GPU_QUICK.layers == 4 and GPU_QUICK.ranks == GPU.ranks
    with pytest.raises(ValueError, match="random model shape must be one of"):
        BenchConfig(model="random:gpt-5")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["--quick", "--device", "cuda"])
        assert "--device cuda: no CUDA GPU is visible" in capsys.readouterr().err


def test_goal_verdicts_judge_only_the_ranks_a_run_timed():
    steps = pd.concat([synthetic_steps({"polar": 0.0, "stella": 0.0}).assign(r=r) for r in (4, 8)])
    steps.loc[(steps.method == "polar") & (steps.r == 4), "step_s"] *= 0.5  # polar's step: 1.0× at r=4, 2× at r=8
    verdicts = goal_verdicts(summarize_steps(steps)).set_index("goal")
    # synthetic ratios: every method 2× LoRA (optimizer and step) except polar's step at r = 4 (1×)
    assert verdicts.measured.to_dict() == {"polar: optimizer step ≤ 1.5× LoRA's at r = 8": 2.0,
                                           "stella: optimizer step ≤ 2.5× LoRA's at r = 8": 2.0,
                                           "polar: training step ≤ 1.05× LoRA's at every r": 2.0}
    assert verdicts.holds.tolist() == [False, True, False]
    only_r4 = goal_verdicts(summarize_steps(steps[steps.r == 4]))
    assert only_r4.goal.tolist() == ["polar: training step ≤ 1.05× LoRA's at every r"] and only_r4.holds.all()
