"""AdaPreLoRA: the closed form against dense weighted least squares (float64), the factored
statistics, balance, the optimizer step on a tiny PEFT LoRA model, its state and its resume."""
import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from polar_lib.models import load_model
from polar_lib.optim.adaprelora import (DAMPING, EPS1, adafactor_statistics, adaprelora_direction, beta2_at,
                                        create_adaprelora_optimizer, damped_inverse, lora_factor_pairs,
                                        preconditioner_diagonals, update_rms, update_statistics)

M, N, R = 12, 9, 3
TARGETS = ["q_proj", "v_proj", "down_proj"]
F64 = torch.float64
# fp64 at 12×9, r = 3 with ρ, κ ∈ [0.2, 1.2]: the weighted systems are well conditioned (κ(TᵀWT) ≈ 17 on
# its range), |J|, |g| ≲ 15, so solution errors are ≈ EPS64·κ·(m + n)·|J| ≈ 1e-12 worst case (measured
# ≤ 2e-14); ATOL leaves ≥ 100× over that estimate.
ATOL = 1e-10


def random_problem(seed=0, zero_B=False):
    """B (m×r), A (r×n), the full gradient G (m×n), g_A = BᵀG, g_B = G Aᵀ, and statistics ρ, κ."""
    g = torch.Generator().manual_seed(seed)
    B = torch.zeros(M, R, dtype=F64) if zero_B else torch.randn(M, R, generator=g, dtype=F64)
    A = torch.randn(R, N, generator=g, dtype=F64)
    G = torch.randn(M, N, generator=g, dtype=F64)
    rho = torch.rand(M, generator=g, dtype=F64) + 0.2
    kappa = torch.rand(N, generator=g, dtype=F64) + 0.2
    return B, A, G, B.T @ G, G @ A.T, rho, kappa


def dense_projection(B, A, G, p, q):
    """J = T (TᵀWT)⁺ TᵀW vec(G ⊘ pqᵀ), T = [B ⊗ I_n, I_m ⊗ Aᵀ] on row-major vec, W = diag(vec(pqᵀ))."""
    m, n = G.shape
    T = torch.cat([torch.kron(B, torch.eye(n, dtype=F64)), torch.kron(torch.eye(m, dtype=F64), A.T.contiguous())], dim=1)
    weights = torch.outer(p, q)
    TW = T.T * weights.reshape(-1)
    J = T @ torch.linalg.pinv(TW @ T, rtol=1e-10, hermitian=True) @ (TW @ (G / weights).reshape(-1))
    return J.reshape(m, n)


def weighted_sq(E, p, q):
    """‖E‖²_H = tr(EᵀPEQ) = Σ pᵢ qⱼ Eᵢⱼ²."""
    return (torch.outer(p, q) * E.square()).sum()


# ---------------------------------------------------------------- the maths, float64, 12×9, r = 3

def test_factored_statistics_equal_dense_sums_of_surrogate():
    g = torch.Generator().manual_seed(1)
    B, A = torch.randn(M, R, generator=g, dtype=F64), torch.randn(R, N, generator=g, dtype=F64)
    g_B, g_A = torch.randn(M, R, generator=g, dtype=F64), torch.randn(R, N, generator=g, dtype=F64)
    G_surrogate = g_B @ A + B @ g_A
    rowsum, colsum = adafactor_statistics(B, A, g_B, g_A)
    # fp64 sums of ≤ 12 squares of 2r-term sums, |sums| ≤ 210: ≈ 20·EPS64·210 ≈ 1e-12 (measured 2.8e-14)
    torch.testing.assert_close(rowsum, G_surrogate.square().sum(1), atol=1e-10, rtol=1e-12)
    torch.testing.assert_close(colsum, G_surrogate.square().sum(0), atol=1e-10, rtol=1e-12)


