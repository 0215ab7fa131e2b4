"""One training path for every method: stock ``transformers.Trainer`` with the method's optimizer.

Gradient accumulation, bf16, DDP (``torchrun``), logging, checkpointing and resuming come from
the Trainer; the method brings its adapter (``methods.prepare``) and its optimizer
(``methods.make_optimizer``), whose ``step()`` sees the clipped gradient as in the PoLAR code.

A run lives in one directory named after the hash of its identity (``run_identity``: the
``RunConfig``, the values the registry fills in, the package versions, the training file's sha256)::

    <run_dir>/config.json     the identity (written once everything is validated)
    <run_dir>/checkpoints/    Trainer checkpoints (adapter, optimizer, scheduler, RNG states)
    <run_dir>/adapter/        the final adapter (stock ``PeftModel.from_pretrained`` loads it; README.md says how)
    <run_dir>/stable_ranks.csv  the stable rank of every adapter layer at step 0 and at every checkpoint
    <run_dir>/metrics.json    training metrics (written last: its presence marks a finished run)

Everything that can fail (model, task and split, data, scheduler, targets, r) is checked before
anything is written. A finished run with the same identity is reused, never retrained; an
interrupted one resumes from its last checkpoint (bit-identical to an uninterrupted run on CPU); a
directory holding a different run is never overwritten; a lock beside the run directory makes a
second process wait for the first instead of training the same run again.

The module is callable as its function ``train``: ``from polar_lib import train; train(config)``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import types
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch
from filelock import FileLock
from transformers import (DataCollatorForSeq2Seq, DataCollatorWithPadding, Trainer, TrainerCallback,
                          TrainingArguments)
from transformers.trainer_utils import SchedulerType, get_last_checkpoint

from . import __version__
from ._checks import check_choice, check_positive_int
from ._log import log
from . import data as task_data
from .methods import get_method, make_config, make_optimizer, optimizer_settings, prepare
from .models import ENCODER_FAMILIES, ENCODER_MODELS, check_model_name, load_model, model_task

LOSS_ON = ("answer", "sequence")
MODEL_DTYPES = ("float32", "bfloat16")
SCHEDULERS = tuple(s.value for s in SchedulerType)
VERSIONED = ("torch", "transformers", "peft")  # the libraries whose version can change a run's numbers


@dataclass
class RunConfig:
    """Everything that defines a fine-tuning run (its hash names the run directory).

    loss_on: ``"answer"`` (loss on the answer tokens only; cheaper signal on a CPU) or
    ``"sequence"`` (the whole prompt and answer, as the PoLAR code does). Encoders
    (MiniLM, BERT, DeBERTa; ``models.model_task``) train a sequence classifier instead: over the
    numbered choices of a multiple-choice task, or on a GLUE task's text pair with its ``num_labels``
    classes (``data/tasks.yaml``; STS-B: one output, the score, regressed with the MSE loss), as
    Hugging Face's ``run_glue`` does. A GLUE task needs an encoder.
    save_steps: a checkpoint (and a line of ``stable_ranks.csv`` per layer) every that many steps.
    group_by_length: batches of similar lengths (transformers' length-grouped sampler; each batch is
    padded to its own longest sequence only), less padding for the same examples.
    adapter_options / optimizer_options: extra keyword arguments for the method's PEFT config
    (e.g. ``{"theta": "diagonal"}``) and optimizer (e.g. ``{"landing_lambda": 1.0}``).
    model_dtype: the frozen base weights' dtype (``"bfloat16"`` halves a large model's memory; the adapters
    stay fp32, PEFT's ``autocast_adapter_dtype``); bf16 is autocast, independently.
    gradient_checkpointing: recompute each block's activations in the backward pass (transformers',
    non-reentrant): the same gradients for less memory, ≈ 1/3 more compute.
    """

    model: str = "tiny-llama"
    method: str = "lora"
    task: str = "arc_easy"
    r: int = 8
    lora_alpha: float | None = None
    target_modules: str | list[str] = "all-linear"
    lora_dropout: float = 0.05
    lr: float | None = None
    max_steps: int = 20
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    train_limit: int | None = None
    loss_on: str = "answer"
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    model_dtype: str = "float32"
    gradient_checkpointing: bool = False
    seed: int = 0
    save_steps: int = 50
    group_by_length: bool = True
    adapter_options: dict = field(default_factory=dict)
    optimizer_options: dict = field(default_factory=dict)

    def __post_init__(self):
        check_model_name(self.model)
        get_method(self.method)
        task_data.get_task(self.task)
        check_choice("loss_on", self.loss_on, LOSS_ON)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_choice("model_dtype", self.model_dtype, MODEL_DTYPES)
        for name in ("r", "max_steps", "batch_size", "grad_accum", "max_length", "save_steps"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if task_data.get_task(self.task).kind == "classification" and self.model_task != "sequence-classification":
            raise ValueError(f"task {self.task!r} trains a sequence classifier; model={self.model!r} is a causal LM; "
                             f"allowed: an encoder ({', '.join(ENCODER_MODELS)}, or a hub id or folder named after "
                             f"one of {', '.join(ENCODER_FAMILIES)})")

    @property
    def model_task(self) -> str:
        return model_task(self.model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def peft_options(self) -> dict:
        """The PEFT config fields beyond r, α, targets and dropout (encoders also train their new head)."""
        options = dict(self.adapter_options)
        if self.model_task == "sequence-classification":
            options.setdefault("task_type", "SEQ_CLS")
        return options


def jsonable(value):
    """``value`` in a canonical JSON form: sets sorted, tuples as lists, classes, functions and enums by name."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, type) or callable(value):  # classes and functions by name, never by address
        return f"{value.__module__}.{value.__qualname__}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(getattr(value, "value", value))


