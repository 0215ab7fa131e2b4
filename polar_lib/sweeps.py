"""The runs of notebooks 01 and 03, defined once per scale so that the two notebooks share them.

A ``Sweep`` holds the training fields every run has in common and three groups of runs, each the
product tasks × methods × ranks × seeds:

- ``rank_sweep`` — notebook 01: the stable rank against r and over training;
- ``comparison`` — notebook 03: the paper's comparison (LoRA, DoRA, PoLAR), paired over seeds;
- ``others`` — the other methods of ``methods.METHODS``, fewer seeds (03's table, 01's one-rank panel).

A run in two groups is one ``RunConfig``, hence one cached run directory (``train.run_name``):
whichever notebook runs first trains it, the other reuses it. ``SWEEPS`` holds the three scales of
the notebooks (``ci``: the parameters cells' defaults; ``cpu``: ``make figures``; ``paper``:
``make figures PROFILE=paper``); ``get_sweep`` also reads a YAML file with a ``Sweep``'s fields.

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
from .models import tiny_like
from .paper import COMMONSENSE_TASKS
from .train import RunConfig, steps_for_epochs, train

GROUPS = ("rank_sweep", "comparison", "others")
PER_RUN = ("method", "task", "r", "seed", "max_steps")  # the RunConfig fields a sweep sets per run


@dataclass(frozen=True)
class Group:
    """The runs tasks × methods × ranks × seeds."""

    tasks: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    ranks: tuple[int, ...] = ()
    seeds: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("tasks", "methods", "ranks", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def keys(self) -> list[tuple[str, str, int, int]]:
        """``(task, method, r, seed)`` of every run, in that nesting order."""
        return [(t, m, r, s) for t in self.tasks for m in self.methods for r in self.ranks for s in self.seeds]


@dataclass(frozen=True)
class Sweep:
    """Runs sharing ``training`` (every ``RunConfig`` field but those of ``PER_RUN``) and one budget:
    ``max_steps`` optimizer steps, or ``epochs`` over each task's training split (rounded up to whole
    steps of ``batch_size × grad_accum`` examples)."""

    training: dict
    rank_sweep: Group = field(default_factory=Group)
    comparison: Group = field(default_factory=Group)
    others: Group = field(default_factory=Group)
    max_steps: int | None = None
    epochs: float | None = None

    def __post_init__(self):
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError(f"a sweep sets exactly one of max_steps and epochs "
                             f"(got max_steps={self.max_steps!r}, epochs={self.epochs!r})")
        fields = {f.name for f in dataclasses.fields(RunConfig)} - set(PER_RUN)
        for name in self.training:
            check_choice("training field", name, sorted(fields))
        for name in GROUPS:
            group = getattr(self, name)
            if isinstance(group, dict):
                object.__setattr__(self, name, Group(**group))

    def steps(self, task: str) -> int:
        """The optimizer steps of every run on ``task``."""
        if self.max_steps is not None:
            return self.max_steps
        t = self.training
        return steps_for_epochs(task, self.epochs, t.get("batch_size", 8), t.get("grad_accum", 1),
                                t.get("train_limit"))

    def config(self, task: str, method: str, r: int, seed: int) -> RunConfig:
        """The ``RunConfig`` of one run (validated: model, method, task, scheduler, sizes)."""
        return RunConfig(method=method, task=task, r=r, seed=seed, max_steps=self.steps(task), **self.training)

    def configs(self, *groups: str, tasks=None, seeds=None) -> dict[tuple, RunConfig]:
        """``(task, method, r, seed) → RunConfig`` over ``groups`` (default: all), without repeats,
        optionally only the runs on ``tasks`` and with ``seeds``."""
        for name in groups:
            check_choice("group", name, GROUPS)
        keys = dict.fromkeys(key for name in groups or GROUPS for key in getattr(self, name).keys())
        return {key: self.config(*key) for key in keys
                if (tasks is None or key[0] in tasks) and (seeds is None or key[3] in seeds)}

    def save(self, path: str | Path) -> Path:
        """Write the sweep as YAML (``get_sweep(path)`` reads it back): the way to a narrower sweep."""
        Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(self))), sort_keys=False))
        return Path(path)


def smoke(sweep: str | Path | Sweep, *, tasks=None, seeds: int = 1, steps: int = 2) -> Sweep:
    """``sweep`` at test scale (the paper profile's smoke run in ``make test``): its model swapped for the
    tiny random model of the same family (``models.tiny_like``), ``steps`` optimizer steps on one step's
    worth of examples (``batch_size × grad_accum``) with a checkpoint (and stable ranks) after each, the
    first ``seeds`` seeds and, given ``tasks``, only those tasks; everything else kept — bf16, schedule,
    accumulation, loss, ranks, targets, batch sizes, methods."""
    sweep = get_sweep(sweep)
    t = sweep.training
    training = t | {"model": tiny_like(t["model"]), "train_limit": t.get("batch_size", 8) * t.get("grad_accum", 1),
                    "save_steps": 1}
    groups = {name: Group(tuple(task for task in group.tasks if tasks is None or task in tasks), group.methods,
                          group.ranks, group.seeds[:seeds])
              for name, group in ((name, getattr(sweep, name)) for name in GROUPS)}
    return Sweep(training=training, max_steps=steps, **groups)


_CI_TRAINING = dict(model="tiny-llama", lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
                    batch_size=2, grad_accum=1, max_length=128, train_limit=16, loss_on="sequence",
                    scheduler="constant_with_warmup", bf16=False, save_steps=2)

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
