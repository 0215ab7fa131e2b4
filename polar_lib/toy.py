"""The theory toy problem: PoLAR against LoRA-style gradient descent on a canonical low-rank problem.

PoLAR (arXiv 2506.03133) claims "exponentially faster convergence" on a canonical low-rank
problem: Riemannian gradient descent on the polar-decomposed parametrisation ΔW = X Θ Yᵀ
(X ∈ St(m, r), Y ∈ St(n, r), Θ ∈ R^{r×r}) converges linearly, gradient descent on the LoRA (Burer–
Monteiro) factorisation ΔW = B A is slow (sublinear when over-parametrised, slowed by the condition
number). The paper's exact objective, sizes, steps and inits are not known to us; this module
implements the setting of docs/toy-problem.md, 'Our setting' (ours, checked), with every knob a
parameter.

Problem (``make_problem``): target M* = U diag(σ) Vᵀ ∈ R^{m×n} of rank r*, U, V seeded orthonormal,
σᵢ = κ^{−(i−1)/(r*−1)} (so σ₁ = 1, σ_{r*} = 1/κ). Objective over ΔW of rank ≤ r:

- ``"factorisation"``: f(ΔW) = ½ ‖ΔW − M*‖_F²; optimum the truncated SVD of M* (Eckart–Young),
  f* = ½ Σ_{i>r} σᵢ².
- ``"sensing"``: f(ΔW) = (1/2p) Σ_k (⟨A_k, ΔW⟩ − y_k)², y_k = ⟨A_k, M*⟩, A_k with i.i.d. N(0, 1)
  entries, p = 5 r* (m + n) by default; noiseless, so for r ≥ r* the optimum is M*, f* = 0
  (for r < r* there is no closed form and it is refused). Each step costs two products with the
  p×mn measurement matrix: ~5 ms at the default sizes, ~50× a factorisation step.

Solvers (one step each, all from the current iterate; G = ∇f(ΔW), the m×n Euclidean gradient):

- ``"lora-gd"``: B ← B − η G Aᵀ, A ← A − η Bᵀ G. Inits ``"small"`` (B, A ~ N(0, ω²), ω = 1e-3:
  small, balanced) and ``"lora"`` (PEFT's: B = 0, A ~ U(±1/√n), the law of kaiming_uniform(a=√5)).
- ``"polar-rgd"``: G_X = G Y Θᵀ, G_Y = Gᵀ X Θ, G_Θ = Xᵀ G Y; X ← qr(X − η (G_X − X sym(XᵀG_X))),
  likewise Y, Θ ← Θ − η G_Θ: embedded-metric Riemannian gradient, sign-fixed QR retraction
  (the paper's Algorithms 1 and 3 are retraction RGD). Init ``"paper"``: random Stiefel X, Y, Θ = 0.
- ``"polar-landing"``: X ← X − η Λ(X, G_X), Y likewise, Θ by GD, with the landing field Λ of the
  PoLAR code (``geometry.landing_field``, λ = 1 here). Init ``"paper"``.

Results are pandas DataFrames with one row per recorded iteration: solver, init, kappa, r,
iteration, loss, where ``loss`` is the relative excess loss (f(ΔW_t) − f*) / f(0), and
orthogonality = max(‖XᵀX − I‖_F, ‖YᵀY − I‖_F) for the PoLAR solvers (NaN for lora-gd).
``fit_rate`` fits the rate of one curve; ``fit_rates`` and ``claim_table`` summarise a grid.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ._checks import check_choice
from .geometry import landing_field, orthogonality_error, project_tangent, qr_retraction, random_stiefel

__all__ = [
    "PROBLEMS", "SOLVERS", "INITS", "DEFAULT_RUNS", "DEFAULT_STEP_SIZES",
    "RATE_FLOOR", "STALL_DECADES", "ToyProblem", "ToyRun", "RateFit",
    "make_problem", "solve", "run_grid", "fit_rate", "fit_rates", "claim_table", "claim_statement",
    "iterations_to",
]

PROBLEMS = ("factorisation", "sensing")
INITS = {"lora-gd": ("small", "lora"), "polar-rgd": ("paper",), "polar-landing": ("paper",)}
SOLVERS = tuple(INITS)
# docs/toy-problem.md, 'Solvers': LoRA-style GD η = 0.2, PoLAR η = 0.3 (σ₁ = 1); every LoRA init
# side by side.
DEFAULT_STEP_SIZES = {"lora-gd": 0.2, "polar-rgd": 0.3, "polar-landing": 0.3}
DEFAULT_RUNS = (("lora-gd", "small"), ("lora-gd", "lora"), ("polar-rgd", "paper"), ("polar-landing", "paper"))
RATE_FLOOR = 1e-25  # below this a float64 loss is round-off, not a rate
STALL_DECADES = 0.1  # a fall of less than this over the fitted window (< 21 %) is a stall


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_positive(name: str, value) -> float:
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ToyProblem:
    """A toy low-rank problem; see the module docstring. Tensors are float64.

    U (m×r*), V (n×r*) orthonormal, sigma (r*,) decreasing, target M* = U diag(σ) Vᵀ (m×n).
    For ``kind="sensing"``: ``measurements`` (p×m·n, row k = vec(A_k) row-major) and
    ``observations`` y (p,).
    """

    kind: str
    U: torch.Tensor
    sigma: torch.Tensor
    V: torch.Tensor
    kappa: float
    seed: int
    measurements: torch.Tensor | None = None
    observations: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.U.shape[0], self.V.shape[0]

    @property
    def target_rank(self) -> int:
        return self.sigma.shape[0]

    @property
    def target(self) -> torch.Tensor:
        """M* = U diag(σ) Vᵀ (m×n)."""
        return (self.U * self.sigma) @ self.V.T

    def loss_and_gradient(self, W: torch.Tensor) -> tuple[float, torch.Tensor]:
        """f(W) and its Euclidean gradient ∇f(W) (m×n)."""
        if self.kind == "factorisation":
            R = W - self.target
            return 0.5 * float((R * R).sum()), R
        p = self.measurements.shape[0]
        residual = self.measurements @ W.reshape(-1) - self.observations
        return 0.5 * float(residual @ residual) / p, (self.measurements.T @ residual / p).reshape(W.shape)

    def loss(self, W: torch.Tensor) -> float:
        """f(W)."""
        return self.loss_and_gradient(W)[0]

    @property
    def initial_loss(self) -> float:
        """f(0), the normaliser of the relative loss (½ ‖M*‖_F² for factorisation)."""
        return self.loss(torch.zeros(self.shape, dtype=self.U.dtype))

    def optimum(self, r: int) -> torch.Tensor:
        """A minimiser of f over rank ≤ r: the truncated SVD U_r diag(σ_{1:r}) V_rᵀ (M* when r ≥ r*).

        Unique unless σ_r = σ_{r+1} (e.g. κ = 1 and r < r*), where this is one of many minimisers.
        """
        r = _check_int("r", r, 1)
        if self.kind == "sensing" and r < self.target_rank:
            raise ValueError(f"sensing has no closed-form optimum for r < r* = {self.target_rank}, got r={r}")
        k = min(r, self.target_rank)
        return (self.U[:, :k] * self.sigma[:k]) @ self.V[:, :k].T

    def optimal_loss(self, r: int) -> float:
        """f* over rank ≤ r: ½ Σ_{i>r} σᵢ² (factorisation), 0 (sensing, r ≥ r*)."""
        r = _check_int("r", r, 1)
        if self.kind == "sensing":
            self.optimum(r)  # validates r
            return 0.0
        return 0.5 * float((self.sigma[r:] ** 2).sum())

    def relative_loss(self, W: torch.Tensor, r: int) -> float:
        """(f(W) − f*) / f(0) for adapters of rank r."""
        return (self.loss(W) - self.optimal_loss(r)) / self.initial_loss


def make_problem(kind: str = "factorisation", *, m: int = 60, n: int = 40, target_rank: int = 4,
                 kappa: float = 1.0, measurements: int | None = None, seed: int = 0) -> ToyProblem:
    """The toy problem of docs/toy-problem.md, 'Our setting'.

    Parameters
    ----------
    kind : ``"factorisation"`` (f = ½‖ΔW − M*‖_F²) or ``"sensing"`` (random Gaussian measurements).
    m, n : size of ΔW (60×40 by default).
    target_rank : r*, the rank of M* (4 by default).
    kappa : condition number σ₁/σ_{r*} ≥ 1; σᵢ = κ^{−(i−1)/(r*−1)} (the notebook: {1, 5, 30}).
    measurements : p for sensing; default 5 r* (m + n).
    seed : seeds U, V (and the measurements).
    """
    check_choice("kind", kind, PROBLEMS)
    m, n = _check_int("m", m, 1), _check_int("n", n, 1)
    target_rank = _check_int("target_rank", target_rank, 1)
    if target_rank > min(m, n):
        raise ValueError(f"target_rank must be <= min(m, n) = {min(m, n)}, got {target_rank}")
    kappa = _check_positive("kappa", kappa)
    if kappa < 1:
        raise ValueError(f"kappa must be >= 1 (σ₁/σ_r*), got {kappa!r}")
    seed = _check_int("seed", seed, 0)
    g = torch.Generator().manual_seed(seed)
    U, V = random_stiefel(m, target_rank, generator=g), random_stiefel(n, target_rank, generator=g)
    exponents = torch.arange(target_rank, dtype=torch.float64) / max(target_rank - 1, 1)
    sigma = kappa ** (-exponents)
    if kind == "factorisation":
        if measurements is not None:
            raise ValueError(f"measurements is for kind='sensing' only, got {measurements!r}")
        return ToyProblem(kind, U, sigma, V, kappa, seed)
    p = 5 * target_rank * (m + n) if measurements is None else _check_int("measurements", measurements, 1)
    A = torch.randn(p, m * n, generator=g, dtype=torch.float64)
    y = A @ ((U * sigma) @ V.T).reshape(-1)
    return ToyProblem(kind, U, sigma, V, kappa, seed, A, y)


@dataclass
class ToyRun:
    """One solver run: ``losses[k]`` is the relative loss at ``iterations[k]`` (NaN after divergence);
    ``orthogonality[k]`` max ‖ZᵀZ − I‖_F of the PoLAR factors (NaN for lora-gd); ``factors`` the last
    iterate: (B, A) for lora-gd, (X, Θ, Yᵀ) for PoLAR, so ΔW is their product."""

    solver: str
    init: str
    r: int
    iterations: np.ndarray
    losses: np.ndarray
    orthogonality: np.ndarray
    factors: tuple[torch.Tensor, ...]

    @property
    def delta_w(self) -> torch.Tensor:
        out = self.factors[0]
        for factor in self.factors[1:]:
            out = out @ factor
        return out


@contextmanager
def _one_thread():
    """Run tiny float64 products on one intra-op thread: faster, and torch's thread pool spins (and
    slows down ~100×) when the CPU is shared. The caller's setting is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _initial_factors(solver: str, init: str, m: int, n: int, r: int, init_scale: float, g: torch.Generator):
    if solver == "lora-gd":
        if init == "small":  # small, balanced: both factors N(0, ω²)
            return [init_scale * torch.randn(m, r, generator=g, dtype=torch.float64),
                    init_scale * torch.randn(r, n, generator=g, dtype=torch.float64)]
        bound = 1 / math.sqrt(n)  # PEFT LoRA: B = 0, A ~ kaiming_uniform(a=√5) = U(±1/√n)
        return [torch.zeros(m, r, dtype=torch.float64),
                (2 * torch.rand(r, n, generator=g, dtype=torch.float64) - 1) * bound]
    # PoLAR's default: orthonormal B and Aᵀ, Θ = 0 (docs/polar.md, 'Initialisation')
    X, Y = random_stiefel(m, r, generator=g), random_stiefel(n, r, generator=g)
    return [X, torch.zeros(r, r, dtype=torch.float64), Y]


