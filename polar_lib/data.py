"""The paper's benchmarks, parsed into plain examples: the commonsense and math suites as repackaged by
LLM-Adapters (local files), and the splits that only the Hugging Face hub has (``polar_lib.hub_data``).

``load_task(name, split)`` returns a list of

- ``MultipleChoiceExample(question, choices, label)`` for BoolQ, PIQA, SIQA, WinoGrande, HellaSwag,
  ARC-e/c, OpenBookQA and AQuA (whose answer is one of five lettered options),
- ``MathExample(question, answer)`` for GSM8K, AddSub, MultiArith, SVAMP and SingleEq,
- ``ClassificationExample(text, text_pair, label)`` for the GLUE tasks, and
- ``GenerationExample(question, target)`` for MetaMathQA;

the math training mix ``math_train`` holds the first two. A local file's records are parsed by
``parse_multiple_choice`` or ``parse_math``, a hub split's by the parser of its hub dataset
(``polar_lib.hub_data.HUB_PARSERS``). The tasks, their files, hub datasets, splits and metric
conventions are listed in ``data/tasks.yaml``; each file's public source and sha256 in
``data/sources.csv``.

Where the data comes from (``data_dir``), in this order: an explicit argument, ``$POLAR_DATA``,
``../shared/data`` beside the checkout, else the cache ``<cache_dir()>/data`` (see
``polar_lib.paths.cache_dir``) into which each file is downloaded from its source on first use and
checked against its recorded sha256.

Every file read is checked against its sha256 in ``data/sources.csv`` (hashed once; the digest is
cached by path, size and mtime in ``<cache_dir()>/checksums.json``): a truncated or edited file is
refused with its name and the expected checksum. To train on data edited on purpose, set
``POLAR_DATA_VERIFY=0``; the file's checksum (``file_sha256``) is part of every run's identity, so
an edited file never reuses a run made from the original.

Local files and hub splits are read alike, as records of a ``datasets.Dataset`` (a local file through
``datasets.load_dataset("json", ...)``, its Arrow copy cached in ``datasets_cache()``), then parsed.

A causal LM sees an example as ``format_prompt(example)`` followed by ``" " + answer_text(example)``:
training targets and evaluation continuations are built from these two functions only.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import tempfile
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from .paths import cache_dir

# The task registry: data/ of a checkout, else the copy a wheel ships as polar_lib/registry/.
_CHECKOUT_REGISTRY = Path(__file__).resolve().parents[1] / "data"
REGISTRY_DIR = _CHECKOUT_REGISTRY if (_CHECKOUT_REGISTRY / "tasks.yaml").is_file() else Path(__file__).resolve().parent / "registry"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KINDS = ("multiple_choice", "math", "mixed", "classification", "generation")

# Leading boilerplate of the LLM-Adapters instructions, removed from the question.
INSTRUCTION_PREFIXES = (
    "Please answer the following question with true or false, question:",
    "Please choose the correct answer to fill in the blank to complete the given sentence:",
    "Please choose the correct answer to the question:",
    "Please choose the correct solution to the question:",
)
ANSWER_FORMAT = "Answer format:"  # "Answer format: answer1/answer2/answer3" ends commonsense records
LETTERED = "Answer Choices:"  # AQuA: "... Answer Choices: (A) 60 m (B) 61 m ... (E) 64 m"
LETTERS = "ABCDE"


class DataError(ValueError):
    """A record (or file) that does not have the expected format."""


@dataclass(frozen=True)
class MultipleChoiceExample:
    question: str
    choices: tuple[str, ...]
    label: int  # index of the correct choice

    def __post_init__(self):
        if len(self.choices) < 2:
            raise DataError(f"a multiple-choice example needs at least 2 choices, got {self.choices!r}")
        if not 0 <= self.label < len(self.choices):
            raise DataError(f"label {self.label} out of range for {len(self.choices)} choices")


@dataclass(frozen=True)
class MathExample:
    question: str
    answer: float

    def __post_init__(self):
        if not math.isfinite(self.answer):
            raise DataError(f"math answer must be finite, got {self.answer!r}")


@dataclass(frozen=True)
class ClassificationExample:
    """A GLUE example: one text or a pair; ``label`` a class index, or a similarity score (STS-B)."""

    text: str
    text_pair: str | None
    label: int | float


@dataclass(frozen=True)
class GenerationExample:
    """A prompt and the full text to generate after it (MetaMathQA: the reasoning, then its answer)."""

    question: str
    target: str

    def __post_init__(self):
        if not self.question or not self.target:
            raise DataError(f"a generation example needs a question and a target, got {self.question!r}, {self.target!r}")


@dataclass(frozen=True)
class Task:
    """One entry of ``data/tasks.yaml``."""

    name: str
    title: str
    kind: str
    files: dict  # split -> path relative to the data directory
    metric: str | None
    hub: dict | None  # {"path": ..., "name": ...}: the hub dataset (lm-eval's stock task's), or None
    lm_eval_task: str | None
    choices: tuple[int, int] | None = None  # (min, max) options per multiple-choice record
    hub_splits: dict = field(default_factory=dict)  # split -> split of the hub dataset, read from the hub
    hub_format: str | None = None  # the hub records' format: a key of polar_lib.hub_data.HUB_PARSERS
    num_labels: int | None = None  # classification: classes (1: a regression score)
    epochs: int | None = None  # the paper's training epochs, where it sets them per task
    lm_eval_filter: str = "none"  # the filter of the stock task whose answers are scored (gsm8k: flexible-extract)

    @property
    def splits(self) -> tuple[str, ...]:
        """The local files' splits, then the hub's."""
        return tuple(self.files) + tuple(split for split in self.hub_splits if split not in self.files)


@dataclass(frozen=True)
class Source:
    """One row of ``data/sources.csv``."""

    path: str
    url: str
    sha256: str
    records: int


# ---------------------------------------------------------------------------------------------
# Registry


def _load_tasks() -> dict[str, Task]:
    entries = yaml.safe_load((REGISTRY_DIR / "tasks.yaml").read_text())
    tasks = {}
    for name, entry in entries.items():
        entry = dict(entry)
        if entry["kind"] not in KINDS:
            raise DataError(f"data/tasks.yaml: task {name!r} has kind {entry['kind']!r}; allowed: {KINDS}")
        if entry.get("choices") is not None:
            entry["choices"] = tuple(entry["choices"])
        if entry.get("hub_splits") and not (entry.get("hub") and entry.get("hub_format")):
            raise DataError(f"data/tasks.yaml: task {name!r} has hub_splits but no hub dataset or hub_format")
        tasks[name] = Task(name=name, **entry)
    return tasks


TASKS: dict[str, Task] = _load_tasks()


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str) -> Task:
    """The registry entry of task ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


