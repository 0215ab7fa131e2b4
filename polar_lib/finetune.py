"""Command line: fine-tune one model with one method on one task.

    polar-finetune --model smollm2-135m --method polar --task arc_easy --r 8 --max-steps 40

Every option is a field of ``polar_lib.train.RunConfig`` (and ``--epochs``, which sets ``max_steps``);
the run directory is printed at the end.
Launch with ``torchrun --nproc_per_node N -m polar_lib.finetune ...`` for data-parallel training.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ._cli import prog
from .data import task_names
from .methods import METHODS
from .models import KNOWN_MODELS
from .train import RunConfig, execute, plan_run, steps_for_epochs

HELP = {
    "model": f"model (required): one of {KNOWN_MODELS}, a hub id or a local folder",
    "method": f"one of {tuple(METHODS)}",
    "task": "training task (one with a train split), e.g. arc_easy, boolq, openbookqa",
    "r": "adapter rank",
    "lora_alpha": "scale numerator: s = lora_alpha / r (default 2r)",
    "target_modules": "modules to adapt: 'all-linear' or a comma-separated list such as q_proj,v_proj",
    "lora_dropout": "dropout on the adapter input",
    "lr": "learning rate (default: the method's paper value, see polar_lib.methods)",
    "max_steps": "optimizer steps",
    "batch_size": "examples per device per micro-batch",
    "grad_accum": "micro-batches per optimizer step",
    "max_length": "truncate sequences to this many tokens",
    "train_limit": "use only the first N training examples",
    "loss_on": "'answer' (answer tokens only) or 'sequence' (whole sequence, as the PoLAR code)",
    "scheduler": "learning-rate schedule (a transformers scheduler name: cosine, linear, constant, ...)",
    "warmup_ratio": "fraction of steps spent warming up",
    "weight_decay": "AdamW weight decay (never applied to Stiefel factors)",
    "max_grad_norm": "gradient clipping norm (applied before the method's gradient rewrite)",
    "bf16": "bf16 autocast (GPU)",
    "model_dtype": "dtype of the frozen base weights: float32 or bfloat16 (halves a large model's memory; adapters stay fp32)",
    "gradient_checkpointing": "recompute activations in the backward pass: the same gradients for less memory",
    "seed": "random seed (model head, adapter init, data order, dropout)",
    "save_steps": "checkpoint (and log the stable ranks) every N steps; an interrupted run resumes from the last one",
    "group_by_length": "batch examples of similar length (less padding)",
    "adapter_options": "JSON dict of extra PEFT config fields, e.g. '{\"theta\": \"diagonal\"}'",
    "optimizer_options": "JSON dict of extra optimizer arguments, e.g. '{\"landing_lambda\": 1.0}'",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("finetune"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_mutually_exclusive_group()
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name == "model":  # no silent default: the Python default is a random test model
            parser.add_argument(flag, required=True, help=HELP[f.name])
        elif f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{HELP[f.name]} (default: {default})")
        elif f.type == "dict":
            parser.add_argument(flag, type=json.loads, default=default, help=HELP[f.name])
        elif f.name == "max_steps":  # parsed default None: argparse then sees any given value beside --epochs
            steps.add_argument(flag, type=int, default=None, help=f"{HELP[f.name]} (default: {default})")
            steps.add_argument("--epochs", type=float, default=None,
                               help="passes over the training split, instead of --max-steps "
                                    "(polar_lib.train.steps_for_epochs)")
        else:
            convert = {"int": int, "float": float, "int | None": int, "float | None": float}.get(f.type, str)
            parser.add_argument(flag, type=convert, default=default, help=f"{HELP[f.name]} (default: {default})")
    parser.add_argument("--runs-dir", default="runs", help="where run directories are created (default: runs)")
    parser.add_argument("--run-dir", default=None, help="an explicit run directory instead of runs-dir/<name>")
    parser.add_argument("--data-dir", default=None, help="benchmark data directory (default: see polar_lib.data)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    options = {k: args.pop(k) for k in ("runs_dir", "run_dir", "data_dir", "no_progress")}
    epochs = args.pop("epochs")
    if args["max_steps"] is None:
        del args["max_steps"]  # RunConfig's default
    if args["target_modules"] != "all-linear":  # names, never a regex (PEFT reads a plain string as one)
        args["target_modules"] = args["target_modules"].split(",")
    if args["task"] not in task_names():
        parser.error(f"unknown task {args['task']!r}; valid tasks: {', '.join(task_names())}")
    try:  # everything that can fail is checked here, before anything is written
        if epochs is not None:
            args["max_steps"] = steps_for_epochs(args["task"], epochs, args["batch_size"], args["grad_accum"],
                                                 args["train_limit"], options["data_dir"])
        plan = plan_run(RunConfig(**args), options["runs_dir"], options["run_dir"], data_dir=options["data_dir"])
    except (ValueError, OSError) as error:
        parser.error(str(error).splitlines()[0])
    print(execute(plan, progress=not options["no_progress"]))


if __name__ == "__main__":
    main(sys.argv[1:])
