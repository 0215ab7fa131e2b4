"""GLUE on an encoder: the DeBERTa model family, ClassificationExample training (classes and STS-B's
regression), evaluate_classifier's GLUE metrics and their cache, the GLUE sweeps (learning-rate grid,
per-task epochs, per-method options) and the summaries over seeds. Data: the hub-format test copy of GLUE
(tests/hub_fixtures.py), read offline through $POLAR_HUB_DATA."""
import json
import math

import numpy as np
import pytest
import scipy.stats
import torch
from safetensors.torch import load_file

from polar_lib import evaluate
from polar_lib.data import load_task
from polar_lib.hub_data import glue_metric
from polar_lib.methods import make_optimizer, prepare, targeted_layers
from polar_lib.models import load_model, model_task, tiny_like
from polar_lib.sweeps import GLUE_TARGETS, SWEEPS, Group, Sweep, main as sweeps_main
from polar_lib.train import RunConfig, collator, load_run, load_trained, run_identity, run_name, tokenize_examples, train

from .hub_fixtures import GLUE, write_hub_copy

GLUE_RUN = dict(model="tiny-deberta", r=8, lora_alpha=8, lora_dropout=0.0, target_modules=GLUE_TARGETS, max_steps=2,
                batch_size=4, max_length=128, scheduler="linear", warmup_ratio=0.06, weight_decay=0.01, save_steps=2,
                adapter_options={"modules_to_save": ["pooler"]})
POLAR_OPTIONS = {"landing_lambda": 1.0, "decay_factors": True}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The hub copy, read offline for every test of this module."""
    with pytest.MonkeyPatch.context() as patch:
        root = write_hub_copy(tmp_path_factory.mktemp("glue-hub"))
        patch.setenv("POLAR_HUB_DATA", str(root))
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield root


@pytest.fixture(scope="module")
def runs(hub, tmp_path_factory):
    """Two finished runs: RTE (two classes) with LoRA, STS-B (regression) with PoLAR at the paper's options."""
    runs_dir = tmp_path_factory.mktemp("glue-runs")
    return {"rte": train(RunConfig(method="lora", task="rte", lr=1e-3, **GLUE_RUN), runs_dir, progress=False),
            "stsb": train(RunConfig(method="polar", task="stsb", lr=1e-3, optimizer_options=POLAR_OPTIONS, **GLUE_RUN),
                          runs_dir, progress=False)}


def test_deberta_is_an_encoder_with_a_tiny_twin_and_the_papers_targets():
    assert tiny_like("microsoft/deberta-v3-base") == "tiny-deberta" and tiny_like("bert-base-uncased") == "tiny-bert"
    assert model_task("microsoft/deberta-v3-base") == model_task("tiny-deberta") == "sequence-classification"
    assert model_task("meta-llama/Llama-2-7b-hf") == "causal-lm"
    model, _ = load_model("tiny-deberta", task="sequence-classification", num_labels=1)
    assert type(model).__name__ == "DebertaV2ForSequenceClassification" and model.config.num_labels == 1
    assert model.config.relative_attention and not model.config.position_biased_input  # DeBERTa-v3's attention
    adapted = prepare(model, "lora", r=8, lora_alpha=8, target_modules=GLUE_TARGETS, lora_dropout=0.0)
    layers = {name.split("encoder.layer.")[1] for name in targeted_layers(adapted.get_base_model(), adapted.peft_config["default"])}
    per_block = {"attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
                 "attention.output.dense", "intermediate.dense", "output.dense"}
    assert layers == {f"{i}.{module}" for i in range(model.config.num_hidden_layers) for module in per_block}


def test_a_classification_example_is_the_tokenizers_pair(hub):
    _, tokenizer = load_model("tiny-deberta", task="sequence-classification")
    examples = load_task("rte", "train") + load_task("stsb", "train") + load_task("cola", "train")
    rows = tokenize_examples(examples, tokenizer, "sequence-classification", max_length=128, loss_on="answer")
    for row, example in zip(rows, examples):
        expected = tokenizer(example.text, example.text_pair, truncation=True, max_length=128)
        assert row["input_ids"] == expected["input_ids"] and row["labels"] == example.label
        assert row["token_type_ids"] == expected["token_type_ids"]
    assert {type(row["labels"]) for row in rows} == {int, float}  # classes, and STS-B's scores
    short = tokenize_examples(examples[:1], tokenizer, "sequence-classification", max_length=8, loss_on="answer")
    assert len(short[0]["input_ids"]) == 8 < len(rows[0]["input_ids"])
    with pytest.raises(ValueError, match="model_task='causal-lm' for a classification example"):
        tokenize_examples(examples[:1], tokenizer, "causal-lm", max_length=8, loss_on="answer")


