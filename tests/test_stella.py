"""StelLA's own maths: inits, the Riemannian optimizer and its retractions, errors. The PEFT code paths (forward
formula, merge, save/load, save_as_lora, several adapters, DDP, ...) are checked in tests/test_conformance.py."""

import pytest
import torch
from peft import get_peft_model
from torch import nn

from polar_lib.adapters.stella import StellaConfig, StellaLinear
from polar_lib.geometry import exp_map_retraction, orthogonality_error, polar_retraction, project_tangent, random_stiefel
from polar_lib.models import load_model
from polar_lib.optim.stella import create_stella_optimizer

TARGETS = ["q_proj", "v_proj", "down_proj"]  # U/V rows 64, 32 (k/v heads), 64/128: every grad-scaling case
# orthogonal_ (Householder QR in fp32) of n ≤ 128 rows, r = 4: ‖QᵀQ − I‖_F ≲ n·r·EPS32/2 ≈ 3e-5 (measured ≤ 5.2e-7)
INIT_ORTHO = 3e-5


def stella_model(dtype=torch.float32, diag_s=True, seed=0, **kw):
    model, _ = load_model("tiny-llama", dtype=dtype)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, StellaConfig(r=4, lora_alpha=8, target_modules=TARGETS, diag_s=diag_s, **kw))
    randomise_s(peft_model, seed)
    return peft_model


def randomise_s(model, seed=0):
    """S = I at init; tests use a generic S."""
    g = torch.Generator().manual_seed(seed)
    for layer in stella_layers(model):
        for core in layer.lora_S.values():
            core.weight.data = core.weight.data + 0.5 * torch.randn(core.weight.shape, generator=g, dtype=core.weight.dtype)


def stella_layers(model):
    return [m for m in model.modules() if isinstance(m, StellaLinear)]


def factors(layer, adapter="default"):
    """(U, V) as tall matrices."""
    return layer.lora_B[adapter].weight, layer.lora_A[adapter].weight.T