def solve(problem: ToyProblem, solver: str, r: int, *, init: str | None = None, step_size: float | None = None,
          iterations: int = 4000, seed: int = 0, init_scale: float = 1e-3, landing_lambda: float = 1.0,
          record_every: int = 1) -> ToyRun:
    """Run one solver on ``problem`` with adapters of rank ``r``.

    Parameters
    ----------
    solver : ``"lora-gd"``, ``"polar-rgd"`` or ``"polar-landing"`` (module docstring).
    r : adapter rank (r = r* exact, r > r* over-parametrised, r < r* under-parametrised).
    init : ``"small"`` or ``"lora"`` for lora-gd (default ``"small"``), ``"paper"`` for PoLAR.
    step_size : η; default ``DEFAULT_STEP_SIZES[solver]`` (0.2 / 0.3 / 0.3).
    iterations : number of steps T; losses are recorded at 0, record_every, …, and T.
    seed : seeds the initialisation (the problem has its own seed).
    init_scale : ω of the ``"small"`` init.
    landing_lambda : λ of the landing field (``"polar-landing"`` only).

    A run whose loss turns non-finite or exceeds 1e12·f(0) stops; later losses are NaN.
    """
    check_choice("solver", solver, SOLVERS)
    init = INITS[solver][0] if init is None else init
    check_choice(f"init for solver {solver!r}", init, INITS[solver])
    m, n = problem.shape
    r = _check_int("r", r, 1)
    if r > min(m, n):
        raise ValueError(f"r must be <= min(m, n) = {min(m, n)}, got {r}")
    eta = _check_positive("step_size", DEFAULT_STEP_SIZES[solver] if step_size is None else step_size)
    iterations = _check_int("iterations", iterations, 0)
    record_every = _check_int("record_every", record_every, 1)
    init_scale = _check_positive("init_scale", init_scale)
    seed = _check_int("seed", seed, 0)
    if landing_lambda < 0:
        raise ValueError(f"landing_lambda must be >= 0, got {landing_lambda!r}")
    with _one_thread():
        return _solve(problem, solver, init, r, eta, iterations, seed, init_scale, landing_lambda, record_every)