@pytest.mark.parametrize("task, num_labels", [("rte", 2), ("mnli", 3), ("stsb", 1)])
def test_the_head_and_loss_of_each_task(hub, task, num_labels):
    """The training batch's loss is the cross-entropy over the task's classes, or for STS-B (one output) the
    mean squared error of the score: what transformers computes for num_labels == 1 and a float label."""
    model, tokenizer = load_model("tiny-deberta", task="sequence-classification", num_labels=num_labels)
    rows = tokenize_examples(load_task(task, "train"), tokenizer, "sequence-classification", 128, "answer")
    batch = collator(tokenizer, "sequence-classification")(rows)
    assert batch["labels"].dtype == (torch.float32 if num_labels == 1 else torch.int64)
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    logits = output.logits.reshape(len(rows), -1)  # DeBERTa flattens a single output when given labels
    assert logits.shape == (len(rows), num_labels)
    expected = (torch.nn.functional.mse_loss(logits[:, 0], batch["labels"]) if num_labels == 1 else
                torch.nn.functional.cross_entropy(logits, batch["labels"]))
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-6)  # the same fp32 reduction, maybe reordered


def test_a_glue_task_needs_an_encoder():
    with pytest.raises(ValueError, match=r"task 'rte' trains a sequence classifier; model='tiny-llama' is a causal LM; "
                                         r"allowed: an encoder \(minilm-l6, tiny-bert, tiny-deberta"):
        RunConfig(model="tiny-llama", task="rte")


def test_a_glue_run_trains_its_head_and_adapters(runs):
    for task, num_labels in (("rte", 2), ("stsb", 1)):
        config, metrics = load_run(runs[task])
        assert metrics["num_labels"] == num_labels and metrics["steps"] == 2
        weights = load_file(runs[task] / "adapter" / "adapter_model.safetensors")
        assert sum(key.endswith("lora_A.weight") for key in weights) == 2 * 6  # 2 blocks × 6 targets
        # the new head, saved whole and trained: the classifier (num_labels outputs) and DeBERTa's pooler
        initial, _ = load_model("tiny-deberta", task="sequence-classification", num_labels=num_labels, seed=config.seed)
        for module in ("classifier", "pooler.dense"):
            saved = weights[f"base_model.model.{module}.weight"]
            assert saved.shape == initial.get_submodule(module).weight.shape
            assert not torch.equal(saved, initial.get_submodule(module).weight), f"{task}: {module} not trained"
        assert weights["base_model.model.classifier.weight"].shape[0] == num_labels
    identity = json.loads((runs["stsb"] / "config.json").read_text())
    assert identity["resolved"]["optimizer"] | POLAR_OPTIONS == identity["resolved"]["optimizer"]
    assert identity["resolved"]["optimizer"]["weight_decay"] == 0.01
    assert identity["data"]["hub"] == "nyu-mll/glue" and identity["data"]["name"] == "stsb"


