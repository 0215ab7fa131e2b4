import json
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.tasks import TaskManager

from polar_lib import data as task_data
from polar_lib import evaluate
from polar_lib.models import load_model
from polar_lib.train import RunConfig, run_identity, train


def direct_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) summed over the continuation's tokens."""
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(context_ids)
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(logprobs[i - 1, ids[i]].item() for i in range(len(context_ids), len(ids)))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    config = RunConfig(model="tiny-llama", method="lora", task="arc_easy", max_steps=2, batch_size=2,
                       train_limit=8, save_steps=1)
    return train(config, runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_task_config_scores_space_choice_after_prompt(tiny_llama):
    model, tokenizer = tiny_llama
    config = evaluate.lm_eval_task_config("arc_easy", limit=2)
    assert Path(config["dataset_kwargs"]["data_files"]["test"]).is_absolute()
    output = lm_eval.simple_evaluate(model=evaluate.hf_lm(model, tokenizer), tasks=[config],
                                     task_manager=TaskManager(include_defaults=False), log_samples=True)
    sample = output["samples"]["arc_easy"][0]
    example = task_data.load_task("arc_easy", limit=1)[0]
    prompt = task_data.format_prompt(example)
    assert [tuple(a) for a in sample["arguments"]] == [(prompt, " " + c) for c in example.choices]
    assert sample["target"] == example.label
    model.eval()
    for (loglikelihood, _), choice in zip(sample["filtered_resps"], example.choices):
        assert loglikelihood == pytest.approx(direct_loglikelihood(model, tokenizer, prompt, " " + choice), abs=1e-4)


def test_per_question_scores_aggregate_to_lm_evals_accuracy(tiny_llama):
    model, tokenizer = tiny_llama
    answers = evaluate.score_questions(model, tokenizer, ["arc_easy", "boolq"], limit=6)
    assert answers.groupby("task")["question"].apply(list).to_dict() == {"arc_easy": list(range(6)),
                                                                        "boolq": list(range(6))}
    configs = [evaluate.lm_eval_task_config(t, limit=6) for t in ("arc_easy", "boolq")]
    stock = lm_eval.simple_evaluate(model=evaluate.hf_lm(model, tokenizer), tasks=configs,
                                    task_manager=TaskManager(include_defaults=False))["results"]
    table = evaluate.summarize(answers, {"arc_easy": "acc_norm", "boolq": "acc"}).set_index("task")
    for task, metric in (("arc_easy", "acc_norm"), ("boolq", "acc")):
        # the same 0/1 values averaged: equal up to the rounding of a mean of six (fp64)
        assert table.loc[task, "accuracy"] == pytest.approx(stock[task][f"{metric},none"], abs=1e-12)
        assert table.loc[task, "stderr"] == pytest.approx(stock[task][f"{metric}_stderr,none"], abs=1e-12)
        assert table.loc[task, "low"] <= table.loc[task, "accuracy"] <= table.loc[task, "high"]


def test_evaluate_model_reports_each_tasks_convention(tiny_llama):
    table = evaluate.evaluate_model(*tiny_llama, ["arc_easy", "boolq", "gsm8k"], limit=3)
    assert list(table.columns) == ["task", "metric", "accuracy", "stderr", "low", "high", "n"]
    assert table.set_index("task")["metric"].to_dict() == {"arc_easy": "acc_norm", "boolq": "acc",
                                                           "gsm8k": "exact_match"}
    assert table["accuracy"].between(0, 1).all()
    assert (table["n"] == 3).all()


def test_sequence_classifier_accuracy():
    model, tokenizer = load_model("tiny-bert", task="sequence-classification", num_labels=5)
    table = evaluate.evaluate_model(model, tokenizer, ["arc_easy"], limit=5, batch_size=2)
    row = table.iloc[0]
    assert (row["task"], row["metric"], row["n"]) == ("arc_easy", "acc", 5)
    assert 0 <= row["accuracy"] <= 1


def test_math_answer_match():
    assert evaluate.last_number("so 3 apples, then 1,200.5 in all") == 1200.5
    assert evaluate.last_number("no digits") is None
    assert evaluate.math_correct(" 18\n", 18.0)
    assert evaluate.math_correct("x = 0.33333", 1 / 3 + 1e-6)
    assert not evaluate.math_correct("18 or 19", 18.0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="math_train.*arc_easy"):
        evaluate.lm_eval_task_config("math_train")
    with pytest.raises(ValueError, match="limit"):
        evaluate.evaluate_model(None, None, ["arc_easy"], limit=0)


def test_evaluate_run_caches(finished_run, monkeypatch, capsys):
    table = evaluate.evaluate_run(finished_run, limit=2)
    assert table["task"].tolist() == ["arc_easy"] and table["n"].tolist() == [2]
    cached = list(finished_run.glob("eval-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["limit"] == 2
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr("polar_lib.train.load_trained", lambda run_dir: pytest.fail("evaluated again"))
        assert evaluate.evaluate_run(finished_run, limit=2).equals(table)
    assert "using the cached evaluation" in capsys.readouterr().err
    again, answers = evaluate.evaluate_run(finished_run, limit=2, per_question=True)
    assert again.equals(table) and answers["question"].tolist() == [0, 1]
    assert answers["correct"].mean() == pytest.approx(table.loc[0, "accuracy"], abs=1e-12)


def test_edited_test_file_gives_a_new_evaluation(finished_run, tmp_path, monkeypatch):
    """One record of the test file edited (answer changed): the cached evaluation is not reused."""
    relative = task_data.get_task("arc_easy").files["test"]
    records = json.loads((task_data.SHARED_DATA / relative).read_text())
    records[0]["answer"] = "answer2" if records[0]["answer"] != "answer2" else "answer1"
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_text(json.dumps(records))
    monkeypatch.setenv("POLAR_DATA_VERIFY", "0")
    original = evaluate.evaluate_run(finished_run, limit=2)
    before = set(finished_run.glob("eval-*.json"))
    edited = evaluate.evaluate_run(finished_run, limit=2, data_dir=tmp_path)
    assert len(set(finished_run.glob("eval-*.json")) - before) == 1
    assert evaluate.evaluation_key(["arc_easy"], 2, False, tmp_path) != evaluate.evaluation_key(["arc_easy"], 2, False)
    assert original["n"].tolist() == edited["n"].tolist() == [2]


def test_cli_prints_table(finished_run, capsys):
    evaluate.main(["--run", str(finished_run), "--limit", "2"])
    assert "arc_easy" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--run", "x", "--tasks", "arc_easy,nope"], "cannot evaluate 'nope'; tasks with a test split: boolq"),
    (["--run", "/no/such/run"], "not a run directory"),
    (["--run", "x", "--limit", "-1"], "--limit: expected a positive integer"),
])
def test_cli_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_unfinished_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(run_identity(RunConfig())))
    with pytest.raises(SystemExit):
        evaluate.main(["--run", str(tmp_path)])
    assert "not a finished run" in capsys.readouterr().err
