"""The conformance matrix: every method of ``METHODS`` × the options that apply to it, and every PEFT code path
checked on every case, in PEFT's own test style (tests/testing_common.py and test_custom_models.py: one table of
cases, one test function per check, each parametrized over the whole table). LoRA and DoRA are PEFT's own layers:
they are the control rows, so a check that fails on them is PEFT's behaviour, not ours.

Where a method cannot take a code path (TopLoRA: merge, conversion to LoRA; DoRA: mixed batches; lora_bias on a
bias-less base: merge), the check asserts the documented one-line error instead of skipping. Nothing here skips.

After the matrix: the checks that are tables of their own (add_weighted_adapter's combination types, fan_in_fan_out,
mixed=True) and, last and slowest, torch.compile.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import get_args, get_type_hints

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from peft import PeftMixedModel, PeftModel, get_peft_model, get_peft_model_state_dict, save_as_lora
from peft.tuners.lora import LoraLayer, LoraModel
from peft.utils.merge_utils import dare_linear, dare_ties, magnitude_prune, task_arithmetic, ties
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from polar_lib.adapters.core import CoreLinear
from polar_lib.methods import METHODS, make_config, make_optimizer
from polar_lib.models import load_model

from .conftest import run_fresh_process
from .test_registry import OPTIMIZER_CLASS

ATTN = ("q_proj", "v_proj")  # attention only (PEFT's default for Llama): 64→64 and 64→32
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # attention + MLP, up to 128→64
MODULES_TO_SAVE = ("gate_proj",)  # an nn.Linear outside ATTN: PEFT trains a copy, saves it, and mixes it in batches
EPS = {dtype: torch.finfo(dtype).eps for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64)}
TOKENS = torch.randint(0, 1000, (3, 7), generator=torch.Generator().manual_seed(0))  # 3 rows: a mixed batch of 3


@dataclass(frozen=True)
class Case:
    """One row of the matrix: a method, its targets, r, the dtype of the base model and config overrides."""

    method: str
    targets: tuple
    r: int
    dtype: torch.dtype = torch.float32
    options: tuple = ()  # config overrides as (key, value) pairs, so that a Case is hashable

    @property
    def kwargs(self) -> dict:
        return dict(self.options)

    @property
    def id(self) -> str:
        parts = [self.method, "attn" if self.targets == ATTN else "attn+mlp", f"r{self.r}"]
        parts += [] if self.dtype == torch.float32 else [str(self.dtype).removeprefix("torch.")]
        return "-".join(parts + [f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in self.options])

    @property
    def scaling(self) -> float:
        """s from the case alone (make_config's α = 2r), not from the layer: α/r, or α/√r with rsLoRA."""
        return 2 * self.r / (math.sqrt(self.r) if self.kwargs.get("use_rslora") else self.r)

    def config(self, r: int | None = None):
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options}  # a fresh list per config
        return make_config(self.method, r=r or self.r, target_modules=list(self.targets),
                           lora_dropout=options.pop("lora_dropout", 0.0), **options)


def case(method, targets, r, dtype=torch.float32, **options) -> Case:
    return Case(method, targets, r, dtype, tuple(options.items()))


# The case table. Not the full product (7 methods × 2 targets × 2 r × every init × every core mode × rsLoRA ×
# lora_bias × dropout × modules_to_save ≈ 2,000 rows): a covering set. Every option value that applies to a method
# appears in at least one of its rows; targets (attention / attention+MLP) and r (2 / 8) alternate within each
# method so that each value of each appears at least once per method, paired with different options; rsLoRA,
# lora_bias, dropout and modules_to_save each appear once for each adapter layer type (LoRA, DoRA, PoLAR, StelLA,
# TopLoRA), except lora_bias for DoRA, which PEFT refuses. The two methods that train LoRA with another optimizer
# have LoRA's layers: one row each, for what differs (optimizer, groups, DDP). StelLA's rsLoRA is on its r = 2 row:
# on the r = 8 svd_major row (s = 2√8, ΔW ≈ 20× W0 along W0's own directions) the fp32 round-off of merge and
# save_as_lora grows 10× (measured 1.7e-5), too close to LOGITS_TOL to be a safe margin.
# PEFT's own constraint: lora_bias needs init_lora_weights True or False.
CASES = [
    # LoRA and DoRA (PEFT's layers; the control rows)
    case("lora", ATTN, 2),
    case("lora", ALL, 8, lora_bias=True, lora_dropout=0.1),
    case("lora", ATTN, 8, use_rslora=True, modules_to_save=MODULES_TO_SAVE),
    case("dora", ALL, 2, lora_dropout=0.1),
    case("dora", ATTN, 8, use_rslora=True, modules_to_save=MODULES_TO_SAVE),
    # LoRA's layers, another optimizer
    case("lora+adaprelora", ATTN, 2),
    case("lora+riemannian", ALL, 8, lora_dropout=0.1),
    # PoLAR: every Θ mode (full is the default) and every init (True is the default)
    case("polar", ATTN, 2),
    case("polar", ALL, 8, theta="diagonal", init_lora_weights="symmetric_gaussian", lora_dropout=0.1),
    case("polar", ATTN, 8, theta="fixed_identity", init_lora_weights="gaussian", use_rslora=True,
         modules_to_save=MODULES_TO_SAVE),
    case("polar", ALL, 2, init_lora_weights=False, lora_bias=True),
    # StelLA: diagonal (default) and full S, every init
    case("stella", ATTN, 2, init_lora_weights="rando", use_rslora=True),
    case("stella", ALL, 8, diag_s=False, init_lora_weights="svd_major", lora_dropout=0.1),
    case("stella", ATTN, 8, init_lora_weights="svd_minor", modules_to_save=MODULES_TO_SAVE),
    case("stella", ALL, 2, diag_s=False, lora_bias=True),
    # TopLoRA: every init
    case("toplora", ATTN, 2),
    case("toplora", ALL, 8, init_lora_weights="gaussian", use_rslora=True, lora_dropout=0.1),
    case("toplora", ATTN, 8, init_lora_weights=False, modules_to_save=MODULES_TO_SAVE, lora_bias=True),
]
# Half precision, for the merge check only (its tolerance is the point): bf16 and fp16 for each layer type with a
# merge, and TopLoRA's refusal in half precision too.
HALF_CASES = [
    case("lora", ALL, 8, torch.bfloat16, use_rslora=True),
    case("dora", ATTN, 2, torch.float16),
    case("polar", ALL, 8, torch.bfloat16),
    case("polar", ATTN, 2, torch.float16, theta="diagonal"),
    case("stella", ALL, 8, torch.bfloat16, diag_s=False),
    case("stella", ATTN, 2, torch.float16),
    case("toplora", ATTN, 2, torch.bfloat16),
]
CORE_METHODS = ("polar", "stella")
LAYER_CLASS = {"polar": "PolarLinear", "stella": "StellaLinear", "toplora": "TopLoraLinear"}  # else PEFT's "Linear"
PEFT_TYPE = {"polar": "POLAR", "stella": "STELLA", "toplora": "TOPLORA"}  # else "LORA"
FACTOR_GROUP_METHODS = ("polar", "stella", "lora+adaprelora")  # optim.base.split_param_groups: factors | the rest


