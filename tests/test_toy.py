"""The theory toy problem (docs/toy-problem.md, "Our setting"): optimum, gradients, solvers, rate fits, notebook settings."""
import math
from pathlib import Path

import jupytext
import numpy as np
import pytest
import torch
import yaml

from polar_lib import toy
from polar_lib.geometry import orthogonality_error

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "02_toy_problem.py"
PROFILES = Path(__file__).parents[1] / "notebooks" / "profiles"
# Everything here is fp64 on 60×40 (or smaller) matrices of O(1): single results are off by
# ≈ EPS64·√(mn)·‖M*‖ ≈ 1e-14 at most (measured ≤ 2e-16), hence 1e-12 for values and 1e-13 for
# orthogonality of fp64 QR factors (≈ √(nr)·EPS64 ≈ 3e-15; measured ≤ 9e-16).


# --- the problem -------------------------------------------------------------------------------

@pytest.mark.parametrize("kappa", [1.0, 5.0, 30.0])
def test_problem_is_the_section_8_setting(kappa):
    problem = toy.make_problem(kappa=kappa, seed=3)
    assert problem.shape == (60, 40) and problem.target_rank == 4
    assert float(orthogonality_error(problem.U)) < 1e-13 and float(orthogonality_error(problem.V)) < 1e-13
    s = np.linalg.svd(problem.target.numpy(), compute_uv=False)
    # σ of the formed M* (fp64): off by ≈ EPS64·√(mn)·σ₁ ≈ 1e-14 (measured 2.2e-16; σ₅ = 1.1e-16)
    assert np.allclose(s[:4], [kappa ** (-i / 3) for i in range(4)], atol=1e-12, rtol=0) and s[4] < 1e-12
    assert s[0] / s[3] == pytest.approx(kappa, rel=1e-12)  # measured 4.4e-16
    assert problem.initial_loss == pytest.approx(0.5 * float((problem.target ** 2).sum()), rel=1e-12)  # identical
    again = toy.make_problem(kappa=kappa, seed=3)
    assert torch.equal(problem.target, again.target)  # seeded


