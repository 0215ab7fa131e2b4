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
# # 01 — Stable rank: does LoRA's update collapse while PoLAR's uses its rank?
#
# Reproduces **Figure 1 of the PoLAR paper** (arXiv 2506.03133: the stable rank of ΔW per layer,
# Llama-2-7B, `down_proj`, Social IQa, r = 32 — **LoRA 1.06 against PoLAR 5.49**) and the stable-rank
# panels of the PoLAR README (per-layer medians at r = 4/8/16/32 — PoLAR ≈ 2.7/4.1/6.4/11 on
# HellaSwag while LoRA stays at 2.2–2.5 — and the direction-diversity heatmaps).
#
# The **stable rank** sr(ΔW) = ‖ΔW‖_F² / ‖ΔW‖₂² = Σσᵢ²/σ₁² lies in [1, r]: it counts how many
# directions an update really uses. The paper's claim is that LoRA's ΔW = s·BA collapses onto one or
# two directions whatever r is, while PoLAR's ΔW = s·BΘA (B, Aᵀ kept near the Stiefel manifold by the
# landing field) spreads over more directions as r grows. Here every adapter is trained with
# `polar_lib.train` (one training path, runs cached by their full config), and sr is computed from the
# saved factors with `polar_lib.stable_rank` (thin QRs, no dense ΔW; methods.md §7).
#
# | | paper (Fig. 1, README) | this notebook, `make figures` (CPU profile) |
# |---|---|---|
# | model | Llama-2-7B | SmolLM2-135M-Instruct (30 layers; weights 4-bit quantised then dequantised to fp32) |
# | data | Social IQa / HellaSwag training sets, 5 epochs | ARC-Easy training set, a few dozen steps |
# | modules | q, k, v, up, down | q, k, v, up, down |
# | lr | PoLAR 4e-3, LoRA 4e-4, cosine | the same peak rates, held constant after warm-up |
#
# The CPU scale is tiny next to the paper's (see the parameters below and the findings at the end):
# it shows the **beginning** of a paper-scale run. The defaults in the parameters cell are the CI
# scale (a random 2-layer model: numbers meaningless, the code path the same); `make figures` runs
# `profiles/cpu/01_stable_rank.yaml`, and `make figures PROFILE=paper` the paper's model and ranks.

# %%
import sys

if "google.colab" in sys.modules:  # Colab: the project (code and its data/ registry) and its dependencies
    # !git clone -q --depth 1 https://github.com/polar-lib/polar_lib /content/polar_lib
    # %pip install -q /content/polar_lib
    sys.path.insert(0, "/content/polar_lib")

# %% tags=["parameters"]
model = "tiny-llama"  # "smollm2-135m" (CPU profile), "meta-llama/Llama-2-7b-hf" (paper profile)
task = "arc_easy"  # training task (one with a train split)
methods = ["lora", "polar"]  # the rank sweep
ranks = [4, 8]
other_methods = []  # more registry methods, trained at `other_rank` with the same budget
other_rank = 8
target_modules = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]  # the paper's modules
lora_alpha = 32  # the paper's α for every r (scale α / r)
max_steps = 2
epochs = None  # when set, max_steps is ceil(epochs × training examples / (batch_size × grad_accum))
batch_size = 4
grad_accum = 1
max_length = 128
train_limit = 32  # first N training examples (None: all)
loss_on = "answer"  # "answer" tokens only, or the whole "sequence" (the PoLAR code)
scheduler = "constant_with_warmup"  # the paper: "cosine" over 5 epochs
bf16 = False
seed = 0
save_steps = 1  # checkpoint interval: the stable rank over training is read from the checkpoints
heatmap_module = "down_proj"  # the module of the per-layer plot and of the heatmaps (the paper's Fig. 1)
heatmap_layer = None  # None: the middle layer
heatmap_rows = 96  # rows of ΔW sampled for a heatmap
runs_dir = "../runs"
figures_dir = "../runs/figures-ci"

