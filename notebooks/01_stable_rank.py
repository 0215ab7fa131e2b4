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
# landing field) spreads over more directions as r grows, and more so the longer it trains. Every
# adapter here is trained with `polar_lib.train` (one training path, runs cached by their full config;
# `train_all` trains several at once in single-threaded worker processes), which logs the stable rank of
# every adapted matrix at step 0 and at every checkpoint (`stable_ranks.csv`, computed from the factors
# with `polar_lib.stable_rank`: thin QRs, no dense ΔW; docs/stable-rank.md, 'Factored computation').
#
# | | paper (Fig. 1, README) | this notebook, `make figures` (CPU profile) |
# |---|---|---|
# | model | Llama-2-7B | SmolLM2-135M-Instruct (30 layers; weights 4-bit quantised then dequantised to fp32) |
# | data | Social IQa / HellaSwag training sets, 5 epochs, batch 128 | BoolQ training set, 200 steps of 2 examples (400 of its 9,427 examples, ≈ 4 % of one epoch), cutoff 256 tokens |
# | loss | on the whole sequence | on the whole sequence |
# | modules, α | q, k, v, up, down; α = 32 | q, k, v, up, down; α = 32 |
# | ranks, seeds | r = 4, 8, 16, 32 | r = 4, 8, 16, 32, seeds 0 and 1 each; DoRA and StelLA at r = 8, seed 0 |
# | lr | PoLAR 4e-3, LoRA 4e-4, cosine | the same peak rates, held constant after warm-up |
# | stable rank logged | over training (README's third panel) | at step 0 and every 25 steps |
#
# **Why 200 steps.** A measurement on this machine (SmolLM2-135M, BoolQ, r = 16, loss on the sequence):
# LoRA's median stable rank stays at 1.46–1.52 over 200 steps, while PoLAR's climbs 1.34 (step 25) →
# 1.61 (step 75) → 1.90 (step 125) → 2.00 (step 200), still rising. With the loss on the answer tokens
# only (the previous protocol) the signal is weaker — LoRA 1.28–1.34, PoLAR 1.25 → 1.47 — so this
# notebook uses the paper's loss on the whole sequence. A 200-step run takes 2–3 min on one thread, so
# 200 steps is the longest run that keeps the 20 runs of the profile (two at a time) affordable on a CPU.
#
# The CPU scale is still tiny next to the paper's: it shows the **beginning** of a paper-scale run. The
# defaults in the parameters cell are the CI scale (a random 2-layer model: numbers meaningless, the
# code path the same); `make figures` runs `profiles/cpu/01_stable_rank.yaml`, and
# `make figures PROFILE=paper` the paper's model and ranks.

# %%
import sys

if "google.colab" in sys.modules:  # Colab: the project (code and its data/ registry) and its dependencies
    # !git clone -q --depth 1 https://github.com/polar-lib/polar_lib /content/polar_lib
    # %pip install -q /content/polar_lib
    sys.path.insert(0, "/content/polar_lib")

# %% tags=["parameters"]
model = "tiny-llama"  # "smollm2-135m" (CPU profile), "meta-llama/Llama-2-7b-hf" (paper profile)
task = "boolq"  # training task (one with a train split)
methods = ["lora", "polar"]  # the rank sweep
ranks = [4, 8]
seeds = [0, 1]  # every (method, r) of the sweep is trained once per seed
other_methods = []  # more registry methods, trained at `other_rank` with the same budget, first seed only
other_rank = 8
target_modules = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]  # the paper's modules
lora_alpha = 32  # the paper's α for every r (scale α / r)
max_steps = 4
epochs = None  # when set, max_steps is ceil(epochs × training examples / (batch_size × grad_accum))
batch_size = 2
grad_accum = 1
max_length = 128
train_limit = 16  # first N training examples (None: all)
loss_on = "sequence"  # the whole "sequence" (the PoLAR code), or the "answer" tokens only
scheduler = "constant_with_warmup"  # the paper: "cosine" over 5 epochs
bf16 = False
save_steps = 2  # the stable rank is logged at step 0 and at every checkpoint (every save_steps steps)
loss_window = 10  # steps in the rolling mean of the training-loss figure
workers = 2  # runs trained at once (each in its own single-threaded process)
heatmap_module = "down_proj"  # the module of the per-layer plot and of the heatmaps (the paper's Fig. 1)
heatmap_layer = None  # None: the middle layer
heatmap_rows = 96  # rows of ΔW sampled for a heatmap
runs_dir = "../runs"
figures_dir = "../runs/figures-ci"

