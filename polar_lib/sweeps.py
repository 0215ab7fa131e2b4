"""The runs of notebooks 01, 03, 05 and 06, defined once per scale so that notebooks 01 and 03 share them.

A ``Sweep`` holds the training fields every run has in common and four groups of runs, each the
product tasks × methods × ranks × seeds (× learning rates, where the group has a grid):

- ``rank_sweep`` — notebook 01: the stable rank against r and over training;
- ``comparison`` — notebook 03: the paper's comparison (LoRA, DoRA, PoLAR), paired over seeds;
- ``others`` — the other methods of ``methods.METHODS``, fewer seeds (03's table, 01's one-rank panel);
- ``glue`` — notebook 05: the GLUE experiment (DeBERTa-v3-base), over a learning-rate grid;
- ``math`` — notebook 06: the math experiment (Gemma-3 on MetaMathQA, scored on GSM8K and MATH).

A run in two groups is one ``RunConfig``, hence one cached run directory (``train.run_name``):
whichever notebook runs first trains it, the other reuses it. ``SWEEPS`` holds the three scales of
the notebooks (``ci``: the parameters cells' defaults; ``cpu``: ``make figures``; ``paper``:
``make figures PROFILE=paper``), GLUE's two (``ci-glue``, ``paper-glue``: its encoder and batch are
not the causal LMs', so GLUE is a sweep of its own) and math's two (``ci-math``, ``paper-math``: another model,
batch and training set); neither has a cpu scale (GLUE and MetaMathQA are on the hub only, and a CPU-scale
math run does not fit ``make figures``' budget, README);
``get_sweep`` also reads a YAML file with a ``Sweep``'s fields.

A sweep's budget is ``max_steps``, or ``epochs`` over each task's training split — one number, or one
per task (``paper-glue``: the registry's ``epochs``, the paper's per task). ``method_options`` sets
``RunConfig`` fields per method (``paper-glue``: PoLAR's λ = 1.0 and the weight decay of its factors,
options of its landing optimizer that AdamW does not take).

``python -m polar_lib.sweeps <sweep> --count`` prints how many runs a sweep has, ``--index i`` trains
its i-th run (0-based, in ``Sweep.configs`` order): one run per task of a cluster job array; the run
directory's lock (``polar_lib.train``) keeps two tasks from ever training the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ._checks import check_choice
from ._cli import prog
from .data import TASKS, get_task
from .methods import METHODS
from .models import tiny_like
from .paper import COMMONSENSE_TASKS
from .train import RunConfig, steps_for_epochs, train

GROUPS = ("rank_sweep", "comparison", "others", "glue", "math")
PER_RUN = ("method", "task", "r", "seed", "max_steps")  # the RunConfig fields a sweep sets per run


@dataclass(frozen=True)
class Group:
    """The runs tasks × methods × ranks × seeds, and × ``lrs`` when the group has a learning-rate grid
    (empty: every run takes the sweep's ``lr``, else its method's registry default)."""

    tasks: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    ranks: tuple[int, ...] = ()
    seeds: tuple[int, ...] = ()
    lrs: tuple[float, ...] = ()

    def __post_init__(self):
        for name in ("tasks", "methods", "ranks", "seeds", "lrs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for lr in self.lrs:
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
                raise ValueError(f"lrs must hold positive learning rates, got {lr!r} in {list(self.lrs)}")

    def keys(self) -> list[tuple]:
        """``(task, method, r, seed)`` of every run, in that nesting order; with a learning-rate grid
        ``(task, method, r, lr, seed)``."""
        if self.lrs:
            return [(t, m, r, lr, s) for t in self.tasks for m in self.methods for r in self.ranks for lr in self.lrs
                    for s in self.seeds]
        return [(t, m, r, s) for t in self.tasks for m in self.methods for r in self.ranks for s in self.seeds]


@dataclass(frozen=True)
class Sweep:
    """Runs sharing ``training`` (every ``RunConfig`` field but those of ``PER_RUN``) and one budget:
    ``max_steps`` optimizer steps, or ``epochs`` over each task's training split (rounded up to whole
    steps of ``batch_size × grad_accum`` examples): one number for every task, or ``{task: epochs}``.
    ``method_options``: ``{method: {RunConfig field: value}}``, applied over ``training`` to that
    method's runs (e.g. ``{"polar": {"optimizer_options": {"landing_lambda": 1.0}}}``)."""

    training: dict
    rank_sweep: Group = field(default_factory=Group)
    comparison: Group = field(default_factory=Group)
    others: Group = field(default_factory=Group)
    max_steps: int | None = None
    epochs: float | dict | None = None
    glue: Group = field(default_factory=Group)
    math: Group = field(default_factory=Group)
    method_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError(f"a sweep sets exactly one of max_steps and epochs "
                             f"(got max_steps={self.max_steps!r}, epochs={self.epochs!r})")
        fields = sorted({f.name for f in dataclasses.fields(RunConfig)} - set(PER_RUN))
        for name in self.training:
            check_choice("training field", name, fields)
        for method, options in self.method_options.items():
            check_choice("method_options method", method, tuple(METHODS))
            if not isinstance(options, dict):
                raise ValueError(f"method_options[{method!r}] must be a mapping of RunConfig fields, got {options!r}")
            for name in options:
                check_choice(f"method_options[{method!r}] field", name, fields)
        for name in GROUPS:
            group = getattr(self, name)
            if isinstance(group, dict):
                object.__setattr__(self, name, Group(**group))
        if isinstance(self.epochs, dict):
            missing = sorted({key[0] for name in GROUPS for key in getattr(self, name).keys()} - set(self.epochs))
            if missing:
                raise ValueError(f"epochs: no value for task(s) {', '.join(missing)}; epochs per task given for: "
                                 f"{', '.join(self.epochs) or 'none'}")

    def epochs_of(self, task: str) -> float | None:
        """The epochs of every run on ``task`` (None for a sweep given in ``max_steps``)."""
        return self.epochs.get(task) if isinstance(self.epochs, dict) else self.epochs

    def steps(self, task: str) -> int:
        """The optimizer steps of every run on ``task``."""
        if self.max_steps is not None:
            return self.max_steps
        t = self.training
        return steps_for_epochs(task, self.epochs_of(task), t.get("batch_size", 8), t.get("grad_accum", 1),
                                t.get("train_limit"))

    def config(self, task: str, method: str, r: int, seed: int, lr: float | None = None, *,
               max_steps: int | None = None) -> RunConfig:
        """The ``RunConfig`` of one run (validated: model, method, task, scheduler, sizes): ``training``,
        then ``method_options[method]``, then ``lr`` when given (a group's grid)."""
        fields = self.training | self.method_options.get(method, {}) | ({} if lr is None else {"lr": lr})
        return RunConfig(method=method, task=task, r=r, seed=seed,
                         max_steps=self.steps(task) if max_steps is None else max_steps, **fields)

    def configs(self, *groups: str, tasks=None, seeds=None) -> dict[tuple, RunConfig]:
        """``key → RunConfig`` over ``groups`` (default: all), without repeats, optionally only the runs on
        ``tasks`` and with ``seeds``; a key is ``(task, method, r, seed)``, or ``(task, method, r, lr,
        seed)`` in a group with a learning-rate grid (``Group.keys``)."""
        for name in groups:
            check_choice("group", name, GROUPS)
        keys = [key for key in dict.fromkeys(key for name in groups or GROUPS for key in getattr(self, name).keys())
                if (tasks is None or key[0] in tasks) and (seeds is None or key[-1] in seeds)]
        steps = {task: self.steps(task) for task in dict.fromkeys(key[0] for key in keys)}  # a split read once
        return {key: (self.config(*key[:3], key[4], key[3], max_steps=steps[key[0]]) if len(key) == 5 else
                      self.config(*key, max_steps=steps[key[0]]))
                for key in keys}

    def save(self, path: str | Path) -> Path:
        """Write the sweep as YAML (``get_sweep(path)`` reads it back): the way to a narrower sweep."""
        Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(self))), sort_keys=False))
        return Path(path)