def _solve(problem, solver, init, r, eta, iterations, seed, init_scale, landing_lambda, record_every) -> ToyRun:
    m, n = problem.shape
    f_star, f_zero = problem.optimal_loss(r), problem.initial_loss
    g = torch.Generator().manual_seed(seed + 1_000_003)  # a stream apart from the problem's
    factors = _initial_factors(solver, init, m, n, r, init_scale, g)
    recorded = sorted(set(range(0, iterations + 1, record_every)) | {iterations})
    slot = {t: k for k, t in enumerate(recorded)}
    losses = np.full(len(recorded), np.nan)
    ortho = np.full(len(recorded), np.nan)

    for t in range(iterations + 1):
        if solver == "lora-gd":
            B, A = factors
            f, G = problem.loss_and_gradient(B @ A)
        else:
            X, Theta, Y = factors
            f, G = problem.loss_and_gradient(X @ Theta @ Y.T)
        if not math.isfinite(f) or f > 1e12 * f_zero:
            break
        if t in slot:
            losses[slot[t]] = (f - f_star) / f_zero
            if solver != "lora-gd":
                ortho[slot[t]] = max(float(orthogonality_error(X)), float(orthogonality_error(Y)))
        if t == iterations:
            break
        if solver == "lora-gd":
            factors = [B - eta * (G @ A.T), A - eta * (B.T @ G)]
            continue
        GY, GtX = G @ Y, G.T @ X  # m×r, n×r
        grad_X, grad_Y, grad_Theta = GY @ Theta.T, GtX @ Theta, X.T @ GY
        if solver == "polar-rgd":
            X = qr_retraction(X - eta * project_tangent(X, grad_X))
            Y = qr_retraction(Y - eta * project_tangent(Y, grad_Y))
        else:
            X = X - eta * landing_field(X, grad_X, landing_lambda)
            Y = Y - eta * landing_field(Y, grad_Y, landing_lambda)
        factors = [X, Theta - eta * grad_Theta, Y]

    if solver != "lora-gd":
        factors = [factors[0], factors[1], factors[2].T]
    return ToyRun(solver, init, r, np.asarray(recorded), losses, ortho, tuple(factors))


