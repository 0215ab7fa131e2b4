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
# # 03 — Fine-tuning every method on the same model, data and budget
#
# Reproduces the **commonsense-reasoning table of the PoLAR paper** (arXiv 2506.03133; the README
# table of its code, methods.md §10): Llama-2-7B, one adapter per task trained on that task's training
# set, zero-shot accuracy on its test set, LoRA / DoRA / PoLAR at r = 4, 8, 16, 32. There PoLAR gains
# about one point on average (72.5 → 73.3–74.0), almost all of it on WinoGrande (+6 to +9), and is
# equal or worse on ARC-Challenge and OpenBookQA.
#
# Here every method of `polar_lib.methods.METHODS` — LoRA, DoRA, PoLAR, StelLA, TopLoRA, and LoRA
# trained with the AdaPreLoRA and PEFT's Riemannian-preconditioned optimizers — is trained with
# `polar_lib.train` (same model, data, steps and batch; each method at its registry learning rate,
# PoLAR 4e-3 and LoRA/DoRA 4e-4 as in the paper) over several seeds, scored with `polar_lib.evaluate`
# (lm-eval log-likelihood of each answer choice), and each adapter's stable rank (notebook 01) is
# shown beside its accuracy.
#
# | | paper | this notebook, `make figures` (CPU profile) |
# |---|---|---|
# | model | Llama-2-7B (bf16 autocast) | SmolLM2-135M-Instruct, fp32 (weights **4-bit quantised then dequantised**) |
# | tasks | 8 commonsense tasks | ARC-Easy (train split; a fixed subset of its test split) |
# | training | 5 epochs, batch 128, cosine | a few dozen steps of 4 examples, constant lr after warm-up |
# | seeds | 1 | 3 |
#
# Why this CPU setting (the whole of `make figures` has about a quarter of an hour for notebooks 01 and
# 03 on two cores): a real pretrained causal LM scored the way the paper scores (lm-eval, log-likelihood
# of each choice) is the only honest comparison here; ARC-Easy is the task with a training split on which
# SmolLM2 is clearly above chance. The alternative, MiniLM as a sequence classifier, was measured and
# rejected: `polar_lib.train` shows an encoder the question without its answer choices, so ARC is
# unlearnable that way, and on BoolQ (whose LLM-Adapters version has no passage) every method ends at
# the majority class (62.2 % of the test set), a comparison with no information in it. The seed-0 runs
# are the rank-8 runs of notebook 01 (identical configurations share one cached run). The defaults in
# the parameters cell are the CI scale (a random 2-layer model: numbers meaningless, the code path the
# same); `make figures PROFILE=paper` runs the paper's setting on a GPU.

# %%
import sys

if "google.colab" in sys.modules:  # Colab: the project (code and its data/ registry) and its dependencies
    # !git clone -q --depth 1 https://github.com/polar-lib/polar_lib /content/polar_lib
    # %pip install -q /content/polar_lib
    sys.path.insert(0, "/content/polar_lib")

# %% tags=["parameters"]
model = "tiny-llama"  # "smollm2-135m" (CPU profile), "meta-llama/Llama-2-7b-hf" (paper profile)
tasks = ["arc_easy"]  # one adapter per task: trained on its train split, scored on its test split
methods = ["lora", "polar"]  # the profiles: every method of polar_lib.methods.METHODS
ranks = [8]
seeds = [0, 1]
target_modules = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]  # the paper's modules
lora_alpha = 32  # the paper's α for every r (scale α / r)
max_steps = 2
epochs = None  # when set, each task gets ceil(epochs × training examples / (batch_size × grad_accum)) steps
batch_size = 4
grad_accum = 1
max_length = 128
train_limit = 32  # first N training examples (None: all)
loss_on = "answer"  # "answer" tokens only, or the whole "sequence" (the PoLAR code)
scheduler = "constant_with_warmup"  # the paper: "cosine"
bf16 = False
save_steps = 1  # as in notebook 01, so that identical runs are shared
eval_limit = 8  # first N test examples of each task (None: the whole test split)
eval_batch_size = 8
evaluate_base_model = True  # also score the model without an adapter (the reference line)
runs_dir = "../runs"
figures_dir = "../runs/figures-ci"