def smoke(sweep: str | Path | Sweep, *, tasks=None, seeds: int = 1, steps: int = 2, lrs: int | None = None) -> Sweep:
    """``sweep`` at test scale (the paper profile's smoke run in ``make test``): its model swapped for the
    tiny random model of the same family (``models.tiny_like``), ``steps`` optimizer steps on one step's
    worth of examples (``batch_size × grad_accum``) with a checkpoint (and stable ranks) after each, the
    first ``seeds`` seeds, the first ``lrs`` learning rates of a group's grid (None: all) and, given
    ``tasks``, only those tasks; everything else kept — bf16, schedule, accumulation, loss, ranks,
    targets, batch sizes, methods, method options."""
    sweep = get_sweep(sweep)
    t = sweep.training
    training = t | {"model": tiny_like(t["model"]), "train_limit": t.get("batch_size", 8) * t.get("grad_accum", 1),
                    "save_steps": 1}
    groups = {name: Group(tuple(task for task in group.tasks if tasks is None or task in tasks), group.methods,
                          group.ranks, group.seeds[:seeds], group.lrs[:lrs])
              for name, group in ((name, getattr(sweep, name)) for name in GROUPS)}
    return Sweep(training=training, max_steps=steps, method_options=sweep.method_options, **groups)


_CI_TRAINING = dict(model="tiny-llama", lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
                    batch_size=2, grad_accum=1, max_length=128, train_limit=16, loss_on="sequence",
                    scheduler="constant_with_warmup", bf16=False, save_steps=2)