def test_the_table_covers_every_method_and_option():
    assert {c.method for c in CASES} == set(METHODS)
    for method in METHODS:
        rows = [c for c in CASES if c.method == method]
        if method in ("lora+adaprelora", "lora+riemannian"):
            continue  # one row each, by design
        assert {c.targets for c in rows} == {ATTN, ALL} and {c.r for c in rows} == {2, 8}, method
        for option in ("use_rslora", "lora_dropout", "modules_to_save") + (("lora_bias",) if method != "dora" else ()):
            assert any(option in c.kwargs for c in rows), (method, option)
    inits = {"polar": {True, False, "symmetric_gaussian", "gaussian"}, "stella": {True, "rando", "svd_major", "svd_minor"},
             "toplora": {True, False, "gaussian"}}
    for method, wanted in inits.items():
        assert {c.kwargs.get("init_lora_weights", True) for c in CASES if c.method == method} == wanted
    assert {c.kwargs.get("theta", "full") for c in CASES if c.method == "polar"} == {"full", "diagonal", "fixed_identity"}
    assert {c.kwargs.get("diag_s", True) for c in CASES if c.method == "stella"} == {True, False}
    assert {c.dtype for c in HALF_CASES} == {torch.bfloat16, torch.float16}


def ids(value):
    return value.id if isinstance(value, Case) else None


# --------------------------------------------------------------------------------------------------------------
# Building a case
# --------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _base(dtype):
    return load_model("tiny-llama", seed=0, dtype=dtype)[0]


def base_model(dtype=torch.float32):
    """A fresh copy of the tiny random Llama (seed 0): the same weights as load_model("tiny-llama", seed=0)."""
    return copy.deepcopy(_base(dtype))


@lru_cache(maxsize=None)
def _base_logits(dtype):
    with torch.no_grad():
        return _base(dtype).eval()(TOKENS).logits


