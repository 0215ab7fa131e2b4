"""The landing optimizer's gradient rewrite, batched over same-shape factors, equals the per-layer field."""
import torch

from polar_lib.adapters import PolarConfig
from polar_lib.geometry import landing_field
from polar_lib.models import load_model
from polar_lib.optim.landing import apply_landing_field, polar_factors

from peft import get_peft_model


def test_batched_rewrite_equals_the_per_layer_field(token_batch):
    """Mixed shapes (q/v/down projections, two ranks via rank_pattern), two adapters with one of them
    frozen: every trainable factor's gradient becomes its own Λ(Z, G), the frozen adapter's untouched."""
    base, _ = load_model("tiny-llama", seed=0)
    config = PolarConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], rank_pattern={"v_proj": 2},
                         lora_dropout=0.0)
    model = get_peft_model(base, config)
    model.add_adapter("second", PolarConfig(r=3, target_modules=["q_proj"], lora_dropout=0.0))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    model(token_batch, labels=token_batch).loss.backward()
    pairs = polar_factors(model)
    shapes = {tuple(w.shape) for pair in pairs for w in pair}
    assert len(shapes) >= 4 and all("second" not in n for n, p in model.named_parameters() if p.requires_grad)
    expected = [(landing_field(A.detach().T, A.grad.T, 0.3).T.clone(), landing_field(B.detach(), B.grad, 0.3).clone())
                for A, B in pairs]
    apply_landing_field(pairs, 0.3)
    for (A, B), (expected_A, expected_B) in zip(pairs, expected):
        # fp32 fields of O(0.1) entries from the same products in batched kernels: ~1e-7 absolute
        assert torch.allclose(A.grad, expected_A, atol=1e-6, rtol=1e-5)
        assert torch.allclose(B.grad, expected_B, atol=1e-6, rtol=1e-5)