# %%
import math
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from polar_lib.figures import quiet, save_figure
from polar_lib.stable_rank import adapter_factors, adapter_stable_ranks, direction_distances, plot_direction_heatmap
from polar_lib.train import RunConfig, load_run, steps_for_epochs, train

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)
warnings.filterwarnings("ignore", category=FutureWarning)

figures_dir = Path(figures_dir)
if epochs is not None:
    max_steps = steps_for_epochs(task, epochs, batch_size, grad_accum, train_limit)
common = dict(model=model, task=task, lora_alpha=lora_alpha, target_modules=target_modules, max_steps=max_steps,
              batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, train_limit=train_limit,
              loss_on=loss_on, scheduler=scheduler, bf16=bf16, seed=seed, save_steps=save_steps)
print(f"{model} on {task}: {max_steps} steps × {batch_size * grad_accum} examples, modules {target_modules}")

# %% [markdown]
# ## Training
# One run per (method, rank), all with the same steps, batch and data; each method at its registry
# learning rate (PoLAR 4e-3, LoRA 4e-4: the paper's). A finished run is reused from `runs_dir`, so
# notebook 03 shares these runs where its configuration is the same.

# %%
configs = {(method, r): RunConfig(method=method, r=r, **common) for method in methods for r in ranks}
configs |= {(method, other_rank): RunConfig(method=method, r=other_rank, **common) for method in other_methods}
run_dirs = {}
for (method, r), config in configs.items():
    start = time.time()
    with quiet():
        run_dirs[method, r] = train(config, runs_dir, progress=False)
    losses = load_run(run_dirs[method, r])[1]["loss_history"]
    print(f"{method:>16} r={r:<3} loss {losses[0]:.2f} → {losses[-1]:.2f}   ({time.time() - start:.0f} s)")

# %%
loss_frame = pd.DataFrame([{"method": method, "r": r, "logged step": i, "training loss": loss}
                           for (method, r), run_dir in run_dirs.items()
                           for i, loss in enumerate(load_run(run_dir)[1]["loss_history"])])
loss_frame["smoothed loss"] = (loss_frame.groupby(["method", "r"])["training loss"]
                               .transform(lambda x: x.rolling(5, min_periods=1).mean()))
grid = sns.relplot(loss_frame, x="logged step", y="smoothed loss", hue="method", col="r", kind="line",
                   height=2.8, aspect=1.1)
grid.set_axis_labels("logged step", "training loss (mean of 5 logs)")
grid.figure.suptitle(f"Training loss ({model}, {task}, loss on the {loss_on} tokens)", y=1.04)
save_figure(grid.figure, loss_frame, "01_training_loss", figures_dir)
plt.show()

# %% [markdown]
# ## Stable rank of every adapted matrix
# One row per (run, layer, module); TopLoRA has no single ΔW (it is token-dependent) and is left out
# with a warning.

# %%
frames = []
for (method, r), run_dir in run_dirs.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = adapter_stable_ranks(run_dir / "adapter")
    for warning in caught:
        print(f"{method}: {warning.message}"[:200])
    frames.append(frame.assign(method=method, r=r))  # registry names ("lora+adaprelora" is a LoRA adapter)
stable = pd.concat(frames, ignore_index=True)
sweep = stable[stable.method.isin(methods)]
per_module = sweep.groupby(["module", "method", "r"]).stable_rank.median().unstack("r")
overall = sweep.groupby(["method", "r"]).stable_rank.median().unstack("r")
print("median stable rank over layers, per module type and over all adapted matrices")
pd.concat([per_module, pd.concat({"all modules": overall})])

# %%
plot_frame = sweep[["method", "r", "module", "layer", "stable_rank"]]
grid = sns.relplot(plot_frame, x="r", y="stable_rank", hue="method", col="module", kind="line", marker="o",
                   estimator="median", errorbar=("pi", 50), height=2.8, aspect=0.9)