def randomise(model, adapter="default", seed=0):
    """Make every tensor of ``adapter`` (factors, cores, gates, biases, magnitudes, modules_to_save copies) generic:
    at init ΔW = 0 for most methods, which would hide a wrong formula, merge or reload."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f".{adapter}." in name:
                sigma = 0.02 if "modules_to_save" in name else 0.05 if "magnitude" in name else 0.1
                p.add_((sigma * torch.randn(p.shape, generator=g)).to(p.dtype))
    return model


def build(c: Case, seed=0, randomised=True):
    torch.manual_seed(seed)
    model = get_peft_model(base_model(c.dtype), c.config())
    return randomise(model, seed=seed) if randomised else model


def adapted_layers(model):
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def logits(model, **kwargs):
    model.eval()
    with torch.no_grad():
        return model(TOKENS, **kwargs).logits


# The logits' scale is max(1, max |logit|) (≈ 1 for every case). fp32: the tiny Llama (2 blocks + head, ≈ 10 matmuls
# of ≤ 128 terms, activations O(1)) computed in two evaluation orders differs by ≲ 10·√128·EPS32 ≈ 1.4e-5 of the
# scale; 1e-4 is ≥ 7× that (measured ≤ 2e-6). Half precision (merge only): a merged W0 + ΔW rounds once
# to the dtype (≤ EPS/2 relative) where the unmerged path rounds W0·x; ≤ 14 adapted layers, each ≤ EPS/2, add up to
# ≤ 7·EPS even if every rounding has the same sign; 8·EPS (measured ≤ 1.8·EPS). Every adapter here moves the logits
# by ≥ 0.25 of the scale (≥ 1.0 in bf16; checked in the merge test), ≥ 4× the tolerance, so a lost ΔW cannot pass.
LOGITS_TOL = {torch.float32: 1e-4, torch.bfloat16: 8 * EPS[torch.bfloat16], torch.float16: 8 * EPS[torch.float16]}


def assert_close_logits(actual, expected, dtype=torch.float32):
    scale = max(1.0, expected.abs().max().item())
    error = (actual.float() - expected.float()).abs().max().item()
    assert error <= LOGITS_TOL[dtype] * scale, (error, LOGITS_TOL[dtype] * scale)


# --------------------------------------------------------------------------------------------------------------
# Check: forward = the method's formula, computed independently from the layer's factors
# --------------------------------------------------------------------------------------------------------------
def expected_core(c: Case, layer, adapter="default"):
    """C of ΔW = s·BCA from the raw lora_S and the case's mode (not from the layer's own core_matrix)."""
    S = layer.lora_S[adapter].weight
    if c.method == "polar":
        theta = c.kwargs.get("theta", "full")
        return {"full": S, "diagonal": torch.diag(torch.diagonal(S)), "fixed_identity": torch.eye(len(S), dtype=S.dtype)}[theta]
    return torch.diag(S) if c.kwargs.get("diag_s", True) else S


def formula(c: Case, layer, x, mask, adapter="default"):
    """y = W0 x + the method's update of dropout(x) = x ⊙ mask (mask = 1 in eval mode)."""
    W0 = layer.get_base_layer().weight
    A, B = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    bias = layer.lora_B[adapter].bias if c.kwargs.get("lora_bias") else 0.0
    s, xd = c.scaling, x * mask
    assert layer.scaling[adapter] == pytest.approx(s, rel=1e-12)
    if c.method == "toplora":  # s·B((A xd) ⊙ λ(x)), λ(x) = exp(γ ⊙ h / √(mean(h²) + eps)), h = xΘ: the gate reads x
        gate = layer.lora_lambda[adapter]
        h = x @ gate.weight.T
        lam = torch.exp(gate.gain * h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + EPS[x.dtype]))
        return x @ W0.T + s * (((xd @ A.T) * lam) @ B.T + bias)
    if c.method in CORE_METHODS:  # s·(B C A xd + b); the layer's accessor must give the same factors
        C = expected_core(c, layer, adapter)
        Bf, Cf, Af, sf = layer.delta_factors(adapter)
        assert Bf is B and Af is A and torch.equal(Cf, C) and sf == layer.scaling[adapter]
        return x @ W0.T + s * (xd @ A.T @ C.T @ B.T + bias)
    if c.method == "dora":  # m/‖W0 + sBA‖_row ⊙ (W0 + sBA) x (eval); PEFT's form with dropout on the adapter input
        scale = layer.lora_magnitude_vector[adapter].weight / torch.linalg.norm(W0 + s * B @ A, dim=1)
        return x @ W0.T + (scale - 1) * (xd @ W0.T) + scale * s * (xd @ A.T @ B.T)
    return x @ W0.T + s * (xd @ A.T @ B.T + bias)  # LoRA


@pytest.mark.parametrize("c", CASES, ids=ids)
def test_forward_equals_formula(c):
    """Every adapted layer, in fp64 (a copy): eval mode, and in training mode with dropout's mask reproduced."""
    model = build(c)
    layers = adapted_layers(model)
    assert len(layers) == 2 * len(c.targets)
    assert {type(m).__name__ for m in layers} == {LAYER_CLASS.get(c.method, "Linear")}
    g = torch.Generator().manual_seed(1)
    p = c.kwargs.get("lora_dropout", 0.0)
    for layer in layers:
        layer = copy.deepcopy(layer).double()
        x = torch.randn(3, 5, layer.in_features, generator=g, dtype=torch.float64)
        # fp64 sums of ≤ 128 products of |·| ≲ 10: ≲ 128·10·EPS64 ≈ 3e-13; 1e-10 (measured ≤ 3e-14). A wrong
        # formula (a missing s, core, gate, bias or mask) moves the output by ≥ 1e-3.
        layer.eval()
        assert torch.allclose(layer(x), formula(c, layer, x, torch.ones_like(x)), atol=1e-10, rtol=0)
        if p:
            layer.train()
            torch.manual_seed(7)
            y = layer(x)
            torch.manual_seed(7)
            mask = F.dropout(torch.ones_like(x), p=p, training=True)  # the same draw as the layer's nn.Dropout
            assert (mask == 0).any()
            assert torch.allclose(y, formula(c, layer, x, mask), atol=1e-10, rtol=0)