# %%
import math
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from polar_lib.figures import save_figure
from polar_lib.stable_rank import adapter_factors, direction_distances, plot_direction_heatmap
from polar_lib.stats import STABLE_RANK_COLUMNS, exceeds, grows_with_rank, grows_with_training, stays_far_below_rank
from polar_lib.train import RunConfig, load_run, load_stable_ranks, steps_for_epochs, train_all

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.precision", 2)
warnings.filterwarnings("ignore", category=FutureWarning)

figures_dir = Path(figures_dir)
if epochs is not None:
    max_steps = steps_for_epochs(task, epochs, batch_size, grad_accum, train_limit)
common = dict(model=model, task=task, lora_alpha=lora_alpha, target_modules=target_modules, max_steps=max_steps,
              batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, train_limit=train_limit,
              loss_on=loss_on, scheduler=scheduler, bf16=bf16, save_steps=save_steps)
n_seeds = len(seeds)
print(f"{model} on {task}: {max_steps} steps × {batch_size * grad_accum} examples, loss on the {loss_on}, "
      f"modules {target_modules}, seeds {seeds}")

# %% [markdown]
# ## Training
# One run per (method, r, seed) of the sweep, and one per other method at r = `other_rank` (first seed),
# all with the same steps, batch and data; each method at its registry learning rate (PoLAR 4e-3, LoRA
# 4e-4: the paper's). A finished run is reused from `runs_dir`.

# %%
configs = {(method, r, seed): RunConfig(method=method, r=r, seed=seed, **common)
           for method in methods for r in ranks for seed in seeds}
configs |= {(method, other_rank, seeds[0]): RunConfig(method=method, r=other_rank, seed=seeds[0], **common)
            for method in other_methods}
run_dirs = dict(zip(configs, train_all(list(configs.values()), runs_dir, workers=workers, progress=False)))
for (method, r, seed), run_dir in run_dirs.items():
    metrics = load_run(run_dir)[1]
    losses = metrics["loss_history"]
    first, last = losses[:loss_window], losses[-loss_window:]
    print(f"{method:>16} r={r:<3} seed {seed}: loss {sum(first) / len(first):.2f} → {sum(last) / len(last):.2f} "
          f"(mean of the first / last {len(last)} steps; {metrics['train_runtime_s']:.0f} s)")

# %%
loss_frame = pd.DataFrame([{"method": method, "r": r, "seed": seed, "step": step, "training loss": loss}
                           for (method, r, seed), run_dir in run_dirs.items()
                           for step, loss in enumerate(load_run(run_dir)[1]["loss_history"], start=1)])
loss_frame["smoothed loss"] = (loss_frame.groupby(["method", "r", "seed"])["training loss"]
                               .rolling(loss_window, min_periods=1).mean()
                               .reset_index(level=["method", "r", "seed"], drop=True))
grid = sns.relplot(loss_frame, x="step", y="smoothed loss", hue="method", col="r", kind="line",
                   estimator="mean", errorbar=("pi", 100), height=2.8, aspect=1.1)
grid.set_axis_labels("step", "training loss (rolling mean)")
grid.figure.suptitle(f"Training loss ({model}, {task}, loss on the {loss_on}), rolling mean over {loss_window} "
                     f"steps\nline = mean over {n_seeds} seeds, band = min–max over seeds"
                     f"{' (other methods: one seed)' if other_methods else ''}", y=1.12)
save_figure(grid.figure, loss_frame, "01_training_loss", figures_dir)
plt.show()

# %% [markdown]
# ## The stable-rank table
# One row per adapted matrix (module, layer) per logged step of each run (`load_stable_ranks`: step 0 and
# every `save_steps`), labelled with the registry method name (`lora+adaprelora` is a LoRA adapter), the
# run's r and seed. A zero-initialised update (LoRA, PoLAR, DoRA) has sr := 0 at step 0; StelLA's
# starts at r. "Final" below is each run's last logged step, the end of training.

# %%
stable = pd.concat([load_stable_ranks(run_dir).drop(columns="method").assign(method=method, r=r, seed=seed)
                    for (method, r, seed), run_dir in run_dirs.items()], ignore_index=True)
stable = stable[list(STABLE_RANK_COLUMNS)]
final = stable[stable.step == stable.groupby(["method", "r", "seed"]).step.transform("max")]
sweep = stable[stable.method.isin(methods) & stable.r.isin(ranks) & stable.seed.isin(seeds)]
final_sweep = final[final.index.isin(sweep.index)]
n_layers = sweep.layer.nunique()
logged = sorted(sweep.step.unique().tolist())
print(f"{len(stable)} rows: {n_layers} layers × {sweep.module.nunique()} module types, logged at steps {logged}")
print(f"final median stable rank over the {n_layers} layers, per module type (mean over {n_seeds} seeds)")
(final_sweep.groupby(["module", "method", "r", "seed"]).stable_rank.median()
 .groupby(["module", "method", "r"]).mean().unstack("r"))