for ax in grid.axes.flat:
    ax.plot(ranks, ranks, ls="--", color="grey", lw=1, label="sr = r (upper bound)")
    ax.set(xscale="log", yscale="log", xticks=ranks, xticklabels=ranks, ylim=(0.9, max(ranks) * 1.2))
    ax.minorticks_off()
    ax.set_yticks([1, 2, 4, 8, 16, 32][:1 + int(math.log2(max(ranks)))])
    ax.set_yticklabels([1, 2, 4, 8, 16, 32][:1 + int(math.log2(max(ranks)))])
grid.axes.flat[0].legend(loc="upper left", fontsize=8)
grid.set_axis_labels("adapter rank r", "stable rank of ΔW")
grid.figure.suptitle("Stable rank against rank: median over layers, band = interquartile range", y=1.04)
save_figure(grid.figure, plot_frame, "01_stable_rank_vs_rank", figures_dir)
plt.show()

# %% [markdown]
# ## Per layer, and the distribution across layers
# The paper's Fig. 1 plots sr of `down_proj` against the layer index; below it, the distribution of sr
# over all layers for each module type.

# %%
layer_frame = sweep[sweep.module == heatmap_module][["method", "r", "layer", "stable_rank"]]
grid = sns.relplot(layer_frame, x="layer", y="stable_rank", hue="method", col="r", kind="line", marker="o",
                   markersize=4, height=2.8, aspect=1.1)
grid.set_axis_labels("layer", f"stable rank ({heatmap_module})")
grid.figure.suptitle(f"Stable rank of ΔW per layer, {heatmap_module} (the paper's Fig. 1 at each r)", y=1.04)
save_figure(grid.figure, layer_frame, "01_stable_rank_per_layer", figures_dir)
plt.show()

# %%
grid = sns.catplot(plot_frame, x="r", y="stable_rank", hue="method", col="module", kind="box", height=2.8,
                   aspect=0.9, fliersize=2, linewidth=0.8)
grid.set_axis_labels("adapter rank r", "stable rank of ΔW")
grid.figure.suptitle("Distribution of the stable rank across layers", y=1.04)
save_figure(grid.figure, plot_frame, "01_stable_rank_distribution", figures_dir)
plt.show()

# %% [markdown]
# ## Over training
# The same stable ranks read from the runs' checkpoints (every `save_steps` steps): the paper reports
# PoLAR's climbing over training while LoRA's stays flat.