# %%
import logging
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from polar_lib.data import get_task, load_task
from polar_lib.evaluate import evaluate_model, evaluate_run
from polar_lib.figures import quiet, save_figure
from polar_lib.models import load_model
from polar_lib.stable_rank import adapter_stable_ranks
from polar_lib.train import RunConfig, load_run, steps_for_epochs, train

sns.set_theme(style="whitegrid", context="notebook")
warnings.filterwarnings("ignore", category=FutureWarning)
logging.getLogger("lm_eval").setLevel(logging.ERROR)
figures_dir = Path(figures_dir)


def steps_for(task):
    """The step budget of one run on ``task`` (``max_steps``, or ``epochs`` over its training split)."""
    return max_steps if epochs is None else steps_for_epochs(task, epochs, batch_size, grad_accum, train_limit)


common = dict(model=model, lora_alpha=lora_alpha, target_modules=target_modules, batch_size=batch_size,
              grad_accum=grad_accum, max_length=max_length, train_limit=train_limit, loss_on=loss_on,
              scheduler=scheduler, bf16=bf16, save_steps=save_steps)
for task in tasks:
    print(f"{task}: {steps_for(task)} steps × {batch_size * grad_accum} examples; scored on "
          f"{eval_limit or 'all'} test examples ({get_task(task).metric})")

# %% [markdown]
# ## Training and scoring
# Every (task, method, rank, seed) is one cached run; its evaluation is cached in the run directory.
# The Trainer's and lm-eval's progress output is silenced; each run prints one line.

# %%
rows = []
for task in tasks:
    for method in methods:
        for r in ranks:
            for seed in seeds:
                config = RunConfig(method=method, task=task, r=r, seed=seed, max_steps=steps_for(task), **common)
                start = time.time()
                with quiet():
                    run_dir = train(config, runs_dir, progress=False)
                    score = evaluate_run(run_dir, limit=eval_limit, batch_size=eval_batch_size).iloc[0]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TopLoRA: no single ΔW, so no stable rank (it warns)
                    stable = adapter_stable_ranks(run_dir / "adapter")
                losses = load_run(run_dir)[1]["loss_history"]
                rows.append({"task": task, "method": method, "r": r, "seed": seed, "metric": score.metric,
                             "accuracy": score.accuracy, "stderr": score.stderr, "n": score.n,
                             "stable rank (median)": stable.stable_rank.median() if len(stable) else np.nan,
                             "first loss": losses[0], "last loss": np.mean(losses[-3:]), "run": run_dir.name})
                print(f"{task} {method:>16} r={r:<3} seed {seed}: {score.metric} {score.accuracy:.3f} "
                      f"± {score.stderr:.3f}  ({time.time() - start:.0f} s)")
results = pd.DataFrame(rows)

# %%
base_rows = []
if evaluate_base_model:
    with quiet():
        base, tokenizer = load_model(model)
        base_scores = evaluate_model(base, tokenizer, tasks, limit=eval_limit, batch_size=eval_batch_size)
    base_rows = base_scores.assign(method="base model (no adapter)").to_dict("records")
    del base
base_scores = pd.DataFrame(base_rows, columns=["task", "metric", "accuracy", "stderr", "n", "method"])
base_scores

# %% [markdown]
# ## Accuracy, with each adapter's stable rank beside it
# Points: one per seed; error bars: mean ± one standard deviation over seeds. The dashed line is the
# model without an adapter; the dotted line chance. The binomial standard error of a single score on
# this many test questions is in the table below.

# %%
chance = {task: 1 / np.mean([len(e.choices) for e in load_task(task, "test", limit=eval_limit)]) for task in tasks}
hue = "r" if len(ranks) > 1 else None
fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 0.45 * len(methods) * max(1, len(ranks) / 2) + 1.6),
                         squeeze=False, gridspec_kw={"width_ratios": [3, 2]})
