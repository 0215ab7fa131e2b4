"""polar_lib.data: every record of every real task file parses; where the files come from; errors."""
import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path

import pytest

import polar_lib
from polar_lib import data
from polar_lib.data import DataError, MathExample, MultipleChoiceExample, Source

SHARED = data.SHARED_DATA
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared data at {SHARED}")

# Options per record, from the benchmarks' definitions (not from data/tasks.yaml).
CHOICES = {"boolq": {2}, "piqa": {2}, "social_iqa": {3}, "winogrande": {2}, "arc_easy": {3, 4, 5},
           "arc_challenge": {3, 4, 5}, "openbookqa": {4}, "aqua": {5}, "math_train": {5}}
MATH = {"gsm8k", "addsub", "multiarith", "svamp", "singleeq"}
GLUE = {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"}
HUB_ONLY = {"hellaswag", "metamathqa", "hendrycks_math"} | GLUE  # no local file (tests/test_hub_data.py)
TASK_SPLITS = [(name, split) for name, task in data.TASKS.items() for split in task.files]

AQUA_RECORD = {"instruction": "What is 2 + 3? Answer Choices: (A) 4 (B) 5 (C) 6 (D) 7 (E) 8", "input": "",
               "output": "", "answer": "B"}
PIQA_RECORD = {"instruction": "Please choose the correct solution to the question: open a jar\n\nSolution1: twist "
                              "the lid\n\nSolution2: eat the lid\n\nAnswer format: solution1/solution2",
               "input": "", "output": "", "answer": "solution1"}


@pytest.fixture
def no_data_dirs(monkeypatch, tmp_path):
    """No argument, no $POLAR_DATA, no shared folder: the download cache (under tmp_path) is used."""
    monkeypatch.delenv("POLAR_DATA", raising=False)
    monkeypatch.setattr(data, "SHARED_DATA", tmp_path / "no-shared-data")
    monkeypatch.setenv("POLAR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


def write_records(directory, relative_path, records):
    path = directory / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


@needs_shared
@pytest.mark.parametrize("name,split", TASK_SPLITS)
def test_every_record_of_every_shared_file_parses(name, split):
    task = data.get_task(name)
    examples = data.load_task(name, split, data_dir=SHARED)
    assert len(examples) == data.sources()[task.files[split]].records > 0
    for example in examples:
        if name in MATH:
            assert isinstance(example, MathExample) and math.isfinite(example.answer)
        elif isinstance(example, MathExample):  # math_train mixes numeric and lettered (AQuA) problems
            assert name == "math_train" and math.isfinite(example.answer)
        else:
            assert len(example.choices) in CHOICES[name]
            assert 0 <= example.label < len(example.choices)
            assert all(choice and choice == choice.strip() for choice in example.choices)
        assert example.question and "Answer format" not in example.question
        assert not example.question.startswith("Please ")


@needs_shared
def test_shared_files_match_recorded_checksums():
    listed = {path for task in data.TASKS.values() for path in task.files.values()}
    assert set(data.sources()) == listed
    for path, source in data.sources().items():
        payload = (SHARED / path).read_bytes()
        assert hashlib.sha256(payload).hexdigest() == source.sha256, path
        assert len(json.loads(payload)) == source.records, path
        assert source.url.startswith("https://raw.githubusercontent.com/AGI-Edgerunners/LLM-Adapters/"
                                     "816657208af4db747803f87ba40a4c71383fed7a/")


def test_registry():
    assert set(data.task_names()) == set(CHOICES) | MATH | HUB_ONLY
    assert {name for name, task in data.TASKS.items() if task.metric == "acc_norm"} == {
        "arc_easy", "arc_challenge", "openbookqa", "piqa", "hellaswag"}
    assert {data.get_task(name).metric for name in ("boolq", "social_iqa", "winogrande")} == {"acc"}
    assert data.get_task("arc_easy").hub == {"path": "allenai/ai2_arc", "name": "ARC-Easy"}
    assert data.get_task("piqa").splits == ("test", "train") and data.get_task("piqa").files == {
        "test": "commonsense/piqa/test.json"}  # train: from the hub
    assert data.get_task("math_train").splits == ("train",)
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: .*arc_easy"):
        data.get_task("nope")
    with pytest.raises(ValueError, match="'piqa' has no split 'validation'; its splits: test, train$"):
        data.load_task("piqa", "validation")
    with pytest.raises(ValueError, match="'hendrycks_math' has no split 'test'; its splits: none$"):
        data.load_task("hendrycks_math")  # scored through lm-eval only
    with pytest.raises(ValueError, match="task 'piqa' reads split 'train' from the hub dataset baber/piqa, not from a file"):
        data.task_file("piqa", "train")


def test_parsers_on_each_format():
    boolq = {"instruction": "Please answer the following question with true or false, question: is water wet?"
                            "\n\nAnswer format: true/false", "answer": "false"}
    assert data.parse_multiple_choice(boolq) == MultipleChoiceExample("is water wet?", ("true", "false"), 1)
    wino = {"instruction": "Please choose the correct answer to fill in the blank to complete the given sentence: "
                           "Ann beat Bo because _ was faster.\n\nOption1: Ann Option2: Bo Answer format: option1/option2",
            "answer": "option1"}
    assert data.parse_multiple_choice(wino) == MultipleChoiceExample("Ann beat Bo because _ was faster.", ("Ann", "Bo"), 0)
    arc = {"instruction": "Please choose the correct answer to the question: Which is a gas?\n\nAnswer1: ice Answer2: "
                          "steam Answer3: rock\n\nAnswer format: answer1/answer2/answer3", "answer": "answer2"}
    assert data.parse_multiple_choice(arc) == MultipleChoiceExample("Which is a gas?", ("ice", "steam", "rock"), 1)
    assert data.parse_multiple_choice(PIQA_RECORD) == MultipleChoiceExample(
        "open a jar", ("twist the lid", "eat the lid"), 0)
    assert data.parse_multiple_choice(AQUA_RECORD) == MultipleChoiceExample("What is 2 + 3?", tuple("45678"), 1)
    assert data.parse_math({"instruction": " Two plus two? ", "answer": "4.0"}) == MathExample("Two plus two?", 4.0)


@pytest.mark.parametrize("record,message", [
    ({"instruction": "Which?\n\nAnswer1: a Answer2: b\n\nAnswer format: answer1/answer2", "answer": "answer3"},
     r"answer 'answer3' is none of \['answer1', 'answer2'\]"),
    ({"instruction": "Which?\n\nAnswer1: a\n\nAnswer format: answer1/answer2", "answer": "answer1"},
     "option marker 'Answer2:' not found"),
    ({"instruction": "Which?\n\nAnswer1: a Answer2: \n\nAnswer format: answer1/answer2", "answer": "answer1"},
     "empty option"),
    ({"instruction": "Which one, a or b?", "answer": "a"}, "no options"),
    ({"instruction": "Which?\n\nAnswer format: yes/no", "answer": "yes"}, "unrecognised answer format"),
    ({"instruction": "Which?"}, "no string field 'answer'"),
    (["not", "a", "dict"], "must be a JSON object"),
])
def test_malformed_multiple_choice_records_raise(record, message):
    with pytest.raises(DataError, match=message):
        data.parse_multiple_choice(record)


@pytest.mark.parametrize("answer,message", [("B", "'B' is not a number"), ("nan", "must be finite"),
                                            ("", "'' is not a number")])
def test_math_answers_must_be_finite_numbers(answer, message):
    with pytest.raises(DataError, match=message):
        data.parse_math({"instruction": "How many?", "answer": answer})


def test_malformed_record_error_names_file_and_record(tmp_path, monkeypatch):
    monkeypatch.setenv("POLAR_DATA_VERIFY", "0")  # hand-written files: not the recorded ones
    bad = dict(PIQA_RECORD, answer="solution3")
    path = write_records(tmp_path, "commonsense/piqa/test.json", [PIQA_RECORD, PIQA_RECORD, bad])
    with pytest.raises(DataError, match=re.escape(f"{path}: record 2: answer 'solution3'")):
        data.load_task("piqa", data_dir=tmp_path)
    assert len(data.load_task("piqa", data_dir=tmp_path, limit=2)) == 2  # the bad record is never reached
    path.write_text('[{"instruction": ')
    with pytest.raises(DataError, match=re.escape(f"{path}: not valid JSON")):
        data.load_task("piqa", data_dir=tmp_path)
    path.write_text(json.dumps(PIQA_RECORD))
    with pytest.raises(DataError, match=re.escape(f"{path}: expected a JSON list of records")):
        data.load_task("piqa", data_dir=tmp_path)


def test_local_files_are_read_through_datasets_into_polar_libs_cache(tmp_path, monkeypatch):
    """The json builder of ``datasets`` reads a task file into the same examples as ``json.loads``."""
    monkeypatch.setenv("POLAR_DATA_VERIFY", "0")
    monkeypatch.setenv("POLAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    records = [PIQA_RECORD, dict(PIQA_RECORD, answer="solution2"), dict(PIQA_RECORD, input="context")]
    path = write_records(tmp_path, "commonsense/piqa/test.json", records)
    assert data.load_task("piqa", data_dir=tmp_path) == [data.parse_multiple_choice(r) for r in json.loads(path.read_text())]
    assert list((tmp_path / "cache" / "datasets").rglob("*.arrow"))
    write_records(tmp_path, "commonsense/piqa/test.json", records[1:])  # edited: read again, not from the cache
    assert [e.label for e in data.load_task("piqa", data_dir=tmp_path)] == [1, 0]


def test_a_record_with_more_choices_than_its_task_allows_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("POLAR_DATA_VERIFY", "0")
    three = dict(PIQA_RECORD, instruction=PIQA_RECORD["instruction"].replace(
        "\n\nAnswer format: solution1/solution2", "\n\nSolution3: open it\n\nAnswer format: solution1/solution2/solution3"))
    assert len(data.parse_multiple_choice(three).choices) == 3
    path = write_records(tmp_path, "commonsense/piqa/test.json", [PIQA_RECORD, three])
    with pytest.raises(DataError, match=re.escape(f"{path}: record 1: 3 choices, where task 'piqa' has 2 to 2")):
        data.load_task("piqa", data_dir=tmp_path)


def copy_task_file(tmp_path, relative_path) -> Path:
    """A data directory holding one real file of the shared data."""
    target = tmp_path / "data" / relative_path
    target.parent.mkdir(parents=True)
    target.write_bytes((SHARED / relative_path).read_bytes())
    return target


@needs_shared
def test_truncated_or_edited_file_is_refused_with_its_name_and_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("POLAR_CACHE", str(tmp_path / "cache"))
    relative = data.get_task("boolq").files["test"]
    path = copy_task_file(tmp_path, relative)
    assert len(data.load_task("boolq", data_dir=tmp_path / "data", limit=3)) == 3  # the recorded file passes
    expected = re.escape(f"data file {path.resolve()} does not match") + f".*expected {data.sources()[relative].sha256}"
    path.write_bytes(path.read_bytes()[:-100])  # truncated: no longer valid JSON either, but refused first
    with pytest.raises(DataError, match=expected):
        data.load_task("boolq", data_dir=tmp_path / "data", limit=3)
    records = json.loads((SHARED / relative).read_text())
    records[0]["answer"] = "false" if records[0]["answer"] == "true" else "true"  # one record edited, still valid
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=expected):
        data.load_task("boolq", data_dir=tmp_path / "data")
    monkeypatch.setenv("POLAR_DATA_VERIFY", "0")  # edited on purpose: read as it is
    assert data.load_task("boolq", data_dir=tmp_path / "data", limit=1)[0].label != data.load_task("boolq", limit=1)[0].label


def test_checksums_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("POLAR_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "file.json"
    path.write_text("[1, 2]")
    digest = data.file_sha256(path)
    assert digest == hashlib.sha256(b"[1, 2]").hexdigest()
    stat = path.stat()
    path.write_text("[3, 4]")  # same size; the old mtime restored: the cached digest is returned unread
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert data.file_sha256(path) == digest
    path.write_text("[3, 4, 5]")  # another size: hashed again
    assert data.file_sha256(path) == hashlib.sha256(b"[3, 4, 5]").hexdigest()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path}/commonsense/boolq/test.json not found")):
        data.load_task("boolq", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere .*from the data_dir argument"):
        data.data_dir(tmp_path / "nowhere")


def test_data_dir_resolution_order(monkeypatch, tmp_path, no_data_dirs):
    argument, environment, shared = (tmp_path / name for name in ("argument", "environment", "shared"))
    for folder in (argument, environment, shared):
        folder.mkdir()
    assert data.data_dir() == no_data_dirs  # nothing else: the download cache
    monkeypatch.setattr(data, "SHARED_DATA", shared)
    assert data.data_dir() == shared
    monkeypatch.setenv("POLAR_DATA", str(environment))
    assert data.data_dir() == environment
    assert data.data_dir(argument) == argument
    assert data.data_dir(str(argument)) == argument


def test_shared_data_is_found_beside_the_checkout():
    assert data.SHARED_DATA == Path(polar_lib.__file__).resolve().parents[1].parent / "shared" / "data"


def serve(monkeypatch, tmp_path, relative_path, records, recorded=None):
    """Publish ``records`` as a local file:// 'upstream' for ``relative_path``, recorded with the
    sha256 of ``recorded`` (default: of the published records themselves)."""
    published = write_records(tmp_path / "upstream", relative_path, records)
    expected = write_records(tmp_path / "recorded", relative_path, recorded or records).read_bytes()
    source = Source(relative_path, published.as_uri(), hashlib.sha256(expected).hexdigest(), len(records))
    monkeypatch.setattr(data, "sources", lambda: {relative_path: source})
    return published


def test_download_into_cache_verifies_and_is_reused(monkeypatch, tmp_path, no_data_dirs):
    serve(monkeypatch, tmp_path, "math/AQuA/test.json", [AQUA_RECORD] * 3)
    examples = data.load_task("aqua")
    assert examples == [MultipleChoiceExample("What is 2 + 3?", tuple("45678"), 1)] * 3
    assert (no_data_dirs / "math/AQuA/test.json").is_file()
    assert [p.name for p in (no_data_dirs / "math/AQuA").iterdir()] == ["test.json"]  # no partial files left

    def offline(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    assert data.load_task("aqua", limit=1) == examples[:1]


def test_download_checksum_mismatch_raises_and_saves_nothing(monkeypatch, tmp_path, no_data_dirs):
    serve(monkeypatch, tmp_path, "math/AQuA/test.json", [AQUA_RECORD], recorded=[AQUA_RECORD] * 2)
    with pytest.raises(DataError, match="checksum mismatch for math/AQuA/test.json downloaded from file://"):
        data.load_task("aqua")
    assert not (no_data_dirs / "math/AQuA").exists() or not any((no_data_dirs / "math/AQuA").iterdir())


def test_download_only_into_the_cache(monkeypatch, tmp_path, no_data_dirs):
    serve(monkeypatch, tmp_path, "math/AQuA/test.json", [AQUA_RECORD])
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileNotFoundError):  # an explicit folder is read as it is, never filled
        data.load_task("aqua", data_dir=tmp_path / "mine")


def test_prompt_and_answer_are_consistent():
    example = data.parse_multiple_choice(PIQA_RECORD)
    assert data.format_prompt(example) == "Question: open a jar\nAnswer:"
    assert data.format_prompt(example) + " " + data.answer_text(example) == "Question: open a jar\nAnswer: twist the lid"
    assert data.answer_text(MathExample("q", 4.0)) == "4" and data.answer_text(MathExample("q", 9.8)) == "9.8"
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.label = 1


def test_unreachable_source_says_how_to_work_offline(monkeypatch, tmp_path, no_data_dirs):
    published = serve(monkeypatch, tmp_path, "math/AQuA/test.json", [AQUA_RECORD])
    published.unlink()
    with pytest.raises(ConnectionError, match="cannot download math/AQuA/test.json .*POLAR_DATA"):
        data.load_task("aqua")