# %%
trajectory = []
for method, r in ((m, r) for m in methods for r in ranks):
    checkpoints = sorted((run_dirs[method, r] / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    for folder in checkpoints:
        frame = adapter_stable_ranks(folder)
        trajectory.append({"method": method, "r": r, "step": int(folder.name[11:]),
                           "median stable rank": frame.stable_rank.median()})
trajectory = pd.DataFrame(trajectory, columns=["method", "r", "step", "median stable rank"])
if len(trajectory):
    grid = sns.relplot(trajectory, x="step", y="median stable rank", hue="method", col="r", kind="line",
                       marker="o", height=2.8, aspect=1.0)
    grid.figure.suptitle("Median stable rank of ΔW (all adapted matrices) over training", y=1.04)
    save_figure(grid.figure, trajectory, "01_stable_rank_over_training", figures_dir)
    plt.show()

# %% [markdown]
# ## Every method at one rank
# The other registry methods trained with the same budget at r = `other_rank` (skipped when
# `other_methods` is empty); their accuracy, over three seeds, is in notebook 03. Two caveats when
# reading it: StelLA's update s·USVᵀ is not zero at initialisation (S = I, so all r singular values are
# equal and sr = r at step 0; methods.md §3), so its stable rank mostly shows how little the first
# steps move S; DoRA is measured as s·BA, without its magnitude vector (as the PoLAR code measures it);
# TopLoRA's ΔW depends on the token, so it has no stable rank.

# %%
at_rank = stable[(stable.r == other_rank) & stable.method.isin(methods + other_methods)]
at_rank = at_rank[["method", "module", "layer", "stable_rank"]]
if other_methods and len(at_rank):
    order = [m for m in methods + other_methods if m in set(at_rank.method)]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    sns.boxplot(at_rank, x="method", y="stable_rank", hue="module", order=order, ax=ax, fliersize=2, linewidth=0.8)
    ax.axhline(other_rank, ls="--", color="grey", lw=1, label=f"sr = r = {other_rank}")
    ax.set(xlabel="", ylabel="stable rank of ΔW", title=f"All methods at r = {other_rank}: distribution across layers")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(fig, at_rank, "01_stable_rank_methods", figures_dir)
    plt.show()
    missing = [m for m in other_methods if m not in set(at_rank.method)]
    if missing:
        print("no stable rank (token-dependent ΔW):", ", ".join(missing))

# %% [markdown]
# ## Direction diversity (the paper's heatmaps)
# Pairwise distances ‖w̃ᵢ − w̃ⱼ‖ ∈ [0, 2] between the normalised rows of ΔW (a sample of rows of one
# matrix), in average-linkage order. Dark blocks are rows pointing the same way: a collapsed update
# is one dark block (every row a multiple of the same vector, up to sign: distances 0 or 2).

# %%
heatmap_runs = [(method, max(ranks)) for method in methods]
factors = {key: adapter_factors(run_dirs[key] / "adapter") for key in heatmap_runs}
layers = sorted({f.layer for f in factors[heatmap_runs[0]] if f.module == heatmap_module})
layer = layers[len(layers) // 2] if heatmap_layer is None else heatmap_layer
fig, axes = plt.subplots(1, len(heatmap_runs), figsize=(4.2 * len(heatmap_runs), 3.6), squeeze=False)
heat_rows = []
for ax, (method, r) in zip(axes.flat, heatmap_runs):
    factor = next(f for f in factors[method, r] if f.module == heatmap_module and f.layer == layer)
    distances = direction_distances(factor.B, factor.A, factor.core, max_rows=heatmap_rows, seed=seed)
    sr = stable.query("method == @method and r == @r and module == @heatmap_module and layer == @layer").stable_rank
    plot_direction_heatmap(distances, ax=ax, title=f"{method}, r = {r}: sr = {sr.iloc[0]:.2f}")
    ax.grid(False)
    ordered = distances.ordered
    heat_rows += [{"method": method, "r": r, "i": i, "j": j, "distance": round(float(ordered[i, j]), 3)}
                  for i in range(len(ordered)) for j in range(len(ordered))]
fig.suptitle(f"{heatmap_module}, layer {layer}: distances between normalised rows of ΔW", y=1.02)
fig.tight_layout()
save_figure(fig, pd.DataFrame(heat_rows), "01_direction_heatmaps", figures_dir)
plt.show()

# %% [markdown]
# ## What we found, next to the paper
# The numbers below are computed from the runs above; the verdict line answers the question of the
# title with two explicit criteria: LoRA stays *far below r* when its median sr at the largest rank is at
# most a quarter of that rank, and PoLAR's *grows* when its median sr rises with r and exceeds
# LoRA's at the largest rank.

# %%
overall = sweep.groupby(["method", "r"]).stable_rank.median().unstack("r")
down = sweep[sweep.module == heatmap_module].groupby(["method", "r"]).stable_rank.median().unstack("r")
print("median stable rank, all adapted matrices:\n", overall.round(2).to_string(), sep="")
print(f"\nmedian stable rank, {heatmap_module} only:\n", down.round(2).to_string(), sep="")
print("\npaper (Llama-2-7B): Fig. 1, down_proj, SIQA, r = 32 — LoRA 1.06, PoLAR 5.49;"
      "\n  README, HellaSwag, r = 4/8/16/32 — PoLAR 2.7/4.1/6.4/11, LoRA 2.2–2.5")
if {"lora", "polar"} <= set(overall.index):
    r_max = max(ranks)
    lora_low = overall.loc["lora", r_max] <= r_max / 4
    polar_grows = bool(np.all(np.diff(overall.loc["polar", sorted(ranks)].to_numpy()) > 0)) and \
        overall.loc["polar", r_max] > overall.loc["lora", r_max]
    print(f"\nverdict: LoRA stays far below r (median sr {overall.loc['lora', r_max]:.2f} ≤ r/4 at r = {r_max}): "
          f"{'yes' if lora_low else 'no'}; PoLAR's grows with r and exceeds LoRA's "
          f"({' → '.join(f'{v:.2f}' for v in overall.loc['polar', sorted(ranks)])}): {'yes' if polar_grows else 'no'}")

# %% [markdown]
# **What we found (CPU profile: SmolLM2-135M-Instruct with 4-bit-quantised-then-dequantised weights,
# ARC-Easy, q/k/v/up/down, 20 steps of 2 examples — 40 training examples, under 2 % of one epoch; the
# paper trains Llama-2-7B for 5 epochs at batch 128).** The numbers are the ones printed above.
#
# - **LoRA's stable rank stays far below r — yes.** Its median over all adapted matrices is about
#   1.6–1.8 at every rank from 4 to 32: a rank-32 LoRA update is, by this measure, a rank-2 update.
#   The heatmap shows why: in LoRA's `down_proj` the rows of ΔW fall into two large blocks, rows
#   pointing along one direction or against it — the collapse of the paper's Fig. 1.
# - **PoLAR's stable rank grows with r — yes, but at this scale it does not pull ahead of LoRA.** Its
#   median rises steadily with the rank (about 1.2 at r = 4 to 1.7 at r = 32), which LoRA's does not,
#   but it stays below LoRA's for r ≤ 16 and only reaches it at r = 32; on `down_proj`, the paper's
#   Fig. 1 module, PoLAR's is the higher one at r = 32, and in its heatmap the two blocks break up.
#   So the verdict line above reads "no" for the paper's full claim at CPU scale.
# - **Over training** both methods start high (the first Adam steps point in many directions) and
#   fall; LoRA's keeps falling over the 20 steps at r ≥ 8 while PoLAR's levels off after ~10 steps —
#   the beginning of the divergence the paper reports ("over 200 steps PoLAR climbs to 7–14.5, LoRA
#   stays 1.5–2.7"). We did not see the climb itself: it needs far more steps than this profile
#   affords. (Outside this profile, one run with `batch_size: 4, max_steps: 40, ranks: [32]` gave a
#   `down_proj` median going 1.67 → 1.95 for PoLAR and 1.69 → 1.43 for LoRA between steps 10 and 40.)
# - **The other methods at r = 8:** DoRA's BA is almost LoRA's (per-matrix stable ranks within 0.05; its
#   magnitude vector is not part of the measured ΔW); the AdaPreLoRA and Riemannian-preconditioned
#   optimizers give LoRA a somewhat higher stable rank than AdamW (about 2.6 and 1.9 against 1.8);
#   StelLA sits at ≈ r because its ΔW = s·USVᵀ starts with all r singular values equal (S = I);
#   TopLoRA has no single ΔW.
# - **Against the paper's numbers:** PoLAR 5.49 against LoRA 1.06 (Fig. 1, r = 32) and PoLAR
#   2.7/4.1/6.4/11 at r = 4/8/16/32 (README) — our LoRA agrees in kind (≈ 1.7, flat in r); our PoLAR
#   has the paper's increasing trend in r but at a fraction of its level. The difference in scale
#   (135 M against 7 B parameters, 40 examples against 5 epochs, fp32 weights that were 4-bit
#   quantised) is the first suspect, not the method; the paper profile
#   (`make figures PROFILE=paper`) runs the real setting.
