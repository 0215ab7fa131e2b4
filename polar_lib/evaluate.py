"""Accuracy of a model or a finished run on the benchmark tasks, with stock lm-eval.

Causal LMs are scored by lm-eval (``simple_evaluate`` on the in-memory model, a ``PeftModel``
included) on task configs generated from ``polar_lib.data``:

- multiple choice: log-likelihood of each continuation ``" " + choice`` after the context
  ``format_prompt(example)`` — exactly the text the model was trained on; reported as ``acc`` or
  ``acc_norm`` per the stock tasks' convention (the ``metric`` of ``data/tasks.yaml``);
- math: lm-eval's ``generate_until`` (greedy, ``MATH_MAX_NEW_TOKENS`` tokens), the last number of the
  output matched to the answer within ``MATH_RTOL`` relative (``exact_match``).

With ``online=True`` lm-eval's stock tasks (``arc_easy``, ``boolq``, ``gsm8k``, the group
``hendrycks_math``, ...) are used instead, exactly as lm-eval ships them (``stock_task_configs``), their
data read from the hub or from a local copy of it (``hub_data.hub_location``); ``stock_answers`` scores
any lm-eval ``LM`` on them. Sequence classifiers (the encoders) are scored by the argmax of their logits
over the test split. ``run_scores`` scores many runs into one table with per-question answers.

GLUE runs (a sequence classifier trained on a GLUE task) are scored by ``evaluate_classifier``: the
predictions on the task's validation split (the argmax of the logits; STS-B: the single output, the
predicted score), and GLUE's metrics of them (``hub_data.glue_metric``), cached in the run directory.
``glue_scores`` scores many runs into one table, ``seed_intervals`` summarises it over seeds (mean, sd,
t-interval) and ``best_learning_rates`` picks each (task, method, r)'s learning rate from a grid.

CLI: ``polar-evaluate --run <run_dir> [--tasks arc_easy,boolq] [--limit N]``, or a model without an
adapter: ``polar-evaluate --model smollm2-135m --task arc_easy``.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import torch

from . import data as task_data
from ._checks import check_open_unit
from ._cli import prog
from ._log import log
from .paths import cache_dir

MATH_MAX_NEW_TOKENS = 32
MATH_RTOL = 1e-4
COLUMNS = ["task", "metric", "accuracy", "stderr", "low", "high", "n"]
QUESTION_COLUMNS = ["task", "question", "correct"]
NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


def eval_task_names(online: bool = False) -> tuple[str, ...]:
    """The tasks that can be evaluated: those with a test split (``online``: those with a stock lm-eval task)."""
    return tuple(name for name, task in task_data.TASKS.items()
                 if (task.lm_eval_task if online else "test" in task.splits))


def check_tasks(tasks: list[str], online: bool = False) -> list[str]:
    """``tasks`` as a list, or ``ValueError`` naming a task that cannot be evaluated and the valid ones."""
    valid = eval_task_names(online)
    if not tasks:
        raise ValueError(f"tasks: give at least one of {', '.join(valid)}")
    for name in tasks:
        if name not in valid:
            where = "with a stock lm-eval task (online)" if online else "with a test split"
            raise ValueError(f"tasks: cannot evaluate {name!r}; tasks {where}: {', '.join(valid)}")
    return list(tasks)


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (``"1,200"`` reads as 1200), or None."""
    found = NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def math_correct(output: str, answer: float) -> bool:
    """Whether the last number of ``output`` equals ``answer`` within ``MATH_RTOL`` relative."""
    value = last_number(output)
    return value is not None and math.isclose(value, answer, rel_tol=MATH_RTOL)


def _score_math(doc: dict, results: list[str]) -> dict:
    return {"exact_match": float(math_correct(results[0], doc["answer"]))}


def _write_jsonl(records: list[dict], name: str) -> Path:
    """Write ``records`` once to a content-addressed file in the cache; return its absolute path."""
    text = "".join(json.dumps(record) + "\n" for record in records)
    path = (cache_dir() / "lm-eval-tasks" / f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:12]}.jsonl").resolve()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".part", delete=False) as part:
            part.write(text)
        os.replace(part.name, path)
    return path


