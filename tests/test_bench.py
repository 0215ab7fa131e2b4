"""The runtime benchmark: its command line's output and results file (structure, never timings)."""
import json
import subprocess
import sys

import pytest

from polar_lib.bench import QUICK, BenchConfig, load_results, padded_tokens, save_results
from polar_lib.methods import METHODS


def test_quick_cli_prints_ratios_json_and_writes_results(tmp_path):
    output = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "polar_lib.bench", "--quick", "--output", str(output)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ratios = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(ratios) == set(METHODS)
    for method, entry in ratios.items():
        assert set(entry) == {"r", "step_time", "optimizer_time", "peak_memory"}, method
        assert all(isinstance(v, (int, float)) and v > 0 for v in entry.values()), (method, entry)  # structure only
    assert ratios["lora"] == {"r": 8, "step_time": 1.0, "optimizer_time": 1.0, "peak_memory": 1.0}
    assert "threads" in run.stderr

    results = load_results(output)
    assert results["environment"]["threads"] == 2
    summary, micro = results["summary"], results["micro_summary"]
    assert set(summary.method) == set(METHODS)
    assert {"step_s", "step_ratio", "optimizer_s", "peak_bytes", "memory_ratio"} <= set(summary.columns)
    assert len(results["steps"]) == len(METHODS) * QUICK.repeats
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