def run_grid(kind: str = "factorisation", *, kappas=(1.0, 5.0, 30.0), ranks=(4, 8),
             runs=DEFAULT_RUNS, step_sizes: dict | None = None, iterations: int = 4000, m: int = 60,
             n: int = 40, target_rank: int = 4, seed: int = 0, init_scale: float = 1e-3,
             landing_lambda: float = 1.0, record_every: int = 1) -> pd.DataFrame:
    """Every (κ, r, solver, init) of a grid; one row per recorded iteration.

    Columns: solver, init, kappa, r, iteration, loss (relative excess loss), orthogonality.
    ``runs`` lists (solver, init) pairs; ``step_sizes`` overrides ``DEFAULT_STEP_SIZES`` per solver.
    ``grid_arguments(namespace)`` picks these arguments out of a notebook's parameters.
    """
    steps = dict(DEFAULT_STEP_SIZES)
    for solver in (step_sizes or {}):
        if solver not in SOLVERS:
            raise ValueError(f"step_sizes keys must be among {SOLVERS}, got {solver!r}")
    steps.update(step_sizes or {})
    frames = []
    for kappa in kappas:
        problem = make_problem(kind, m=m, n=n, target_rank=target_rank, kappa=kappa, seed=seed)
        for r in ranks:
            for solver, init in map(tuple, runs):
                run = solve(problem, solver, r, init=init, step_size=steps[solver], iterations=iterations,
                            seed=seed, init_scale=init_scale, landing_lambda=landing_lambda,
                            record_every=record_every)
                frames.append(pd.DataFrame({
                    "solver": solver, "init": init, "kappa": float(kappa), "r": r,
                    "iteration": run.iterations, "loss": run.losses, "orthogonality": run.orthogonality}))
    return pd.concat(frames, ignore_index=True)


