"""polar_lib.hub_data: the hub-only splits, read by the same ``datasets.load_dataset(path, name, split)``
call as for users, from a local copy of each hub repository (README.md with its ``configs:`` front
matter, parquet or JSON data files) holding a few records in that dataset's own schema; GLUE's metrics."""
import hashlib
import importlib.util
import json
import re
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml

from polar_lib import data, hub_data
from polar_lib.data import ClassificationExample, DataError, GenerationExample, MultipleChoiceExample

from .hub_fixtures import (GLUE, GLUE_TEXT_FIELDS, HELLASWAG_TRAIN, HELLASWAG_VALIDATION, METAMATHQA, PIQA, SIQA,
                           WINOGRANDE_XL, WINOGRANDE_XS, write_hub_copy, write_hub_repo)


@pytest.fixture(scope="module")
def hub_copy(tmp_path_factory) -> Path:
    """A local copy of every hub dataset the registry reads (the folder ``$POLAR_HUB_DATA`` names)."""
    return write_hub_copy(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def datasets_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("polar-cache")


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, hub_copy, datasets_cache_dir):
    """No network; the hub datasets from ``hub_copy``; datasets' Arrow copies in one cache for the module."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("POLAR_HUB_DATA", str(hub_copy))
    monkeypatch.setenv("POLAR_CACHE", str(datasets_cache_dir))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)


def lm_eval_task_module(task: str, name: str):
    """A module of lm-eval's stock task folder (``lm_eval/tasks/<task>/<name>.py``), loaded on its own."""
    root = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location(f"lm_eval_{task}_{name}", root / "tasks" / task / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What each record must become, written out from lm-eval's task YAMLs (doc_to_text / doc_to_choice / doc_to_target).
EXPECTED = {
    ("piqa", "train"): [MultipleChoiceExample(r["goal"], (r["sol1"], r["sol2"]), r["label"]) for r in PIQA],
    ("social_iqa", "train"): [MultipleChoiceExample(f"{r['context']} {r['question']}",
                                                    (r["answerA"], r["answerB"], r["answerC"]), int(r["label"]) - 1)
                              for r in SIQA],
    ("winogrande", "train"): [MultipleChoiceExample(r["sentence"], (r["option1"], r["option2"]), int(r["answer"]) - 1)
                              for r in WINOGRANDE_XL],
    ("metamathqa", "train"): [GenerationExample(r["query"], r["response"]) for r in METAMATHQA],
} | {(task, split): [ClassificationExample(r[GLUE_TEXT_FIELDS[task][0]],
                                           r[GLUE_TEXT_FIELDS[task][1]] if GLUE_TEXT_FIELDS[task][1] else None, r["label"])
                     for r in GLUE[task][{"mnli": "validation_matched"}.get(task, "validation") if split == "validation"
                                         else split]]
     for task in GLUE for split in ("train", "validation")}


@pytest.mark.parametrize("name,split", sorted(EXPECTED))
def test_every_record_of_a_hub_split_parses_to_its_example(name, split):
    examples = data.load_task(name, split)
    assert examples == EXPECTED[name, split]
    records = hub_data.load_hub_split(name, split).to_list()
    assert [hub_data.hub_parser(data.get_task(name))(record) for record in records] == examples
    assert data.load_task(name, split, limit=1) == examples[:1]


def test_winogrande_reads_the_xl_config_and_its_choices_are_lm_evals_filled_blanks():
    examples = data.load_task("winogrande", "train")
    assert [e.question for e in examples] == [r["sentence"] for r in WINOGRANDE_XL]  # not winogrande_xs
    lm_eval = lm_eval_task_module("winogrande", "preprocess_winogrande")
    for record, example in zip(WINOGRANDE_XL, examples):
        blank = example.question.index("_")
        # lm-eval scores the sentence's end after each option put in the blank: the same two choices.
        assert [example.question[:blank] + choice for choice in example.choices] == lm_eval.doc_to_choice(record)
        assert example.label == lm_eval.doc_to_text(record)  # lm-eval's doc_to_text returns the answer's index
        assert example.question[blank + 1:].strip() == lm_eval.doc_to_target(record)


@pytest.mark.parametrize("split,records", [("train", HELLASWAG_TRAIN), ("test", HELLASWAG_VALIDATION)])
def test_hellaswag_examples_are_lm_evals_processed_docs(split, records):
    """Our test split is the hub's validation split, the one lm-eval's stock task scores."""
    import datasets

    processed = lm_eval_task_module("hellaswag", "utils").process_docs(datasets.Dataset.from_list(records))
    expected = [MultipleChoiceExample(doc["query"], tuple(doc["choices"]), doc["gold"]) for doc in processed]
    assert data.load_task("hellaswag", split) == expected
    assert expected[1 if split == "train" else 0].question in (
        "Personal Care and Style: How to dye your hair with semi permanent hair dye. Find the color you want.",
        "Roof shingle removal: A man is sitting on a roof. He")


def test_mnli_validation_is_the_matched_split_and_stsb_labels_are_scores():
    assert data.get_task("mnli").hub_splits["validation"] == "validation_matched"
    assert [e.label for e in data.load_task("mnli", "validation")] == [1]  # the mismatched record has label 2
    scores = [e.label for e in data.load_task("stsb", "train")]  # stored as float32, like the hub's
    assert scores == [5.0, 3.75, 0.5] and all(type(score) is float for score in scores)
    assert all(type(e.label) is int for e in data.load_task("cola", "train"))


def test_glue_registry_has_the_papers_epochs_and_label_counts():
    epochs = {"cola": 25, "mnli": 7, "mrpc": 30, "qnli": 5, "qqp": 7, "rte": 50, "sst2": 25, "stsb": 25}
    assert {name: data.get_task(name).epochs for name in epochs} == epochs
    assert {name: data.get_task(name).num_labels for name in epochs} == {**dict.fromkeys(epochs, 2), "mnli": 3, "stsb": 1}
    assert {data.get_task(name).hub["path"] for name in epochs} == {"nyu-mll/glue"}
    assert set(hub_data.GLUE_FIELDS) == set(hub_data.GLUE_METRICS) == set(epochs)


def test_metamathqa_prompt_and_target():
    example = data.load_task("metamathqa", "train")[1]
    text = data.format_prompt(example) + " " + data.answer_text(example)
    assert text == f"Question: {METAMATHQA[1]['query']}\nAnswer: {METAMATHQA[1]['response']}"
    assert text.endswith("The answer is: 10")


@pytest.mark.parametrize("parse,record,message", [
    (hub_data.parse_piqa, dict(PIQA[0], label=-1), r"label label=-1 is none of \['0', '1'\] \(an unlabelled test split\?\)"),
    (hub_data.parse_siqa, dict(SIQA[0], label="4"), r"label label='4' is none of \['1', '2', '3'\]"),
    (hub_data.parse_winogrande, dict(WINOGRANDE_XL[0], answer=""), r"label answer='' is none of \['1', '2'\]"),
    (hub_data.parse_winogrande, dict(WINOGRANDE_XL[0], sentence="No blank here."), "has a blank '_'"),
    (hub_data.parse_hellaswag, dict(HELLASWAG_TRAIN[0], label=""), "label label='' is none of"),
    (hub_data.parse_hellaswag, dict(HELLASWAG_TRAIN[0], endings="one ending"), "no list of string endings"),
    (hub_data.parse_piqa, {"goal": "open a jar", "sol1": "twist"}, "no string field 'sol2'"),
    (hub_data.parse_piqa, dict(PIQA[0], sol2="  "), "empty question or option"),
    (partial(hub_data.parse_glue, task="cola"), {"sentence": "Unlabelled.", "label": -1, "idx": 0},
     "label -1 is not a class index"),
    (partial(hub_data.parse_glue, task="stsb"), dict(GLUE["stsb"]["train"][0], label=5.5), "not a score in"),
    (hub_data.parse_metamathqa, dict(METAMATHQA[0], response=""), "needs a question and a target"),
])
def test_malformed_hub_records_raise(parse, record, message):
    with pytest.raises(DataError, match=message):
        parse(record)


def test_a_label_beyond_the_tasks_classes_names_the_split_and_record():
    record = dict(GLUE["rte"]["train"][0], label=2)
    with pytest.raises(DataError, match=r"^where: record 1: label 2 out of range for task 'rte''s 2 classes"):
        data.parse_records(data.get_task("rte"), [GLUE["rte"]["train"][1], record],
                           hub_data.hub_parser(data.get_task("rte")), "where")


def test_bad_split_or_config_is_a_one_line_error_naming_it(hub_copy, tmp_path):
    with pytest.raises(ValueError, match=r"^task 'cola' has no split 'test'; its splits: train, validation$"):
        data.load_task("cola", "test")
    with pytest.raises(ValueError, match=r"^task 'piqa' has no hub split split='test'; allowed: train$"):
        hub_data.load_hub_split("piqa", "test")
    write_hub_repo(tmp_path, "allenai/winogrande", {"winogrande_xs": {"train": WINOGRANDE_XS}})
    with pytest.raises(ValueError) as error:
        data.load_task("winogrande", "train", hub_dir=tmp_path)
    assert "\n" not in str(error.value) and re.search(r"name='winogrande_xl'.*'winogrande_xl'.*winogrande_xs", str(error.value))
    write_hub_repo(tmp_path, "baber/piqa", {"default": {"validation": PIQA}})
    with pytest.raises(ValueError, match=r"split='train'.*\btrain\b.*\bvalidation\b") as error:
        data.load_task("piqa", "train", hub_dir=tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"has no data files for split='train'; allowed: validation$"):
        hub_data.hub_split_sha256("piqa", "train", hub_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"no copy of hub dataset lighteval/siqa at "
                                                          f"{tmp_path}/lighteval/siqa (from the hub_dir argument)")):
        data.load_task("social_iqa", "train", hub_dir=tmp_path)


