"""The splits that only the Hugging Face hub has, parsed into the examples of ``polar_lib.data``; GLUE's metrics.

A task's ``hub_splits`` in ``data/tasks.yaml`` map its splits to splits of its hub dataset (``hub``:
the dataset id and config of lm-eval 0.4.13's stock task); ``polar_lib.data.load_task(name, split)``
reads them with ``datasets.load_dataset(path, name, split=...)`` and parses each record with the
parser of the task's ``hub_format`` (``HUB_PARSERS``), mirroring lm-eval's ``doc_to_text``,
``doc_to_choice`` and ``doc_to_target``:

- ``piqa`` (baber/piqa): ``MultipleChoiceExample(goal, (sol1, sol2), label)``;
- ``siqa`` (lighteval/siqa): ``MultipleChoiceExample("<context> <question>", (answerA, answerB, answerC), label - 1)``;
- ``winogrande`` (allenai/winogrande, winogrande_xl): ``MultipleChoiceExample(sentence, (option1, option2), answer - 1)``;
- ``hellaswag`` (Rowan/hellaswag): ``MultipleChoiceExample("<activity_label>: <ctx_a> <Ctx_b>", endings, label)``,
  cleaned up as lm-eval does (``hellaswag_preprocess``);
- ``glue`` (nyu-mll/glue, config = the task): ``ClassificationExample(text, text_pair or None, label)``;
- ``metamathqa`` (meta-math/MetaMathQA): ``GenerationExample(query, response)``.

Where a hub dataset is read from: ``<hub_dir>/<dataset id>`` when ``hub_dir`` is given or
``$POLAR_HUB_DATA`` is set — a local copy of the hub repository (its ``README.md`` with the
``configs:`` front matter and its data files, e.g. ``huggingface-cli download --repo-type dataset
baber/piqa --local-dir <hub_dir>/baber/piqa``) — else the hub itself. Either way the same
``load_dataset(location, config, split=...)`` call reads it; its Arrow copy is kept in
``polar_lib.data.datasets_cache()`` (a local copy's under a subfolder named by its files' checksums).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from functools import partial
from pathlib import Path

import numpy as np
import scipy.stats

from .data import (ClassificationExample, DataError, GenerationExample, MultipleChoiceExample, Task, datasets_cache,
                   file_sha256, get_task)

# ---------------------------------------------------------------------------------------------
# Where a hub split is read from


def hub_location(dataset_id: str, hub_dir: str | Path | None = None) -> str:
    """What ``load_dataset`` reads for hub dataset ``dataset_id``: ``<hub_dir>/<dataset_id>`` (``hub_dir``,
    else ``$POLAR_HUB_DATA``), a local copy laid out like the hub repository, else the hub id itself."""
    for origin, root in (("hub_dir argument", hub_dir), ("$POLAR_HUB_DATA", os.environ.get("POLAR_HUB_DATA") or None)):
        if root is not None:
            folder = Path(root).expanduser() / dataset_id
            if not folder.is_dir():
                raise FileNotFoundError(f"no copy of hub dataset {dataset_id} at {folder} (from the {origin})")
            return str(folder)
    return dataset_id


def _hub_split(name: str, split: str) -> tuple[Task, str]:
    """The task and the hub dataset's split behind its ``split``; ``ValueError`` unless it is a hub split."""
    task = get_task(name)
    if split not in task.hub_splits:
        raise ValueError(f"task {name!r} has no hub split split={split!r}; allowed: {', '.join(task.hub_splits) or 'none'}")
    return task, task.hub_splits[split]


def _cache_for(location: str) -> Path:
    """The ``cache_dir`` of ``load_dataset(location)``: ``datasets_cache()``, for a local copy a subfolder
    named by its files' checksums — datasets keys a local folder's Arrow copy by its README alone, so an
    edited copy (or another copy with the same README) would otherwise be read from a stale cache."""
    folder = Path(location)
    if not folder.is_dir():
        return datasets_cache()
    files = sorted(path for path in folder.rglob("*") if path.is_file() and not path.relative_to(folder).as_posix().startswith("."))
    listing = [[path.relative_to(folder).as_posix(), file_sha256(path)] for path in files]
    return datasets_cache() / "hub-copies" / hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def load_hub_split(name: str, split: str, hub_dir: str | Path | None = None):
    """The records of hub split ``split`` of task ``name``: ``datasets.load_dataset(location, config,
    split=<hub split>)`` with ``location = hub_location(...)``, a ``datasets.Dataset``."""
    import datasets

    task, hub_split = _hub_split(name, split)
    location = hub_location(task.hub["path"], hub_dir)
    try:
        return datasets.load_dataset(location, task.hub["name"], split=hub_split, cache_dir=str(_cache_for(location)))
    except ValueError as error:  # datasets names the config or split and those it has
        raise ValueError(f"hub dataset {location} (name={task.hub['name']!r}, split={hub_split!r}) of task "
                         f"{name!r}: {error}") from error