for (acc_ax, sr_ax), task in zip(axes, tasks):
    data = results[results.task == task]
    for ax, column in ((acc_ax, "accuracy"), (sr_ax, "stable rank (median)")):
        sns.pointplot(data, x=column, y="method", hue=hue, order=methods, errorbar="sd", linestyle="none",
                      capsize=0.25, markers="D", dodge=0.4 if hue else False, ax=ax, legend=ax is sr_ax)
        sns.stripplot(data, x=column, y="method", hue=hue, order=methods, dodge=bool(hue), alpha=0.45, size=4,
                      color=None if hue else "grey", ax=ax, legend=False)
        ax.set_ylabel("")
    for base_row in base_rows:
        if base_row["task"] == task:
            acc_ax.axvline(base_row["accuracy"], ls="--", color="black", lw=1, label="no adapter")
    acc_ax.axvline(chance[task], ls=":", color="grey", lw=1, label="chance")
    acc_ax.legend(fontsize=8, loc="lower right")
    metric = data.metric.iloc[0]
    acc_ax.set_xlabel(f"{get_task(task).title} test {metric} (n = {int(data.n.iloc[0])})")
    sr_ax.set_xlabel("stable rank of ΔW (median over layers)")
    sr_ax.set_yticklabels([])
    if "toplora" in methods:
        sr_ax.text(0.02, methods.index("toplora"), " TopLoRA: token-dependent ΔW, no stable rank",
                   transform=sr_ax.get_yaxis_transform(), va="center", fontsize=8, color="grey")
fig.suptitle(f"{model}: {len(seeds)} seeds per method, r = {', '.join(map(str, ranks))}", y=1.0)
fig.tight_layout()
save_figure(fig, results, "03_accuracy_stable_rank", figures_dir)
plt.show()

# %% [markdown]
# ## The table

# %%
table = (results.groupby(["task", "method", "r"], sort=False)
         .agg(accuracy_mean=("accuracy", "mean"), accuracy_sd=("accuracy", "std"), seeds=("seed", "count"),
              binomial_stderr=("stderr", "mean"), stable_rank_median=("stable rank (median)", "mean"),
              last_loss=("last loss", "mean"))
         .reset_index())
table["accuracy"] = [f"{100 * m:.1f} ± {100 * s:.1f}" for m, s in zip(table.accuracy_mean, table.accuracy_sd)]
figures_dir.mkdir(parents=True, exist_ok=True)
table.to_csv(figures_dir / "03_results_table.csv", index=False)
table[["task", "method", "r", "accuracy", "seeds", "binomial_stderr", "stable_rank_median", "last_loss"]]

# %%
loss_frame = pd.DataFrame([{"task": row.task, "method": row.method, "r": row.r, "seed": row.seed,
                            "logged step": i, "training loss": loss}
                           for row in results.itertuples()
                           for i, loss in enumerate(load_run(Path(runs_dir) / row.run)[1]["loss_history"])])
loss_frame["smoothed loss"] = (loss_frame.groupby(["task", "method", "r", "seed"])["training loss"]
                               .transform(lambda x: x.rolling(5, min_periods=1).mean()))
grid = sns.relplot(loss_frame, x="logged step", y="smoothed loss", hue="method", hue_order=methods, col="task",
                   row="r" if len(ranks) > 1 else None, kind="line", errorbar=None, height=3.2, aspect=1.5)
grid.set_axis_labels("logged step", "training loss (mean of 5 logs)")
grid.figure.suptitle("Training loss, mean over seeds: the same steps and batches for every method", y=1.05)
save_figure(grid.figure, loss_frame, "03_training_loss", figures_dir)
plt.show()

# %% [markdown]
# ## Next to the paper's table
# The paper's numbers (methods.md §10; Llama-2-7B, seed 0) for the tasks run here, and ours.

# %%
PAPER = pd.DataFrame(  # accuracy %, PoLAR README table (methods.md §10)
    [(4, "lora", 87.16, 81.90, 57.68, 56.80), (4, "dora", 87.22, 81.69, 57.85, 56.80),
     (4, "polar", 87.49, 81.61, 56.31, 55.80), (8, "lora", 87.34, 82.24, 58.11, 55.80),
     (8, "dora", 87.49, 82.24, 58.19, 55.60), (8, "polar", 87.74, 81.36, 56.91, 55.20),
     (16, "lora", 86.94, 82.58, 57.85, 56.00), (16, "dora", 86.85, 82.62, 57.68, 55.40),
     (16, "polar", 88.01, 81.82, 57.51, 57.40), (32, "lora", 87.89, 82.37, 56.83, 54.60),
     (32, "dora", 87.61, 82.28, 57.17, 55.60), (32, "polar", 88.13, 81.99, 56.14, 55.60)],
    columns=["r", "method", "boolq", "arc_easy", "arc_challenge", "openbookqa"])