def test_hub_location(monkeypatch, hub_copy):
    assert hub_data.hub_location("baber/piqa") == str(hub_copy / "baber/piqa")
    monkeypatch.delenv("POLAR_HUB_DATA")
    assert hub_data.hub_location("baber/piqa") == "baber/piqa"  # the hub itself (online)


def test_split_identity_names_the_hub_split_and_checksums_its_files(hub_copy, tmp_path):
    train_file = hub_copy / "baber/piqa/data/train-00000-of-00001.parquet"
    expected = hashlib.sha256(json.dumps([["data/train-00000-of-00001.parquet",
                                            hashlib.sha256(train_file.read_bytes()).hexdigest()]]).encode()).hexdigest()
    assert data.split_identity("piqa", "train") == {"hub": "baber/piqa", "name": None, "split": "train", "sha256": expected}
    assert data.split_identity("mnli", "validation")["split"] == "validation_matched"
    shutil.copytree(hub_copy / "baber", tmp_path / "baber")  # another copy of the same files: the same checksum
    assert hub_data.hub_split_sha256("piqa", "train", hub_dir=tmp_path) == expected
    write_hub_repo(tmp_path, "baber/piqa", {"default": {"train": [dict(PIQA[0], label=0), *PIQA[1:]]}})  # one label edited
    assert hub_data.hub_split_sha256("piqa", "train", hub_dir=tmp_path) != expected
    assert data.load_task("piqa", "train", hub_dir=tmp_path)[0].label == 0