@pytest.mark.parametrize("r", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("kappa", [1.0, 5.0, 30.0])
def test_optimum_and_optimal_loss_match_a_brute_force_truncated_svd(r, kappa):
    problem = toy.make_problem(kappa=kappa, seed=1)
    M = problem.target.numpy()
    P, s, Qh = np.linalg.svd(M, full_matrices=False)  # brute force, from the dense M*
    best = (P[:, :r] * s[:r]) @ Qh[:r]
    best_loss = 0.5 * np.sum((best - M) ** 2)
    if kappa > 1 or r >= 4:  # κ = 1, r < r*: equal σ, the minimiser is not unique (the loss is)
        assert np.allclose(problem.optimum(r).numpy(), best, atol=1e-12, rtol=0)  # measured 2e-16
    # the default cutoff σ₁·max(m, n)·EPS64 ≈ 1e-14 separates σᵣ ≥ 1/30 from round-off σ ≈ 1e-16
    assert np.linalg.matrix_rank(problem.optimum(r).numpy()) == min(r, 4)
    # losses ≤ 1.5, sums of 2400 squares: ≤ 2400·EPS64·1.5 ≈ 8e-13 worst case, √2400·EPS64·1.5 ≈ 2e-14
    # typical (measured 4.4e-16); 1e-12
    assert problem.optimal_loss(r) == pytest.approx(best_loss, abs=1e-12)
    assert problem.loss(problem.optimum(r)) == pytest.approx(best_loss, abs=1e-12)
    assert problem.relative_loss(problem.optimum(r), r) == pytest.approx(0.0, abs=1e-12)
    # Eckart–Young: no rank-r matrix does better (random candidates and perturbed rank-r optima); the
    # 1e-3 perturbations raise the loss by ≥ 3e-5 (measured), 1e10 × the fp64 round-off of the loss
    g = torch.Generator().manual_seed(r)
    P, s, Qh = (torch.from_numpy(x) for x in (P[:, :r], s[:r], Qh[:r]))
    for _ in range(20):
        B = torch.randn(60, r, generator=g, dtype=torch.float64)
        A = torch.randn(r, 40, generator=g, dtype=torch.float64)
        assert problem.loss(B @ A * 0.1) >= best_loss
        assert problem.loss(((P + 1e-3 * B) * s) @ (Qh + 1e-3 * A)) >= best_loss


@pytest.mark.parametrize("kind", toy.PROBLEMS)
def test_gradient_is_the_autograd_gradient(kind):
    problem = toy.make_problem(kind, m=12, n=9, target_rank=3, kappa=5.0, seed=2)
    W = torch.randn(12, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    M = problem.target
    if kind == "factorisation":
        f = 0.5 * ((W - M) ** 2).sum()
    else:
        p = problem.measurements.shape[0]
        assert p == 5 * 3 * (12 + 9)
        f = 0.5 * ((problem.measurements @ W.reshape(-1) - problem.measurements @ M.reshape(-1)) ** 2).sum() / p
    (grad,) = torch.autograd.grad(f, W)
    value, G = problem.loss_and_gradient(W.detach())
    # fp64, p = 105 measurements of 108 terms: ≈ 100·EPS64·|·| ≈ 2e-14 relative (measured: identical, 3.6e-15)
    assert value == pytest.approx(f.item(), rel=1e-12)
    assert torch.allclose(G, grad, atol=1e-12, rtol=0)


def test_sensing_optimum_is_the_target_and_refuses_r_below_r_star():
    problem = toy.make_problem("sensing", m=12, n=9, target_rank=3, seed=0)
    # the same products of the same matrix: 0 (measured); even a one-ulp residual gives ≈ (EPS64·|y|)² ≪ 1e-28
    assert problem.loss(problem.target) < 1e-28
    assert torch.equal(problem.optimum(5), problem.target) and problem.optimal_loss(3) == 0.0  # the same formula
    with pytest.raises(ValueError, match="r < r"):
        problem.optimum(2)


def test_solver_gradients_are_the_factor_gradients():
    """One step of each solver equals the formula applied to autograd's factor gradients."""
    problem = toy.make_problem(m=10, n=7, target_rank=2, kappa=5.0, seed=0)
    for solver, init in toy.DEFAULT_RUNS:
        start = toy.solve(problem, solver, 3, init=init, iterations=3, seed=4)  # Θ ≠ 0 after step 1
        factors = [f.clone().requires_grad_() for f in start.factors]
        W = factors[0]
        for f in factors[1:]:
            W = W @ f
        loss = 0.5 * ((W - problem.target) ** 2).sum()
        grads = torch.autograd.grad(loss, factors)
        # continue the same run one step further and compare with a hand-made step
        nxt = toy.solve(problem, solver, 3, init=init, iterations=4, seed=4).factors
        eta = toy.DEFAULT_STEP_SIZES[solver]
        if solver == "lora-gd":
            expected = [f - eta * g for f, g in zip(start.factors, grads)]
        else:
            from polar_lib.geometry import landing_field, project_tangent, qr_retraction
            X, Theta, Yt = start.factors
            gX, gTheta, gYt = grads
            if solver == "polar-rgd":
                step = lambda Z, G: qr_retraction(Z - eta * project_tangent(Z, G))
            else:
                step = lambda Z, G: Z - eta * landing_field(Z, G, 1.0)
            expected = [step(X, gX), Theta - eta * gTheta, step(Yt.T, gYt.T).T]
        for got, want in zip(nxt, expected):  # fp64, one step of O(1) factors (measured 1.1e-16)
            assert torch.allclose(got, want, atol=1e-12, rtol=0), solver


# --- the solvers ---------------------------------------------------------------------------------

def test_polar_rgd_reaches_the_optimum_on_a_well_posed_case():
    """docs/toy-problem.md, "What the tests check": relative loss < 1e-8 at κ = 5, r = 8 within 2000 steps (η = 0.3)."""
    problem = toy.make_problem(kappa=5.0)
    run = toy.solve(problem, "polar-rgd", 8, iterations=2000)
    assert run.losses[-1] < 1e-8  # measured 1.4e-17: the claim, not a round-off bound
    assert problem.relative_loss(run.delta_w, 8) < 1e-8
    assert float(orthogonality_error(run.factors[0])) < 1e-12
    assert float(orthogonality_error(run.factors[2].T)) < 1e-12
    assert toy.fit_rate(run.iterations, run.losses).kind == "linear"


def test_polar_rgd_on_sensing_converges():
    problem = toy.make_problem("sensing", m=20, n=15, target_rank=2, kappa=2.0)
    run = toy.solve(problem, "polar-rgd", 4, iterations=1500)
    assert run.losses[-1] < 1e-8  # measured 4e-31


def test_under_parametrised_runs_reach_the_truncated_svd():
    problem = toy.make_problem(kappa=5.0)
    for solver, init, steps in [("lora-gd", "lora", 500), ("polar-rgd", "paper", 2500)]:  # PoLAR: saddle first
        run = toy.solve(problem, solver, 2, init=init, iterations=steps)
        assert abs(run.losses[-1]) < 1e-10, solver  # excess over f* = ½(σ₃² + σ₄²), round-off ≈ 1e-16 (measured 3.7e-17)
        # 1e-5 ≈ √(2·1e-10): the distance the loss check above allows (measured 3.2e-15)
        assert torch.allclose(run.delta_w, problem.optimum(2), atol=1e-5, rtol=0)


def test_inits():
    problem = toy.make_problem()
    lora = toy.solve(problem, "lora-gd", 8, init="lora", iterations=0, seed=1)
    B, A = lora.factors
    # U(±1/√40) = U(±0.158): the bound is exact; all 320 draws below 0.1 has probability 0.63³²⁰ ≈ 1e-64
    assert torch.count_nonzero(B) == 0 and A.abs().max() <= 1 / math.sqrt(40) and A.abs().max() > 0.1
    assert lora.losses[0] == pytest.approx(1.0, rel=1e-12)  # ΔW = 0: f(0)/f(0) (measured: exact)
    small = toy.solve(problem, "lora-gd", 8, init="small", iterations=0, init_scale=1e-3)
    # N(0, 1e-3²) from ≥ 320 draws: the sample std has a standard error ≤ 4 %, the 2× window is > 10 of them
    assert 0.5e-3 < small.factors[0].std() < 2e-3 and 0.5e-3 < small.factors[1].std() < 2e-3
    paper = toy.solve(problem, "polar-landing", 8, iterations=0)
    X, Theta, Yt = paper.factors
    assert torch.count_nonzero(Theta) == 0 and paper.orthogonality[0] < 1e-13
    again = toy.solve(problem, "polar-landing", 8, iterations=0)
    assert torch.equal(again.factors[0], X)  # seeded
    assert not torch.equal(toy.solve(problem, "polar-landing", 8, iterations=0, seed=1).factors[0], X)


def test_landing_stays_near_the_manifold_and_tracks_rgd():
    problem = toy.make_problem(kappa=5.0)
    landing = toy.solve(problem, "polar-landing", 8, iterations=2000)
    rgd = toy.solve(problem, "polar-rgd", 8, iterations=2000)
    # measured 8.8e-3 (λ = 1, η = 0.3): a property of the fp64 trajectory, which another kernel moves by
    # ≈ 1e-15 relative; 0.05 is 5.7× above
    assert np.nanmax(landing.orthogonality) < 0.05
    assert landing.orthogonality[-1] < 1e-10  # lands at the optimum (measured 5.4e-16)
    assert landing.losses[-1] < 1e-8  # measured 1.4e-17
    assert np.nanmax(rgd.orthogonality) < 1e-12  # QR retraction each step (measured 1.8e-15)


def test_divergence_stops_a_run_with_nan():
    run = toy.solve(toy.make_problem(), "lora-gd", 4, init="lora", step_size=5.0, iterations=200)
    assert np.isnan(run.losses[-1]) and np.isfinite(run.losses[0])


def test_record_every_thins_the_record():
    run = toy.solve(toy.make_problem(), "lora-gd", 4, iterations=25, record_every=10)
    assert run.iterations.tolist() == [0, 10, 20, 25]
    full = toy.solve(toy.make_problem(), "lora-gd", 4, iterations=25)
    assert np.array_equal(full.losses[[0, 10, 20, 25]], run.losses)  # the same steps: identical (measured)


@pytest.mark.parametrize("call, match", [
    (lambda: toy.make_problem("completion"), "kind must be one of"),
    (lambda: toy.make_problem(kappa=0.5), "kappa must be >= 1"),
    (lambda: toy.make_problem(target_rank=50), "target_rank must be <="),
    (lambda: toy.make_problem(measurements=10), "measurements is for kind='sensing'"),
    (lambda: toy.solve(toy.make_problem(), "adam", 4), "solver must be one of"),
    (lambda: toy.solve(toy.make_problem(), "polar-rgd", 4, init="lora"), "init for solver 'polar-rgd'"),
    (lambda: toy.solve(toy.make_problem(), "lora-gd", 0), "r must be an integer >= 1"),
    (lambda: toy.solve(toy.make_problem(), "lora-gd", 4, step_size=-1.0), "step_size must be"),
    (lambda: toy.solve(toy.make_problem(), "polar-landing", 4, landing_lambda=-1.0), "landing_lambda"),
    (lambda: toy.run_grid(step_sizes={"sgd": 0.1}), "step_sizes keys"),
])
def test_errors_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- rates ---------------------------------------------------------------------------------------

def test_fit_rate_on_a_geometric_sequence():
    t = np.arange(0, 3001)
    losses = 3.0 * 10.0 ** (-0.01 * t)  # reaches 1e-25 near t = 2548: the window ends there
    fit = toy.fit_rate(t, losses)
    # an exact line in log10: least squares over ~1300 points recovers it to ≈ 1e-13 relative (measured 7e-16)
    assert fit.kind == "linear" and fit.slope == pytest.approx(-0.01, rel=1e-9)
    # t = 2547 is the last point above 1e-25 (by 1.8 %, far above round-off); the window starts at ⌈stop/2⌉
    assert 2540 <= fit.stop <= 2548 and fit.start == math.ceil(fit.stop / 2)
    assert "linear" in fit.label()


def test_fit_rate_on_a_power_law():
    t = np.arange(1, 4001)
    losses = 5.0 * t ** -2.0  # an exact power law (not (1 + t)^-2, whose log-log slope is -2 + 2/t ≈ -1.9993)
    fit = toy.fit_rate(t, losses)
    # an exact line in log-log: least squares recovers -2 to ≈ 1e-13 (measured: exact); 1e-9
    assert fit.kind == "sublinear" and fit.slope == pytest.approx(-2.0, abs=1e-9)
    assert fit.start == 2000 and fit.stop == 4000
    assert "t^-2" in fit.label()


def test_fit_rate_on_a_stall_plateau_and_short_curves():
    t = np.arange(0, 4001)
    stall = 3e-9 * (1.0 + t) ** -0.05
    assert toy.fit_rate(t, stall).kind == "stalled"
    plateau = np.full(t.shape, 1e-2)
    fit = toy.fit_rate(t, plateau)
    assert fit.kind == "stalled" and fit.slope == pytest.approx(0.0, abs=1e-12)  # constant log10 y: ≈ 1e-16 (measured 4e-16)
    assert toy.fit_rate([0, 1], [1.0, 0.5]).kind == "undetermined"
    assert toy.fit_rate([0, 1, 2], [1e-30, 1e-30, 1e-30]).kind == "undetermined"
    with_nan = 10.0 ** (-0.02 * t[:100])
    fit = toy.fit_rate(t[:101], np.append(with_nan, np.nan))  # divergence ends the window
    assert fit.kind == "linear" and fit.stop == 99


def test_fit_rates_and_claim_table_on_a_small_grid():
    results = toy.run_grid(kappas=[1.0], ranks=[8], iterations=300)
    assert list(results.columns[:6]) == ["solver", "init", "kappa", "r", "iteration", "loss"]
    assert len(results) == 4 * 301
    rates = toy.fit_rates(results)
    assert len(rates) == 4 and set(rates.kind) <= {"linear", "sublinear", "stalled", "undetermined"}
    claims = toy.claim_table(rates)
    assert list(claims.lora_init) == ["small", "lora"]
    assert claims.claim_reproduced.dtype == bool


# --- the settings of the notebook and its profiles ---------------------------------------------

def notebook_settings():
    """The parameters cell of notebook 02, updated by each profile: one dict per scale."""
    cell = next(c for c in jupytext.read(NOTEBOOK).cells if "parameters" in c.metadata.get("tags", []))
    defaults = {}
    exec(cell.source, {}, defaults)
    scales = {"ci": defaults}
    for profile in ("cpu", "paper"):
        scales[profile] = {**defaults, **yaml.safe_load((PROFILES / profile / "02_toy_problem.yaml").read_text())}
    return scales


def test_profiles_follow_section_8():
    scales = notebook_settings()
    cpu = scales["cpu"]
    assert cpu["problem"] == "factorisation" and (cpu["m"], cpu["n"], cpu["target_rank"]) == (60, 40, 4)
    assert sorted(cpu["kappas"]) == [1, 5, 30] and sorted(cpu["ranks"]) == [4, 8]
    assert cpu["step_sizes"] == toy.DEFAULT_STEP_SIZES and cpu["iterations"] == 4000
    assert cpu["init_scale"] == 1e-3 and cpu["landing_lambda"] == 1.0
    for scale in scales.values():  # every scale shows every LoRA init beside PoLAR
        assert {tuple(run) for run in scale["runs"]} == set(toy.DEFAULT_RUNS)


def _settings_used():
    seen = set()
    for scale in notebook_settings().values():
        for kappa in scale["kappas"]:
            for r in scale["ranks"]:
                for solver, init in scale["runs"]:
                    seen.add((scale["problem"], kappa, r, solver, init, scale["step_sizes"][solver]))
    return sorted(seen)


@pytest.mark.parametrize("problem,kappa,r,solver,init,step", _settings_used())
def test_every_notebook_setting_is_stable_and_descends(problem, kappa, r, solver, init, step):
    """Each (κ, r, solver, init, η) of the notebook's scales: no divergence, the loss falls monotonically."""
    run = toy.solve(toy.make_problem(problem, kappa=kappa), solver, r, init=init, step_size=step, iterations=400)
    assert np.all(np.isfinite(run.losses))
    # PoLAR at r = r* may still sit on a saddle plateau, where the loss is a fixed share of f₀: ¼ at κ = 1
    # (one of 4 equal σ missing; measured 0.2500), 0.105 at κ = 5; every other setting ≤ 0.024. The next
    # saddle at κ = 1 is ½: 0.3 lies between the two, with a 1.2× margin to ¼ that round-off cannot
    # close (along the plateau the loss changes by 1e-8 per step) and ≥ 12× for every other setting.
    assert run.losses[-1] < 0.3 * run.losses[0]
    # monotone up to round-off: increases appear only at the floor (measured ≤ 7e-32), the loss round-off
    # is ≤ 2400·EPS64·f₀ ≈ 5e-13 elsewhere (measured: every such step decreases)
    assert np.all(np.diff(run.losses) <= 1e-12)


def test_section_8_observations_at_kappa_5():
    """The §8 picture at κ = 5 (2000 steps): r = 8 PoLAR and LoRA-init GD linear, small-init GD stalls."""
    problem = toy.make_problem(kappa=5.0)
    fits = {}
    for solver, init in toy.DEFAULT_RUNS:
        run = toy.solve(problem, solver, 8, init=init, iterations=2000)
        fits[solver, init] = (toy.fit_rate(run.iterations, run.losses), run.losses[-1])
    # small init: a fall of 0.016 decades over its window (< 0.1: stalled, 6×), final 4.4e-9 (44× above 1e-10)
    assert fits["lora-gd", "small"][0].kind == "stalled" and fits["lora-gd", "small"][1] > 1e-10
    for key in [("lora-gd", "lora"), ("polar-rgd", "paper"), ("polar-landing", "paper")]:
        assert fits[key][0].kind == "linear" and fits[key][1] < 1e-8, key  # measured ≤ 1.4e-17
    exact = toy.solve(problem, "lora-gd", 4, init="small", iterations=2000)
    assert exact.losses[-1] < 1e-20  # r = r*: GD from the small init is linear too (measured 1e-30)


def test_grid_arguments_take_a_notebooks_parameters_without_retyping():
    namespace = {"problem": "sensing", "kappas": [1, 5], "ranks": [4], "runs": [["polar-rgd", "paper"]],
                 "iterations": 3, "seed": 2, "plot_every": 1, "figures_dir": "x", "time": object()}
    arguments = toy.grid_arguments(namespace)
    assert arguments == {"kind": "sensing", "kappas": [1, 5], "ranks": [4], "runs": [["polar-rgd", "paper"]],
                         "iterations": 3, "seed": 2}
    frame = toy.run_grid(**arguments)  # lists from a YAML profile are accepted as (solver, init) pairs
    assert set(frame.solver) == {"polar-rgd"} and set(frame.kappa) == {1.0, 5.0} and frame.iteration.max() <= 3
