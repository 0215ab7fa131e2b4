"""PEFT code paths that every core method (PoLAR, StelLA) must take as stock LoRA does; LoRA itself is
the control row of each table."""
import pytest
import torch
from peft import get_peft_model

from polar_lib.methods import make_config
from polar_lib.models import load_model

CORE_METHODS = ["polar", "stella"]


def tiny(method, **overrides):
    model, _ = load_model("tiny-llama", seed=0)
    torch.manual_seed(0)
    return get_peft_model(model, make_config(method, r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                             **overrides))


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