def run_identity(config: RunConfig, data_dir: str | Path | None = None) -> dict:
    """Everything that determines the run of ``config``, as written to its ``config.json``:

    - ``config``: the ``RunConfig`` fields as given;
    - ``resolved``: what the registry fills in — the full PEFT adapter config (α, Θ mode, init, ...)
      and every optimizer setting (lr, weight decay, λ, ...; ``methods.optimizer_settings``);
    - ``versions``: polar_lib's and those of torch, transformers and peft;
    - ``data``: the training split's source and checksum (``data.split_identity``: a file and its sha256, or a
      hub dataset, config and split and the sha256 of its data files).

    Raises (before anything is written) for a task without a training split or a missing data file.
    """
    if "train" not in task_data.get_task(config.task).splits:
        with_train = [name for name, t in task_data.TASKS.items() if "train" in t.splits]
        raise ValueError(f"task {config.task!r} has no train split; tasks with one: {', '.join(with_train)}")
    data = task_data.split_identity(config.task, "train", data_dir)
    adapter = make_config(config.method, r=config.r, lora_alpha=config.lora_alpha,
                          target_modules=config.target_modules, lora_dropout=config.lora_dropout,
                          **config.peft_options()).to_dict()
    optimizer = optimizer_settings(config.method, lr=config.lr, weight_decay=config.weight_decay,
                                   **config.optimizer_options)
    return jsonable({
        "config": config.to_dict(),
        "resolved": {"adapter": adapter, "optimizer": optimizer},
        "versions": {"polar_lib": __version__, **{name: version(name) for name in VERSIONED}},
        "data": data,
    })


def run_name(identity: dict) -> str:
    """``<task>-<method>-r<r>-seed<seed>-<first 10 hex digits of the identity's sha1>``."""
    config = identity["config"]
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config['task']}-{config['method']}-r{config['r']}-seed{config['seed']}-{digest}"


def differing_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two identities, as ``key: old -> new``."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += differing_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def tokenize_examples(examples, tokenizer, model_task: str, max_length: int, loss_on: str) -> list[dict]:
    """Token ids (and labels) per example: prompt + " " + answer for causal LMs, with the prompt's
    labels masked (-100) when ``loss_on == "answer"``; for encoders, a ``ClassificationExample``'s text
    and pair as the tokenizer's pair (``tokenizer(text, text_pair, truncation=True, max_length=...)``)
    with its label (a class index, or STS-B's float score), a multiple-choice example's prompt with its
    numbered choices and the choice index."""
    rows = []
    for example in examples:
        if isinstance(example, task_data.ClassificationExample):
            if model_task != "sequence-classification":
                raise ValueError(f"model_task={model_task!r} for a classification example; allowed: 'sequence-classification'")
            encoded = tokenizer(example.text, example.text_pair, truncation=True, max_length=max_length)
            rows.append({key: encoded[key] for key in ("input_ids", "token_type_ids") if key in encoded}
                        | {"labels": example.label})
            continue
        if model_task == "sequence-classification":
            text = task_data.format_classifier_input(example)
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            rows.append({"input_ids": ids, "labels": example.label})
            continue
        prompt = task_data.format_prompt(example)
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = tokenizer(prompt + " " + task_data.answer_text(example))["input_ids"] + [tokenizer.eos_token_id]
        labels = list(ids)
        if loss_on == "answer":
            labels[:len(prompt_ids)] = [-100] * len(prompt_ids)
        rows.append({"input_ids": ids[:max_length], "labels": labels[:max_length]})
    return rows


