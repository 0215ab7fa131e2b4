"""PEFT code paths that every core method (PoLAR, StelLA) must take as stock LoRA does; LoRA itself is
the control row of each table."""
from functools import partial
from typing import get_args, get_type_hints

import pytest
import torch
from peft import PeftMixedModel, get_peft_model
from peft.tuners.lora import LoraModel
from peft.utils.merge_utils import dare_linear, dare_ties, magnitude_prune, task_arithmetic, ties

from polar_lib.methods import make_config
from polar_lib.models import load_model

CORE_METHODS = ["polar", "stella"]


def tiny(method, targets=("q_proj", "v_proj"), **overrides):
    model, _ = load_model("tiny-llama", seed=0)
    torch.manual_seed(0)
    return get_peft_model(model, make_config(method, r=4, target_modules=list(targets), lora_dropout=0.0, **overrides))


TOKENS = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["lora", *CORE_METHODS])
@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")
def test_lora_bias_starts_at_zero(method):
    """lora_bias=True adds a bias to lora_B; at init it is zero, so the output is that without the bias."""
    model = tiny(method, lora_bias=True)
    factors = [m.lora_B["default"] for m in model.modules() if hasattr(m, "lora_B") and "default" in m.lora_B]
    assert factors and all(torch.equal(f.bias, torch.zeros_like(f.bias)) for f in factors)
    with torch.no_grad():
        with_bias = model(TOKENS).logits
        for f in factors:
            f.bias = None
        assert torch.equal(with_bias, model(TOKENS).logits)  # adding an exact zero changes nothing


@pytest.mark.parametrize("method", CORE_METHODS)
def test_fan_in_fan_out_on_nn_linear_is_reset_with_a_warning(method):
    """As PEFT's own dispatch does for nn.Linear: the flag is reset, so merging gives the unmerged output."""
    with pytest.warns(UserWarning, match="Setting fan_in_fan_out to False"):
        model = tiny(method, fan_in_fan_out=True, init_lora_weights=True)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))  # a non-zero update
        unmerged = model(TOKENS).logits
        merged = model.merge_and_unload()(TOKENS).logits
    # fp32 logits of a 2-layer model with |logit| ~ 1: merging reorders sums of 64 terms, error ~ 1e-6
    assert torch.allclose(merged, unmerged, atol=1e-4)


@pytest.mark.parametrize("method", CORE_METHODS)
def test_half_precision_delta_weight_is_computed_in_fp32(method):
    model = tiny(method)
    layer = next(m for m in model.modules() if hasattr(m, "delta_factors"))
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p)) if p.requires_grad else None
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


# (method, overrides): every Θ mode of PoLAR (Θ ≡ I gets no gradient), and the other methods
TRAINABILITY_ROWS = [("lora", {}), ("polar", {}), ("polar", {"theta": "diagonal"}),
                     ("polar", {"theta": "fixed_identity"}), ("stella", {}), ("toplora", {})]


@pytest.mark.parametrize("method, overrides", TRAINABILITY_ROWS, ids=overrides_id)
def test_every_trainable_parameter_gets_a_gradient(method, overrides):
    """DDP with its defaults fails ('Expected to have finished reduction in the prior iteration') on a trainable
    parameter that gets no gradient. PEFT's set_adapter marks adapter parameters trainable, so check after it too."""
    model = tiny(method, **overrides)
    model.add_adapter("other", make_config(method, r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                           **overrides))
    for adapter in (None, "other", "default"):  # None: as get_peft_model and add_adapter leave it
        if adapter:
            model.set_adapter(adapter)
        model.zero_grad(set_to_none=True)
        model(TOKENS).logits.square().mean().backward()
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        assert trainable and all(f".{adapter or 'default'}." in name for name in trainable)
        assert [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


@pytest.mark.parametrize("method", ["lora", "polar", "stella", "toplora"])
def test_mixed_model_refuses_our_adapter_types_clearly(method):
    """PEFT's mixed models take a fixed set of PEFT's own types; ours get PEFT's one-line error naming both."""
    model, _ = load_model("tiny-llama", seed=0)
    config = make_config(method, r=4, target_modules=["q_proj"])
    if method == "lora":
        assert isinstance(get_peft_model(model, config, mixed=True), PeftMixedModel)
        return
    with pytest.raises(ValueError, match=rf"'{config.peft_type}' is not compatible with the `PeftMixedModel`. "
                                         r"Compatible types are: \(<PeftType.LORA: 'LORA'>") as error:
        get_peft_model(model, config, mixed=True)
    assert "\n" not in str(error.value)