# The PoLAR code's GLUE setting (run_glue.py; docs/benchmarks.md, 'PoLAR GLUE (DeBERTa-v3-base)'): every
# linear layer of DeBERTa's encoder blocks — "output.dense" names both the attention output and the
# feed-forward output projections, "intermediate.dense" the feed-forward input (6 per block; not the pooler,
# not the classifier) —, r = 8, α = 8, dropout 0, length 128, batch 32, linear schedule with 6 % warm-up,
# weight decay 0.01. The new head is trained and saved whole: the classifier (PEFT's SEQ_CLS default) and
# DeBERTa's pooler, which the checkpoint does not hold either (a fresh random layer; ours, docs/benchmarks.md).
GLUE_TASKS = tuple(name for name, task in TASKS.items() if task.kind == "classification")  # data/tasks.yaml
GLUE_TARGETS = ["query_proj", "key_proj", "value_proj", "output.dense", "intermediate.dense"]
GLUE_LRS = (4e-4, 8e-4, 1e-3)
_GLUE_TRAINING = dict(model="microsoft/deberta-v3-base", lora_alpha=8, target_modules=GLUE_TARGETS, lora_dropout=0.0,
                      batch_size=32, grad_accum=1, max_length=128, train_limit=None, scheduler="linear",
                      warmup_ratio=0.06, weight_decay=0.01, max_grad_norm=1.0, bf16=True, save_steps=1000,
                      adapter_options={"modules_to_save": ["pooler"]})
# PoLAR's λ = 1.0 on GLUE, and the decay of 0.01 applied to its factors too, as the original does (the landing
# optimizer's decay_factors; LoRA's and DoRA's AdamW decays every trainable parameter anyway).
_GLUE_METHOD_OPTIONS = {"polar": {"optimizer_options": {"landing_lambda": 1.0, "decay_factors": True}}}

