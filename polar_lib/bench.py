"""Runtime comparison of every method: training step, optimizer step and peak memory, plus the
PoLAR paper's micro-benchmark (one landing update against one retraction).

``python -m polar_lib.bench`` (or ``run_benchmark(BenchConfig(...))``) measures, in one process and
on one model and one batch, for every method of ``polar_lib.methods.METHODS``:

- ``step_s``: a whole training step — forward, loss, backward, ``optimizer.step()``, ``zero_grad``;
- ``optimizer_s``: ``optimizer.step()`` alone (where the landing field, StelLA's retraction and
  the preconditioners run);
- ``peak_bytes``: the peak memory of a training step, defined the same way on every device as the
  bytes of the model's own tensors (parameters, frozen ones included, buffers and optimizer state;
  each storage once) plus the largest excess of bytes allocated over bytes freed during the step
  (activations, gradients, temporaries). On CUDA the excess is ``max_memory_allocated`` minus
  ``memory_allocated`` at the start of the step; on CPU, where torch exposes no allocator peak, it
  is the running sum of the allocation and free events that ``torch.profiler`` records with
  ``profile_memory=True``, in time order (frees of blocks allocated before the step are not
  recorded, which can only over-count). Allocator caching and fragmentation are not counted.
  The profiled step is an extra, untimed step. ``excess_bytes`` = ``peak_bytes`` minus the frozen
  parameters: what training adds on top of the model (at small batches the frozen weights
  dominate ``peak_bytes`` and every memory ratio is close to 1).

Each is reported as a ratio to LoRA with AdamW at the same rank. Protocol: all models share the
frozen base weights (one copy in memory; every model still counts them in its ``peak_bytes``);
``warmup`` untimed steps per model; then rounds in which every model takes one timed step, the
order rotating from round to round (round-robin), so that drift of the machine (other processes,
thermal state) hits all methods alike — at least ``repeats`` rounds, and more (up to ``max_repeats``)
until every ratio's interquartile range is within ``target_spread`` of its median; ratios that never
get there are named in the results (``noisy``) and the report says the machine was too noisy. Each
hooked optimizer (PoLAR, StelLA, AdaPreLoRA) is timed twice: batched per shape, as it trains, and
its per-layer reference (``"<method> (per-layer)"``). Timings: ``time.perf_counter`` around whole
steps (after ``torch.cuda.synchronize`` on a GPU); the summary gives the median and the
interquartile range; a ratio is the median over rounds of the method's time over LoRA's time in
the same round. The torch thread count is fixed (``threads``) and printed. On a CPU that other
processes share, a multi-threaded step can slow down many-fold (OpenMP threads wait on each other):
compare timings within one run only, and prefer ``threads=1`` on a busy machine. At small batches
the per-step fixed costs (the optimizer step, Python overhead per adapted layer) weigh more than
at training batch sizes, so the ratios are, if anything, pessimistic for the non-LoRA methods.

Micro-benchmark (docs/runtime.md, 'Micro-benchmark (ours)'; after the PoLAR repository's
``notebooks/runtime_comparison.ipynb``): for Gaussian fp32 Z, G (n×r), one landing update
Z − Λ(Z, G) with λ = 1 in the O(n r²) form (``geometry.landing_field``) against one retraction of
Z + G: polar by thin SVD (``geometry.polar_retraction``) and, for reference, QR
(``geometry.qr_retraction``); optionally the original's n×n form of the landing update
(``dense_landing``). Ops are timed round-robin in blocks of calls (each block ≥ ``MICRO_BLOCK_S``),
eagerly (the original used ``torch.compile``).

Scales: ``--quick`` uses the tiny random Llama at batch 2 × 32 and a small micro sweep (under a
minute on 2 cores) and prints the ratios as one JSON line; the default (full) run uses SmolLM2-135M
with every attention and MLP projection as a target at batch 2 × 64 — on 2 CPU cores a step at
the reference batch 8 × 128 takes ≈ 12.5 s, too long to time seven methods repeatedly — plus
the full micro sweep and the factored-vs-dense stable rank, and writes a JSON results file.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd
import torch

from ._checks import check_choice
from ._cli import prog
from .geometry import dense_landing_field, landing_field, polar_retraction, qr_retraction
from .methods import METHODS, make_optimizer, prepare
from .optim.base import HookedOptimizer
from .models import load_model
from .spectra import stable_rank, stable_rank_from_singular_values

__all__ = ["BenchConfig", "QUICK", "GPU", "GPU_QUICK", "RANDOM_SHAPES", "PAPER_MICRO_US", "run_benchmark", "step_benchmark", "summarize_steps",
           "noisy_ratios", "batched_speedups", "PER_LAYER", "GOALS", "goal_verdicts",
           "micro_benchmark", "summarize_micro", "ratios_json", "save_results", "load_results", "main",
           "PADDINGS", "padded_tokens", "padding_cost"]

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
REFERENCE = "lora"
# Models with random weights in a published model's shape, built on the device in the benchmark's dtype:
# "random:<shape>" needs no download (the GPU benchmark's Llama-2-7B: hidden 4096, MLP 11008, 32 heads).
RANDOM_SHAPES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                       num_hidden_layers=32, vocab_size=32000, max_position_embeddings=4096),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                         num_hidden_layers=30, vocab_size=49152, max_position_embeddings=2048,
                         tie_word_embeddings=True),
}
RANDOM = "random:"
PER_LAYER = "(per-layer)"  # suffix of a hooked optimizer's per-layer reference in the tables
MICRO_BLOCK_S = 0.02
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The original study (docs/runtime.md, 'The original study'): median µs of (SVD polar retraction,
# n×n landing), unrecorded GPU.
PAPER_MICRO_US = {
    (768, 4): (507, 168), (768, 32): (1160, 100), (768, 64): (2178, 103), (768, 256): (8318, 110),
    (4096, 4): (542, 181), (4096, 32): (1050, 186), (4096, 64): (1916, 238), (4096, 256): (9889, 540),
    (11008, 4): (607, 1786), (11008, 32): (1313, 1234), (11008, 64): (2238, 1633), (11008, 256): (11654, 3606),
}


@dataclass
class BenchConfig:
    """Everything one benchmark run depends on; the defaults are the full CPU run.

    model: a ``polar_lib.models.load_model`` name or hub id, or ``"random:<shape>"`` (a Llama with random
    weights in a shape of ``RANDOM_SHAPES``, built on the device: no download), with ``layers`` of its
    decoder layers (0: all); methods: names in ``METHODS`` (must
    include ``"lora"``, the reference); ranks: adapter ranks (α = 2r, dropout 0.05);
    target_modules: module names to adapt; batch_size × seq_len: the random token batch;
    warmup, repeats: untimed and timed steps per model — at least ``repeats`` rounds, more (up to
    ``max_repeats``, 0 for 3 × ``repeats``) until every ratio's interquartile range is within ``target_spread`` of its median
    (the summary's ``noisy`` lists what never got there: the machine was too busy to trust it);
    per_layer: also time each hooked optimizer's per-layer reference (``optimizer.batched = False``)
    as ``"<method> (per-layer)"``, beside its batched step; micro_sizes × micro_ranks: the micro sweep
    (empty to skip), micro_repeats its rounds; dense_landing: also time the n×n landing form;
    stable_rank_size, stable_rank_k: the factored-vs-dense stable rank benchmark (size 0 skips
    it); device; dtype of the model (``"float32"``, ``"bfloat16"``, ``"float16"``; the micro
    sweep is always fp32); threads (torch CPU threads); seed.
    """

    model: str = "smollm2-135m"
    layers: int = 0
    methods: tuple[str, ...] = tuple(METHODS)
    ranks: tuple[int, ...] = (8,)
    target_modules: tuple[str, ...] = LLAMA_TARGETS
    batch_size: int = 2
    seq_len: int = 64
    warmup: int = 2
    repeats: int = 7
    max_repeats: int = 0  # 0: 3 × repeats
    target_spread: float = 0.1
    per_layer: bool = True
    micro_sizes: tuple[int, ...] = (768, 4096, 11008)
    micro_ranks: tuple[int, ...] = (4, 32, 64, 256)
    micro_repeats: int = 7
    dense_landing: bool = False
    stable_rank_size: int = 4096
    stable_rank_k: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 2
    seed: int = 0

    @classmethod
    def from_namespace(cls, namespace: dict) -> "BenchConfig":
        """The config of the names in ``namespace`` that are its fields (a notebook's ``globals()``)."""
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def __post_init__(self):
        for name in ("methods", "ranks", "target_modules", "micro_sizes", "micro_ranks"):
            setattr(self, name, tuple(getattr(self, name)))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or REFERENCE not in self.methods:
            raise ValueError(f"methods must be names from {tuple(METHODS)} and include {REFERENCE!r} (the "
                             f"reference), got {self.methods!r}")
        check_choice("dtype", self.dtype, DTYPES)
        if self.model.startswith(RANDOM):
            check_choice("random model shape", self.model.removeprefix(RANDOM), RANDOM_SHAPES)
        if self.layers < 0:
            raise ValueError(f"layers must be >= 0 (0: all of the model's), got {self.layers!r}")
        for name in ("batch_size", "seq_len", "repeats", "micro_repeats", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup!r}")
        self.max_repeats = self.max_repeats or 3 * self.repeats
        if self.max_repeats < self.repeats:
            raise ValueError(f"max_repeats must be >= repeats={self.repeats}, got {self.max_repeats!r}")
        if not self.target_spread > 0:
            raise ValueError(f"target_spread must be > 0, got {self.target_spread!r}")
        if not self.ranks or min(self.ranks) < 1:
            raise ValueError(f"ranks must be a non-empty list of positive integers, got {self.ranks!r}")


# `--device cuda`: Llama-2-7B's shape in bf16 (random weights, no download) at the paper's ranks, batch
# 4 × 512; `--quick --device cuda` (under 5 minutes on one GPU): 4 of its 32 decoder layers, a short sweep.
GPU = BenchConfig(model=f"{RANDOM}llama-2-7b", ranks=(4, 8, 16, 32), batch_size=4, seq_len=512, warmup=3,
                  repeats=10, micro_sizes=(768, 4096, 11008), micro_ranks=(4, 32, 64, 256), micro_repeats=10,
                  dense_landing=True, stable_rank_size=4096, stable_rank_k=32, device="cuda", dtype="bfloat16",
                  threads=1)
GPU_QUICK = BenchConfig(**{**asdict(GPU), "layers": 4, "repeats": 5, "max_repeats": 10, "micro_sizes": (4096, 11008),
                           "micro_ranks": (4, 32), "micro_repeats": 5})
QUICK = BenchConfig(model="tiny-llama", batch_size=2, seq_len=32, warmup=1, repeats=5, max_repeats=5, micro_sizes=(768,),
                    micro_ranks=(4, 32), micro_repeats=5, stable_rank_size=768, stable_rank_k=8)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# Training steps
# ---------------------------------------------------------------------------------------------

def _train_step(model, optimizer, batch, device) -> tuple[float, float]:
    """One training step; returns (whole step, optimizer step) in seconds."""
    _synchronize(device)
    start = time.perf_counter()
    model(**batch).loss.backward()
    _synchronize(device)
    before_optimizer = time.perf_counter()
    optimizer.step()
    _synchronize(device)
    after_optimizer = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    _synchronize(device)
    return time.perf_counter() - start, after_optimizer - before_optimizer


def _storage_bytes(tensors) -> int:
    """Bytes of the storages behind ``tensors``, each storage once."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def _own_bytes(model, optimizer) -> int:
    """Bytes of the parameters, buffers and optimizer state of one model."""
    state = [t for values in optimizer.state.values() for t in values.values() if isinstance(t, torch.Tensor)]
    return _storage_bytes([*model.parameters(), *model.buffers(), *state])


@contextlib.contextmanager
def _native_stderr_muted():
    """File descriptor 2 sent to /dev/null: the profiler's C++ side logs "profiler_start/stop" there on
    every use, which no logging setting silences; the benchmark's stderr keeps only its own lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_step_bytes(model, optimizer, batch, device) -> int:
    """Peak memory of one (untimed) training step, as defined in the module docstring."""
    own = _own_bytes(model, optimizer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        _train_step(model, optimizer, batch, device)
        return own + torch.cuda.max_memory_allocated(device) - start
    with _native_stderr_muted(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                         profile_memory=True) as prof:
        _train_step(model, optimizer, batch, device)
    # Allocation (+bytes) and free (-bytes) events of the CPU allocator, in time order.
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return own + peak


def _bench_model(config: BenchConfig, device: torch.device):
    """The model every method adapts, in training mode on ``device``: ``load_model``'s, or for
    ``"random:<shape>"`` a Llama of that shape with random weights created on the device in the dtype."""
    if not config.model.startswith(RANDOM):
        base, _ = load_model(config.model, dtype=DTYPES[config.dtype], seed=config.seed)
        if config.layers:
            base.model.layers = base.model.layers[:config.layers]
            base.config.num_hidden_layers = config.layers
        return base.to(device).train()
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(RANDOM_SHAPES[config.model.removeprefix(RANDOM)])
    shape["num_hidden_layers"] = config.layers or shape["num_hidden_layers"]
    torch.manual_seed(config.seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[config.dtype])
    try:
        with device:
            model = LlamaForCausalLM(LlamaConfig(**shape))
    finally:
        torch.set_default_dtype(default)
    return model.train()


def step_benchmark(config: BenchConfig, log=print) -> pd.DataFrame:
    """Time training steps of every method × rank of ``config`` round-robin (see the module docstring).

    Returns one row per timed step: ``method``, ``r``, ``round``, ``step_s``, ``optimizer_s``,
    plus that model's ``peak_bytes``, ``excess_bytes`` (peak minus the frozen parameters: what
    training adds on top of the model) and ``trainable_params``.
    """
    device = torch.device(config.device)
    base = _bench_model(config, device)
    generator = torch.Generator().manual_seed(config.seed)
    tokens = torch.randint(0, base.config.vocab_size, (config.batch_size, config.seq_len), generator=generator)
    batch = {"input_ids": tokens.to(device), "labels": tokens.to(device)}
    shared = {id(p): p for p in base.parameters()}  # deepcopy memo: frozen base weights are shared

    runs = []
    for r in config.ranks:
        for method in config.methods:
            torch.manual_seed(config.seed)
            model = prepare(copy.deepcopy(base, dict(shared)), method, r=r,
                            target_modules=list(config.target_modules), lora_dropout=0.05)
            for batched in (True, False):  # a hooked optimizer also as its per-layer reference
                if not batched:
                    if not (config.per_layer and isinstance(optimizer, HookedOptimizer)):
                        break
                    torch.manual_seed(config.seed)  # its own copy, from the same start
                    model = prepare(copy.deepcopy(base, dict(shared)), method, r=r,
                                    target_modules=list(config.target_modules), lora_dropout=0.05)
                optimizer = make_optimizer(model, method)
                if not batched:
                    optimizer.batched = False
                name = method if batched else f"{method} {PER_LAYER}"
                for _ in range(config.warmup):
                    _train_step(model, optimizer, batch, device)
                peak = _peak_step_bytes(model, optimizer, batch, device)
                frozen = _storage_bytes([p for p in model.parameters() if not p.requires_grad])
                info = {"method": name, "r": r, "peak_bytes": peak, "excess_bytes": peak - frozen,
                        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
                runs.append((info, model, optimizer))
                log(f"  prepared {name} r={r}: {info['trainable_params']:,} trainable parameters, "
                    f"peak {info['peak_bytes'] / 2**20:.0f} MiB")

    rows, round_ = [], 0
    while round_ < config.max_repeats:
        shift = round_ % len(runs)
        for info, model, optimizer in runs[shift:] + runs[:shift]:
            step_s, optimizer_s = _train_step(model, optimizer, batch, device)
            rows.append({**info, "round": round_, "step_s": step_s, "optimizer_s": optimizer_s})
        round_ += 1
        wide = noisy_ratios(summarize_steps(pd.DataFrame(rows)), config.target_spread)
        log(f"  round {round_} done" + (f"; {len(wide)} ratios still wider than ±{config.target_spread:.0%}" if wide else ""))
        if round_ >= config.repeats and not wide:
            break
    columns = ["method", "r", "round", "step_s", "optimizer_s", "peak_bytes", "excess_bytes", "trainable_params"]
    return pd.DataFrame(rows)[columns]


def noisy_ratios(summary: pd.DataFrame, target_spread: float) -> list[str]:
    """The ratios of ``summary`` whose interquartile range exceeds ``target_spread`` × their median,
    as ``"<method> r=<r> <step|optimizer>"`` (LoRA, the reference, is 1 by definition)."""
    wide = []
    for row in summary[summary.method != REFERENCE].itertuples():
        for name in ("step", "optimizer"):
            spread = getattr(row, f"{name}_ratio_q75") - getattr(row, f"{name}_ratio_q25")
            if spread > target_spread * getattr(row, f"{name}_ratio"):
                wide.append(f"{row.method} r={row.r} {name}")
    return wide


# The project's performance goals (ratios to LoRA + AdamW at equal rank, SmolLM2, 2 threads): (method,
# which ratio, the rank it is set at (None: every rank, the worst counts), the most it may be).
GOALS = (("polar", "optimizer", 8, 1.5), ("stella", "optimizer", 8, 2.5), ("lora+adaprelora", "optimizer", 8, 3.0),
         ("polar", "step", None, 1.05))


def goal_verdicts(summary: pd.DataFrame) -> pd.DataFrame:
    """Each of ``GOALS`` that ``summary`` measured: ``goal`` (in words), ``measured`` (the ratio; the
    worst over ranks for an every-rank goal), ``holds``. Goals at a rank the run did not time are left out."""
    rows = []
    for method, ratio, r, bound in GOALS:
        timed = summary[(summary.method == method) & ((summary.r == r) if r is not None else True)]
        if len(timed):
            where = f"at r = {r}" if r is not None else "at every r"
            measured = float(timed[f"{ratio}_ratio"].max())
            what = {"optimizer": "optimizer step", "step": "training step"}[ratio]
            rows.append({"goal": f"{method}: {what} ≤ {bound}× LoRA's {where}", "measured": measured,
                         "holds": measured <= bound})
    return pd.DataFrame(rows, columns=["goal", "measured", "holds"])


def batched_speedups(summary: pd.DataFrame) -> pd.DataFrame:
    """Per hooked method and rank: its optimizer step per layer against batched (``per_layer_s``,
    ``batched_s``, ``speedup`` = their ratio, > 1: batching helps), from a summary with per-layer rows."""
    rows = []
    for row in summary[summary.method.str.endswith(PER_LAYER)].itertuples():
        method = row.method.removesuffix(f" {PER_LAYER}")
        batched = summary[(summary.method == method) & (summary.r == row.r)].iloc[0]
        rows.append({"method": method, "r": row.r, "per_layer_s": row.optimizer_s, "batched_s": batched.optimizer_s,
                     "speedup": row.optimizer_s / batched.optimizer_s})
    return pd.DataFrame(rows, columns=["method", "r", "per_layer_s", "batched_s", "speedup"])


def _quartiles(values) -> tuple[float, float, float]:
    q25, q50, q75 = pd.Series(values).quantile([0.25, 0.5, 0.75])
    return float(q25), float(q50), float(q75)


def summarize_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """Per method and rank: median and quartiles of the times, peak memory, and ratios to LoRA.

    ``step_ratio`` / ``optimizer_ratio``: median over rounds of (method time / LoRA time in the same
    round), with ``*_ratio_q25`` / ``*_ratio_q75``; ``memory_ratio``: peak_bytes / LoRA's;
    ``excess_ratio``: excess_bytes / LoRA's.
    """
    reference = steps[steps.method == REFERENCE].set_index(["r", "round"])
    rows = []
    for (method, r), group in steps.groupby(["method", "r"], sort=False):
        row = {"method": method, "r": r}
        for column, name in (("step_s", "step"), ("optimizer_s", "optimizer")):
            row[f"{name}_s_q25"], row[f"{name}_s"], row[f"{name}_s_q75"] = _quartiles(group[column])
            paired = group[column].to_numpy() / reference.loc[[(r, k) for k in group["round"]], column].to_numpy()
            row[f"{name}_ratio_q25"], row[f"{name}_ratio"], row[f"{name}_ratio_q75"] = _quartiles(paired)
        for column, ratio in (("peak_bytes", "memory_ratio"), ("excess_bytes", "excess_ratio")):
            row[column] = int(group[column].iloc[0])
            row[ratio] = row[column] / reference.loc[r][column].iloc[0]
        row["trainable_params"] = int(group.trainable_params.iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def ratios_json(summary: pd.DataFrame) -> dict:
    """method → {r, step_time, optimizer_time, peak_memory} (ratios to LoRA) at the first rank."""
    first = summary[summary.r == summary.r.iloc[0]]
    return {row.method: {"r": int(row.r), "step_time": round(row.step_ratio, 4),
                         "optimizer_time": round(row.optimizer_ratio, 4), "peak_memory": round(row.memory_ratio, 4)}
            for row in first.itertuples()}


# ---------------------------------------------------------------------------------------------
# Micro-benchmark: one landing update against one retraction
# ---------------------------------------------------------------------------------------------

def _block_seconds(fn, number: int, device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    _synchronize(device)
    return (time.perf_counter() - start) / number


def micro_benchmark(config: BenchConfig, log=print) -> pd.DataFrame:
    """Time one landing update and one SVD / QR retraction for every n × r of the micro sweep.

    Z and G are Gaussian and fp32, as in the original, whatever ``config.dtype``. Returns one row
    per (n, r, op, round) with ``seconds`` per call (see the module docstring).
    """
    device = torch.device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    rows = []
    for n in config.micro_sizes:
        for r in config.micro_ranks:
            Z = torch.randn(n, r, generator=generator).to(device)
            G = torch.randn(n, r, generator=generator).to(device)
            ops = {"landing": lambda: Z - landing_field(Z, G, 1.0),
                   "svd_retraction": lambda: polar_retraction(Z + G),
                   "qr_retraction": lambda: qr_retraction(Z + G)}
            if config.dense_landing:
                ops["landing_dense"] = lambda: Z - dense_landing_field(Z, G, 1.0)
            if device.type == "cuda":  # StelLA's cuSOLVER path: gesvda, with the default driver where it fails
                ops["svd_gesvda_retraction"] = lambda: polar_retraction(Z + G, svd_driver="gesvda")
            numbers = {}
            for op, fn in ops.items():  # warm-up, then calls per block so that a block lasts ≥ MICRO_BLOCK_S
                fn()
                numbers[op] = max(1, round(MICRO_BLOCK_S / max(_block_seconds(fn, 1, device), 1e-7)))
            names = list(ops)
            for round_ in range(config.micro_repeats):
                shift = round_ % len(names)
                for op in names[shift:] + names[:shift]:
                    rows.append({"n": n, "r": r, "op": op, "round": round_,
                                 "seconds": _block_seconds(ops[op], numbers[op], device)})
            log(f"  micro n={n} r={r} done")
    return pd.DataFrame(rows, columns=["n", "r", "op", "round", "seconds"])


def summarize_micro(micro: pd.DataFrame) -> pd.DataFrame:
    """Per n × r: median µs of each op, speed-ups of the landing update (paired by round), and the paper's.

    ``speedup_svd`` = SVD retraction time / landing time (> 1: landing faster), likewise
    ``speedup_qr`` and ``speedup_dense`` (n×n landing / ours); ``paper_speedup`` is the
    original's SVD / n×n-landing ratio on its GPU.
    """
    rows = []
    for (n, r), group in micro.groupby(["n", "r"], sort=False):
        wide = group.pivot(index="round", columns="op", values="seconds")
        row = {"n": n, "r": r}
        for op in wide.columns:
            row[f"{op}_us"] = float(wide[op].median() * 1e6)
        for op, name in (("svd_retraction", "svd"), ("qr_retraction", "qr"), ("landing_dense", "dense"),
                         ("svd_gesvda_retraction", "gesvda")):
            if op in wide.columns:
                row[f"speedup_{name}_q25"], row[f"speedup_{name}"], row[f"speedup_{name}_q75"] = \
                    _quartiles(wide[op] / wide["landing"])
        paper = PAPER_MICRO_US.get((n, r))
        row["paper_svd_us"], row["paper_landing_us"] = paper if paper else (None, None)
        row["paper_speedup"] = paper[0] / paper[1] if paper else None
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Stable rank: factored against dense
# ---------------------------------------------------------------------------------------------

def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark_stable_rank(m: int = 4096, n: int = 4096, k: int = 32, *, repeats: int = 3, factored_repeats: int = 25,
                          dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                          seed: int = 0, num_threads: int | None = None) -> dict:
    """Time the factored stable rank of B·A against the dense one (``svdvals`` of the formed m×n ΔW).

    Gaussian B (m×k), A (k×n); both routes compute in ``dtype`` on ``device``. The dense matrix is
    formed before timing (so the ratio is conservative). Each route: one untimed warm-up for the
    factored route, then the median of ``repeats`` (dense) / ``factored_repeats`` (factored)
    ``time.perf_counter`` timings. Returns a dict with the sizes, ``factored_s``, ``dense_s``,
    ``ratio`` = dense_s / factored_s, both stable ranks and their absolute difference.
    num_threads: CPU threads for the duration (then restored); 1 gives steadier timings on a busy
    machine, where multi-threaded LAPACK slows down badly.
    """
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _benchmark(m, n, k, repeats, factored_repeats, dtype, torch.device(device), seed)
    finally:
        torch.set_num_threads(previous)


def _benchmark(m, n, k, repeats, factored_repeats, dtype, device, seed) -> dict:
    generator = torch.Generator().manual_seed(seed)
    B = torch.randn(m, k, generator=generator, dtype=dtype).to(device)
    A = torch.randn(k, n, generator=generator, dtype=dtype).to(device)
    W = B @ A
    results = {}

    def factored():
        results["factored"] = stable_rank(B, A, dtype=dtype)

    def dense():
        results["dense"] = stable_rank_from_singular_values(torch.linalg.svdvals(W))

    factored()
    factored_s = _median_seconds(factored, factored_repeats, device)
    dense_s = _median_seconds(dense, repeats, device)
    return {"m": m, "n": n, "k": k, "dtype": str(dtype).removeprefix("torch."), "device": str(device),
            "num_threads": torch.get_num_threads() if device.type == "cpu" else None,
            "repeats": repeats, "factored_repeats": factored_repeats, "factored_s": factored_s, "dense_s": dense_s,
            "ratio": dense_s / factored_s, "stable_rank_factored": results["factored"],
            "stable_rank_dense": results["dense"], "abs_difference": abs(results["factored"] - results["dense"])}


# ---------------------------------------------------------------------------------------------
# A whole run, its results file and the command line
# ---------------------------------------------------------------------------------------------

def environment(config: BenchConfig) -> dict:
    """What the timings depend on: versions, threads, the device's name."""
    device = torch.device(config.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "device": config.device, "device_name": name}


def run_benchmark(config: BenchConfig | None = None, log=print) -> dict:
    """Run the step benchmark, the micro-benchmark and the stable-rank benchmark of ``config``.

    Returns a dict: ``config``, ``environment``, ``steps`` (raw), ``summary``, ``micro`` (raw),
    ``micro_summary`` (DataFrames), ``stable_rank`` (``benchmark_stable_rank``'s dict,
    or None). ``config`` defaults to ``BenchConfig()``, the full run. Sets the torch thread count to
    ``config.threads`` for the rest of the process.
    """
    config = BenchConfig() if config is None else config
    torch.set_num_threads(config.threads)
    env = environment(config)
    log(f"torch {env['torch']}, {env['threads']} threads, device {env['device']} ({env['device_name']})")
    log(f"step benchmark: {config.model}, ranks {config.ranks}, batch {config.batch_size} × {config.seq_len}")
    steps = step_benchmark(config, log)
    micro = micro_benchmark(config, log) if config.micro_sizes and config.micro_ranks else None
    stable = None
    if config.stable_rank_size:
        log(f"stable rank: factored vs dense at {config.stable_rank_size}² rank {config.stable_rank_k}")
        stable = benchmark_stable_rank(config.stable_rank_size, config.stable_rank_size, config.stable_rank_k,
                                       repeats=1, device=config.device, seed=config.seed)
    summary = summarize_steps(steps)
    return {"config": asdict(config), "environment": env, "steps": steps, "summary": summary,
            "noisy": noisy_ratios(summary, config.target_spread),
            "micro": micro, "micro_summary": None if micro is None else summarize_micro(micro),
            "stable_rank": stable}


def save_results(results: dict, path, overwrite: bool = False) -> Path:
    """Write ``results`` (from ``run_benchmark``) as JSON, DataFrames as lists of records; an
    existing file is replaced only with ``overwrite=True``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: choose another output path or pass overwrite=True (--overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v for k, v in results.items()}
    path.write_text(json.dumps(plain, indent=1))
    return path


def load_results(path) -> dict:
    """Read a file written by ``save_results``; the tables come back as DataFrames."""
    plain = json.loads(Path(path).read_text())
    tables = ("steps", "summary", "micro", "micro_summary")
    return {k: pd.DataFrame(v) if k in tables and v is not None else v for k, v in plain.items()}


def _report(results: dict) -> str:
    columns = ["method", "r", "step_s", "step_ratio", "optimizer_s", "optimizer_ratio", "peak_bytes", "memory_ratio",
               "excess_ratio"]
    text = ["", "Training step (median s; ratios to LoRA + AdamW at equal rank):",
            results["summary"][columns].to_string(index=False, float_format=lambda x: f"{x:.4g}")]
    if results.get("noisy"):
        text += [f"The machine was too noisy to trust these ratios: interquartile range above "
                 f"±{results['config']['target_spread']:.0%} of the median after "
                 f"{results['steps']['round'].max() + 1} rounds for " + ", ".join(results["noisy"])]
    goals = goal_verdicts(results["summary"])
    if len(goals):
        text += ["", "Goals:"] + [f"  [{'holds' if row.holds else 'fails'}] {row.goal}: {row.measured:.2f}×"
                                  for row in goals.itertuples()]
    speedups = batched_speedups(results["summary"])
    if len(speedups):
        text += ["", "Optimizer step, per layer against batched per shape (median s; speed-up > 1: batching helps):",
                 speedups.to_string(index=False, float_format=lambda x: f"{x:.4g}")]
    if results["micro_summary"] is not None:
        micro = results["micro_summary"]
        keep = [c for c in micro.columns if (c.endswith("_us") and not c.startswith("paper"))
                or c in ("n", "r", "speedup_svd", "speedup_qr", "speedup_dense", "paper_speedup")]
        text += ["", "One landing update vs one retraction (median µs; speed-up = retraction / landing):",
                 micro[keep].to_string(index=False, float_format=lambda x: f"{x:.3g}")]
    if results["stable_rank"]:
        sr = results["stable_rank"]
        text += ["", f"Stable rank at {sr['m']}×{sr['n']}, rank {sr['k']} ({sr['dtype']}): factored "
                     f"{sr['factored_s'] * 1e3:.3g} ms, dense {sr['dense_s'] * 1e3:.4g} ms "
                     f"({sr['ratio']:.0f}× faster)"]
    return "\n".join(text)


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def main(argv=None) -> None:
    """Command line: ``polar-bench [--quick] [--model M] [--ranks 4,8] ...``."""
    parser = argparse.ArgumentParser(prog=prog("bench"), description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random model, small micro sweep (< 1 min on "
                        "2 cores; with --device cuda: 4 Llama-2-7B-shaped layers in bf16, < 5 min on one GPU); "
                        "prints the ratios as a JSON object on the last line, writes no file")
    parser.add_argument("--output", default=None, help="results file (default: runs/bench/results-<date-time>.json; "
                        "none with --quick); an existing file is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    lists = {"methods": str, "ranks": int, "target_modules": str, "micro_sizes": int, "micro_ranks": int}
    for f in fields(BenchConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in lists:
            convert = _int_list if lists[f.name] is int else (lambda text: tuple(v for v in text.split(",") if v))
            parser.add_argument(flag, type=convert, default=None, help="comma-separated list")
        elif f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(flag, type=type(f.default), default=None)
    args = parser.parse_args(argv)
    output = args.output or (None if args.quick else time.strftime("runs/bench/results-%Y%m%d-%H%M%S.json"))
    if output and Path(output).exists() and not args.overwrite:
        parser.error(f"--output {output} exists: choose another path or pass --overwrite")
    if args.device is not None and args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is visible (torch.cuda.is_available() is False)")
    on_gpu = args.device is not None and args.device.startswith("cuda")
    preset = (GPU_QUICK if args.quick else GPU) if on_gpu else (QUICK if args.quick else BenchConfig())
    overrides = {f.name: getattr(args, f.name) for f in fields(BenchConfig) if getattr(args, f.name) is not None}
    config = BenchConfig(**{**asdict(preset), **overrides})

    warnings.filterwarnings("ignore", category=FutureWarning)  # dependencies' deprecation notices: not results
    results = run_benchmark(config, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(_report(results), flush=True)
    if output:
        print(f"results written to {save_results(results, output, overwrite=args.overwrite)}", flush=True)
    print(json.dumps(ratios_json(results["summary"])), flush=True)


if __name__ == "__main__":
    main()


PADDINGS = ("max_length", "random", "group_by_length")


def padded_tokens(lengths: list[int], batch_size: int, padding: str, *, max_length: int | None = None,
                  seed: int = 0) -> int:
    """Token positions a model computes over one epoch of sequences of ``lengths`` in batches of
    ``batch_size``: Σ_b |b| · L_b, where L_b is ``max_length`` for ``padding="max_length"`` (every batch
    padded to the cutoff) and otherwise the longest sequence of batch b, the batches taken in a random
    order (``"random"``) or in the order of transformers' ``LengthGroupedSampler`` (``"group_by_length"``,
    what ``train`` uses). The forward and backward cost of a step grows with this count."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    check_choice("padding", padding, PADDINGS)
    generator = torch.Generator().manual_seed(seed)
    if padding == "max_length":
        if max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        return len(lengths) * max_length
    order = (list(LengthGroupedSampler(batch_size, lengths=list(lengths), generator=generator))
             if padding == "group_by_length" else torch.randperm(len(lengths), generator=generator).tolist())
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def padding_cost(config, seed: int = 0) -> pd.DataFrame:
    """Per padding of ``PADDINGS``: the token positions of one epoch over ``config``'s training split
    (tokenised as ``train`` does) and their ratio to the tokens themselves (no padding at all) and to
    ``group_by_length``. ``config``: a ``train.RunConfig``."""
    from . import data
    from .train import tokenize_examples

    _, tokenizer = load_model(config.model, task=config.model_task)
    examples = data.load_task(config.task, "train", limit=config.train_limit)
    rows = tokenize_examples(examples, tokenizer, config.model_task, config.max_length, config.loss_on)
    lengths = [len(row["input_ids"]) for row in rows]
    tokens = {padding: padded_tokens(lengths, config.batch_size, padding, max_length=config.max_length, seed=seed)
              for padding in PADDINGS}
    return pd.DataFrame({"padding": list(tokens), "tokens": list(tokens.values()),
                         "vs no padding": [t / sum(lengths) for t in tokens.values()],
                         "vs group_by_length": [t / tokens["group_by_length"] for t in tokens.values()]})