# %% [markdown]
# ## Over training (the README's third panel)
# The median stable rank over layers against the step, per module type and rank: the paper reports
# PoLAR's climbing over training while LoRA's stays flat.

# %%
medians = sweep.groupby(["method", "r", "seed", "step", "module"]).stable_rank.median().reset_index()
drawn = medians[(medians.step > 0) | (medians.stable_rank > 0)]  # step 0 only where ΔW ≠ 0 there
grid = sns.relplot(drawn, x="step", y="stable_rank", hue="method", col="r", row="module", kind="line",
                   marker="o", markersize=4, estimator="mean", errorbar=("pi", 100), height=2.0, aspect=1.3,
                   facet_kws=dict(margin_titles=True))
grid.set_titles(col_template="r = {col_name}", row_template="{row_name}")
grid.set_axis_labels("step", "median sr")
grid.figure.suptitle(f"Median stable rank of ΔW over {n_layers} layers against the step ({model}, {task}, "
                     f"{max_steps} steps)\nline = mean over {n_seeds} seeds, band = min–max over seeds; step 0 "
                     "not drawn where ΔW = 0 (sr := 0)", y=1.03)
save_figure(grid.figure, sweep, "01_stable_rank_over_training", figures_dir)
plt.show()

# %% [markdown]
# ## Against the rank (the README's second panel)
# The final stable rank of every adapted matrix against r, per module type; the dashed line is the upper
# bound sr = r.

# %%
grid = sns.relplot(final_sweep, x="r", y="stable_rank", hue="method", col="module", kind="line", marker="o",
                   estimator="median", errorbar=("pi", 50), height=2.8, aspect=0.9)
ticks = [1, 2, 4, 8, 16, 32][:1 + int(math.log2(max(ranks)))]
for ax in grid.axes.flat:
    ax.plot(ranks, ranks, ls="--", color="grey", lw=1, label="sr = r (upper bound)")
    ax.set(xscale="log", yscale="log", xticks=ranks, xticklabels=ranks, ylim=(0.9, max(ranks) * 1.2))
    ax.minorticks_off()
    ax.set_yticks(ticks)
    ax.set_yticklabels(ticks)
grid.axes.flat[0].legend(loc="upper left", fontsize=8)
grid.set_axis_labels("adapter rank r", "stable rank of ΔW")
grid.figure.suptitle(f"Stable rank against rank at the final step (step {max_steps}): line = median, band = "
                     f"interquartile range, over {n_layers} layers × {n_seeds} seeds", y=1.04)
save_figure(grid.figure, final_sweep, "01_stable_rank_vs_rank", figures_dir)
plt.show()

# %% [markdown]
# ## Per layer, and the distribution across layers
# The paper's Fig. 1 plots sr of `down_proj` against the layer index; below it, the distribution of the
# final sr over all layers and seeds for each module type.

# %%
layer_frame = final_sweep[final_sweep.module == heatmap_module]
grid = sns.relplot(layer_frame, x="layer", y="stable_rank", hue="method", col="r", kind="line", marker="o",
                   markersize=4, estimator="mean", errorbar=("pi", 100), height=2.8, aspect=1.1)
grid.set_axis_labels("layer", f"stable rank ({heatmap_module})")
grid.figure.suptitle(f"Stable rank of ΔW per layer, {heatmap_module}, final step (the paper's Fig. 1 at each r)\n"
                     f"line = mean over {n_seeds} seeds, band = min–max over seeds", y=1.12)
save_figure(grid.figure, layer_frame, "01_stable_rank_per_layer", figures_dir)
plt.show()

# %%
grid = sns.catplot(final_sweep, x="r", y="stable_rank", hue="method", col="module", kind="box", height=2.8,
                   aspect=0.9, fliersize=2, linewidth=0.8)
grid.set_axis_labels("adapter rank r", "stable rank of ΔW")
grid.figure.suptitle(f"Distribution of the final stable rank: each box is {n_layers} layers × {n_seeds} seeds\n"
                     "(box = quartiles, whiskers 1.5 IQR)", y=1.12)
save_figure(grid.figure, final_sweep, "01_stable_rank_distribution", figures_dir)
plt.show()