# The PoLAR code's math setting (submit_gemma3_meta.sh; docs/benchmarks.md, 'PoLAR math (Gemma-3-27B)'):
# Gemma-3-27B-pt trained on MetaMathQA for 2 epochs, bf16, r = 16, α = 32, batch 120, λ = 5e-3 (PoLAR's default),
# lr PoLAR 4e-3 (its default), LoRA 8e-4; scored on GSM8K and MATH by lm-eval's stock tasks. Not known from that
# script, ours (docs/benchmarks.md): targets q, k, v, up, down as in its commonsense runs, on the language model
# only (Gemma-3's SigLIP vision tower has q/k/v_proj too); loss on the response (MetaMath's own recipe); cutoff
# 512, cosine with 3 % warm-up as in the commonsense runs; the frozen weights in bf16 (54 GB, not fp32's 108) and
# gradient checkpointing, so that one run fits one 80 GB H100.
MATH_EVAL_TASKS = ("gsm8k", "hendrycks_math")
_MATH_TRAINING = dict(model="google/gemma-3-27b-pt", lora_alpha=32,
                      target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"], lora_dropout=0.05,
                      batch_size=8, grad_accum=15, max_length=512, train_limit=None, loss_on="answer",
                      scheduler="cosine", warmup_ratio=0.03, bf16=True, model_dtype="bfloat16",
                      gradient_checkpointing=True, save_steps=500, adapter_options={"exclude_modules": r".*vision_tower.*"})
_MATH_METHOD_OPTIONS = {"lora": {"lr": 8e-4}}

SWEEPS: dict[str, Sweep] = {
    # The parameters cells' defaults (nbval in `make test`): a random 2-layer model, 4 steps; numbers
    # meaningless, the code path the same as the profiles'.
    "ci": Sweep(
        training=_CI_TRAINING, max_steps=4,
        rank_sweep=Group(("boolq",), ("lora", "polar"), (4, 8), (0, 1)),
        comparison=Group(("boolq",), ("lora", "polar"), (8,), (0, 1)),
    ),
    # make figures: the paper's stable-rank recipe at CPU scale (docs/benchmarks.md, 'What polar_lib runs (CPU profile)').
    # SmolLM2-135M-Instruct on BoolQ's training split, the loss on the whole sequence (the paper's),
    # q/k/v/up/down, α = 32, 200 steps of 2 examples (where PoLAR's stable rank is seen to climb while
    # LoRA's stays flat), the stable rank logged every 25 steps.
    "cpu": Sweep(
        training=_CI_TRAINING | dict(model="smollm2-135m", max_length=256, train_limit=None, save_steps=25),
        max_steps=200,
        rank_sweep=Group(("boolq",), ("lora", "polar"), (4, 8, 16, 32), (0, 1)),
        comparison=Group(("boolq",), ("lora", "dora", "polar"), (8,), (0, 1)),
        # No other methods: at ≈ 3.5 min per run, two at a time, the 18 runs above already take ≈ 32 of
        # make figures' 45 minutes on 2 cores (README, 'Measured times'); `others` would add 2 min per run.
    ),
    # make figures PROFILE=paper: the PoLAR paper's commonsense recipe (docs/benchmarks.md, 'PoLAR
    # commonsense (Llama-2-7B)'): one adapter per task on its training split, 5 epochs, batch 128 (8 × 16
    # accumulation), cosine, cutoff 512, bf16 autocast, loss on the sequence; all eight tasks (PIQA,
    # Social IQa, WinoGrande and HellaSwag train from their hub datasets, docs/data.md). The stable-rank
    # sweep trains on Social IQa, the task of the paper's Fig. 1.
    "paper": Sweep(
        training=_CI_TRAINING | dict(model="meta-llama/Llama-2-7b-hf", batch_size=8, grad_accum=16, max_length=512,
                                     train_limit=None, scheduler="cosine", bf16=True, save_steps=11),
        epochs=5,
        rank_sweep=Group(("social_iqa",), ("lora", "polar"), (4, 8, 16, 32), (0, 1)),
        comparison=Group(COMMONSENSE_TASKS, ("lora", "dora", "polar"), (4, 8, 16, 32), (0, 1, 2)),
        others=Group(COMMONSENSE_TASKS, ("stella", "toplora", "lora+adaprelora", "lora+riemannian"), (4, 8, 16, 32),
                     (0, 1, 2)),
    ),
    # Notebook 05's parameters cell (nbval in `make test`, on the hub-format test copy of GLUE): a random
    # 2-layer DeBERTa-v2, 2 steps of 4 examples, two tasks (a classifier and STS-B's regression), one
    # learning rate of the grid and two seeds (an interval over seeds); numbers meaningless, the code path the
    # paper's (8 runs: the suite's time budget).
    "ci-glue": Sweep(
        training=_GLUE_TRAINING | dict(model="tiny-deberta", batch_size=4, train_limit=8, bf16=False, save_steps=2),
        max_steps=2, method_options=_GLUE_METHOD_OPTIONS,
        glue=Group(("rte", "stsb"), ("lora", "polar"), (8,), (0, 1), (1e-3,)),
    ),
    # make figures PROFILE=paper, notebook 05: the PoLAR paper's GLUE experiment (above; docs/benchmarks.md), the
    # paper's epochs per task (data/tasks.yaml), its learning-rate grid and seeds 0-3, bf16 autocast. LoRA and
    # PoLAR; DoRA would add half as many runs again at ≈ 1.5× LoRA's step time (README, 'The paper profile').
    "paper-glue": Sweep(
        training=_GLUE_TRAINING, epochs={task: get_task(task).epochs for task in GLUE_TASKS},
        method_options=_GLUE_METHOD_OPTIONS,
        glue=Group(GLUE_TASKS, ("lora", "polar"), (8,), (0, 1, 2, 3), GLUE_LRS),
    ),
    # Notebook 06's parameters cell (nbval in `make test`, on the hub-format test copy of MetaMathQA, GSM8K and
    # MATH): a random 2-layer Gemma-3 image-text model, 2 steps of 2 examples; numbers meaningless, the code path
    # the paper's.
    "ci-math": Sweep(
        training=_MATH_TRAINING | dict(model="tiny-gemma3", batch_size=2, grad_accum=1, train_limit=4, bf16=False,
                                       save_steps=2),
        max_steps=2, method_options=_MATH_METHOD_OPTIONS,
        math=Group(("metamathqa",), ("lora", "polar"), (16,), (0,)),
    ),
    # make figures PROFILE=paper, notebook 06: the PoLAR paper's math experiment (above), LoRA and PoLAR, one seed
    # (the paper's; the comparison is paired over GSM8K's 1319 and MATH's 5000 questions).
    "paper-math": Sweep(
        training=_MATH_TRAINING, epochs=2, method_options=_MATH_METHOD_OPTIONS,
        math=Group(("metamathqa",), ("lora", "polar"), (16,), (0,)),
    ),
}