def train(model, optimizer, batch, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        model(batch, labels=batch).loss.backward()
        optimizer.step()


@pytest.mark.parametrize("diag_s", [True, False])
def test_init_is_orthonormal_with_identity_core(diag_s):
    model, _ = load_model("tiny-llama")
    model = get_peft_model(model, StellaConfig(r=4, target_modules=TARGETS, diag_s=diag_s, use_rslora=True))
    for layer in stella_layers(model):
        U, V = factors(layer)
        assert orthogonality_error(U) < INIT_ORTHO and orthogonality_error(V) < INIT_ORTHO
        S = layer.lora_S["default"].weight
        assert torch.equal(S, torch.ones(4) if diag_s else torch.eye(4))
        # ΔW₀ = s·UVᵀ ≠ 0 (faithful to the original); rsLoRA honoured: s = α/√r
        # fp32: s = 4 times 4-term dots of |·| ≤ 1: ≤ 4·4·EPS32 ≈ 2e-6 worst case (measured: identical)
        assert torch.allclose(layer.get_delta_weight("default"), (8 / 2) * U @ V.T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("init", ["svd_major", "svd_minor"])
def test_svd_inits_take_singular_vectors_of_w0(init):
    model, _ = load_model("tiny-llama", dtype=torch.float64)
    model = get_peft_model(model, StellaConfig(r=4, target_modules=TARGETS, init_lora_weights=init))
    for layer in stella_layers(model):
        P, _, Qh = torch.linalg.svd(layer.get_base_layer().weight, full_matrices=False)
        cols = slice(0, 4) if init == "svd_major" else slice(P.shape[1] - 4, P.shape[1])
        U, V = factors(layer)
        # the fp64 singular vectors are stored in the (fp32-created) factors at init: each entry rounds by
        # ≤ 2⁻²⁴ relative = 6e-8 (measured 1.4e-8 absolute); the two fp64 SVDs agree to ≈ 1e-15
        assert torch.allclose(U, P[:, cols], atol=1e-12, rtol=1e-6)
        assert torch.allclose(V, Qh[cols].T, atol=1e-12, rtol=1e-6)


def test_retraction_is_polar_factor_of_its_argument():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    g = torch.Generator().manual_seed(0)
    for device in devices:
        Y = torch.randn(2, 40, 6, generator=g, dtype=torch.float64).to(device)
        evals, evecs = torch.linalg.eigh(Y.mT @ Y)
        inv_sqrt = evecs @ torch.diag_embed(evals.rsqrt()) @ evecs.mT
        # fp64, 40×6 Gaussian Y (κ(Y) ≤ 3): both routes ≈ EPS64·κ²·√n ≈ 1e-14 (measured 7e-16)
        assert torch.allclose(polar_retraction(Y), Y @ inv_sqrt, atol=1e-12, rtol=0)  # P Qᵀ = Y (YᵀY)^{-1/2}


def test_tangent_projection_and_exp_map():
    g = torch.Generator().manual_seed(1)
    X = random_stiefel(30, 5, generator=g)
    D = project_tangent(X, torch.randn(30, 5, generator=g, dtype=torch.float64))
    # fp64, 30-term products of |D| ≤ 2.5: ≈ 30·EPS64·2.5 ≈ 2e-14 (measured 9e-16)
    assert torch.allclose(X.T @ D + D.T @ X, torch.zeros(5, 5, dtype=torch.float64), atol=1e-12, rtol=0)  # XᵀΔ + ΔᵀX = 0
    # fp64 exponential of ‖D‖₂ ≈ 7.3: ≈ EPS64·‖D‖₂·√(nr) ≈ 2e-14 (measured 7.9e-15)
    assert orthogonality_error(exp_map_retraction(X, D)) < 1e-12
    # A retraction: R(X, 0) = X and dR/dt = D at t = 0. Central difference: truncation t²‖D‖₂³/6 ≈ 7e-11
    # plus round-off EPS64/t ≈ 2e-10; 1e-8 (measured 8e-11)
    t = 1e-6
    central = (exp_map_retraction(X, t * D) - exp_map_retraction(X, -t * D)) / (2 * t)
    assert torch.allclose(central, D, atol=1e-8, rtol=0)
    assert torch.allclose(exp_map_retraction(X, 0 * D), X, atol=1e-12, rtol=0)  # fp64 (measured: identical)


@pytest.mark.parametrize("diag_s,retraction", [(True, "polar"), (False, "exp_map")])
def test_factors_stay_orthonormal_after_many_steps(token_batch, retraction, diag_s):
    model = stella_model(torch.float64, diag_s=diag_s)
    for layer in stella_layers(model):  # the init is orthonormal to fp32 precision only; exp_map keeps such errors
        U, V = factors(layer)
        U.data, layer.lora_A["default"].weight.data = polar_retraction(U.data), polar_retraction(V.data).T
    train(model, create_stella_optimizer(model, lr=5e-2, retraction=retraction), token_batch, 15)
    for layer in stella_layers(model):
        U, V = factors(layer)
        # fp64: each retraction lands within ≈ √(nr)·EPS64 ≈ 5e-15 of St; exp_map can add that up over
        # 15 steps ≈ 8e-14; 1e-12 (measured 2.3e-15)
        assert orthogonality_error(U) < 1e-12 and orthogonality_error(V) < 1e-12


def test_fp32_factors_stay_orthonormal(token_batch):
    model = stella_model()
    train(model, create_stella_optimizer(model, lr=5e-2), token_batch, 15)
    errors = [orthogonality_error(X).item() for layer in stella_layers(model) for X in factors(layer)]
    # the fp32 polar retraction (SVD) re-projects each step to ≈ √(nr)·EPS32·few ≈ 3e-6 (n ≤ 128, r = 4):
    # 3e-5 (measured 1.5e-6 after 15 steps)
    assert max(errors) < 3e-5


def test_sgd_step_equals_the_formula(token_batch):
    """Pre-step gradient G − XGᵀX; then Δ = −lr·grad, Δ·√(c/h), projection, polar retraction; S Euclidean."""
    model, lr = stella_model(torch.float64), 0.1
    optimizer = create_stella_optimizer(model, torch.optim.SGD, lr=lr)
    assert optimizer.stella_scaling_size == 64
    model(token_batch, labels=token_batch).loss.backward()
    expected, rows_seen = [], set()
    for layer in stella_layers(model):
        for weight, transposed in ((layer.lora_B["default"].weight, False), (layer.lora_A["default"].weight, True)):
            X = (weight.T if transposed else weight).detach().clone()
            G = (weight.grad.T if transposed else weight.grad).clone()
            rgrad = G - X @ G.T @ X
            D = project_tangent(X, -lr * rgrad * (64 / X.shape[0]) ** 0.5)
            new = polar_retraction(X + D)
            expected.append((weight, transposed, rgrad, new))
            rows_seen.add(X.shape[0])
        S = layer.lora_S["default"].weight
        expected.append((S, False, S.grad.clone(), S - lr * S.grad))
    assert rows_seen == {32, 64, 128}
    optimizer.step()
    for weight, transposed, grad, new in expected:  # fp64, the same operations in another order: ≈ 1e-16 (measured 3e-16)
        assert torch.allclose(weight.grad.T if transposed else weight.grad, grad, atol=1e-12, rtol=0)  # converted gradient
        assert torch.allclose(weight.T if transposed else weight, new, atol=1e-12, rtol=0)


def test_no_weight_decay_reaches_u_and_v(token_batch):
    runs = {}
    for wd in (0.0, 0.5):
        model = stella_model()
        optimizer = create_stella_optimizer(model, lr=1e-2, weight_decay=wd)
        train(model, optimizer, token_batch, 1)  # one step: U, V see the same gradient in both runs
        runs[wd] = model
    factor_ids = {id(p) for layer in stella_layers(runs[0.5]) for p in (layer.lora_A["default"].weight, layer.lora_B["default"].weight)}
    for group in optimizer.param_groups:
        assert group["weight_decay"] == (0.0 if {id(p) for p in group["params"]} <= factor_ids else 0.5)
    for plain, decayed in zip(stella_layers(runs[0.0]), stella_layers(runs[0.5])):
        for name in ("lora_A", "lora_B"):
            assert torch.equal(getattr(plain, name)["default"].weight, getattr(decayed, name)["default"].weight)
        assert not torch.equal(plain.lora_S["default"].weight, decayed.lora_S["default"].weight)


def test_grad_scaling_options():
    model = stella_model()
    assert create_stella_optimizer(model, lr=1e-3).stella_scaling_size == 64  # 'auto' finds hidden_size
    assert create_stella_optimizer(model, lr=1e-3, grad_scaling=True).stella_scaling_size == 64
    assert create_stella_optimizer(model, lr=1e-3, grad_scaling=False).stella_scaling_size is None
    assert create_stella_optimizer(model, lr=1e-3, grad_scaling=4096).stella_scaling_size == 4096.0
    no_config = get_peft_model(nn.Sequential(nn.Linear(8, 8)), StellaConfig(r=2, target_modules=["0"]))
    with pytest.warns(UserWarning, match="no hidden_size, so grad scaling is off"):
        assert create_stella_optimizer(no_config, lr=1e-3).stella_scaling_size is None
    with pytest.raises(ValueError, match="grad_scaling=True needs the model's hidden size"):
        create_stella_optimizer(no_config, lr=1e-3, grad_scaling=True)
    with pytest.raises(ValueError, match=r"grad_scaling must be 'auto', True, False or a positive number .* got -1"):
        create_stella_optimizer(model, lr=1e-3, grad_scaling=-1)


def test_optimizer_state_resumes(token_batch):
    straight = stella_model()
    train(straight, create_stella_optimizer(straight, lr=1e-2), token_batch, 4)
    first = stella_model()
    optimizer = create_stella_optimizer(first, lr=1e-2)
    train(first, optimizer, token_batch, 2)
    resumed = stella_model()
    resumed.load_state_dict(first.state_dict())
    resumed_optimizer = create_stella_optimizer(resumed, lr=1e-2)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    train(resumed, resumed_optimizer, token_batch, 2)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,match", [
    (dict(r=0), "r must be a positive integer, got 0"),
    (dict(diag_s="yes"), r"diag_s must be True \(diagonal S\) or False \(full r×r S\), got 'yes'"),
    (dict(use_dora=True), r"use_dora=True is not supported by StelLA \(allowed: False\)"),
    (dict(init_lora_weights="pissa"), r"init_lora_weights must be one of \(True, 'rando', 'svd_major', 'svd_minor'\) for StelLA, got 'pissa'"),
    (dict(init_lora_weights=False), "init_lora_weights must be one of .* got False"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StellaConfig(target_modules=TARGETS, **{"r": 4, **kwargs})


def test_bad_targets_and_optimizer_arguments_raise():
    model, _ = load_model("tiny-llama")
    with pytest.raises(ValueError, match=r"r must satisfy 1 <= r <= min\(in_features, out_features\) = 64"):
        get_peft_model(model, StellaConfig(r=65, target_modules=["q_proj"]))
    model, _ = load_model("tiny-llama")
    with pytest.raises(ValueError, match="StelLA supports target modules of type torch.nn.Linear only; got Embedding"):
        get_peft_model(model, StellaConfig(r=4, target_modules=["embed_tokens"]))
    model = stella_model()
    with pytest.raises(ValueError, match=r"retraction must be one of \('polar', 'exp_map'\), got 'qr'"):
        create_stella_optimizer(model, lr=1e-3, retraction="qr")
    with pytest.raises(ValueError, match=r"svd_driver must be one of \(None, 'gesvd', 'gesvdj', 'gesvda'\), got 'fast'"):
        create_stella_optimizer(model, lr=1e-3, svd_driver="fast")
    with pytest.raises(ValueError, match="no trainable StelLA layer"):
        create_stella_optimizer(nn.Sequential(nn.Linear(4, 4)), lr=1e-3)