def collator(tokenizer, model_task: str):
    """transformers' collator of the training batches, right-padded to the batch's longest sequence:
    ``DataCollatorForSeq2Seq`` for causal LMs (labels padded with -100, so padding never counts in the
    loss), ``DataCollatorWithPadding`` for sequence classifiers (labels: the class indices)."""
    tokenizer.padding_side = "right"  # the positions of a sequence do not depend on its batch
    if model_task == "sequence-classification":
        return DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")
    return DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100, return_tensors="pt")


def load_run(run_dir: str | Path) -> tuple[RunConfig, dict | None]:
    """The config of the run in ``run_dir`` and its metrics (None while unfinished)."""
    run_dir = Path(run_dir)
    config = RunConfig(**json.loads((run_dir / "config.json").read_text())["config"])
    metrics_file = run_dir / "metrics.json"
    return config, json.loads(metrics_file.read_text()) if metrics_file.exists() else None


def load_finished_run(run_dir: str | Path) -> tuple[RunConfig, dict]:
    """``load_run`` of a finished run; ``FileNotFoundError`` saying what is missing otherwise."""
    if not (Path(run_dir) / "config.json").is_file():
        raise FileNotFoundError(f"run_dir {run_dir} is not a run directory (no config.json)")
    config, metrics = load_run(run_dir)
    if metrics is None:
        raise FileNotFoundError(f"run_dir {run_dir} is not a finished run (no metrics.json); train it first")
    return config, metrics


def load_trained(run_dir: str | Path):
    """The base model with the run's final adapter loaded (stock ``PeftModel.from_pretrained``), and its tokenizer."""
    from peft import PeftModel

    config, metrics = load_finished_run(run_dir)
    model, tokenizer = load_model(config.model, task=config.model_task, seed=config.seed,
                                  num_labels=metrics.get("num_labels", 2), dtype=getattr(torch, config.model_dtype))
    return PeftModel.from_pretrained(model, Path(run_dir) / "adapter"), tokenizer


def steps_for_epochs(task: str, epochs: float, batch_size: int, grad_accum: int = 1,
                     train_limit: int | None = None, data_dir: str | Path | None = None) -> int:
    """Optimizer steps for ``epochs`` passes over ``task``'s training split (its first ``train_limit``
    examples): ⌈epochs · N / (batch_size · grad_accum)⌉, the ``max_steps`` of a run given in epochs."""
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs!r}")
    if batch_size < 1 or grad_accum < 1:
        raise ValueError(f"batch_size and grad_accum must be >= 1, got {batch_size!r} and {grad_accum!r}")
    examples = task_data.load_task(task, split="train", data_dir=data_dir, limit=train_limit)
    return math.ceil(epochs * len(examples) / (batch_size * grad_accum))


STABLE_RANKS = "stable_ranks.csv"
STABLE_RANK_FIELDS = ["step", "name", "layer", "module", "method", "rank", "stable_rank"]