def test_statistics_schedule_and_epsilon():
    # a few fp64 flops on exact inputs: ≤ 4·EPS64 relative ≈ 1e-15 (measured: identical); rtol 1e-12
    assert beta2_at(1) == 0.0 and beta2_at(2) == pytest.approx(1 - 2 ** -0.8, rel=1e-12) and beta2_at(7, 0.9) == 0.9
    rowsum, colsum = torch.arange(1.0, M + 1, dtype=F64), torch.arange(1.0, N + 1, dtype=F64)
    rho, kappa = update_statistics(torch.ones(M, dtype=F64), torch.ones(N, dtype=F64), rowsum, colsum, 0.25, eps1=0.5)
    torch.testing.assert_close(rho, 0.25 + 0.75 * (rowsum + N * 0.5), atol=0, rtol=1e-12)
    torch.testing.assert_close(kappa, 0.25 + 0.75 * (colsum + M * 0.5), atol=0, rtol=1e-12)


@pytest.mark.parametrize("zero_B", [False, True])
def test_direction_is_the_dense_weighted_least_squares_projection(zero_B):
    B, A, G, g_A, g_B, rho, kappa = random_problem(zero_B=zero_B)
    dA, dB = adaprelora_direction(B, A, g_A, g_B, rho, kappa, damping=0.0)
    p, q = preconditioner_diagonals(rho, kappa)
    J = B @ dA + dB @ A
    # the dense route solves the normal equations by pinv of TᵀWT (216×216, κ ≈ 17 on its range):
    # ≈ EPS64·κ·216·|J| ≈ 1e-11 worst case (measured 2.1e-14)
    torch.testing.assert_close(J, dense_projection(B, A, G, p, q), atol=1e-8, rtol=0)


def test_normal_equations():
    B, A, G, g_A, g_B, rho, kappa = random_problem(seed=2)
    dA, dB = adaprelora_direction(B, A, g_A, g_B, rho, kappa, damping=0.0)
    p, q = preconditioner_diagonals(rho, kappa)
    PJQ = p[:, None] * (B @ dA + dB @ A) * q
    torch.testing.assert_close(B.T @ PJQ, g_A, atol=ATOL, rtol=0)  # measured 2.7e-15
    torch.testing.assert_close(PJQ @ A.T, g_B, atol=ATOL, rtol=0)


def test_balance_holds_and_a_gauge_raises_the_imbalance():
    B, A, G, g_A, g_B, rho, kappa = random_problem(seed=3)
    dA, dB = adaprelora_direction(B, A, g_A, g_B, rho, kappa, damping=0.0)
    p, q = preconditioner_diagonals(rho, kappa)
    E = dB @ A - B @ dA
    torch.testing.assert_close(B.T @ (p[:, None] * E * q) @ A.T, torch.zeros(R, R, dtype=F64), atol=ATOL, rtol=0)  # 1.1e-14
    K = torch.randn(R, R, generator=torch.Generator().manual_seed(4), dtype=F64)
    dA_K, dB_K = dA + K @ A, dB - B @ K  # same J, another member of the gauge family
    torch.testing.assert_close(B @ dA_K + dB_K @ A, B @ dA + dB @ A, atol=ATOL, rtol=0)  # measured 1.8e-15
    assert weighted_sq(dB_K @ A - B @ dA_K, p, q) > weighted_sq(E, p, q) + 1e-6  # measured 1495 > 135: 11×


def test_zero_B_special_case():
    B, A, G, g_A, g_B, rho, kappa = random_problem(zero_B=True)
    dA, dB = adaprelora_direction(B, A, g_A, g_B, rho, kappa)  # default damping: still no NaN
    p, q = preconditioner_diagonals(rho, kappa)
    assert torch.equal(dA, torch.zeros_like(dA))
    M_A = (A * q) @ A.T
    # fp64, the implementation's own operations on 3×3 systems: ≈ EPS64·|dB| ≈ 1e-14 (measured: identical)
    torch.testing.assert_close(dB, g_B / p[:, None] @ damped_inverse(M_A), atol=1e-12, rtol=0)
    assert torch.equal(damped_inverse(torch.zeros(R, R, dtype=F64)), torch.zeros(R, R, dtype=F64))