def hub_split_sha256(name: str, split: str, hub_dir: str | Path | None = None) -> str:
    """A checksum of hub split ``split`` of task ``name``, for a run's identity (``data.split_identity``):
    ``dataset_files_sha256`` of its hub dataset, config and split."""
    task, hub_split = _hub_split(name, split)
    return dataset_files_sha256(hub_location(task.hub["path"], hub_dir), task.hub["name"], [hub_split])


def dataset_files_sha256(location: str, config: str | None, splits: list[str] | None = None) -> str:
    """A checksum of the data files of ``splits`` (None: every split) of dataset ``location`` (a hub id or a
    local copy, ``hub_location``), config ``config``: the sha256 of the JSON list of its data files, each a
    ``[url]`` pinned to the hub commit (``hf://datasets/<id>@<commit>/<path>``: the commit fixes the content)
    or, in a local copy, its ``[path in the copy, sha256]`` (``data.file_sha256``). Reads the repository's
    file list, not the data."""
    import datasets

    builder = datasets.load_dataset_builder(location, config, cache_dir=str(datasets_cache()))
    data_files = builder.config.data_files or {}
    for split in splits or ():
        if split not in data_files:
            raise ValueError(f"hub dataset {location} (name={config!r}) has no data files for split={split!r}; "
                             f"allowed: {', '.join(data_files) or 'none'}")
    root = Path(location).resolve()
    entries = [[Path(file).resolve().relative_to(root).as_posix(), file_sha256(file)] if Path(file).is_file() else [file]
               for split in (splits or sorted(data_files)) for file in data_files[split]]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Parsers: one per hub dataset format


def _string(record, key: str) -> str:
    if not isinstance(record, dict):
        raise DataError(f"a record must be a mapping, got {type(record).__name__}")
    if not isinstance(record.get(key), str):
        raise DataError(f"record has no string field {key!r}")
    return record[key]


def _field(record, key: str) -> str:
    return _string(record, key).strip()


def _label(record: dict, key: str, values: tuple[str, ...]) -> int:
    """The index of ``record[key]`` (as text) in ``values``; unlabelled records (``-1``, ``""``) raise."""
    value = str(record.get(key)).strip()
    if value not in values:
        raise DataError(f"label {key}={record.get(key)!r} is none of {list(values)} (an unlabelled test split?)")
    return values.index(value)


def _multiple_choice(question: str, choices, label: int) -> MultipleChoiceExample:
    if not question or not all(choices):
        raise DataError(f"empty question or option in {question!r}, {list(choices)!r}")
    return MultipleChoiceExample(question, tuple(choices), label)


def parse_piqa(record: dict) -> MultipleChoiceExample:
    """PIQA (goal, sol1, sol2, label 0/1): the goal, its two solutions, lm-eval's ``doc_to_target: label``."""
    return _multiple_choice(_field(record, "goal"), (_field(record, "sol1"), _field(record, "sol2")),
                            _label(record, "label", ("0", "1")))


def parse_siqa(record: dict) -> MultipleChoiceExample:
    """Social IQa (context, question, answerA/B/C, label "1"–"3"): question ``"<context> <question>"``
    (lm-eval's ``Q: {{context}} {{question}}``), label ``int(label) - 1``."""
    return _multiple_choice(f"{_field(record, 'context')} {_field(record, 'question')}".strip(),
                            tuple(_field(record, f"answer{letter}") for letter in "ABC"),
                            _label(record, "label", ("1", "2", "3")))


def parse_winogrande(record: dict) -> MultipleChoiceExample:
    """WinoGrande (sentence with one ``_``, option1, option2, answer "1"/"2"): the whole sentence as the
    question, the two options as the choices (the LLM-Adapters form of the offline test file).

    lm-eval instead scores the sentence's end after the blank given each option in its place (partial
    scoring); both pick the option that fills the blank."""
    sentence = _field(record, "sentence")
    if "_" not in sentence:
        raise DataError(f"a WinoGrande sentence has a blank '_', got {sentence!r}")
    return _multiple_choice(sentence, (_field(record, "option1"), _field(record, "option2")),
                            _label(record, "answer", ("1", "2")))


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag clean-up: strip, ``" [title]"`` -> ``". "``, drop ``[...]`` (WikiHow artefacts), ``"  "`` -> ``" "``."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def parse_hellaswag(record: dict) -> MultipleChoiceExample:
    """HellaSwag (activity_label, ctx_a, ctx_b, endings, label "0"–"3"), as lm-eval's ``process_docs``:
    question ``preprocess("<activity_label>: <ctx_a> <Ctx_b>")`` (``ctx_b.capitalize()``), the four
    preprocessed endings as choices; the label picks the ending that continues the context."""
    endings = record.get("endings") if isinstance(record, dict) else None
    if not isinstance(endings, (list, tuple)) or not all(isinstance(ending, str) for ending in endings):
        raise DataError("record has no list of string endings")
    context = f"{_string(record, 'ctx_a')} {_string(record, 'ctx_b').capitalize()}"
    question = hellaswag_preprocess(f"{_string(record, 'activity_label')}: {context}")
    return _multiple_choice(question, [hellaswag_preprocess(ending) for ending in endings],
                            _label(record, "label", tuple(str(i) for i in range(len(endings)))))