def grid_arguments(namespace: dict) -> dict:
    """The arguments of ``run_grid`` found in ``namespace`` (a notebook's ``globals()``), its ``problem``
    as ``kind``: the parameters cell's values, passed without retyping them."""
    names = set(inspect.signature(run_grid).parameters) - {"kind"}
    return {name: namespace[name] for name in names if name in namespace} | (
        {"kind": namespace["problem"]} if "problem" in namespace else {})


@dataclass(frozen=True)
class RateFit:
    """Fitted rate of one loss curve.

    kind : ``"linear"`` (log10 loss straight in t: loss ≈ C·10^{slope·t}), ``"sublinear"`` (straight
        in log10 t: loss ≈ C·t^{slope}), ``"stalled"`` (the loss fell by less than ``STALL_DECADES``
        decades over the window: no rate can be told apart; slope is then the log–log one, as for a
        sublinear curve) or ``"undetermined"`` (fewer than 3 points to fit).
    slope : the slope of the chosen fit (decades per iteration for linear, the exponent otherwise).
    linear_slope, loglog_slope : both fits' slopes; start, stop : the fitted iteration window.
    """

    kind: str
    slope: float
    linear_slope: float
    loglog_slope: float
    start: int
    stop: int

    def label(self) -> str:
        if self.kind == "linear":
            return f"linear, {self.slope:.2g} dec/it"
        if self.kind in ("sublinear", "stalled"):
            return f"{self.kind}, t^{self.slope:.2g}"
        return "rate n/a"


def fit_rate(iterations, losses, floor: float = RATE_FLOOR, stall_decades: float = STALL_DECADES) -> RateFit:
    """Fit the rate of a loss curve (docs/toy-problem.md, 'Rates').

    The window is the second half of the run before the loss first falls to ``floor`` (or turns
    non-finite): t ∈ [t_end/2, t_end]. Two least-squares lines are fitted there: log10 loss against
    t (linear rate; slope in decades per iteration) and log10 loss against log10 t (sublinear rate;
    the exponent). The fit with the smaller residual names the kind, unless log10 loss fell by less
    than ``stall_decades`` over the window (``"stalled"``).
    """
    t = np.asarray(iterations, dtype=float)
    y = np.asarray(losses, dtype=float)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError(f"iterations and losses must be 1-d of equal length, got {t.shape} and {y.shape}")
    order = np.argsort(t)
    t, y = t[order], y[order]
    bad = ~(np.isfinite(y) & (y > floor))
    end = int(np.argmax(bad)) if bad.any() else len(y)  # first point at or below the floor
    if end == 0:
        return RateFit("undetermined", math.nan, math.nan, math.nan, 0, 0)
    t_end = t[end - 1]
    keep = (t >= t_end / 2) & (t > 0) & (np.arange(len(t)) < end)
    if keep.sum() < 3:
        return RateFit("undetermined", math.nan, math.nan, math.nan, int(t[0]), int(t_end))
    tw, yw = t[keep], np.log10(y[keep])
    fits = {}
    for name, x in (("linear", tw), ("sublinear", np.log10(tw))):
        coeffs, residual, *_ = np.polyfit(x, yw, 1, full=True)
        fits[name] = (float(coeffs[0]), float(residual[0]) if len(residual) else 0.0)
    kind = min(fits, key=lambda k: fits[k][1])
    if yw[0] - yw[-1] < stall_decades:
        kind = "stalled"
        return RateFit(kind, fits["sublinear"][0], fits["linear"][0], fits["sublinear"][0], int(tw[0]), int(tw[-1]))
    return RateFit(kind, fits[kind][0], fits["linear"][0], fits["sublinear"][0], int(tw[0]), int(tw[-1]))


