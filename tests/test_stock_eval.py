"""lm-eval's stock tasks (``online=True``): GSM8K and the MATH group scored exactly as lm-eval ships them, from a
local copy of their hub datasets in the hub's own layout (tests/hub_fixtures.py) — per question, under the task's
filter, aggregating to lm-eval's own numbers; the evaluation's identity follows the data's content."""
import re
import shutil

import lm_eval
import pandas as pd
import pytest
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._factory import TaskFactory

from polar_lib import data as task_data
from polar_lib import evaluate
from polar_lib.hub_data import hub_location
from polar_lib.sweeps import get_sweep
from polar_lib.train import train

from .hub_fixtures import GSM8K_TEST, HENDRYCKS_MATH, write_hub_copy, write_hub_repo

# The questions the planted model answers right: GSM8K's 1st and 3rd; MATH's first algebra, geometry and
# precalculus problems. Every other answer is a number no fixture's answer is.
RIGHT = {GSM8K_TEST[0]["question"], GSM8K_TEST[2]["question"], HENDRYCKS_MATH["algebra"]["test"][0]["problem"],
         HENDRYCKS_MATH["geometry"]["test"][0]["problem"], HENDRYCKS_MATH["precalculus"]["test"][0]["problem"]}
MATH_SUBJECTS = ["algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus"]  # the order of lm-eval's group hendrycks_math


class PlantedLM(LM):
    """Answers each generation request from the document it is about: right on ``RIGHT``, else -987."""

    def generate_until(self, requests):
        outputs = []
        for request in requests:
            doc = request.doc
            if "problem" in doc:  # MATH: the answer between $…$, as its process_results reads it
                outputs.append(f" ${doc['answer'] if doc['problem'] in RIGHT else '-987'}$")
            else:  # GSM8K: the number after "#### ", flexible-extract takes the output's last number
                answer = doc["answer"].split("#### ")[-1] if doc["question"] in RIGHT else "-987"
                outputs.append(f" 2 + 2 = 4, so the answer is {answer}.")
        return outputs

    def loglikelihood(self, requests):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


@pytest.fixture
def hub_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("POLAR_CACHE", str(tmp_path / "cache"))
    root = write_hub_copy(tmp_path / "hub")
    monkeypatch.setenv("POLAR_HUB_DATA", str(root))
    return root


def test_registry_names_the_stock_tasks_hub_datasets_and_filters(monkeypatch):
    """Every task with a stock lm-eval task: its configs read the registry's hub dataset, and the filter the
    registry scores is one the stock task has."""
    monkeypatch.delenv("POLAR_HUB_DATA", raising=False)
    for task in evaluate.eval_task_names(online=True):
        entry = task_data.get_task(task)
        configs = evaluate.stock_task_configs(task)
        assert configs and all(config["dataset_path"] == entry.hub["path"] for config in configs), task
        for config in configs:
            filters = [f["name"] for f in config.get("filter_list", [])] or ["none"]
            assert entry.lm_eval_filter in filters, (task, filters)
    math_configs = evaluate.stock_task_configs("hendrycks_math")
    assert [config["dataset_name"] for config in math_configs] == MATH_SUBJECTS