# GLUE task -> (text field, pair field or None), as in nyu-mll/glue.
GLUE_FIELDS = {"cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
               "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
               "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2")}
STSB_RANGE = (0.0, 5.0)


def parse_glue(record: dict, task: str) -> ClassificationExample:
    """A GLUE record of ``task`` (``GLUE_FIELDS``): its text (and pair) as stored and its label, a class index
    (``-1``, GLUE's unlabelled test splits, raises) or, for STS-B, a similarity score in [0, 5]."""
    text_field, pair_field = GLUE_FIELDS[task]
    label = record.get("label") if isinstance(record, dict) else None
    if task == "stsb":
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not STSB_RANGE[0] <= label <= STSB_RANGE[1]:
            raise DataError(f"STS-B label {label!r} is not a score in {list(STSB_RANGE)}")
        label = float(label)
    elif isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise DataError(f"label {label!r} is not a class index (-1 marks GLUE's unlabelled test splits)")
    return ClassificationExample(_string(record, text_field), _string(record, pair_field) if pair_field else None, label)


def parse_metamathqa(record: dict) -> GenerationExample:
    """MetaMathQA (query, response, type, original_question): prompt the query, generate the whole
    response (its reasoning, ending in ``The answer is: <answer>``)."""
    return GenerationExample(_field(record, "query"), _field(record, "response"))


HUB_PARSERS = {"piqa": parse_piqa, "siqa": parse_siqa, "winogrande": parse_winogrande, "hellaswag": parse_hellaswag,
               "glue": parse_glue, "metamathqa": parse_metamathqa}


def hub_parser(task: Task):
    """The record parser of ``task``'s hub dataset (``HUB_PARSERS[task.hub_format]``; GLUE's, for its config)."""
    if task.hub_format not in HUB_PARSERS:
        raise ValueError(f"task {task.name!r} has hub_format={task.hub_format!r}; allowed: {', '.join(HUB_PARSERS)}")
    parse = HUB_PARSERS[task.hub_format]
    return partial(parse, task=task.hub["name"]) if parse is parse_glue else parse


# ---------------------------------------------------------------------------------------------
# GLUE's metrics


def accuracy(predictions, labels) -> float:
    """The fraction of predictions equal to their label."""
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1(predictions, labels) -> float:
    """Binary F1 of class 1: 2·TP / (2·TP + FP + FN) (0 when there is no positive at all)."""
    predicted, actual = np.asarray(predictions) == 1, np.asarray(labels) == 1
    true_positives = np.sum(predicted & actual)
    denominator = 2 * true_positives + np.sum(predicted & ~actual) + np.sum(~predicted & actual)
    return float(2 * true_positives / denominator) if denominator else 0.0


def matthews_correlation(predictions, labels) -> float:
    """Matthews correlation, K classes: (c·s − t·p) / √((s² − p·p)(s² − t·t)) with C the confusion matrix,
    t its row sums (true counts), p its column sums (predicted counts), c its trace and s the total;
    0 when a factor of the denominator is 0. For two classes it is Pearson's r of the 0/1 vectors."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    classes, indices = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    confusion = np.zeros((len(classes), len(classes)))
    np.add.at(confusion, (indices[:len(labels)], indices[len(labels):]), 1)
    t, p, c, s = confusion.sum(1), confusion.sum(0), np.trace(confusion), confusion.sum()
    denominator = np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    return float((c * s - t @ p) / denominator) if denominator else 0.0


def pearson(predictions, labels) -> float:
    return float(scipy.stats.pearsonr(predictions, labels).statistic)


def spearmanr(predictions, labels) -> float:
    """Spearman's ρ: Pearson's r of the ranks (ties get their average rank)."""
    return float(scipy.stats.spearmanr(predictions, labels).statistic)


METRICS = {"accuracy": accuracy, "f1": f1, "matthews_correlation": matthews_correlation, "pearson": pearson,
           "spearmanr": spearmanr}
# GLUE task -> its metrics (the names of Hugging Face's run_glue / evaluate "glue" metric).
GLUE_METRICS = {"cola": ("matthews_correlation",), "sst2": ("accuracy",), "mrpc": ("accuracy", "f1"),
                "qqp": ("accuracy", "f1"), "stsb": ("pearson", "spearmanr"), "mnli": ("accuracy",),
                "qnli": ("accuracy",), "rte": ("accuracy",)}


def glue_metric(task: str, predictions, labels) -> dict[str, float]:
    """GLUE's metrics of ``task`` for ``predictions`` against ``labels`` (class indices; STS-B: scores):
    CoLA Matthews correlation, STS-B Pearson and Spearman, MRPC and QQP accuracy and F1, the others accuracy."""
    if task not in GLUE_METRICS:
        raise ValueError(f"glue_metric: task={task!r}; allowed: {', '.join(GLUE_METRICS)}")
    if len(predictions) != len(labels) or not len(labels):
        raise ValueError(f"glue_metric: {len(predictions)} predictions for {len(labels)} labels; need as many, at least one")
    return {name: METRICS[name](predictions, labels) for name in GLUE_METRICS[task]}