paper = PAPER.melt(id_vars=["r", "method"], var_name="task", value_name="paper (Llama-2-7B)")
ours = table.assign(**{"ours (mean ± sd)": table.accuracy})[["task", "method", "r", "ours (mean ± sd)"]]
print(ours.merge(paper, on=["task", "method", "r"], how="left").to_string(index=False))

ours_wide = 100 * table.pivot_table(index=["task", "r"], columns="method", values="accuracy_mean")
paper_wide = paper.pivot_table(index=["task", "r"], columns="method", values="paper (Llama-2-7B)")


def difference(wide, a, b):
    """Accuracy of method a minus method b, per (task, r); NaN where either was not run."""
    return wide[a] - wide[b] if {a, b} <= set(wide.columns) else pd.Series(np.nan, index=wide.index)


gaps = pd.DataFrame({
    "ours: PoLAR − LoRA": difference(ours_wide, "polar", "lora"),
    "paper: PoLAR − LoRA": difference(paper_wide, "polar", "lora"),
    "ours: DoRA − LoRA": difference(ours_wide, "dora", "lora"),
    "paper: DoRA − LoRA": difference(paper_wide, "dora", "lora"),
    "ours: best − worst method": ours_wide.max(axis=1) - ours_wide.min(axis=1),
    "ours: mean sd over seeds": 100 * table.groupby(["task", "r"]).accuracy_sd.mean(),
    "ours: binomial stderr": 100 * table.groupby(["task", "r"]).binomial_stderr.mean(),
}).loc[ours_wide.index]
print("\naccuracy differences in points")
gaps.round(2)

# %% [markdown]
# **What we found (CPU profile: SmolLM2-135M-Instruct with 4-bit-quantised-then-dequantised
# weights; ARC-Easy; r = 8; 20 steps of 2 examples; seeds 0–2; the first 40 test questions).** The
# numbers are the ones printed above.
#
# - **Fine-tuning helps, whatever the method.** The model without an adapter scores 45 % (acc_norm)
#   on these 40 questions; every adapter, after seeing only 40 training examples, scores higher on
#   average (about 54–62 %). Training on the answer tokens mostly teaches the model to put its
#   probability on a choice's wording, which is what log-likelihood scoring rewards.
# - **The methods cannot be told apart at this scale.** The means lie within about 8 points of each
#   other, while one score's binomial standard error on 40 questions is about 8 points and the spread
#   over seeds reaches 9 points (PoLAR's and the Riemannian optimizer's three seeds each span about 17
#   points). PoLAR has the highest mean here, but on the strength of one seed; no ranking of the
#   methods is supported by these runs.
# - **Stable rank beside accuracy:** no relation shows. At r = 8 after 20 steps PoLAR's median
#   stable rank is the lowest (≈ 1.4; notebook 01 shows it growing with r and with training), LoRA
#   and DoRA are at ≈ 1.7, the AdaPreLoRA optimizer gives LoRA ≈ 2.6 without better accuracy, and
#   StelLA's ≈ 8 = r is its initialisation (S = I), not something it learned — its non-zero initial
#   update is also why its training loss starts higher.
# - **Against the paper's table** (Llama-2-7B, ARC-Easy, r = 8: LoRA 82.24, DoRA 82.24, PoLAR 81.36):
#   *agrees* — DoRA equals LoRA (here because 20 small steps leave DoRA's magnitude vector almost
#   untouched), and on ARC-Easy no method stands out (the paper's PoLAR gain, +1 point on average,
#   comes almost entirely from WinoGrande, whose training split is not available offline);
#   *does not agree* — the level (≈ 58 % against 82 %: a 135 M model, 40 training examples, 40 test
#   questions, against a 7 B model trained for 5 epochs on the full set) and the sign of PoLAR − LoRA
#   (+4 points here, −0.9 in the paper; ours is well inside the noise).
# - What this profile can and cannot show: it runs every method through one training and evaluation
#   path on a real model and real data, with seeds and error bars; it cannot resolve differences of a
#   point or two, which need thousands of test questions and full training — the paper profile
#   (`make figures PROFILE=paper`) is written for that.