def test_decay_factors_reaches_polars_optimizer():
    model, _ = load_model("tiny-deberta", task="sequence-classification")
    model = prepare(model, "polar", r=8, lora_alpha=8, target_modules=GLUE_TARGETS, lora_dropout=0.0)
    optimizer = make_optimizer(model, "polar", lr=1e-3, weight_decay=0.01, **POLAR_OPTIONS)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.01]  # factors decayed too
    plain = make_optimizer(model, "polar", lr=1e-3, weight_decay=0.01)
    assert sorted(group["weight_decay"] for group in plain.param_groups) == [0.0, 0.01]


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_evaluate_classifier_is_glue_metric_of_the_models_own_predictions(runs, task, monkeypatch):
    config, _ = load_run(runs[task])
    metrics = evaluate.evaluate_classifier(runs[task])
    model, tokenizer = load_trained(runs[task])
    examples = load_task(task, "validation")
    inputs = tokenizer([e.text for e in examples], [e.text_pair for e in examples], truncation=True,
                       max_length=config.max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    predictions = logits[:, 0].tolist() if task == "stsb" else logits.argmax(-1).tolist()
    expected = glue_metric(task, predictions, [e.label for e in examples])
    # one batch padded alike on both sides: the same logits, so the same fp64 metric (up to summation order)
    assert metrics.keys() == expected.keys() and all(metrics[k] == pytest.approx(expected[k], rel=1e-9, abs=1e-12)
                                                     for k in metrics)
    assert len(examples) == len(GLUE[task]["validation"]) >= 3
    monkeypatch.setattr("polar_lib.train.load_trained", lambda *a, **k: pytest.fail("evaluated again"))
    assert evaluate.evaluate_classifier(runs[task]) == metrics  # from the cache in the run directory
    monkeypatch.undo()
    caches = set(runs[task].glob("glue-*.json"))
    evaluate.evaluate_classifier(runs[task], limit=2)  # another key: another cache file
    assert len(set(runs[task].glob("glue-*.json")) - caches) == 1


def test_evaluate_classifier_bad_input_is_named(runs):
    with pytest.raises(ValueError, match="task 'rte' has no split 'test'; its splits: train, validation"):
        evaluate.evaluate_classifier(runs["rte"], split="test")
    with pytest.raises(ValueError, match="limit must be a positive integer or None, got 0"):
        evaluate.evaluate_classifier(runs["rte"], limit=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        evaluate.evaluate_classifier(runs["rte"], batch_size=0)


def test_glue_scores_table(runs):
    scores = evaluate.glue_scores({("rte", "lora", 8, 1e-3, 0): runs["rte"], ("stsb", "polar", 8, 1e-3, 0): runs["stsb"]})
    assert list(scores.columns) == ["task", "method", "r", "lr", "seed", "split", "metric", "value", "reported", "n"]
    assert scores.set_index(["task", "metric"]).reported.to_dict() == {
        ("rte", "accuracy"): True, ("stsb", "pearson"): True, ("stsb", "spearmanr"): False}
    assert scores.n.tolist() == [3, 4, 4]
    with pytest.raises(ValueError, match="do not name the key"):
        evaluate.glue_scores({("rte", 0): runs["rte"]})


def test_paper_glue_sweep_is_the_papers_setting(hub):
    sweep = SWEEPS["paper-glue"]
    configs = sweep.configs("glue")
    assert len(configs) == 8 * 2 * 3 * 4  # tasks × (LoRA, PoLAR) × learning rates × seeds
    assert {key[3] for key in configs} == {4e-4, 8e-4, 1e-3} and {key[4] for key in configs} == {0, 1, 2, 3}
    epochs = {"cola": 25, "mnli": 7, "mrpc": 30, "qnli": 5, "qqp": 7, "rte": 50, "sst2": 25, "stsb": 25}
    for (task, method, r, lr, seed), config in configs.items():
        assert (config.task, config.method, config.r, config.lr, config.seed) == (task, method, r, lr, seed)
        assert (config.model, config.lora_alpha, config.lora_dropout, config.batch_size, config.max_length) == (
            "microsoft/deberta-v3-base", 8, 0.0, 32, 128)
        assert (config.scheduler, config.warmup_ratio, config.weight_decay) == ("linear", 0.06, 0.01)
        assert config.optimizer_options == (POLAR_OPTIONS if method == "polar" else {})
        # the paper's epochs over the (test copy's) training split, in whole steps of 32
        assert config.max_steps == math.ceil(epochs[task] * len(GLUE[task]["train"]) / 32)
    names = {run_name(run_identity(config)) for key, config in configs.items() if key[0] == "rte"}
    assert len(names) == 2 * 3 * 4  # the learning rate and the method's options are in the identity


def test_sweep_cli_counts_the_glue_runs(hub, capsys):
    sweeps_main(["paper-glue", "--count"])
    assert int(capsys.readouterr().out) == 192


@pytest.mark.parametrize("make, message", [
    (lambda: Sweep(training={}, max_steps=1, method_options={"polr": {}}), "method_options method must be one of"),
    (lambda: Sweep(training={}, max_steps=1, method_options={"polar": {"landing_lambda": 1.0}}),
     "method_options['polar'] field must be one of"),
    (lambda: Sweep(training={}, epochs={"rte": 2}, glue=Group(("rte", "stsb"), ("lora",), (8,), (0,))),
     "epochs: no value for task(s) stsb; epochs per task given for: rte"),
    (lambda: Group(("rte",), ("lora",), (8,), (0,), (1e-3, 0)), "lrs must hold positive learning rates, got 0"),
])
def test_bad_glue_sweep_input_is_named(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        make()


def test_seed_intervals_are_t_intervals_and_the_best_lr_is_the_best_mean():
    rng = np.random.default_rng(0)
    values = {(m, lr): rng.normal(0.7 + 0.1 * (lr == 8e-4), 0.02, size=4) for m in ("lora", "polar") for lr in (4e-4, 8e-4)}
    import pandas as pd

    scores = pd.DataFrame([{"task": "rte", "method": m, "r": 8, "lr": lr, "seed": s, "metric": "accuracy", "value": v}
                           for (m, lr), vs in values.items() for s, v in enumerate(vs)]
                          + [{"task": "stsb", "method": "lora", "r": 8, "lr": lr, "seed": 0, "metric": "pearson",
                              "value": v} for lr, v in ((4e-4, 0.3), (8e-4, float("nan")))])
    summary = evaluate.best_learning_rates(evaluate.seed_intervals(scores))
    for (m, lr), vs in values.items():
        row = summary[(summary.method == m) & (summary.lr == lr)].iloc[0]
        low, high = scipy.stats.t.interval(0.95, len(vs) - 1, loc=vs.mean(), scale=scipy.stats.sem(vs))
        assert (row["mean"], row.low, row.high) == pytest.approx((vs.mean(), low, high), rel=1e-12)
        assert row.selected == (lr == max(values, key=lambda k: values[k].mean() if k[0] == m else -1)[1])
    stsb = summary[summary.task == "stsb"].set_index("lr")
    assert math.isnan(stsb.loc[4e-4, "low"]) and stsb.selected.to_dict() == {4e-4: True, 8e-4: False}  # NaN never wins
    table = evaluate.glue_table(summary).set_index("method")
    best = {m: max(values[m, lr].mean() for lr in (4e-4, 8e-4)) for m in ("lora", "polar")}
    assert table.loc["lora", "average"] == pytest.approx(100 * (best["lora"] + 0.3) / 2, rel=1e-12)
    assert math.isnan(table.loc["polar", "average"])  # no STS-B run: no average
