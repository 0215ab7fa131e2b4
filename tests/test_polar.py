"""PoLAR's own maths: init, the landing optimizer, original checkpoints, errors. The PEFT code paths (forward
formula, merge, save/load, save_as_lora, several adapters, DDP, ...) are checked in tests/test_conformance.py."""
import json

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import save_file
from torch import nn

from polar_lib import PolarConfig, create_landing_optimizer, load_original_polar
from polar_lib.adapters.polar import PolarLinear
from polar_lib.geometry import landing_field, orthogonality_error
from polar_lib.models import load_model

TARGETS = ["q_proj", "v_proj", "down_proj"]
# orthogonal_ (Householder QR in fp32) of n ≤ 128 rows, r = 4: ‖QᵀQ − I‖_F ≲ n·r·EPS32/2 ≈ 3e-5 (measured ≤ 5.2e-7)
INIT_ORTHO = 3e-5


def polar_model(dtype=torch.float32, theta="full", **kw):
    model, _ = load_model("tiny-llama", dtype=dtype)
    config = PolarConfig(r=4, lora_alpha=8, target_modules=TARGETS, theta=theta, **kw)
    peft_model = get_peft_model(model, config)
    randomise_theta(peft_model)
    return peft_model


def randomise_theta(model, seed=0):
    """Θ = 0 at init makes ΔW = 0 and the factors' gradients 0; tests start from Θ ≠ 0."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, PolarLinear):
            for core in m.lora_S.values():
                core.weight.data = torch.randn(core.weight.shape, generator=g, dtype=core.weight.dtype)


def polar_layers(model):
    return [m for m in model.modules() if isinstance(m, PolarLinear)]


def test_init_is_orthonormal_with_zero_update():
    model, _ = load_model("tiny-llama")
    model = get_peft_model(model, PolarConfig(r=4, target_modules=TARGETS))
    for layer in polar_layers(model):
        assert orthogonality_error(layer.lora_B["default"].weight) < INIT_ORTHO
        assert orthogonality_error(layer.lora_A["default"].weight.T) < INIT_ORTHO
        assert layer.get_delta_weight("default").abs().max() == 0


def test_landing_sgd_step_moves_by_minus_lr_times_field(token_batch):
    model, lr, lam = polar_model(torch.float64), 0.1, 0.5
    optimizer = create_landing_optimizer(model, torch.optim.SGD, lr=lr, landing_lambda=lam)
    model(token_batch, labels=token_batch).loss.backward()
    layer = polar_layers(model)[0]
    A, B, T = (layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.lora_S["default"].weight)
    expected_B = B - lr * landing_field(B.detach(), B.grad, lam)
    expected_A = A - lr * landing_field(A.detach().T, A.grad.T, lam).T
    expected_T = T - lr * T.grad  # Θ stays Euclidean
    assert B.grad.abs().max() > 0 and A.grad.abs().max() > 0
    optimizer.step()
    # The optimizer computes the field in fp32 (apply_landing_field): ZᵀZ − I carries ≈ r·EPS32 = 5e-7,
    # × λ·lr = 0.05 → 2.4e-8 per entry of the step; 2.5e-7 (measured 5.3e-9; Θ's fp64 step is exact)
    for param, expected in ((B, expected_B), (A, expected_A), (T, expected_T)):
        assert torch.allclose(param, expected, atol=2.5e-7, rtol=0)


def test_factors_get_no_weight_decay_unless_asked():
    model = polar_model()
    optimizer = create_landing_optimizer(model, lr=1e-3, weight_decay=0.1)
    factor_ids = {id(p) for layer in polar_layers(model) for p in (layer.lora_A["default"].weight, layer.lora_B["default"].weight)}
    for group in optimizer.param_groups:
        in_group = {id(p) for p in group["params"]}
        assert group["weight_decay"] == (0.0 if in_group <= factor_ids else 0.1)
    decayed = create_landing_optimizer(model, lr=1e-3, weight_decay=0.1, decay_factors=True)
    assert all(g["weight_decay"] == 0.1 for g in decayed.param_groups)


def test_landing_optimizer_state_resumes(token_batch):
    def train(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            model(token_batch, labels=token_batch).loss.backward()
            optimizer.step()

    straight = polar_model()
    train(straight, create_landing_optimizer(straight, lr=1e-2), 4)
    first = polar_model()
    optimizer = create_landing_optimizer(first, lr=1e-2)
    train(first, optimizer, 2)
    resumed = polar_model()
    resumed.load_state_dict(first.state_dict())
    resumed_optimizer = create_landing_optimizer(resumed, lr=1e-2)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    train(resumed, resumed_optimizer, 2)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_load_original_polar_checkpoint(tmp_path, token_batch):
    model = polar_model(theta="diagonal")
    with torch.no_grad():
        expected = model(token_batch).logits
    # Write the folder the way the original code does: peft_type LORA, parameterize_S, parametrised Θ key.
    folder = tmp_path / "original"
    folder.mkdir()
    config = model.peft_config["default"].to_dict()
    config.update(peft_type="LORA", parameterize_S="diagonal", adapter_name="default")
    config.pop("theta")
    (folder / "adapter_config.json").write_text(json.dumps(config, default=list))
    from peft import get_peft_model_state_dict
    state = {k.replace("lora_S.weight", "lora_S.parametrizations.weight.original"): v.contiguous()
             for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, folder / "adapter_model.safetensors")
    base, _ = load_model("tiny-llama")
    loaded = load_original_polar(base, folder)
    assert loaded.peft_config["default"].theta == "diagonal"
    with torch.no_grad():
        assert torch.equal(loaded(token_batch).logits, expected)


@pytest.mark.parametrize("kwargs,match", [
    (dict(r=0), "r must be a positive integer"),
    (dict(theta="spiral"), "theta must be one of"),
    (dict(use_dora=True), "use_dora"),
    (dict(init_lora_weights="pissa"), "init_lora_weights must be one of"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolarConfig(target_modules=TARGETS, **{"r": 4, **kwargs})


def test_bad_targets_raise():
    model, _ = load_model("tiny-llama")
    with pytest.raises(ValueError, match=r"r must satisfy 1 <= r <= min\(in_features, out_features\) = 64"):
        get_peft_model(model, PolarConfig(r=65, target_modules=["q_proj"]))
    model, _ = load_model("tiny-llama")
    with pytest.raises(ValueError, match="nn.Linear only; got Embedding"):
        get_peft_model(model, PolarConfig(r=4, target_modules=["embed_tokens"]))
    model, _ = load_model("tiny-llama")
    with pytest.raises(ValueError, match="not found"):
        get_peft_model(model, PolarConfig(r=4, target_modules=["no_such_proj"]))


def test_landing_optimizer_errors():
    with pytest.raises(ValueError, match="landing_lambda must be >= 0, got -1"):
        create_landing_optimizer(polar_model(), lr=1e-3, landing_lambda=-1)
    plain = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="no trainable PoLAR layer"):
        create_landing_optimizer(plain, lr=1e-3)