class StableRankLog(TrainerCallback):
    """Appends the stable rank of every adapter layer (``inspection.adapter_stable_ranks``) to
    ``<run_dir>/stable_ranks.csv`` before the first step and after every checkpoint save, so that a
    resumed run's log is the uninterrupted run's (rows repeated by a resume are dropped on reading)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / STABLE_RANKS

    def _record(self, state, model) -> None:
        from .inspection import adapter_stable_ranks

        if not state.is_world_process_zero:
            return
        frame = adapter_stable_ranks(model).assign(step=state.global_step)[STABLE_RANK_FIELDS]
        frame.to_csv(self.path, mode="a", header=not self.path.exists(), index=False)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self._record(state, model)

    def on_save(self, args, state, control, model=None, **kwargs):
        self._record(state, model)


def load_stable_ranks(run_dir: str | Path):
    """The stable-rank log of a run: one row per adapter layer and logged step (columns
    ``STABLE_RANK_FIELDS``), each (step, layer) once, sorted by step and module path."""
    import pandas as pd

    frame = pd.read_csv(Path(run_dir) / STABLE_RANKS)
    frame["layer"] = frame["layer"].astype("Int64")
    return (frame.drop_duplicates(["step", "name"], keep="last").sort_values(["step", "name"], kind="stable")
            .reset_index(drop=True))


def loss_curves(run_dirs: dict, key_names: tuple[str, ...] = ("task", "method", "r", "seed"),
                window: int = 10):
    """The training losses of finished runs, one row per (run, step): the columns ``key_names`` (the
    runs' keys in ``run_dirs``: key → run directory), ``step`` (1, 2, ...), ``training loss`` and
    ``smoothed loss``, the mean of the last ``window`` steps' losses (fewer at the start)."""
    import pandas as pd

    frames = []
    for key, run_dir in run_dirs.items():
        losses = pd.Series(load_run(run_dir)[1]["loss_history"], dtype=float)
        frames.append(pd.DataFrame({**dict(zip(key_names, key)), "step": range(1, len(losses) + 1),
                                    "training loss": losses,
                                    "smoothed loss": losses.rolling(window, min_periods=1).mean()}))
    return pd.concat(frames, ignore_index=True)


@dataclass
class RunPlan:
    """A validated run, nothing written yet: ``plan_run``'s answer, ``execute``'s input."""

    config: RunConfig
    run_dir: Path
    identity: dict
    data_dir: str | Path | None
    built: tuple | None = field(default=None, repr=False)  # _build's result, made while validating


def plan_run(config: RunConfig, runs_dir: str | Path = "runs", run_dir: str | Path | None = None, *,
             data_dir: str | Path | None = None) -> RunPlan:
    """Check everything about ``config`` that can fail, writing nothing: the task's training split
    and its file (checksum included), an existing ``run_dir`` holding another run (the differing
    fields are named), and — unless the run is finished — the model, the targets and r (by building
    the adapter on the model and the optimizer)."""
    identity = run_identity(config, data_dir)
    run_dir = Path(run_dir) if run_dir is not None else Path(runs_dir) / run_name(identity)
    config_file = run_dir / "config.json"
    if config_file.exists():
        changes = differing_fields(json.loads(config_file.read_text()), identity)
        if changes:
            raise FileExistsError(f"{run_dir} holds a different run ({'; '.join(changes)}); "
                                  "choose another run_dir or delete that one")
    plan = RunPlan(config, run_dir, identity, data_dir)
    if not (run_dir / "metrics.json").exists():
        plan.built = _build(plan)  # the model, the adapter and the optimizer: a bad target or r fails here
    return plan


def _build(plan: RunPlan):
    """The training examples, the model with its adapter, its tokenizer and the optimizer of ``plan``."""
    config = plan.config
    examples = task_data.load_task(config.task, split="train", data_dir=plan.data_dir, limit=config.train_limit)
    task = task_data.get_task(config.task)
    if task.kind == "classification":
        num_labels = task.num_labels  # the registry's classes; 1: a regression score (STS-B)
    else:
        num_labels = max(len(getattr(e, "choices", ())) for e in examples) if config.model_task != "causal-lm" else 2
    model, tokenizer = load_model(config.model, task=config.model_task, seed=config.seed, num_labels=num_labels,
                                  dtype=getattr(torch, config.model_dtype))
    model = prepare(model, config.method, r=config.r, lora_alpha=config.lora_alpha,
                    target_modules=config.target_modules, lora_dropout=config.lora_dropout,
                    **config.peft_options())
    optimizer = make_optimizer(model, config.method, lr=config.lr, weight_decay=config.weight_decay,
                               **config.optimizer_options)
    return examples, num_labels, model, tokenizer, optimizer


def execute(plan: RunPlan, *, progress: bool = True, callbacks=None) -> Path:
    """Train the run of ``plan`` (or reuse it when finished, or resume it when interrupted); return its directory.

    Outside ``torchrun`` the run directory's lock is held throughout: a second process planning the same
    run waits, then finds it finished and reuses it.
    """
    run_dir, config = plan.run_dir, plan.config
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # ranks train together: no lock between them
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if distributed else FileLock(run_dir.parent / f".{run_dir.name}.lock"):
        if (run_dir / "metrics.json").exists():
            log.info(f"reusing the finished run {run_dir} (same identity; delete it to retrain)")
            return run_dir
        examples, num_labels, model, tokenizer, optimizer = plan.built or _build(plan)
        plan.built = None  # the Trainer changes the model: never train it twice
        run_dir.mkdir(exist_ok=True)
        if int(os.environ.get("RANK", "0")) == 0:
            (run_dir / "config.json").write_text(json.dumps(plan.identity, indent=1))
        rows = tokenize_examples(examples, tokenizer, config.model_task, config.max_length, config.loss_on)
        args = TrainingArguments(
            output_dir=str(run_dir / "checkpoints"), max_steps=config.max_steps,
            per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
            lr_scheduler_type=config.scheduler, warmup_steps=math.ceil(config.warmup_ratio * config.max_steps),
            max_grad_norm=config.max_grad_norm, bf16=config.bf16, seed=config.seed, data_seed=config.seed,
            gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
            save_strategy="steps", save_steps=config.save_steps, save_total_limit=1,  # a resume needs the last only
            logging_steps=1,  # every step's loss is kept
            train_sampling_strategy="group_by_length" if config.group_by_length else "random",
            report_to=[], disable_tqdm=not progress, remove_unused_columns=False, dataloader_num_workers=0,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, None),
                          data_collator=collator(tokenizer, config.model_task),
                          callbacks=[StableRankLog(run_dir), *(callbacks or [])])
        last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).exists() else None
        if last is not None:
            log.info(f"resuming the interrupted run {run_dir} from {Path(last).name}")
        result = trainer.train(resume_from_checkpoint=last)
        if trainer.is_world_process_zero():
            from .export import write_model_card

            model.save_pretrained(run_dir / "adapter")
            write_model_card(run_dir / "adapter")  # PEFT's card, with how to load and export the adapter
            losses = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
            losses = [losses[step] for step in sorted(losses)]
            metrics = {"train_loss": sum(losses) / len(losses),  # all steps, also after a resume
                       "loss_history": losses, "steps": trainer.state.global_step,
                       "train_runtime_s": result.metrics.get("train_runtime"), "num_labels": num_labels,
                       "num_train_examples": len(rows), "resumed_from": last}
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return run_dir