def lm_eval_task_config(task: str, data_dir: str | Path | None = None, limit: int | None = None) -> dict:
    """An lm-eval task config (a dict for ``simple_evaluate(tasks=[...])``) for the test split of ``task``.

    The examples parsed by ``polar_lib.data`` are written as JSONL records ``{prompt, choices, label}``
    (math: ``{prompt, answer}``) into the cache; the config reads them by absolute path.
    Multiple choice scores ``" " + choice`` after ``prompt`` (``acc`` and ``acc_norm``); math
    generates greedily and scores ``exact_match`` by ``math_correct``.
    """
    check_tasks([task])
    examples = task_data.load_task(task, split="test", data_dir=data_dir, limit=limit)
    config = {"task": task, "dataset_path": "json", "test_split": "test", "doc_to_text": "prompt"}
    if task_data.get_task(task).kind == "math":
        records = [{"prompt": task_data.format_prompt(e), "answer": e.answer} for e in examples]
        config |= {"output_type": "generate_until", "doc_to_target": "answer", "process_results": _score_math,
                   "generation_kwargs": {"until": ["\n\n", "\nQuestion:"], "max_gen_toks": MATH_MAX_NEW_TOKENS,
                                         "do_sample": False},
                   "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}
    else:
        records = [{"prompt": task_data.format_prompt(e), "choices": list(e.choices), "label": e.label}
                   for e in examples]
        config |= {"output_type": "multiple_choice", "doc_to_choice": "choices", "doc_to_target": "label",
                   "target_delimiter": " ",
                   "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                   for m in ("acc", "acc_norm")]}
    config["dataset_kwargs"] = {"data_files": {"test": str(_write_jsonl(records, task))}}
    return config


def hf_lm(model, tokenizer, batch_size: int = 8):
    """lm-eval's ``HFLM`` around an in-memory model (on the model's own device).

    A tokenizer that wraps text in special tokens (BERT's ``[CLS] … [SEP]``, used by the tiny test
    models) is used without them: a trailing ``[SEP]`` would break lm-eval's split of
    context and continuation tokens.
    """
    from lm_eval.models.huggingface import HFLM

    wraps = tokenizer("a")["input_ids"][-1] in tokenizer.all_special_ids
    options = {"add_bos_token": False, "prefix_token_id": tokenizer.cls_token_id} if wraps else {}
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **options)


@functools.cache
def _stock_index() -> dict:
    from lm_eval.tasks import TaskManager

    return TaskManager().task_index


def stock_task_configs(task: str, hub_dir: str | Path | None = None) -> list[dict]:
    """lm-eval's stock task of registry task ``task`` (its ``lm_eval_task``) as task config dicts: the
    registered YAML as lm-eval ships it (prompt, shots, filters, generation settings, scoring) with only
    ``dataset_path`` set to ``hub_data.hub_location`` of the registry's hub dataset (the hub itself, or a
    local copy under ``hub_dir`` / ``$POLAR_HUB_DATA``). A group (``hendrycks_math``) gives its subtasks,
    in the group's order."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from .hub_data import hub_location

    check_tasks([task], online=True)
    entry = task_data.get_task(task)
    location = hub_location(entry.hub["path"], hub_dir)

    def expand(name: str) -> list[dict]:
        config = load_yaml(_stock_index()[name].yaml_path, resolve_func=True)
        if "group" in config:
            return [leaf for member in config["task"] for leaf in expand(member)]
        if config["dataset_path"] != entry.hub["path"]:
            raise ValueError(f"data/tasks.yaml: task {task!r} names hub dataset {entry.hub['path']}, lm-eval's "
                             f"{name} reads {config['dataset_path']}")
        return [{key: value for key, value in config.items() if key not in ("tag", "group")}
                | {"dataset_path": location}]

    return expand(entry.lm_eval_task)


def stock_answers(lm, tasks: list[str], limit: int | None = None, hub_dir: str | Path | None = None) -> pd.DataFrame:
    """Per test question of each task, whether ``lm`` (any lm-eval ``LM``; ``hf_lm`` wraps a model) answers
    it right on lm-eval's stock task (``stock_task_configs``): columns task, question, correct (0/1) — each
    document's sample under the task's filter (``lm_eval_filter``: GSM8K ``flexible-extract``) and metric.
    A group's subtasks follow one another, their questions numbered through, so that the mean of
    ``correct`` is the group's aggregate weighted by size (lm-eval's for ``hendrycks_math``). ``limit``:
    the first ``limit`` questions of each (sub)task."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks = check_tasks(tasks, online=True)
    configs = {task: stock_task_configs(task, hub_dir) for task in tasks}
    output = lm_eval.simple_evaluate(model=lm, tasks=[config for task in tasks for config in configs[task]],
                                     task_manager=TaskManager(include_defaults=False), limit=limit, log_samples=True)
    rows = []
    for task in tasks:
        entry, offset = task_data.get_task(task), 0
        for config in configs[task]:
            samples = sorted((sample for sample in output["samples"][config["task"]]
                              if sample["filter"] == entry.lm_eval_filter), key=lambda sample: sample["doc_id"])
            rows += [{"task": task, "question": offset + sample["doc_id"], "correct": int(sample[entry.metric])}
                     for sample in samples]
            offset += len(samples)
    return pd.DataFrame(rows, columns=QUESTION_COLUMNS)