@lru_cache(maxsize=None)
def sources() -> dict[str, Source]:
    """``data/sources.csv`` by relative path: each file's public URL, sha256 and record count."""
    with open(REGISTRY_DIR / "sources.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(line for line in handle if not line.startswith("#"))]
    return {row["path"]: Source(row["path"], row["url"], row["sha256"], int(row["records"])) for row in rows}


# ---------------------------------------------------------------------------------------------
# Where the files are


def download_dir() -> Path:
    """The cache the files are downloaded into when no data directory is found."""
    return cache_dir() / "data"


def _resolve(path: str | Path | None) -> tuple[Path, bool]:
    """The data directory and whether missing files may be downloaded into it."""
    for origin, candidate in (("data_dir argument", path), ("$POLAR_DATA", os.environ.get("POLAR_DATA") or None)):
        if candidate is not None:
            candidate = Path(candidate).expanduser()
            if not candidate.is_dir():
                raise FileNotFoundError(f"data directory {candidate} (from the {origin}) does not exist")
            return candidate, False
    if SHARED_DATA.is_dir():
        return SHARED_DATA, False
    return download_dir(), True


def data_dir(path: str | Path | None = None) -> Path:
    """The data directory: ``path``, else ``$POLAR_DATA``, else ``../shared/data`` beside the
    checkout, else the download cache ``download_dir()``."""
    return _resolve(path)[0]


def download(relative_path: str, target_dir: str | Path) -> Path:
    """Fetch one file of ``data/sources.csv`` into ``target_dir``, verifying its sha256.

    Written atomically: a file in the cache has always passed its checksum.
    """
    if relative_path not in sources():
        raise FileNotFoundError(f"{relative_path} is not listed in data/sources.csv; cannot download it")
    source = sources()[relative_path]
    target = Path(target_dir) / relative_path
    try:
        with urllib.request.urlopen(source.url) as response:
            payload = response.read()
    except OSError as error:
        raise ConnectionError(f"cannot download {relative_path} from {source.url} ({error}); without internet, "
                              "pass data_dir= or set $POLAR_DATA to a folder holding the files") from error
    digest = hashlib.sha256(payload).hexdigest()
    if digest != source.sha256:
        raise DataError(f"checksum mismatch for {relative_path} downloaded from {source.url}: "
                        f"sha256 {digest}, expected {source.sha256} (data/sources.csv); nothing was saved")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=target.name, suffix=".part", delete=False) as part:
        part.write(payload)
    os.replace(part.name, target)
    return target