# %% [markdown]
# ## Every method at one rank
# All methods trained with the same budget at r = `other_rank`, first seed (the other methods have one
# seed; their accuracy, over three seeds, is in notebook 03). Two caveats when reading it: StelLA's
# update s·USVᵀ is not zero at initialisation (S = I, so all r singular values are equal and sr = r at
# step 0; docs/stella.md, 'Initialisation'), so its stable rank mostly shows how little the steps
# move S — the step-0 markers show each method's starting point; DoRA is measured as s·BA, without its
# magnitude vector (as the PoLAR code measures it). TopLoRA's ΔW depends on the token, so it has no
# stable rank and is not trained here.

# %%
at_rank = stable[(stable.r == other_rank) & (stable.seed == seeds[0]) & stable.method.isin(methods + other_methods)]
at_rank = at_rank[(at_rank.step == 0) | at_rank.index.isin(final.index)]
if len(at_rank):
    order = [m for m in methods + other_methods if m in set(at_rank.method)]
    modules = sorted(at_rank.module.unique())
    start = at_rank[at_rank.step == 0].groupby(["method", "module"]).stable_rank.median().reset_index()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    sns.boxplot(at_rank[at_rank.step > 0], x="method", y="stable_rank", hue="module", order=order,
                hue_order=modules, ax=ax, fliersize=2, linewidth=0.8)
    sns.stripplot(start, x="method", y="stable_rank", hue="module", order=order, hue_order=modules, dodge=True,
                  jitter=False, marker="X", size=7, palette=["black"] * len(modules), legend=False, ax=ax)
    ax.axhline(other_rank, ls="--", color="grey", lw=1, label=f"sr = r = {other_rank}")
    ax.plot([], [], "X", color="black", label="step 0 (median)")
    ax.set(xlabel="", ylabel="stable rank of ΔW",
           title=f"All methods at r = {other_rank}, seed {seeds[0]}: boxes = final step, {n_layers} layers each; "
                 f"× = median at step 0\n(0 for a zero-initialised ΔW; StelLA starts at sr = r: S = I)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_figure(fig, at_rank, "01_stable_rank_methods", figures_dir)
    plt.show()

# %% [markdown]
# ## Direction diversity (the paper's heatmaps)
# Pairwise distances ‖w̃ᵢ − w̃ⱼ‖ ∈ [0, 2] between the normalised rows of ΔW (a sample of rows of one
# matrix, the final adapter of the first seed at the largest r), in average-linkage order. Dark blocks
# are rows pointing the same way: a collapsed update is one dark block (every row a multiple of the same
# vector, up to sign: distances 0 or 2).

# %%
heatmap_runs = [(method, max(ranks), seeds[0]) for method in methods]
factors = {key: adapter_factors(run_dirs[key] / "adapter") for key in heatmap_runs}
layers = sorted({f.layer for f in factors[heatmap_runs[0]] if f.module == heatmap_module})
layer = layers[len(layers) // 2] if heatmap_layer is None else heatmap_layer
fig, axes = plt.subplots(1, len(heatmap_runs), figsize=(4.2 * len(heatmap_runs), 3.6), squeeze=False)
heat_rows = []
for ax, (method, r, seed) in zip(axes.flat, heatmap_runs):
    factor = next(f for f in factors[method, r, seed] if f.module == heatmap_module and f.layer == layer)
    distances = direction_distances(factor.B, factor.A, factor.core, max_rows=heatmap_rows, seed=seed)
    sr = final.query("method == @method and r == @r and seed == @seed and module == @heatmap_module "
                     "and layer == @layer").stable_rank
    plot_direction_heatmap(distances, ax=ax, title=f"{method}, r = {r}: sr = {sr.iloc[0]:.2f}")
    ax.grid(False)
    ordered = distances.ordered
    heat_rows += [{"method": method, "r": r, "seed": seed, "i": i, "j": j, "distance": round(float(ordered[i, j]), 3)}
                  for i in range(len(ordered)) for j in range(len(ordered))]
fig.suptitle(f"{heatmap_module}, layer {layer}, seed {seeds[0]}: distances between {len(ordered)} sampled "
             "normalised rows of ΔW", y=1.02)
fig.tight_layout()
save_figure(fig, pd.DataFrame(heat_rows), "01_direction_heatmaps", figures_dir)
plt.show()

# %% [markdown]
# ## The verdicts, next to the paper
# The numbers below come from the runs above; the verdicts are computed by `polar_lib.stats` from the
# stable-rank table (each takes, per run and step, the median over layers, and holds only beyond the
# spread over seeds — see each function's docstring), over all adapted matrices and over `down_proj`
# alone (the paper's Fig. 1 module).
#
# **What the paper found** (Llama-2-7B, 5 epochs, batch 128):
# - Fig. 1, `down_proj`, Social IQa, r = 32: LoRA's stable rank is **1.06**, PoLAR's **5.49**.
# - README panel, HellaSwag, median over layers at r = 4/8/16/32: PoLAR **2.7 / 4.1 / 6.4 / 11**, rising
#   with r and over training; LoRA **2.2–2.5** at every r.
# - The paper's per-task stable ranks put PoLAR at **≈ 10–11 on BoolQ**, the task trained here.

# %%
per_seed = sweep.groupby(["method", "r", "seed", "step"]).stable_rank.median()
print(f"median stable rank over all adapted matrices, mean over {n_seeds} seeds, per logged step:")
print(per_seed.groupby(["method", "r", "step"]).mean().unstack("step").round(2).to_string())
print(f"\nfinal median stable rank per seed, {heatmap_module} only:")
print(final_sweep[final_sweep.module == heatmap_module].groupby(["method", "r", "seed"]).stable_rank.median()
      .unstack("r").round(2).to_string())
print("\npaper (Llama-2-7B): Fig. 1, down_proj, SIQA, r = 32 — LoRA 1.06, PoLAR 5.49;"
      "\n  README, HellaSwag, r = 4/8/16/32 — PoLAR 2.7/4.1/6.4/11, LoRA 2.2–2.5; BoolQ — PoLAR ≈ 10–11")
if {"lora", "polar"} <= set(methods) and len(ranks) >= 2:
    for label, table in {"all modules": sweep, heatmap_module: sweep[sweep.module == heatmap_module]}.items():
        print(f"\nverdicts, {label}:")
        for verdict in (stays_far_below_rank(table, "lora"), grows_with_rank(table, "polar"),
                        grows_with_training(table, "polar"), exceeds(table, "polar", "lora")):
            print(f"  [{'holds' if verdict.holds else 'fails'}] {verdict.statement}")

# %% [markdown]
# ## What we found (CPU profile)
# SmolLM2-135M-Instruct (4-bit-quantised-then-dequantised weights), BoolQ, loss on the whole sequence,
# q/k/v/up/down, 200 steps of 2 examples, r ∈ {4, 8, 16, 32} × 2 seeds; the numbers printed above
# (`make figures`, 2 December 2026).
#
# - **LoRA's stable rank stays far below r — reproduces.** Its final median over all adapted matrices
#   is 1.3–1.5 at every rank (1.48 / 1.53 / 1.48 / 1.34 at r = 4/8/16/32) and flat over the 200
#   steps: a rank-32 LoRA update uses about one and a half directions. The paper: LoRA 1.06 at r = 32
#   (Fig. 1), 2.2–2.5 on HellaSwag.
# - **PoLAR's stable rank grows with r — reproduces.** 1.27 → 1.58 → 2.01 → 2.38 at r = 4/8/16/32 over
#   all matrices (`down_proj`, the module of the paper's Fig. 1: 1.3 → 1.6 → 2.3 → 3.1), the two seeds
#   within 0.1 of each other at every r.
# - **PoLAR's stable rank grows with training while LoRA's stays flat — reproduces** (the paper's third
#   panel): at r = 32 PoLAR climbs 1.35 (step 25) → 2.00 (100) → 2.38 (200), still rising at the last
#   step; LoRA's drifts down from 1.42 to 1.34.
# - **PoLAR above LoRA — at r ≥ 16 only.** At r = 16 and 32 PoLAR's final median exceeds LoRA's in both
#   seeds (by ≥ 0.48 and ≥ 1.02); at r = 4 it is below (1.27 against 1.48) and at r = 8 level, so the
#   verdict "exceeds at every r" fails: at this budget PoLAR starts below LoRA at every r (step 25) and
#   overtakes it only at r ≥ 16. Why it starts lower was not investigated.
# - **Against the paper's level:** our PoLAR reaches 2.4 at r = 32 where the paper reports 5.5 (Fig. 1)
#   and 11 (README): the trend reproduces, the level does not — 200 steps of 2 examples are under 5 % of
#   one BoolQ epoch against the paper's 5 epochs at batch 128, on a 135 M model, and the curves are
#   still rising when we stop.
# - **The other methods at r = 8 (seed 0):** DoRA's BA behaves as LoRA's (1.59 against 1.59); StelLA
#   starts at sr = r = 8 (S = I) and is still at 7.8 after 200 steps — its stable rank measures how
#   little S has moved, not a learned spread.