def test_datasets_arrow_copies_go_to_polar_libs_cache(monkeypatch, datasets_cache_dir, tmp_path):
    data.load_task("social_iqa", "train")
    assert list((datasets_cache_dir / "datasets" / "hub-copies").rglob("siqa-train.arrow"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    assert data.datasets_cache() == tmp_path


def test_copies_of_a_hub_dataset_with_the_same_readme_do_not_share_a_cache(tmp_path):
    """datasets keys a local folder's Arrow copy by its README alone; polar_lib adds the files' checksums."""
    for folder, label in (("one", 0), ("two", 1)):
        write_hub_repo(tmp_path / folder, "baber/piqa", {"default": {"train": [dict(PIQA[0], label=label)]}})
        assert data.load_task("piqa", "train", hub_dir=tmp_path / folder)[0].label == label


# ---------------------------------------------------------------------------------------------
# GLUE's metrics


def test_glue_metrics_of_a_perfect_and_an_inverted_predictor():
    labels = np.array([1, 0, 1, 1, 0, 0, 1])
    for task in ("cola", "mrpc", "qqp", "sst2", "rte", "qnli"):
        assert set(hub_data.glue_metric(task, labels, labels).values()) == {1.0}
    assert hub_data.glue_metric("cola", 1 - labels, labels) == {"matthews_correlation": -1.0}
    assert hub_data.glue_metric("mrpc", 1 - labels, labels) == {"accuracy": 0.0, "f1": 0.0}
    three = np.array([0, 1, 2, 2, 1, 0])
    assert hub_data.glue_metric("mnli", three, three) == {"accuracy": 1.0}
    assert hub_data.matthews_correlation(three, three) == 1.0
    assert hub_data.matthews_correlation(np.zeros(4), [0, 1, 0, 1]) == 0.0  # a constant predictor: 0, as scikit-learn


def test_glue_metrics_on_hand_checked_values():
    predictions, labels = [1, 1, 0, 0], [1, 0, 0, 0]  # TP 1, FP 1, TN 2, FN 0
    assert hub_data.glue_metric("qqp", predictions, labels) == {"accuracy": 0.75, "f1": pytest.approx(2 / 3, rel=1e-15)}
    mcc = (1 * 2 - 1 * 0) / np.sqrt((1 + 1) * (1 + 0) * (2 + 1) * (2 + 0))
    assert hub_data.glue_metric("cola", predictions, labels)["matthews_correlation"] == pytest.approx(mcc, rel=1e-15)


def test_matthews_correlation_is_pearsons_r_of_the_0_1_vectors_for_two_classes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, 1 - labels)
    r = scipy.stats.pearsonr(predictions, labels).statistic
    assert hub_data.matthews_correlation(predictions, labels) == pytest.approx(r, rel=1e-12)  # float64 of 200 counts
    assert hub_data.matthews_correlation(labels, predictions) == pytest.approx(r, rel=1e-12)  # symmetric


def test_stsb_pearson_and_spearman():
    rng = np.random.default_rng(1)
    labels = rng.uniform(0, 5, 50)
    assert hub_data.glue_metric("stsb", 2 * labels + 1, labels)["pearson"] == pytest.approx(1.0, abs=1e-12)
    monotone = hub_data.glue_metric("stsb", np.exp(labels), labels)
    assert monotone["spearmanr"] == pytest.approx(1.0, abs=1e-12) and monotone["pearson"] < 0.99
    noisy = labels + rng.normal(0, 1, 50)
    ranks = scipy.stats.pearsonr(scipy.stats.rankdata(noisy), scipy.stats.rankdata(labels)).statistic
    assert hub_data.spearmanr(noisy, labels) == pytest.approx(ranks, rel=1e-12)


def test_glue_metric_refuses_an_unknown_task_or_mismatched_lengths():
    with pytest.raises(ValueError, match=r"^glue_metric: task='wnli'; allowed: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte$"):
        hub_data.glue_metric("wnli", [1], [1])
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        hub_data.glue_metric("rte", [1, 0], [1, 0, 1])
