"""The registry: every method trains a real pretrained model on real data, saves and reloads exactly."""
import math

import pytest

from polar_lib.data import format_classifier_input, load_task
from polar_lib.methods import METHODS, get_method, make_optimizer, prepare
from polar_lib.models import load_model
from polar_lib.train import RunConfig, load_run, load_trained, train

from .conftest import reload_in_fresh_process


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every method trained on MiniLM (real weights) as a BoolQ classifier on 32 real training questions,
    10 steps (2.5 epochs); then all reloaded with stock PEFT in one fresh process, which asserts identical
    logits (``reload_in_fresh_process``). Per method: its run directory and its reloaded layer classes."""
    root = tmp_path_factory.mktemp("methods")
    runs, models = {}, {}
    for method in METHODS:
        config = RunConfig(model="minilm-l6", method=method, task="boolq", r=4, max_steps=10, batch_size=8,
                           max_length=64, train_limit=32, save_steps=10)
        runs[method] = train(config, root / "runs", progress=False)
        models[method], tokenizer = load_trained(runs[method])
    questions = [format_classifier_input(e) for e in load_task("boolq", split="test", limit=4)]
    inputs = dict(tokenizer(questions, padding=True, return_tensors="pt"))
    layers = reload_in_fresh_process(models, inputs, root, base="minilm-l6", task="sequence-classification")
    return runs, layers


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_saves_and_reloads(method, trained):
    runs, layers = trained
    metrics = load_run(runs[method])[1]
    losses = metrics["loss_history"]
    assert metrics["steps"] == 10
    # No claim that it learns: BoolQ questions without their passage stay near the majority class at
    # the paper's learning rates (over 40 steps the last 4 were 2–11 % below the first 4, too little
    # to assert). The claim is that training runs and does not blow up: 2-class cross-entropy is
    # log 2 = 0.69 for a uniform guess (measured ≤ 0.77 on every step); 5·log 2 = 3.47 leaves ≥ 4×.
    assert all(math.isfinite(v) for v in losses) and max(losses) < 5 * math.log(2), losses
    assert layers[method]  # reloaded in the fresh process with identical logits, as adapter layers


def test_registry_builds_each_method_and_rejects_unknown_names():
    for name in METHODS:
        model, _ = load_model("tiny-llama")
        peft_model = prepare(model, name, r=4, target_modules=["q_proj", "v_proj"])
        optimizer = make_optimizer(peft_model, name)
        assert optimizer.param_groups[0]["lr"] == get_method(name).lr
    with pytest.raises(ValueError, match="unknown method 'qlora'; known methods: lora, dora, polar"):
        get_method("qlora")