def iterations_to(iterations, losses, tol: float) -> float:
    """The first recorded iteration with loss ≤ tol (inf if never)."""
    losses = np.asarray(losses, dtype=float)
    hit = np.flatnonzero(losses <= tol)
    return float(np.asarray(iterations)[hit[0]]) if hit.size else math.inf


def fit_rates(results: pd.DataFrame, floor: float = RATE_FLOOR, tol: float = 1e-10) -> pd.DataFrame:
    """One row per run of ``run_grid``'s frame: its fitted rate, final loss and iterations to ``tol``.

    Columns: solver, init, kappa, r, kind, slope, linear_slope, loglog_slope, final_loss,
    iterations_to_tol, max_orthogonality (PoLAR: worst ‖ZᵀZ − I‖_F; NaN for lora-gd), label (for a
    legend).
    """
    rows = []
    for (solver, init, kappa, r), run in results.groupby(["solver", "init", "kappa", "r"], sort=False):
        fit = fit_rate(run["iteration"], run["loss"], floor)
        final = run["loss"].iloc[-1]
        rows.append({"solver": solver, "init": init, "kappa": kappa, "r": r, "kind": fit.kind, "slope": fit.slope,
                     "linear_slope": fit.linear_slope, "loglog_slope": fit.loglog_slope, "final_loss": final,
                     "iterations_to_tol": iterations_to(run["iteration"], run["loss"], tol),
                     "max_orthogonality": run["orthogonality"].max(),
                     "label": fit.label()})
    return pd.DataFrame(rows)


def claim_table(rates: pd.DataFrame, tol: float = 1e-10) -> pd.DataFrame:
    """Does a setting reproduce the paper's claim? One row per (κ, r, LoRA init).

    The claim holds in a setting when PoLAR-RGD converges at a linear rate (reaches ``tol``, linear
    fit) while LoRA-style GD from that init does not match it: it is sublinear, or it needs at
    least 2× more iterations to reach ``tol`` (inf if never).
    """
    polar = rates[rates.solver == "polar-rgd"].set_index(["kappa", "r"])
    rows = []
    for _, base in rates[rates.solver == "lora-gd"].iterrows():
        key = (base.kappa, base.r)
        if key not in polar.index:
            continue
        p = polar.loc[key]
        polar_linear = p.kind == "linear" and math.isfinite(p.iterations_to_tol)
        base_slow = base.kind != "linear" or base.iterations_to_tol >= 2 * p.iterations_to_tol
        rows.append({"kappa": base.kappa, "r": base.r, "lora_init": base.init,
                     "polar_rgd": f"{p.kind}, final {p.final_loss:.1e}",
                     "lora_gd": f"{base.kind}, final {base.final_loss:.1e}",
                     "polar_iterations_to_tol": p.iterations_to_tol,
                     "lora_iterations_to_tol": base.iterations_to_tol,
                     "claim_reproduced": bool(polar_linear and base_slow)})
    return pd.DataFrame(rows)


def claim_statement(claims: pd.DataFrame) -> str:
    """The verdict of ``claim_table`` in words: where the paper's claim holds and where it does not."""
    def settings(rows):
        named = [f"κ = {row.kappa:g}, r = {row.r} vs {row.lora_init} init" for row in rows.itertuples()]
        return "; ".join(named) or "none"

    held, failed = claims[claims.claim_reproduced], claims[~claims.claim_reproduced]
    return (f"Claim reproduced (PoLAR-RGD linear, LoRA-style GD slower) in {len(held)} of {len(claims)} settings: "
            f"{settings(held)}.\nNot reproduced in: {settings(failed)}.")