def get_sweep(sweep: str | Path | Sweep) -> Sweep:
    """The sweep named ``sweep`` in ``SWEEPS``, or read from a YAML file with a ``Sweep``'s fields."""
    if isinstance(sweep, Sweep):
        return sweep
    if str(sweep) in SWEEPS:
        return SWEEPS[str(sweep)]
    if Path(sweep).is_file():
        return Sweep(**yaml.safe_load(Path(sweep).read_text()))
    raise ValueError(f"sweep {str(sweep)!r} is neither a sweep name ({', '.join(SWEEPS)}) nor a YAML file")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=prog("sweeps"), description="Count or train the runs of a sweep "
                                     "(one per task of a cluster job array).")
    parser.add_argument("sweep", help=f"a sweep name ({', '.join(SWEEPS)}) or a YAML file with a Sweep's fields")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--count", action="store_true", help="print the number of runs")
    action.add_argument("--index", type=int, help="train (or reuse) run INDEX, 0-based")
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args(argv)
    try:
        configs = list(get_sweep(args.sweep).configs().values())
    except ValueError as error:
        parser.error(str(error))
    if args.count:
        print(len(configs))
    elif not 0 <= args.index < len(configs):
        parser.error(f"--index must be in 0..{len(configs) - 1} for sweep {args.sweep!r} (got {args.index})")
    else:
        print(train(configs[args.index], args.runs_dir))


if __name__ == "__main__":
    main()