def file_sha256(path: str | Path) -> str:
    """The sha256 of ``path``, hashed once per (path, size, mtime): later calls read the digest from
    ``<cache_dir()>/checksums.json``."""
    path = Path(path).resolve()
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    index_file = cache_dir() / "checksums.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if entry is not None and entry[:2] == stamp:
        return entry[2]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    index[str(path)] = stamp + [digest]
    index_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=index_file.parent, suffix=".part", delete=False) as part:
        json.dump(index, part)
    os.replace(part.name, index_file)  # atomic: concurrent writers lose an entry at worst, never the file
    return digest


def verification_enabled() -> bool:
    """Whether files are checked against ``data/sources.csv`` (``POLAR_DATA_VERIFY=0`` turns it off)."""
    return os.environ.get("POLAR_DATA_VERIFY", "1") != "0"


def verify_file(path: Path, relative_path: str) -> None:
    """Raise ``DataError`` naming ``path`` and the expected sha256 unless the file matches ``data/sources.csv``."""
    source = sources().get(relative_path)
    if source is None or not verification_enabled():
        return
    digest = file_sha256(path)
    if digest != source.sha256:
        raise DataError(f"data file {path} does not match data/sources.csv: sha256 {digest}, expected "
                        f"{source.sha256} (truncated or edited? restore it from {source.url}, or set "
                        "POLAR_DATA_VERIFY=0 to use edited data on purpose)")


def check_split(name: str, split: str) -> Task:
    """The registry entry of task ``name``; ``ValueError`` unless it has ``split`` (a file or a hub split)."""
    task = get_task(name)
    if split not in task.splits:
        raise ValueError(f"task {name!r} has no split {split!r}; its splits: {', '.join(task.splits) or 'none'}")
    return task


def task_file(name: str, split: str = "test", data_dir: str | Path | None = None) -> Path:
    """The file holding ``split`` of task ``name`` (downloaded first when the cache is in use), checked
    against its recorded sha256 (``verify_file``)."""
    task = check_split(name, split)
    if split not in task.files:
        raise ValueError(f"task {name!r} reads split {split!r} from the hub dataset {task.hub['path']}, "
                         "not from a file; see polar_lib.hub_data")
    directory, downloadable = _resolve(data_dir)
    path = directory / task.files[split]
    if not path.is_file():
        if not downloadable:
            raise FileNotFoundError(f"data file {path} not found (task {name!r}, split {split!r})")
        download(task.files[split], directory)
    verify_file(path, task.files[split])
    return path


# ---------------------------------------------------------------------------------------------
# Parsing: one parser per kind


def _fields(record) -> tuple[str, str]:
    if not isinstance(record, dict):
        raise DataError(f"a record must be a JSON object, got {type(record).__name__}")
    for key in ("instruction", "answer"):
        if not isinstance(record.get(key), str):
            raise DataError(f"record has no string field {key!r}")
    return record["instruction"], record["answer"].strip()


def _question(text: str) -> str:
    text = text.strip()
    for prefix in INSTRUCTION_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
            break
    if not text:
        raise DataError("empty question")
    return text