@pytest.mark.parametrize("c", [c for c in CASES if c.kwargs.get("lora_bias")], ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_lora_bias_starts_at_zero(c):
    """lora_bias=True adds a bias to lora_B: zero at init, so the output is that without the bias; except with
    init_lora_weights=False (nn.Linear's defaults for every adapter tensor, ΔW₀ ≠ 0), as in PEFT's LoRA."""
    model = build(c, randomised=False)
    factors = [m.lora_B["default"] for m in adapted_layers(model)]
    assert factors
    if c.kwargs.get("init_lora_weights", True) is False:
        assert all(f.bias.abs().min() > 0 for f in factors)  # nn.Linear's U(±1/√r): zero with probability 0
        return
    assert all(torch.equal(f.bias, torch.zeros_like(f.bias)) for f in factors)
    with_bias = logits(model)
    for f in factors:
        f.bias = None
    assert torch.equal(with_bias, logits(model))  # adding an exact zero changes nothing


# --------------------------------------------------------------------------------------------------------------
# Check: merge, unmerge, safe_merge, merging twice, merge_and_unload, disable_adapter
# --------------------------------------------------------------------------------------------------------------
TOPLORA_MERGE = r"TopLoRA cannot be merged: .* depends on the token"
NO_BASE_BIAS = r"Impossible to merge LoRA with `lora_bias=True` because the base layer has no bias\."  # PEFT's


def base_weights(layers):
    return [layer.get_base_layer().weight.detach().clone() for layer in layers]


def built_for_merge(c):
    """The case's model, its adapted layers, their base weights W0 and the unmerged logits."""
    model = build(c)
    layers = adapted_layers(model)
    return model, layers, base_weights(layers), logits(model)


@pytest.mark.parametrize("c", CASES + HALF_CASES, ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_merge_unmerge_safe_merge(c):
    model, layers, W0, unmerged = built_for_merge(c)
    with model.disable_adapter():
        assert torch.equal(logits(model), _base_logits(c.dtype))  # the base model's own computation
    # the adapter matters: a merge that dropped it (or doubled it) would be seen (measured ≥ 0.25 of the scale)
    scale = max(1.0, unmerged.abs().max().item())
    assert (unmerged.float() - _base_logits(c.dtype).float()).abs().max() > 4 * LOGITS_TOL[c.dtype] * scale

    if c.method == "toplora" or c.kwargs.get("lora_bias"):  # refused, and refusing changes nothing
        error, match = (ValueError, TOPLORA_MERGE) if c.method == "toplora" else (RuntimeError, NO_BASE_BIAS)
        with pytest.raises(error, match=match):
            model.merge_adapter(safe_merge=True)
        with pytest.raises(error, match=match):
            model.merge_and_unload(safe_merge=True)
        if c.method == "toplora":
            with pytest.raises(ValueError, match=TOPLORA_MERGE):
                model.merge_adapter()
            with pytest.raises(ValueError, match="TopLoRA has no delta weight"):
                layers[0].get_delta_weight("default")
        assert not any(layer.merged for layer in layers)
        assert all(torch.equal(layer.get_base_layer().weight, w) for layer, w in zip(layers, W0))
        assert torch.equal(logits(model), unmerged)
        return

    model.merge_adapter(safe_merge=True)
    assert all(layer.merged for layer in layers)
    safe = base_weights(layers)

    # Entrywise, no BLAS. LoRA and the cores: (W0 + d) − d rounds twice, each ≤ EPS/2 of a value ≤ |W0| + |d| (d the
    # merged change), so ≤ EPS·(|W0| + |d|): a rigorous bound, 2·EPS leaves 2× (measured ≤ 0.7·EPS). DoRA also scales
    # by m/‖W0 + sBA‖ (a norm, a division and a product more): 32·EPS (measured ≤ 3.9·EPS). An unmerge that leaves
    # ΔW in, or takes it out twice, is off by |d|, ≥ 0.17·(|W0| + |d|) here (measured), ≥ 5× the largest bound.
    restore_tol = (32 if c.method == "dora" else 2) * EPS[c.dtype]

    def check_restored():
        for layer, w, merged in zip(layers, W0, safe):
            bound = restore_tol * (w.abs().max() + (merged - w).abs().max())
            assert (layer.get_base_layer().weight.float() - w.float()).abs().max() <= bound
    assert_close_logits(logits(model), unmerged, c.dtype)
    model.unmerge_adapter()
    assert not any(layer.merged for layer in layers)
    check_restored()
    assert_close_logits(logits(model), unmerged, c.dtype)

    with torch.no_grad():  # from the very same W0 (the round trip above may have moved it by an ulp) ...
        for layer, w in zip(layers, W0):
            layer.get_base_layer().weight.copy_(w)
    model.merge_adapter()  # ... the unsafe merge is the safe one's arithmetic, in place: bit for bit for the cores
    # (both add ΔW rounded to the weights' dtype) and fp32 LoRA; PEFT's half-precision LoRA adds the fp32 ΔW unrounded
    # in place (one rounding fewer: ≤ EPS·(|W0| + |d|) apart, measured ≤ 0.32·EPS), DoRA in another order (measured
    # ≤ 0.72·EPS): within restore_tol
    bit_for_bit = c.method in CORE_METHODS or (c.method != "dora" and c.dtype == torch.float32)
    for layer, w, merged in zip(layers, W0, safe):
        weight = layer.get_base_layer().weight
        if bit_for_bit:
            assert torch.equal(weight, merged)
        else:
            assert (weight.float() - merged.float()).abs().max() <= restore_tol * (w.abs().max() + (merged - w).abs().max())
    safe = base_weights(layers)
    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do"):
        model.merge_adapter()  # merging twice = merging once
    assert all(torch.equal(layer.get_base_layer().weight, w) for layer, w in zip(layers, safe))
    assert_close_logits(logits(model), unmerged, c.dtype)
    model.unmerge_adapter()
    check_restored()

    merged_model = model.merge_and_unload(safe_merge=True)
    assert not any(isinstance(m, LoraLayer) for m in merged_model.modules())
    with torch.no_grad():
        assert_close_logits(merged_model.eval()(TOKENS).logits, unmerged, c.dtype)


BIAS_ROWS = [c for c in CASES if c.kwargs.get("lora_bias")]


@pytest.mark.parametrize("c", [pytest.param(c, marks=[] if c.method == "toplora" else pytest.mark.xfail(
    strict=True, reason="PEFT bug (peft 0.21 lora.Linear.merge, safe_merge=False): it adds ΔW to the base weight, "
                        "then raises for lora_bias on a bias-less layer, leaving W0 + ΔW with the adapter unmerged "
                        "and active (ΔW counted twice); safe_merge=True is clean")) for c in BIAS_ROWS], ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_refused_unsafe_merge_changes_nothing(c):
    model, layers, W0, unmerged = built_for_merge(c)
    with pytest.raises((ValueError, RuntimeError)):
        model.merge_adapter()
    assert all(torch.equal(layer.get_base_layer().weight, w) for layer, w in zip(layers, W0))
    assert torch.equal(logits(model), unmerged)


# --------------------------------------------------------------------------------------------------------------
# Check: several adapters (add, set, mixed batch, delete); every trainable parameter gets a gradient
# --------------------------------------------------------------------------------------------------------------
def trainable(model):
    return [name for name, p in model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("c", CASES, ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_several_adapters(c):
    model = build(c)
    first = logits(model)
    model.add_adapter("other", c.config(r=8 if c.r == 2 else 2))
    randomise(model, "other", seed=1)
    assert torch.equal(logits(model), first)  # adding an adapter does not activate it
    # DDP with its defaults fails ('Expected to have finished reduction in the prior iteration') on a trainable
    # parameter that gets no gradient (PoLAR's Θ ≡ I); PEFT's set_adapter marks adapter parameters trainable again.
    for adapter in (None, "other", "default"):  # None: as get_peft_model and add_adapter leave it
        if adapter:
            model.set_adapter(adapter)
        model.zero_grad(set_to_none=True)
        model(TOKENS).logits.square().mean().backward()
        names = trainable(model)
        assert names and all(f".{adapter or 'default'}." in name for name in names)
        assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    model.zero_grad(set_to_none=True)

    model.set_adapter("other")
    other = logits(model)
    # the two adapters' logits differ by O(1) of their scale (measured ≥ 0.29); fp32 LOGITS_TOL is 1e-4 of it
    assert (other - first).abs().max() > 100 * LOGITS_TOL[torch.float32] * max(1.0, first.abs().max().item())
    model.set_adapter("default")
    assert torch.equal(logits(model), first)

    names = ["default", "other", "__base__"]
    if c.method == "dora":  # on a copy: PEFT leaves the refused call's hooks behind (test_refused_mixed_batch_...)
        with pytest.raises(ValueError, match="Cannot pass `adapter_names` when DoRA is enabled"):
            logits(copy.deepcopy(model), adapter_names=names)
    else:
        mixed = logits(model, adapter_names=names)
        for row, expected in enumerate((first, other, _base_logits(torch.float32))):
            assert_close_logits(mixed[row], expected[row])  # sub-batches of 1 against the whole batch (measured: equal)

    model.delete_adapter("other")
    assert "other" not in model.peft_config
    assert not [k for k in list(dict(model.named_parameters())) + list(model.state_dict()) if ".other." in k]
    assert not [name for name, _ in model.named_modules() if name.endswith(".other")]
    assert torch.equal(logits(model), first)


@pytest.mark.parametrize("c", [pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=(
    "PEFT bug (peft 0.21 LoraModel._enable_peft_forward_hooks): the adapter_names hooks are removed after the "
    "yield without try/finally, so when the forward raises (DoRA's 'Cannot pass `adapter_names`') they stay, and "
    "every later forward of the model raises the same error"))) for c in CASES if c.method == "dora"], ids=ids)
def test_refused_mixed_batch_leaves_the_model_usable(c):
    model = build(c)
    first = logits(model)
    with pytest.raises(ValueError, match="Cannot pass `adapter_names` when DoRA is enabled"):
        logits(model, adapter_names=["default", "__base__", "default"])
    assert torch.equal(logits(model), first)


# --------------------------------------------------------------------------------------------------------------
# Check: save → stock load in a fresh process; save_embedding_layers=False → from_pretrained; load_adapter
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fresh_process_reloads(tmp_path_factory):
    """Every case saved, then reloaded by stock PeftModel.from_pretrained in ONE new process (after `import
    polar_lib`, nothing else; one process, not one per case, for time): per case, its logits equal bit for bit?"""
    folder = tmp_path_factory.mktemp("saved")
    expected = {"inputs": TOKENS}
    for i, c in enumerate(CASES):
        model = build(c)
        model.save_pretrained(folder / str(i))
        expected[str(i)] = logits(model)
    torch.save(expected, folder / "expected.pt")
    out = run_fresh_process(f"""
        import json, torch, polar_lib
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
        from polar_lib.models import load_model
        expected = torch.load("{folder / 'expected.pt'}")
        for i in range({len(CASES)}):
            try:
                base, _ = load_model("tiny-llama", seed=0)
                model = PeftModel.from_pretrained(base, "{folder}/" + str(i)).eval()
                with torch.no_grad():
                    got = model(expected["inputs"]).logits
                result = dict(equal=torch.equal(got, expected[str(i)]), error=(got - expected[str(i)]).abs().max().item(),
                              layers=sorted({{type(m).__name__ for m in model.modules() if isinstance(m, LoraLayer)}}))
            except Exception as e:
                result = dict(exception=f"{{type(e).__name__}}: {{e}}")
            print(json.dumps(dict(case=str(i), **result)))
    """)
    results = {line["case"]: line for line in map(json.loads, out.splitlines())}
    return folder, results


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c.id for c in CASES])
def test_save_and_load_in_a_fresh_process(i, fresh_process_reloads):
    folder, results = fresh_process_reloads
    c = CASES[i]
    assert results[str(i)].get("equal") is True, results[str(i)]
    assert results[str(i)]["layers"] == [LAYER_CLASS.get(c.method, "Linear")]
    config = json.loads((folder / str(i) / "adapter_config.json").read_text())
    assert config["peft_type"] == PEFT_TYPE.get(c.method, "LORA") and config["r"] == c.r


@pytest.mark.parametrize("c", CASES, ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_save_without_embedding_layers_then_from_pretrained(c, tmp_path):
    model = build(c)
    first = logits(model)
    model.save_pretrained(tmp_path, save_embedding_layers=False)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert not [k for k in saved if "embed_tokens" in k or "lm_head" in k]
    # exactly the adapter's tensors, in the model's shapes (StelLA's diagonal S an r-vector, a full S r×r)
    state = get_peft_model_state_dict(model)
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in state.items()}
    reloaded = PeftModel.from_pretrained(base_model(), tmp_path)
    assert torch.equal(logits(reloaded), first)
    model.load_adapter(tmp_path, adapter_name="copy")  # saved keys carry no adapter name
    model.set_adapter("copy")
    assert torch.equal(logits(model), first)


# --------------------------------------------------------------------------------------------------------------
# Check: PEFT's conversion to plain LoRA (save_as_lora = convert_to_lora + save). PEFT's other conversion path,
# save_pretrained(path_initial_model_for_weight_conversion=...), turns a PiSSA/OLoRA/CorDA/LoRA-GA adapter (an init
# that changes W0) into LoRA; no polar_lib method has such an init, so it does not apply here.
# --------------------------------------------------------------------------------------------------------------
def conversion_param(c):
    if c.method == "dora":
        return pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=(
            "PEFT bug (peft 0.21 convert_to_lora): a DoRA layer reports supports_lora_conversion() = True, but the "
            "conversion factorises get_delta_weight = s·BA and drops the magnitude vector m/‖W0 + sBA‖: the LoRA it "
            "writes gives other logits (off by O(1) of their scale), at any rank")))
    if c.kwargs.get("lora_bias") and c.method not in ("toplora", "polar", "stella"):
        return pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=(
            "PEFT bug (peft 0.21 convert_to_lora): its bias check reads config.bias, not lora_bias, so lora_B.bias "
            "is silently dropped (logits off by O(1)) for LoRA; our CoreLinear layers refuse instead, and "
            "polar_lib.export --to lora keeps the bias")))
    return c


