"""TopLoRA's own maths: per-token, scale-free gates, init and parameters, errors. The PEFT code paths (the gated
forward formula with dropout, merge and save_as_lora refused, save/load, several adapters, DDP, ...) are checked in
tests/test_conformance.py."""
import pytest
import torch
from peft import get_peft_model

from polar_lib.adapters.toplora import TokenGate, TopLoraConfig, TopLoraLinear
from polar_lib.methods import delta_for
from polar_lib.models import load_model

TARGETS = ["q_proj", "v_proj", "down_proj"]


def toplora_model(dtype=torch.float32, seed=0, r=4, **kw):
    model, _ = load_model("tiny-llama", dtype=dtype)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, TopLoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGETS, **kw))
    randomise_b(peft_model, seed)
    return peft_model


def randomise_b(model, seed=0, adapter="default"):
    """B = 0 at init makes ΔW = 0; tests use B ≠ 0 (and a generic γ)."""
    g = torch.Generator().manual_seed(seed)
    for layer in toplora_layers(model):
        B, gain = layer.lora_B[adapter].weight, layer.lora_lambda[adapter].gain
        B.data = 0.1 * torch.randn(B.shape, generator=g, dtype=B.dtype)
        gain.data = gain.data + 0.3 * torch.randn(gain.shape, generator=g, dtype=gain.dtype)


def toplora_layers(model):
    return [m for m in model.modules() if isinstance(m, TopLoraLinear)]


def gate_formula(layer, x, adapter="default"):
    """λ(x) = exp(RMSNorm(xΘ)), RMSNorm(h) = γ ⊙ h / √(mean(h²) + eps)."""
    Theta, gain = layer.lora_lambda[adapter].weight.T, layer.lora_lambda[adapter].gain
    h = x @ Theta
    return torch.exp(gain * h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps))


def test_gates_differ_per_token_and_are_scale_free():
    model = toplora_model(torch.float64)
    layer = toplora_layers(model)[0]
    x = torch.randn(3, 5, layer.in_features, dtype=torch.float64)
    gate = gate_formula(layer, x)
    # fp64: sums of ≤ 64 terms of O(1) and exp of O(1): ≈ 64·EPS64·few ≈ 1e-13 worst case (measured 1.8e-15)
    assert torch.allclose(layer.lora_lambda["default"](x), gate, atol=1e-12, rtol=0)
    # One token's gate differs from another's, so ΔW_x differs: no single ΔW reproduces the layer.
    tokens = gate.reshape(-1, 4)
    assert (tokens - tokens[0]).abs().amax(dim=1)[1:].min() > 1e-3  # measured 2.5: O(1) apart
    adapter = lambda v: layer(v) - v @ layer.get_base_layer().weight.T
    x1, x2 = x[0, 0], x[0, 1]
    assert not torch.allclose(adapter(x1 + x2), adapter(x1) + adapter(x2), atol=1e-6)  # not linear in x (off by 1.2) ...
    # ... but λ is scale-free: RMSNorm's ε = EPS64 moves it by ≈ EPS64/mean(h²) ≈ 1e-15 (measured 2.6e-14)
    assert torch.allclose(layer.lora_lambda["default"](3.0 * x), gate, atol=1e-10, rtol=0)


def test_init_and_parameters():
    model, _ = load_model("tiny-llama")
    model = get_peft_model(model, TopLoraConfig(r=4, target_modules=TARGETS))
    for layer in toplora_layers(model):
        gate = layer.lora_lambda["default"]
        n = layer.in_features
        assert isinstance(gate, TokenGate) and gate.weight.shape == (4, n)
        # U(±1/√n): the bound is exact; the std is n^-1/2/√3 = 0.58 n^-1/2, estimated from 4n ≥ 256 draws
        # with a standard error ≈ 3 %, so 0.3 n^-1/2 is > 15 standard errors below (measured ≥ 0.57 n^-1/2)
        assert gate.weight.abs().max() <= n**-0.5 and gate.weight.std() > 0.3 * n**-0.5
        assert torch.equal(gate.gain, torch.ones(4))
        assert layer.lora_B["default"].weight.abs().max() == 0  # ΔW₀ = 0
        assert all(p.requires_grad for p in gate.parameters())
    assert delta_for(model.peft_config["default"].peft_type).token_dependent  # no dense ΔW (stable rank, merge, export)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(4 * (l.in_features + l.out_features) for l in toplora_layers(model))
    assert trainable == lora + sum(4 * l.in_features + 4 for l in toplora_layers(model))  # + nr + r per layer


def test_adapters_stay_fp32_on_a_bf16_model(token_batch):
    model = toplora_model(torch.bfloat16)
    layer = toplora_layers(model)[0]
    assert all(p.dtype == torch.float32 for p in layer.lora_lambda["default"].parameters())
    assert model(token_batch).logits.dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs,match", [
    (dict(r=0), "r must be a positive integer, got 0"),
    (dict(use_dora=True), r"use_dora=True is not supported by TopLoRA \(allowed: False\)"),
    (dict(init_lora_weights="pissa"), r"init_lora_weights must be one of \(True, False, 'gaussian'\) for TopLoRA, got 'pissa'"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TopLoraConfig(target_modules=TARGETS, **{"r": 4, **kwargs})


def test_bad_targets_raise():
    model, _ = load_model("tiny-llama")
    with pytest.raises(ValueError, match=r"r must satisfy 1 <= r <= min\(in_features, out_features\) = 64"):
        get_peft_model(model, TopLoraConfig(r=65, target_modules=["q_proj"]))
    model, _ = load_model("tiny-llama")
    with pytest.raises(ValueError, match="TopLoRA supports target modules of type torch.nn.Linear only; got Embedding"):
        get_peft_model(model, TopLoraConfig(r=4, target_modules=["embed_tokens"]))