def _split_options(text: str, markers: list[str]) -> tuple[str, list[str]]:
    """Cut ``text`` at each marker in turn: what precedes the first, and the text after each."""
    positions = []
    start = 0
    for marker in markers:
        position = text.find(marker, start)
        if position < 0:
            raise DataError(f"option marker {marker!r} not found")
        positions.append(position)
        start = position + len(marker)
    ends = positions[1:] + [len(text)]
    choices = [text[p + len(m):end].strip() for p, m, end in zip(positions, markers, ends)]
    if not all(choices):
        raise DataError(f"empty option in {choices!r}")
    return text[:positions[0]], choices


def parse_multiple_choice(record: dict) -> MultipleChoiceExample:
    """(question, choices, label) of one LLM-Adapters multiple-choice record.

    The options sit in ``instruction``: ``Answer1: …``, ``Option1: …``, ``Solution1: …`` (named by its
    closing ``Answer format: answer1/answer2/…``), ``Answer format: true/false`` (BoolQ; choices
    ``("true", "false")``), or AQuA's ``Answer Choices: (A) … (E) …``; ``answer`` names the right one
    (``answer2``, ``true``, ``C``, ...). The question is the instruction without its leading
    boilerplate ("Please choose the correct answer to the question:"), options and answer format.
    """
    instruction, answer = _fields(record)
    if LETTERED in instruction:
        head, _, options = instruction.rpartition(LETTERED)
        names = list(LETTERS)
        _, choices = _split_options(options, [f"({letter})" for letter in names])
        answer = answer.upper()
    else:
        head, found, answer_format = instruction.rpartition(ANSWER_FORMAT)
        if not found:
            raise DataError(f"no options: the instruction has neither {ANSWER_FORMAT!r} nor {LETTERED!r}")
        names = [name.strip().lower() for name in answer_format.split("/")]
        if names == ["true", "false"]:
            choices = names
        else:
            word = names[0][:-1]
            if not word.isalpha() or names != [f"{word}{i}" for i in range(1, len(names) + 1)]:
                raise DataError(f"unrecognised answer format {answer_format.strip()!r}")
            head, choices = _split_options(head, [f"{word.capitalize()}{i}:" for i in range(1, len(names) + 1)])
        answer = answer.lower()
    if answer not in names:
        raise DataError(f"answer {record['answer']!r} is none of {names}")
    return MultipleChoiceExample(_question(head), tuple(choices), names.index(answer))


def parse_math(record: dict) -> MathExample:
    """(question, numeric answer) of one LLM-Adapters math record; the answer must be a finite number."""
    instruction, answer = _fields(record)
    try:
        value = float(answer)
    except ValueError:
        raise DataError(f"math answer {record['answer']!r} is not a number") from None
    return MathExample(_question(instruction), value)


def _parse_mixed(record: dict) -> MultipleChoiceExample | MathExample:
    instruction, _ = _fields(record)
    return parse_multiple_choice(record) if LETTERED in instruction else parse_math(record)


PARSERS = {"multiple_choice": parse_multiple_choice, "math": parse_math, "mixed": _parse_mixed}


def datasets_cache() -> Path:
    """Where ``datasets`` keeps its Arrow copies of the data: ``$HF_DATASETS_CACHE``, else ``<cache_dir()>/datasets``."""
    return Path(os.environ.get("HF_DATASETS_CACHE") or cache_dir() / "datasets")


@contextmanager
def quiet_datasets():
    """``datasets`` without its progress bars (restored after)."""
    from datasets.utils import disable_progress_bars, enable_progress_bars, are_progress_bars_disabled

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def read_records(path: Path):
    """The records of a task file, a JSON list of objects, as a ``datasets.Dataset`` (its json builder;
    the Arrow copy is cached in ``datasets_cache()``, keyed by the file's path and mtime)."""
    import datasets

    with path.open("rb") as handle:
        if not handle.read(4096).lstrip().startswith(b"["):
            raise DataError(f"{path}: expected a JSON list of records")
    try:
        with quiet_datasets():
            return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(datasets_cache()))
    except datasets.exceptions.DatasetGenerationError as error:
        raise DataError(f"{path}: not valid JSON ({error.__cause__ or error})") from error