@pytest.mark.parametrize("c", [conversion_param(c) for c in CASES], ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed", "ignore:Converting a PEFT adapter to LoRA")
def test_save_as_lora_is_exact_or_refused(c, tmp_path):
    model = build(c)
    first = logits(model)
    if c.method == "toplora":
        with pytest.raises(ValueError, match=r"TopLoRA cannot be converted to plain LoRA \(save_as_lora\): .* depends on the token"):
            save_as_lora(tmp_path / "lora", model, rank=c.r)
        assert not list((tmp_path / "lora").iterdir())  # PEFT makes the folder first; nothing is written in it
        return
    if c.kwargs.get("lora_bias") and c.method in ("polar", "stella"):  # refused: PEFT would drop lora_B.bias
        with pytest.raises(ValueError, match=r"lora_bias=True cannot be converted by save_as_lora"):
            save_as_lora(tmp_path / "lora", model, rank=c.r)
        return
    save_as_lora(tmp_path / "lora", model, rank=c.r)  # rank r: ΔW = s·BCA has rank ≤ r, so the SVD keeps all of it
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    lora = PeftModel.from_pretrained(base_model(), tmp_path / "lora")
    # the fp32 SVD of a rank-r ΔW reproduces it to ≈ 64·EPS32 relative, far inside LOGITS_TOL (measured ≤ 1.9e-6)
    assert_close_logits(logits(lora), first)


# --------------------------------------------------------------------------------------------------------------
# Check: gradient checkpointing gives the gradients of the plain backward
# --------------------------------------------------------------------------------------------------------------
def gradients(model):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # the same dropout masks in both runs (checkpointing replays the RNG state)
    loss = model(TOKENS, labels=TOKENS).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("c", CASES, ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed", "ignore:`use_cache=True` is incompatible")
def test_gradient_checkpointing_gives_the_same_gradients(c):
    model = build(c)
    loss, plain = gradients(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    checkpointed_loss, checkpointed = gradients(model)
    # the recomputed forward is the same fp32 maths; the backward sums the same ≤ 14·128 terms per entry in possibly
    # another order: ≲ 14·128·EPS32 ≈ 2e-4 of the largest |grad| in the worst case, ≈ √ of that in practice;
    # 1e-4 of it (measured: identical). A checkpoint that lost the adapter's gradient would give 0 or None.
    assert torch.allclose(checkpointed_loss, loss, atol=1e-6 * max(1.0, loss.item()), rtol=0)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(checkpointed[name], grad, atol=1e-4 * grad.abs().max().item(), rtol=0), name


# --------------------------------------------------------------------------------------------------------------
# Check: DDP with its default settings (gloo, world size 1, in this process) takes two steps
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('ddp') / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def two_ddp_steps(model, method):
    model.train()
    optimizer = make_optimizer(model, method)
    ddp = DistributedDataParallel(model)  # default settings: find_unused_parameters=False
    for _ in range(2):  # the second forward is where DDP raises for a parameter that got no gradient
        ddp(input_ids=TOKENS, labels=TOKENS).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("c", CASES, ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_ddp_takes_two_steps(c, process_group):
    model = build(c)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    two_ddp_steps(model, c.method)
    assert [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])] == []


def test_ddp_control_a_trainable_parameter_without_gradient_fails(process_group):
    """The check above can fail: Θ ≡ I made trainable (the bug fixed_identity guards against) gets no gradient."""
    model = build(case("polar", ATTN, 2, theta="fixed_identity"))
    for layer in adapted_layers(model):
        layer.lora_S["default"].weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="Expected to have finished reduction in the prior iteration"):
        two_ddp_steps(model, "polar")


# --------------------------------------------------------------------------------------------------------------
# Check: the registry's optimizer class and parameter groups (tests/test_registry.py checks lr and weight decay
# on one configuration per method; here the groups on every case)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", CASES, ids=ids)
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_optimizer_class_and_parameter_groups(c):
    model = build(c)
    optimizer = make_optimizer(model, c.method)
    assert type(optimizer).__name__ == OPTIMIZER_CLASS[c.method]
    trainable_ids = [id(p) for p in model.parameters() if p.requires_grad]
    groups = [[id(p) for p in group["params"]] for group in optimizer.param_groups]
    assert sorted(sum(groups, [])) == sorted(trainable_ids)  # every trainable parameter exactly once, no other
    if c.method in FACTOR_GROUP_METHODS:  # the manifold / preconditioned factors B, A (no decay) | everything else
        factors = {id(layer.lora_B["default"].weight) for layer in adapted_layers(model)}
        factors |= {id(layer.lora_A["default"].weight) for layer in adapted_layers(model)}
        assert set(groups[0]) == factors and optimizer.param_groups[0]["weight_decay"] == 0.0
        assert set(sum(groups[1:], [])) == set(trainable_ids) - factors  # Θ, S, biases, copies (if any)
    else:
        assert len(groups) == 1


# --------------------------------------------------------------------------------------------------------------
# Tables of their own
# --------------------------------------------------------------------------------------------------------------
def tiny(method, targets=ATTN, **overrides):
    torch.manual_seed(0)
    return get_peft_model(base_model(), make_config(method, r=4, target_modules=list(targets), lora_dropout=0.0,
                                                    **overrides))


@pytest.mark.parametrize("method", CORE_METHODS)
def test_fan_in_fan_out_on_nn_linear_is_reset_with_a_warning(method):
    """As PEFT's own dispatch does for nn.Linear: the flag is reset, so merging gives the unmerged output."""
    with pytest.warns(UserWarning, match="Setting fan_in_fan_out to False"):
        model = tiny(method, fan_in_fan_out=True, init_lora_weights=True)
    assert not model.peft_config["default"].fan_in_fan_out
    randomise(model)
    unmerged = logits(model)
    with torch.no_grad():
        assert_close_logits(model.merge_and_unload()(TOKENS).logits, unmerged)


@pytest.mark.parametrize("method", CORE_METHODS)
def test_half_precision_delta_weight_is_computed_in_fp32(method):
    model = tiny(method)
    layer = next(m for m in model.modules() if isinstance(m, CoreLinear))
    randomise(model)
    B, C, A, s = layer.delta_factors("default")
    layer.to(torch.bfloat16)
    Bh, Ch, Ah, _ = layer.delta_factors("default")
    expected = (Bh.float() @ (Ch.float() @ Ah.float()) * s).to(torch.bfloat16)  # one rounding, at the end
    assert torch.equal(layer.get_delta_weight("default"), expected)


# Every combination_type of PEFT's LoraModel.add_weighted_adapter -> the merge of the dense ΔWᵢ it stands for
# (peft.utils.merge_utils, at density 1), or None where it mixes the factors B and A, which no method with a core
# or a token-dependent ΔW can do exactly: those must be refused.
COMBINATIONS = {
    "cat": task_arithmetic, "svd": task_arithmetic,
    "ties_svd": partial(ties, density=1.0, majority_sign_method="total"),
    "dare_linear_svd": partial(dare_linear, density=1.0),
    "dare_ties_svd": partial(dare_ties, density=1.0, majority_sign_method="total"),
    "magnitude_prune_svd": partial(magnitude_prune, density=1.0),
    "linear": None, "ties": None, "dare_linear": None, "dare_ties": None, "magnitude_prune": None,
}
# Every core parametrisation; rsLoRA makes the combined adapter's s = √r ≠ 1, so Θ ≡ I cannot absorb 1/s
WEIGHTED_ROWS = [("lora", {}), ("polar", {}), ("polar", {"theta": "diagonal"}),
                 ("polar", {"theta": "fixed_identity", "use_rslora": True}), ("stella", {}),
                 ("stella", {"diag_s": False}), ("toplora", {})]
SQUARE = ("q_proj", "o_proj")  # 64×64: svd_rank=64 makes every SVD variant represent its merge exactly
WEIGHTS = [0.6, -1.5]


def overrides_id(value):
    """Test ids: a config-override dict as k=v pairs."""
    return (",".join(f"{k}={v}" for k, v in value.items()) or "defaults") if isinstance(value, dict) else None


def test_combination_table_lists_every_peft_combination_type():
    assert set(COMBINATIONS) == set(get_args(get_type_hints(LoraModel.add_weighted_adapter)["combination_type"]))


@pytest.mark.parametrize("method, overrides, combination_type",
                         [(m, o, c) for m, o in WEIGHTED_ROWS for c in COMBINATIONS
                          if m != "lora" or COMBINATIONS[c] is not None],  # LoRA: PEFT's linear & co are approximate
                         ids=overrides_id)
@pytest.mark.filterwarnings("ignore:The density 1.0 is greater than or equal to 1")
def test_add_weighted_adapter_is_exact_or_refused(method, overrides, combination_type):
    """Two trained-looking adapters (r = 4 on q_proj and o_proj, r = 3 on q_proj only) combined: ΔW = the merge of
    the wᵢΔWᵢ on every layer and the logits of W0 + that ΔW, also for one adapter alone (PEFT then combines as
    'linear'); else a one-line ValueError that leaves no adapter behind."""
    model = tiny(method, targets=SQUARE, **overrides)
    model.add_adapter("other", make_config(method, r=3, target_modules=["q_proj"], lora_dropout=0.0, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn_like(p))
    merge = COMBINATIONS[combination_type]
    kwargs = dict(combination_type=combination_type, svd_rank=64, density=1.0)
    if merge is None or method == "toplora":
        with pytest.raises(ValueError) as error:
            model.add_weighted_adapter(["default", "other"], WEIGHTS, "mix", **kwargs)
        message = str(error.value)
        assert "\n" not in message and "combination_type" in message and repr(combination_type) in message
        assert ("allowed: none" if method == "toplora" else "'cat'") in message
        assert "mix" not in model.peft_config
        return
    model.add_weighted_adapter(["default", "other"], WEIGHTS, "mix", **kwargs)
    model.add_weighted_adapter(["other"], WEIGHTS[:1], "solo", **kwargs)
    layers = [m for m in model.modules() if hasattr(m, "lora_A") and "mix" in m.lora_A]
    assert len(layers) == 2 * len(SQUARE)
    expected = {}
    with torch.no_grad():
        for layer in layers:
            names = [a for a in ("default", "other") if a in layer.lora_A]
            deltas = [layer.get_delta_weight(a) for a in names]
            expected[layer] = merge(deltas, torch.tensor(WEIGHTS[:len(names)]))
            wanted = {"mix": expected[layer]} | ({"solo": WEIGHTS[0] * deltas[1]} if "solo" in layer.lora_A else {})
            # fp32 (ε ≈ 6e-8): an SVD of a 64×64 matrix and sums of ≤ 64 products err by ~ 64ε ≈ 4e-6 relative
            for name, want in wanted.items():
                error = torch.linalg.norm(layer.get_delta_weight(name) - want) / torch.linalg.norm(want)
                assert error < 1e-5, (name, error)
        model.set_adapter("mix")
        mixed = model(TOKENS).logits
        for layer, delta in expected.items():
            layer.base_layer.weight += delta
        with model.disable_adapter():
            reference = model(TOKENS).logits
    # fp32 logits of a 2-layer model with |logit| ~ 1: the two paths reorder sums of 64 terms, error ~ 1e-6
    assert torch.allclose(mixed, reference, atol=1e-4)


@pytest.mark.parametrize("method", ["lora", "polar", "stella", "toplora"])
def test_mixed_model_refuses_our_adapter_types_clearly(method):
    """PEFT's mixed models take a fixed set of PEFT's own types; ours get PEFT's one-line error naming both."""
    config = make_config(method, r=4, target_modules=["q_proj"])
    if method == "lora":
        assert isinstance(get_peft_model(base_model(), config, mixed=True), PeftMixedModel)
        return
    with pytest.raises(ValueError, match=rf"'{config.peft_type}' is not compatible with the `PeftMixedModel`. "
                                         r"Compatible types are: \(<PeftType.LORA: 'LORA'>") as error:
        get_peft_model(base_model(), config, mixed=True)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------------------------
# SLOWEST: torch.compile forward and backward (Dynamo capture + AOTAutograd), one tiny case per method.
# No skip: if compile does not work on this build, this fails.
# --------------------------------------------------------------------------------------------------------------
COMPILE_CASES = [next(c for c in CASES if c.method == method) for method in METHODS]


@pytest.mark.parametrize("c", COMPILE_CASES, ids=ids)
def test_slowest_torch_compile_forward_and_backward(c):
    """One adapted layer captured by torch.compile gives the eager output and gradients. Our layers and PEFT's LoRA
    compile without a graph break (fullgraph); PEFT's DoRA has one (peft.utils.integrations'
    dequantize_module_weight), so it compiles in pieces. Backend ``aot_eager``: Dynamo's capture and AOTAutograd's
    backward graph, which is what our layers control, run with eager kernels — inductor's generated C++ gave
    outputs off by more than 1e-4 under ATEN_CPU_CAPABILITY=avx2 for stock LoRA too (torch's codegen, not ours)."""
    layer = adapted_layers(build(c))[0].eval()
    x = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(2), requires_grad=True)
    params = [x] + [p for p in layer.parameters() if p.requires_grad]

    def run(module):
        y = module(x)
        return [y.detach()] + list(torch.autograd.grad(y.square().sum(), params))

    eager = run(layer)
    torch._dynamo.reset()  # each case compiles from scratch, whatever ran before it
    compiled = run(torch.compile(layer, backend="aot_eager", fullgraph=c.method != "dora"))
    for want, got in zip(eager, compiled):
        # fp32, the same eager kernels on a traced graph (AOTAutograd may reorder a sum of ≤ 64 terms): ≲ 64·EPS32 ≈
        # 8e-6 of the scale; 1e-4 of it
        assert torch.allclose(got, want, atol=1e-4 * max(1.0, want.abs().max().item()), rtol=0)