def train(config: RunConfig, runs_dir: str | Path = "runs", run_dir: str | Path | None = None, *,
          data_dir: str | Path | None = None, progress: bool = True, callbacks=None) -> Path:
    """Train (or reuse, or resume) the run of ``config``; return its directory: ``execute(plan_run(...))``."""
    return execute(plan_run(config, runs_dir, run_dir, data_dir=data_dir), progress=progress, callbacks=callbacks)


def _train_one(config: RunConfig, runs_dir: str, data_dir, threads: int) -> Path:
    """One run of ``train_all`` in a worker process: ``threads`` BLAS threads, its output swallowed."""
    from .figures import quiet

    torch.set_num_threads(threads)
    with quiet():
        return train(config, runs_dir, data_dir=data_dir, progress=False)


def train_all(configs: list[RunConfig] | dict, runs_dir: str | Path = "runs", *, workers: int = 1,
              data_dir: str | Path | None = None, progress: bool = True) -> list[Path] | dict:
    """Train (or reuse) every run of ``configs``; return their directories, in order — for a dict of
    configs (``sweeps.Sweep.configs``: key → config), a dict key → directory.

    Every config's identity is checked first (``run_identity``: task, split, data), so a bad one fails
    before anything trains. ``workers`` runs train at once, each in its own process with one BLAS
    thread (the small matmuls of a 135 M model on a 2-core CPU gain more from two single-threaded runs
    than from one run on two threads); finished runs are reused without starting a process.
    """
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from tqdm.auto import tqdm

    if isinstance(configs, dict):
        return dict(zip(configs, train_all(list(configs.values()), runs_dir, workers=workers, data_dir=data_dir,
                                           progress=progress)))
    check_positive_int("workers", workers)
    names = [run_name(run_identity(config, data_dir)) for config in configs]
    todo = [i for i, name in enumerate(names) if not (Path(runs_dir) / name / "metrics.json").exists()]
    log.info(f"{len(configs) - len(todo)} of {len(configs)} runs already finished (reused); training "
             f"{len(todo)} with {workers} worker(s)")
    if todo:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            threads = 1 if workers > 1 else torch.get_num_threads()
            futures = [pool.submit(_train_one, configs[i], str(runs_dir), data_dir, threads) for i in todo]
            for future in tqdm(futures, desc="training runs", disable=not progress):
                future.result()
    return [Path(runs_dir) / name for name in names]


class _CallableModule(types.ModuleType):
    """``polar_lib.train`` both as this module and as its function ``train``."""

    def __call__(self, *args, **kwargs) -> Path:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