def parse_records(task: Task, records, parse, where) -> list:
    """``parse`` applied to each record, each checked against the task's ``choices`` and ``num_labels``;
    a ``DataError`` names ``where`` (the file or hub split) and the record's index."""
    examples = []
    for index, record in enumerate(records):
        try:
            example = parse(record)
            choices = getattr(example, "choices", None)
            if task.choices and choices is not None and not task.choices[0] <= len(choices) <= task.choices[1]:
                raise DataError(f"{len(choices)} choices, where task {task.name!r} has {task.choices[0]} to "
                                f"{task.choices[1]} (data/tasks.yaml)")
            if task.num_labels and task.num_labels > 1 and not 0 <= example.label < task.num_labels:
                raise DataError(f"label {example.label!r} out of range for task {task.name!r}'s {task.num_labels} "
                                "classes (data/tasks.yaml)")
        except DataError as error:
            raise DataError(f"{where}: record {index}: {error}") from error
        examples.append(example)
    return examples


Example = MultipleChoiceExample | MathExample | ClassificationExample | GenerationExample


def load_task(name: str, split: str = "test", data_dir: str | Path | None = None, limit: int | None = None,
              hub_dir: str | Path | None = None) -> list[Example]:
    """The examples of ``split`` of task ``name`` (the first ``limit`` of them when given), in file order.

    A local file's split is read from ``data_dir`` (see ``data_dir()``); a hub split (``hub_splits`` in
    data/tasks.yaml) through ``datasets.load_dataset`` from the hub, or from a local copy of the hub
    dataset under ``hub_dir`` (``polar_lib.hub_data.hub_location``). A missing file raises
    ``FileNotFoundError``; a malformed record ``DataError`` (a ``ValueError``) naming the file (or
    hub split) and the record's index.
    """
    task = check_split(name, split)
    if split in task.files:
        path = task_file(name, split, data_dir)
        records, parse, where = read_records(path), PARSERS[task.kind], path
    else:
        from . import hub_data

        records, parse = hub_data.load_hub_split(name, split, hub_dir), hub_data.hub_parser(task)
        where = f"{task.hub['path']} ({task.hub['name'] or 'default'}, split {task.hub_splits[split]})"
    if limit is not None:
        records = records.select(range(min(limit, len(records))))
    return parse_records(task, records.to_list(), parse, where)


def split_identity(name: str, split: str, data_dir: str | Path | None = None,
                   hub_dir: str | Path | None = None) -> dict:
    """What determines the examples of ``split`` of task ``name``, for a run's identity: a file's
    ``{"file": <path in the data directory>, "sha256": file_sha256}``, or a hub split's
    ``{"hub": <dataset id>, "name": <config>, "split": <hub split>, "sha256": hub_split_sha256}``."""
    task = check_split(name, split)
    if split in task.files:
        return {"file": task.files[split], "sha256": file_sha256(task_file(name, split, data_dir))}
    from .hub_data import hub_split_sha256

    return {"hub": task.hub["path"], "name": task.hub["name"], "split": task.hub_splits[split],
            "sha256": hub_split_sha256(name, split, hub_dir)}


# ---------------------------------------------------------------------------------------------
# What the model sees


def format_prompt(example: MultipleChoiceExample | MathExample | GenerationExample) -> str:
    """The prompt of an example, ``"Question: <question>\\nAnswer:"``; the model continues it with
    ``" " + answer_text(example)`` (or, when scoring a multiple-choice example, ``" " + choice``)."""
    return f"Question: {example.question}\nAnswer:"


def format_classifier_input(example: MultipleChoiceExample) -> str:
    """What a sequence classifier (an encoder choosing a choice index) reads: the prompt followed by the
    numbered choices, ``"Question: ...\nAnswer:\n(0) ...\n(1) ..."``, so that the index means something."""
    return format_prompt(example) + "".join(f"\n({i}) {choice}" for i, choice in enumerate(example.choices))


def format_number(value: float) -> str:
    """A math answer as text: ``4.0`` -> ``"4"``, ``9.8`` -> ``"9.8"``."""
    return str(int(value)) if value.is_integer() else repr(value)


def answer_text(example: MultipleChoiceExample | MathExample | GenerationExample) -> str:
    """The correct answer as the model should write it: the right choice's text, the number, or the target."""
    if isinstance(example, MultipleChoiceExample):
        return example.choices[example.label]
    if isinstance(example, GenerationExample):
        return example.target
    return format_number(example.answer)