def test_planted_answers_are_scored_per_question_as_lm_eval_aggregates(hub_copy):
    answers = evaluate.stock_answers(PlantedLM(), ["gsm8k", "hendrycks_math"])
    gsm8k, math = answers[answers.task == "gsm8k"], answers[answers.task == "hendrycks_math"]
    assert gsm8k.correct.tolist() == [int(r["question"] in RIGHT) for r in GSM8K_TEST]
    assert math.correct.tolist() == [int(r["problem"] in RIGHT) for s in MATH_SUBJECTS for r in HENDRYCKS_MATH[s]["test"]]
    assert math.question.tolist() == list(range(len(math)))
    # lm-eval's own numbers: gsm8k's flexible-extract accuracy, and the stock group hendrycks_math's aggregate
    # (lm-eval 0.4.13's dict spec of a group passes the group's own fields down to its tasks, so the stock group
    # is built by its factory, with the one override a task field the group hands down)
    group = TaskFactory().build(evaluate._stock_index()["hendrycks_math"], registry=evaluate._stock_index(),
                                overrides={"dataset_path": hub_location("EleutherAI/hendrycks_math")})
    gsm8k_config = evaluate.stock_task_configs("gsm8k")[0]
    results = lm_eval.simple_evaluate(model=PlantedLM(), tasks=[gsm8k_config, group], task_manager=TaskManager())["results"]
    assert gsm8k.correct.mean() == results["gsm8k"]["exact_match,flexible-extract"] == 0.5
    assert math.correct.mean() == pytest.approx(results["hendrycks_math"]["exact_match,none"], abs=1e-12)
    assert results["hendrycks_math"]["exact_match,none"] == pytest.approx(3 / 8, abs=1e-12)
    limited = evaluate.stock_answers(PlantedLM(), ["hendrycks_math"], limit=1)
    assert limited.correct.tolist() == [1, 0, 1, 0, 0, 0, 1]  # the first problem of each subject


def test_evaluation_key_follows_the_copys_content_not_its_place(hub_copy, tmp_path):
    key = evaluate.evaluation_key(["gsm8k", "hendrycks_math"], 2, True)
    assert key["tasks"]["gsm8k"]["filter"] == "flexible-extract"
    assert len(key["tasks"]["hendrycks_math"]["data"]) == len(MATH_SUBJECTS)
    moved = tmp_path / "moved"
    shutil.copytree(hub_copy, moved)
    assert evaluate.stock_task_configs("gsm8k", moved)[0]["dataset_path"] == str(moved / "openai/gsm8k")
    edited = [dict(record) for record in GSM8K_TEST]
    edited[1]["answer"] = re.sub(r"#### \d+", "#### 4", edited[1]["answer"])
    shutil.rmtree(hub_copy / "openai/gsm8k")
    write_hub_repo(hub_copy, "openai/gsm8k", {"main": {"train": pd.read_parquet(
        moved / "openai/gsm8k/main/train-00000-of-00001.parquet").to_dict("records"), "test": edited}})
    after = evaluate.evaluation_key(["gsm8k", "hendrycks_math"], 2, True)
    assert after["tasks"]["gsm8k"]["data"] != key["tasks"]["gsm8k"]["data"]
    assert after["tasks"]["hendrycks_math"] == key["tasks"]["hendrycks_math"]


def test_run_scores_pairs_runs_on_the_same_questions(hub_copy, tmp_path, monkeypatch):
    """The ci-math sweep's two runs (tiny-gemma3, whose context holds the stock tasks' 256 generated tokens)
    scored online on GSM8K and MATH (first question of each subtask): one row per run and task whose accuracy is
    the mean of its per-question answers; a second call reads the caches."""
    configs = get_sweep("ci-math").configs("math")
    run_dirs = {key: train(config, tmp_path / "runs", progress=False) for key, config in configs.items()}
    scores, per_question = evaluate.run_scores(run_dirs, ["gsm8k", "hendrycks_math"], limit=1, online=True,
                                               confidence=0.9)
    assert scores[["method", "task", "n"]].values.tolist() == [
        ["lora", "gsm8k", 1], ["lora", "hendrycks_math", 7], ["polar", "gsm8k", 1], ["polar", "hendrycks_math", 7]]
    means = per_question.groupby(["method", "task"], sort=False).correct.mean()
    assert scores.accuracy.tolist() == means.tolist()
    lora, polar = (per_question[per_question.method == method] for method in ("lora", "polar"))
    assert lora[["task", "question"]].values.tolist() == polar[["task", "question"]].values.tolist()
    monkeypatch.setattr("polar_lib.train.load_trained", lambda run_dir: pytest.fail("evaluated again"))
    again = evaluate.run_scores(run_dirs, ["gsm8k", "hendrycks_math"], limit=1, online=True, confidence=0.9)
    assert again[0].equals(scores) and again[1].equals(per_question)
    with pytest.raises(ValueError, match="key_names"):
        evaluate.run_scores(run_dirs, ["gsm8k"], online=True, key_names=("task", "method"))