def _is_classifier(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


@torch.no_grad()
def _classifier_answers(model, tokenizer, tasks, limit, batch_size, data_dir) -> pd.DataFrame:
    """Per question, whether a sequence classifier's argmax over the example's choices is right."""
    model.eval()
    max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    rows = []
    for name in tasks:
        examples = task_data.load_task(name, split="test", data_dir=data_dir, limit=limit)
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            inputs = tokenizer([task_data.format_classifier_input(e) for e in batch], padding=True, truncation=True,
                               max_length=max_length, return_tensors="pt").to(model.device)
            logits = model(**inputs).logits
            rows += [{"task": name, "question": start + i, "correct": int(int(row[:len(e.choices)].argmax()) == e.label)}
                     for i, (row, e) in enumerate(zip(logits, batch))]
    return pd.DataFrame(rows, columns=QUESTION_COLUMNS)


def summarize(answers: pd.DataFrame, metrics: dict[str, str], confidence: float = 0.95) -> pd.DataFrame:
    """Per task: accuracy (mean of ``correct``), its standard error √(p(1−p)/(n−1)) (lm-eval's), the
    ``confidence`` Wilson interval over questions (``low``, ``high``; ``stats.wilson_interval``) and n."""
    from .stats import wilson_interval

    rows = []
    for task, group in answers.groupby("task", sort=False):
        n, hits = len(group), int(group["correct"].sum())
        accuracy, low, high = wilson_interval(hits, n, confidence)
        stderr = math.sqrt(accuracy * (1 - accuracy) / (n - 1)) if n > 1 else float("nan")
        rows.append({"task": task, "metric": metrics[task], "accuracy": accuracy, "stderr": stderr,
                     "low": low, "high": high, "n": n})
    return pd.DataFrame(rows, columns=COLUMNS)


def evaluate_model(model, tokenizer, tasks: list[str], limit: int | None = None, batch_size: int = 8,
                   data_dir: str | Path | None = None, online: bool = False) -> pd.DataFrame:
    """Accuracy of ``model`` on the test split of each task: ``summarize(score_questions(...))``.

    Parameters
    ----------
    model, tokenizer : a causal LM (a ``PeftModel`` works) or a sequence classifier, and its tokenizer.
    tasks : task names of ``polar_lib.data`` (``eval_task_names()``).
    limit : evaluate the first ``limit`` test examples of each task (all when None).
    batch_size : lm-eval's batch size.
    data_dir : the data directory (see ``polar_lib.data.data_dir``).
    online : use lm-eval's stock tasks (hub data, needs internet) instead of the local files.

    Returns
    -------
    DataFrame with columns task, metric (the task's convention), accuracy, stderr, low, high (the 95 %
    Wilson interval over questions), n.
    """
    answers = score_questions(model, tokenizer, tasks, limit, batch_size, data_dir, online)
    return summarize(answers, {task: _metric(model, task) for task in answers["task"].unique()})


def _metric(model, task: str) -> str:
    return "acc" if _is_classifier(model) else task_data.get_task(task).metric


def score_questions(model, tokenizer, tasks: list[str], limit: int | None = None, batch_size: int = 8,
                    data_dir: str | Path | None = None, online: bool = False) -> pd.DataFrame:
    """Per test question of each task, whether ``model`` answers it right under the task's metric:
    columns task, question (index in the test split), correct (0/1). Two runs scored on the same
    task and limit have the same questions, so their answers pair (``stats.paired_comparison``)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    tasks = check_tasks(tasks, online)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if _is_classifier(model):
        if online:
            raise ValueError("online=True evaluates causal LMs only; got a sequence classifier")
        return _classifier_answers(model, tokenizer, tasks, limit, batch_size, data_dir)
    model.eval()
    if online:
        return stock_answers(hf_lm(model, tokenizer, batch_size), tasks, limit)
    output = lm_eval.simple_evaluate(
        model=hf_lm(model, tokenizer, batch_size), tasks=[lm_eval_task_config(t, data_dir, limit) for t in tasks],
        task_manager=TaskManager(include_defaults=False), log_samples=True)
    rows = []
    for name in tasks:
        metric = task_data.get_task(name).metric
        rows += [{"task": name, "question": sample["doc_id"], "correct": int(sample[metric])}
                 for sample in sorted(output["samples"][name], key=lambda sample: sample["doc_id"])]
    return pd.DataFrame(rows, columns=QUESTION_COLUMNS)


def evaluation_key(tasks: list[str], limit: int | None, online: bool, data_dir: str | Path | None = None) -> dict:
    """What an evaluation's result depends on besides the run: per task, the test file's sha256 and
    the lm-eval config built from it (prompts, metrics, generation settings) — online: the stock configs,
    the filter and metric scored, and each (sub)task's data files' checksum (``hub_data.dataset_files_sha256``,
    of the hub commit or of the local copy's files); the limit; online or not; polar_lib's and lm-eval's
    versions."""
    from importlib.metadata import version

    from . import __version__
    from .hub_data import dataset_files_sha256
    from .train import jsonable

    per_task = {}
    for task in tasks:
        entry = task_data.get_task(task)
        if online:
            configs = stock_task_configs(task)
            per_task[task] = {"metric": entry.metric, "filter": entry.lm_eval_filter, "lm_eval_task": entry.lm_eval_task,
                              "data": {config["task"]: dataset_files_sha256(config["dataset_path"],
                                                                            config.get("dataset_name"))
                                       for config in configs},
                              "configs": jsonable([{key: value for key, value in config.items() if key != "dataset_path"}
                                                   for config in configs])}
            continue
        config = lm_eval_task_config(task, data_dir, limit)
        records = Path(config.pop("dataset_kwargs")["data_files"]["test"]).name  # content-addressed, not the path
        source = task_data.split_identity(task, "test", data_dir)  # a file's sha256, or a hub split's
        source.pop("file", None)  # the file's checksum is its identity, wherever it lies
        per_task[task] = {**source, "records": records, "config": jsonable(config)}
    return {"tasks": per_task, "limit": limit, "online": online,
            "versions": {"polar_lib": __version__, "lm_eval": version("lm_eval")}}



def evaluate_run(run_dir: str | Path, tasks: list[str] | None = None, limit: int | None = None,
                 batch_size: int = 8, data_dir: str | Path | None = None, online: bool = False,
                 per_question: bool = False):
    """``evaluate_model`` on the finished run in ``run_dir`` (``tasks`` default: the run's own task);
    with ``per_question=True``, also ``score_questions``'s table: ``(table, answers)``.

    The result is cached as ``<run_dir>/eval-<hash>.json`` and reused when present, keyed by
    ``evaluation_key``: the tasks, the limit, online or not, each test file's sha256 and task config,
    and the versions of polar_lib and lm-eval.
    """
    from .train import load_finished_run, load_trained

    config = load_finished_run(run_dir)[0]
    run_dir = Path(run_dir)
    tasks = check_tasks([config.task] if tasks is None else tasks, online)
    key = evaluation_key(tasks, limit, online, data_dir)
    cache = run_dir / f"eval-{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]}.json"
    if cache.exists():
        log.info(f"using the cached evaluation {cache} (same run, tasks, data and settings)")
        cached = json.loads(cache.read_text())
        table = pd.DataFrame(cached["results"], columns=COLUMNS)
        answers = pd.DataFrame(cached["answers"], columns=QUESTION_COLUMNS)
    else:
        model, tokenizer = load_trained(run_dir)
        answers = score_questions(model, tokenizer, tasks, limit=limit, batch_size=batch_size, data_dir=data_dir,
                                  online=online)
        table = summarize(answers, {task: _metric(model, task) for task in tasks})
        cache.write_text(json.dumps(key | {"results": table.to_dict(orient="records"),
                                           "answers": answers.to_dict(orient="list")}))
    if per_question:
        return table, answers
    return table


def run_scores(run_dirs: dict, tasks: list[str], limit: int | None = None, batch_size: int = 8,
               online: bool = False, confidence: float = 0.95,
               key_names=("trained_on", "method", "r", "seed")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``evaluate_run`` of every run of ``run_dirs`` (key → run directory, keys named by ``key_names``:
    ``sweeps.Sweep.configs``' (task, method, r, seed), the task the run was trained on) on ``tasks``:
    ``(scores, per_question)`` — per run and task the accuracy, its ``confidence`` Wilson interval over the
    questions and n (columns ``key_names`` + ``COLUMNS``), and per run, task and question 0/1 (``key_names``
    + ``QUESTION_COLUMNS``): the runs answer the same questions, so ``stats.beats`` pairs them."""
    check_open_unit("confidence", confidence)
    scores, answers = [], []
    for key, run_dir in run_dirs.items():
        if len(key) != len(key_names):
            raise ValueError(f"key_names {tuple(key_names)} do not name the key {key!r}")
        named = dict(zip(key_names, key))
        table, run_answers = evaluate_run(run_dir, tasks, limit=limit, batch_size=batch_size, online=online,
                                          per_question=True)
        scores.append(summarize(run_answers, dict(zip(table.task, table.metric)), confidence).assign(**named))
        answers.append(run_answers.assign(**named))
    return (pd.concat(scores, ignore_index=True)[[*key_names, *COLUMNS]],
            pd.concat(answers, ignore_index=True)[[*key_names, *QUESTION_COLUMNS]])


# ---------------------------------------------------------------------------------------------
# GLUE: sequence classifiers on the validation splits

GLUE_COLUMNS = ["task", "split", "metric", "value", "reported", "n"]


@torch.no_grad()
def classifier_predictions(model, tokenizer, examples, max_length: int, batch_size: int = 32) -> list:
    """What a sequence classifier predicts for each ``ClassificationExample``: the argmax of its logits (a
    class index), or with one output (STS-B's regression head) that output (a score). The inputs are built
    as in training (``tokenizer(text, text_pair, truncation=True, max_length=max_length)``), right-padded
    per batch of ``batch_size``."""
    from .train import collator, tokenize_examples

    model.eval()
    pad = collator(tokenizer, "sequence-classification")
    rows = tokenize_examples(examples, tokenizer, "sequence-classification", max_length, "answer")
    predictions = []
    for start in range(0, len(rows), batch_size):
        batch = pad([{k: v for k, v in row.items() if k != "labels"} for row in rows[start:start + batch_size]])
        logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits.float()
        logits = logits.reshape(len(batch["input_ids"]), -1)
        predictions += logits[:, 0].tolist() if logits.shape[-1] == 1 else logits.argmax(-1).tolist()
    return predictions


def classifier_evaluation_key(run_dir: str | Path, split: str, limit: int | None, batch_size: int,
                              hub_dir: str | Path | None = None) -> dict:
    """What ``evaluate_classifier``'s result depends on besides the run: the split's source and checksum
    (``data.split_identity``), the limit, the batch size (the padding of a batch), the prediction rule and
    the versions of polar_lib, torch, transformers and peft."""
    from importlib.metadata import version

    from . import __version__
    from .train import VERSIONED, load_finished_run

    config = load_finished_run(run_dir)[0]
    return {"task": config.task, "split": task_data.split_identity(config.task, split, hub_dir=hub_dir),
            "limit": limit, "batch_size": batch_size, "prediction": "argmax of the logits; one output: its value",
            "versions": {"polar_lib": __version__, **{name: version(name) for name in VERSIONED}}}


def evaluate_classifier(run_dir: str | Path, split: str = "validation", limit: int | None = None,
                        batch_size: int = 32, hub_dir: str | Path | None = None) -> dict[str, float]:
    """GLUE's metrics (``hub_data.glue_metric``: CoLA Matthews, STS-B Pearson and Spearman, MRPC/QQP
    accuracy and F1, the others accuracy) of the finished GLUE run in ``run_dir`` on ``split`` of its task
    (the first ``limit`` examples; MNLI's validation is ``validation_matched``), from the run's own
    predictions (``classifier_predictions``, at the run's ``max_length``).

    Cached as ``<run_dir>/glue-<hash>.json`` (with the predictions and labels), keyed by
    ``classifier_evaluation_key``; a second call reads it without loading the model.
    """
    return _classifier_evaluation(run_dir, split, limit, batch_size, hub_dir)["metrics"]


def _classifier_evaluation(run_dir, split, limit, batch_size, hub_dir) -> dict:
    """``evaluate_classifier``'s cache record: its key, ``metrics``, ``n``, ``predictions`` and ``labels``."""
    from .hub_data import GLUE_METRICS, glue_metric
    from .train import load_finished_run, load_trained

    config = load_finished_run(run_dir)[0]
    run_dir = Path(run_dir)
    if config.task not in GLUE_METRICS:
        raise ValueError(f"run_dir {run_dir} trained task {config.task!r}; evaluate_classifier scores GLUE runs: "
                         f"{', '.join(GLUE_METRICS)}")
    task_data.check_split(config.task, split)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    key = classifier_evaluation_key(run_dir, split, limit, batch_size, hub_dir)
    cache = run_dir / f"glue-{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]}.json"
    if cache.exists():
        log.info(f"using the cached evaluation {cache} (same run, split, data and settings)")
        return json.loads(cache.read_text())
    examples = task_data.load_task(config.task, split, limit=limit, hub_dir=hub_dir)
    model, tokenizer = load_trained(run_dir)
    predictions = classifier_predictions(model, tokenizer, examples, config.max_length, batch_size)
    labels = [example.label for example in examples]
    metrics = glue_metric(config.task, predictions, labels)
    record = key | {"metrics": metrics, "n": len(labels), "predictions": predictions, "labels": labels}
    cache.write_text(json.dumps(record))
    return record


def glue_scores(run_dirs: dict, key_names=("task", "method", "r", "lr", "seed"), split: str = "validation",
                limit: int | None = None, batch_size: int = 32, hub_dir: str | Path | None = None) -> pd.DataFrame:
    """``evaluate_classifier`` of every run of ``run_dirs`` (key → run directory, keys named by ``key_names``;
    ``sweeps.Sweep.configs("glue")``'s keys by default): one row per run and GLUE metric, columns
    ``key_names`` + ``GLUE_COLUMNS`` — ``reported`` marks the metric the registry reports for the task (CoLA
    Matthews, STS-B Pearson, accuracy otherwise), ``n`` the examples scored."""
    rows = []
    for key, run_dir in run_dirs.items():
        if len(key) != len(key_names):
            raise ValueError(f"key_names {tuple(key_names)} do not name the key {key!r}")
        record = _classifier_evaluation(run_dir, split, limit, batch_size, hub_dir)
        task = record["task"]
        rows += [{**dict(zip(key_names, key)), "task": task, "split": split, "metric": metric, "value": value,
                  "reported": metric == task_data.get_task(task).metric, "n": record["n"]}
                 for metric, value in record["metrics"].items()]
    return pd.DataFrame(rows, columns=list(dict.fromkeys([*key_names, *GLUE_COLUMNS])))


def is_reported(frame: pd.DataFrame):
    """Per row of ``frame`` (columns ``task``, ``metric``): whether ``metric`` is the one the registry reports
    for ``task`` (``data/tasks.yaml``: CoLA Matthews, STS-B Pearson, accuracy otherwise), as a boolean array."""
    import numpy as np

    return np.array([task_data.get_task(t).metric == m for t, m in zip(frame.task, frame.metric)], dtype=bool)


def seed_intervals(scores: pd.DataFrame, by=("task", "method", "r", "lr", "metric"), value: str = "value",
                   confidence: float = 0.95) -> pd.DataFrame:
    """Per group of ``scores`` (``by``) over its seeds: ``mean``, ``sd`` (ddof 1), ``n_seeds`` and the
    ``confidence`` t-interval ``low``, ``high`` = mean ∓ t(1 − (1 − confidence)/2, n − 1) · sd / √n (NaN for
    one seed): where the mean over seeds of another draw of seeds would fall, the seeds' variation only
    (a score's uncertainty over the validation examples is not in it)."""
    import scipy.stats

    check_open_unit("confidence", confidence)
    missing = [name for name in (*by, value) if name not in scores.columns]
    if missing:
        raise ValueError(f"scores has no column(s) {missing}; columns: {list(scores.columns)}")
    rows = []
    for key, group in scores.groupby(list(by), sort=False, dropna=False):
        values = group[value].astype(float).to_numpy()
        n, mean = len(values), float(values.mean())
        sd = float(values.std(ddof=1)) if n > 1 else math.nan
        half = float(scipy.stats.t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
        rows.append({**dict(zip(by, key)), "mean": mean, "sd": sd, "n_seeds": n, "low": mean - half,
                     "high": mean + half})
    return pd.DataFrame(rows, columns=[*by, "mean", "sd", "n_seeds", "low", "high"])


def best_learning_rates(summary: pd.DataFrame, by=("task", "method", "r")) -> pd.DataFrame:
    """``seed_intervals``'s table with a column ``selected``: per ``by``, True on the learning rate whose mean
    over seeds of the task's reported metric (``data/tasks.yaml``'s ``metric``) is highest (the first of equal
    ones; NaN means, e.g. Pearson's r of constant predictions, are never chosen over a number), for each of that
    lr's metrics — the usual GLUE protocol: the best of the grid on the validation split (a selection on the
    split it is reported on: optimistic, the same for every method)."""
    reported = summary[is_reported(summary)]
    means = {key: group["mean"].astype(float).fillna(-math.inf).to_numpy() for key, group in
             reported.groupby(list(by), sort=False)}
    best = {key: group.lr.iloc[int(means[key].argmax())] for key, group in reported.groupby(list(by), sort=False)}
    selected = [best.get(tuple(row[name] for name in by)) == row["lr"] for _, row in summary.iterrows()]
    return summary.assign(selected=selected)


def glue_table(summary: pd.DataFrame, by=("method", "r")) -> pd.DataFrame:
    """The GLUE table of ``best_learning_rates``'s summary: one row per ``by`` (method, r), one column per task
    — the mean over seeds of the task's reported metric at its selected learning rate, in points (×100) — and
    ``average``, their mean over the tasks (the GLUE score as LoRA-style papers report it; NaN when a task is
    missing or NaN)."""
    if "selected" not in summary.columns:
        raise ValueError("summary has no column 'selected'; pass it through best_learning_rates first")
    chosen = summary[summary.selected.to_numpy(bool) & is_reported(summary)]
    table = chosen.pivot_table(index=list(by), columns="task", values="mean", aggfunc="first", dropna=False, sort=False)
    table = 100 * table[list(dict.fromkeys(chosen.task))]
    table["average"] = table.mean(axis=1, skipna=False)
    table.columns.name = None
    return table.reset_index()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("evaluate"),
        description="Evaluate a finished fine-tuning run, or a model without an adapter, with lm-eval (multiple "
                    "choice by log-likelihood, math by greedy generation); prints task, metric, accuracy, stderr "
                    "and n. A run's results are cached in its directory.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, metavar="DIR",
                        help="the run directory (holding config.json and, once finished, metrics.json)")
    source.add_argument("--model", metavar="NAME",
                        help="a causal LM without an adapter: a name of polar_lib.models.load_model, a hub id "
                             "or a local folder")
    parser.add_argument("--tasks", "--task", metavar="A,B", default=None,
                        help=f"comma-separated tasks (default: the run's own task; required with --model); "
                             f"offline: {', '.join(eval_task_names())}")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                        help="evaluate the first N test examples of each task (default: all)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, metavar="B", help="batch size (default: 8)")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="the data directory (default: $POLAR_DATA, else ../shared/data, else the download cache)")
    parser.add_argument("--online", action="store_true",
                        help="use lm-eval's stock tasks and their hub datasets (needs internet)")
    return parser


def main(argv: list[str] | None = None) -> None:
    from .models import check_model_name, load_model
    from .train import load_finished_run

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is not None and args.tasks is None:
        parser.error("--tasks is required with --model")
    tasks = None if args.tasks is None else [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        tasks = None if tasks is None else check_tasks(tasks, args.online)  # a bad task before a bad run
        if args.model is None:
            config = load_finished_run(args.run)[0]
            tasks = tasks or check_tasks([config.task], args.online)
        else:
            check_model_name(args.model)
        task_data.data_dir(args.data_dir)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    options = {"limit": args.limit, "batch_size": args.batch_size, "data_dir": args.data_dir, "online": args.online}
    if args.model is None:
        table = evaluate_run(args.run, tasks, **options)
    else:
        table = evaluate_model(*load_model(args.model), tasks, **options)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