def test_damping_is_relative_and_small():
    B, A, G, g_A, g_B, rho, kappa = random_problem(seed=5)
    exact = adaprelora_direction(B, A, g_A, g_B, rho, kappa, damping=0.0)
    damped = adaprelora_direction(B, A, g_A, g_B, rho, kappa, damping=DAMPING)
    for a, b in zip(exact, damped):
        # a relative damping δ = 1e-6 moves the solution by ≈ δ·κ(M) ≈ 1e-6…1e-5; 1e-4 is ≥ 40× above
        # (measured 1.7e-6, 2.3e-6), and ≫ fp64 round-off 1e-15 above 0
        assert 0 < (a - b).norm() / a.norm() < 1e-4
    M_B = B.T @ B
    torch.testing.assert_close(damped_inverse(M_B, 0.1) @ (M_B + 0.1 * M_B.trace() / R * torch.eye(R, dtype=F64)),
                               torch.eye(R, dtype=F64), atol=ATOL, rtol=0)  # 3×3, κ ≲ 10 (measured 2.2e-16)


def test_update_rms_from_factors():
    B, A, G, g_A, g_B, rho, kappa = random_problem(seed=6)
    dA, dB = adaprelora_direction(B, A, g_A, g_B, rho, kappa)
    J = B @ dA + dB @ A
    # fp64 mean of 108 squares: ≈ 108·EPS64 relative ≈ 2e-14 (measured: identical)
    torch.testing.assert_close(update_rms(B, A, dA, dB), J.square().mean().sqrt(), atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------- the optimizer on a tiny PEFT LoRA model

def lora_model(dtype=torch.float32, lora_alpha=8, init_lora_weights=False):
    """Tiny random Llama with LoRA r = 4 on q, v, down; ``init_lora_weights=False`` makes B ≠ 0."""
    model, _ = load_model("tiny-llama", dtype=dtype)
    config = LoraConfig(r=4, lora_alpha=lora_alpha, target_modules=TARGETS, init_lora_weights=init_lora_weights)
    return get_peft_model(model, config)


@pytest.fixture
def batch():
    return torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


def backward(model, batch):
    model(batch, labels=batch).loss.backward()


def expected_directions(pair, clip_threshold):
    """The closed form at step 1 from the pair's current gradients, in the parameters' coordinates."""
    s, A = pair.scaling, pair.A.detach()
    B_bar, g_A, g_B = s * pair.B.detach(), pair.A.grad.clone(), pair.B.grad / s
    rowsum, colsum = adafactor_statistics(B_bar, A, g_B, g_A)
    rho, kappa = update_statistics(torch.zeros_like(rowsum), torch.zeros_like(colsum), rowsum, colsum, beta2_at(1))
    dA, dB_bar = adaprelora_direction(B_bar, A, g_A, g_B, rho, kappa, DAMPING)
    shrink = 1.0 if clip_threshold is None else max(1.0, float(update_rms(B_bar, A, dA, dB_bar)) / clip_threshold)
    return dA / shrink, dB_bar / (s * shrink), rho, kappa, shrink


@pytest.mark.parametrize("clip_threshold", [None, 0.05])  # here RMS(J) ≈ 0.06–0.19: 0.05 clips
def test_sgd_step_moves_factors_by_minus_lr_times_closed_form(batch, clip_threshold):
    model, lr = lora_model(F64), 0.05
    optimizer = create_adaprelora_optimizer(model, lr=lr, variant="sgd", clip_threshold=clip_threshold)
    pairs = lora_factor_pairs(model)
    assert len(pairs) == 2 * len(TARGETS)
    backward(model, batch)
    expected, shrinks = [], []
    for pair in pairs:
        assert pair.B.abs().max() > 0 and pair.A.grad.abs().max() > 0
        dA, dB, rho, kappa, shrink = expected_directions(pair, clip_threshold)
        expected.append((pair.A.detach() - lr * dA, pair.B.detach() - lr * dB, rho, kappa))
        shrinks.append(shrink)
    assert (max(shrinks) > 1) == (clip_threshold is not None)
    optimizer.step()
    # fp64, the same closed form from the same gradients, |A|, |B| ≲ 0.5: ≈ EPS64·|·| ≈ 1e-16 (measured 5.6e-17);
    # ρ, κ: the same sums (measured: identical)
    for pair, (A_new, B_new, rho, kappa) in zip(pairs, expected):
        torch.testing.assert_close(pair.A.detach(), A_new, atol=1e-12, rtol=0)
        torch.testing.assert_close(pair.B.detach(), B_new, atol=1e-12, rtol=0)
        torch.testing.assert_close(optimizer.state[pair.key]["rho"], rho, atol=0, rtol=1e-12)
        torch.testing.assert_close(optimizer.state[pair.key]["kappa"], kappa, atol=0, rtol=1e-12)


def test_state_is_m_plus_n_plus_1_per_layer_beyond_adam(batch):
    model = lora_model()
    optimizer = create_adaprelora_optimizer(model, lr=1e-3)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    assert all(group["weight_decay"] == 0.0 for group in optimizer.param_groups)
    for _ in range(2):
        optimizer.zero_grad()
        backward(model, batch)
        optimizer.step()
    pairs = lora_factor_pairs(model)
    ours = {k for k in optimizer.state if isinstance(k, str)}
    assert ours == {pair.key for pair in pairs}
    for pair in pairs:
        m, n = pair.B.shape[0], pair.A.shape[1]
        state = optimizer.state[pair.key]
        assert sum(v.numel() for v in state.values()) == m + n + 1
        assert state["step"].item() == 2
        assert {"exp_avg", "exp_avg_sq"} <= set(optimizer.state[pair.A]) and {"exp_avg"} <= set(optimizer.state[pair.B])


def test_sgd_momentum_adds_the_gradient_averages_to_the_state(batch):
    model = lora_model()
    optimizer = create_adaprelora_optimizer(model, lr=1e-2, variant="sgd", beta1=0.9)
    for _ in range(2):
        optimizer.zero_grad()
        backward(model, batch)
        optimizer.step()
    for pair in lora_factor_pairs(model):
        m, n, r = pair.B.shape[0], pair.A.shape[1], pair.A.shape[0]
        assert sum(v.numel() for v in optimizer.state[pair.key].values()) == m + n + 1 + m * r + r * n


def test_adamw_variant_feeds_the_directions_to_adamw(batch):
    model = lora_model(F64)
    optimizer = create_adaprelora_optimizer(model, lr=1e-3)
    backward(model, batch)
    pairs = lora_factor_pairs(model)
    expected = [expected_directions(pair, None)[:2] for pair in pairs]
    optimizer.step()
    for pair, (dA, dB) in zip(pairs, expected):  # fp64, as in the SGD test (measured ≤ 7e-18)
        torch.testing.assert_close(pair.A.grad, dA, atol=1e-12, rtol=0)
        torch.testing.assert_close(pair.B.grad, dB, atol=1e-12, rtol=0)
        torch.testing.assert_close(optimizer.state[pair.A]["exp_avg"], 0.1 * dA, atol=1e-12, rtol=0)


def test_step_is_independent_of_the_lora_scale(batch):
    """Same ΔW = s·BA under s = 2 and s = 8 (B rescaled): one SGD step gives the same new ΔW."""
    deltas = []
    reference = lora_model(F64, lora_alpha=8)
    for alpha in (8, 32):
        model = lora_model(F64, lora_alpha=alpha)
        for ref, pair in zip(lora_factor_pairs(reference), lora_factor_pairs(model)):
            pair.B.data = ref.B.detach() * ref.scaling / pair.scaling
        optimizer = create_adaprelora_optimizer(model, lr=0.05, variant="sgd")
        backward(model, batch)
        optimizer.step()
        deltas.append([pair.scaling * pair.B.detach() @ pair.A.detach() for pair in lora_factor_pairs(model)])
    assert lora_factor_pairs(model)[0].scaling == 4 * lora_factor_pairs(reference)[0].scaling
    for small, large in zip(*deltas):  # fp64: B rescaled by 4 (exact, a power of 2) → ≈ EPS64·|ΔW| (measured: identical)
        torch.testing.assert_close(small, large, atol=1e-10, rtol=0)


def test_lora_init_with_zero_B_moves_only_B_first(batch):
    model = lora_model(init_lora_weights=True)
    optimizer = create_adaprelora_optimizer(model, lr=1e-3)
    backward(model, batch)
    pairs = lora_factor_pairs(model)
    A_before = [pair.A.detach().clone() for pair in pairs]
    optimizer.step()
    for pair, A in zip(pairs, A_before):
        assert torch.equal(pair.A.grad, torch.zeros_like(A)) and torch.equal(pair.A.detach(), A)
        assert torch.isfinite(pair.B).all() and pair.B.abs().max() > 0


def test_state_dict_round_trip_resumes(tmp_path, batch):
    def train(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            backward(model, batch)
            optimizer.step()

    straight = lora_model()
    train(straight, create_adaprelora_optimizer(straight, lr=1e-2), 4)
    first = lora_model()
    optimizer = create_adaprelora_optimizer(first, lr=1e-2)
    train(first, optimizer, 2)
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    resumed = lora_model()
    resumed.load_state_dict(first.state_dict())
    resumed_optimizer = create_adaprelora_optimizer(resumed, lr=1e-2)
    resumed_optimizer.load_state_dict(torch.load(tmp_path / "optimizer.pt", weights_only=True))  # as HF Trainer
    for pair in lora_factor_pairs(resumed):
        assert torch.equal(resumed_optimizer.state[pair.key]["rho"], optimizer.state[pair.key]["rho"])
    train(resumed, resumed_optimizer, 2)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    other = create_adaprelora_optimizer(resumed.base_model, lr=1e-2)  # other module names
    with pytest.raises(ValueError, match="AdaPreLoRA state does not match this model's layers"):
        other.load_state_dict(optimizer.state_dict())


def test_exact_statistics_capture_the_full_gradient(batch):
    model = lora_model(F64)
    optimizer = create_adaprelora_optimizer(model, lr=0.01, variant="sgd", exact_statistics=True)
    pairs = optimizer.hooks.pairs  # they hold the captured G
    backward(model, batch)
    backward(model, batch.flip(0))  # two micro-batches: G sums before squaring
    expected = []
    for pair in pairs:
        G, s = pair.exact_G, pair.scaling
        assert G.shape == (pair.B.shape[0], pair.A.shape[1])
        # fp64 products over ≤ 128 terms against autograd's: ≈ 128·EPS64·|grad| ≈ 3e-14·|grad| (measured 1.4e-16)
        torch.testing.assert_close(s * pair.B.detach().T @ G, pair.A.grad, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(s * G @ pair.A.detach().T, pair.B.grad, atol=1e-10, rtol=1e-8)
        pair.A.grad *= 0.5  # as gradient clipping would: the statistics follow the clipped gradient
        pair.B.grad *= 0.5
        expected.append(((0.5 * G).square().sum(1) + pair.A.shape[1] * EPS1, (0.5 * G).square().sum(0) + pair.B.shape[0] * EPS1))
    optimizer.step()
    for pair, (rho, colsum) in zip(pairs, expected):  # fp64 sums of ≤ 128 squares (measured 7e-18 absolute)
        assert pair.exact_G is None
        torch.testing.assert_close(optimizer.state[pair.key]["rho"], rho, atol=1e-12, rtol=1e-9)
        torch.testing.assert_close(optimizer.state[pair.key]["kappa"], colsum, atol=1e-12, rtol=1e-9)
    optimizer.hooks.remove_hooks()


def test_errors():
    with pytest.raises(ValueError, match="found no trainable LoRA layer"):
        create_adaprelora_optimizer(nn.Sequential(nn.Linear(4, 4)), lr=1e-3)
    model = lora_model()
    with pytest.raises(ValueError, match="variant must be one of .*got 'adam'"):
        create_adaprelora_optimizer(model, lr=1e-3, variant="adam")
    with pytest.raises(ValueError, match="beta1 is for variant='sgd'"):
        create_adaprelora_optimizer(model, lr=1e-3, beta1=0.9)
    with pytest.raises(ValueError, match="damping must be >= 0, got -1"):
        create_adaprelora_optimizer(model, lr=1e-3, damping=-1)
    with pytest.raises(ValueError, match="needs a closure"):
        create_adaprelora_optimizer(model, torch.optim.LBFGS, lr=1e-3)
