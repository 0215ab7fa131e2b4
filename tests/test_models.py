"""The offline models: real pretrained weights, the cache, and clear errors."""
import subprocess
import sys

import pytest
import torch

from polar_lib.models import KNOWN_MODELS, load_model, smollm2_folder, tiny_like

ENGLISH = "The quick brown fox jumps over the lazy dog. It was a sunny day, and the children played in the park."


def lm_loss(model, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids, labels=ids).loss.item()


def test_smollm2_is_pretrained():
    model, tokenizer = load_model("smollm2-135m")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    answer = tokenizer.decode(model.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1]:])
    assert "Paris" in answer
    random_model = type(model)(model.config)
    pretrained, random = lm_loss(model, tokenizer, ENGLISH), lm_loss(random_model, tokenizer, ENGLISH)
    assert pretrained < 5 and random > 9 and pretrained < random - 5, (pretrained, random)


def test_smollm2_second_load_reuses_the_cache_and_concurrent_first_loads_are_safe(tmp_path, monkeypatch):
    smollm2_folder()  # converted once (and cached) in this process's cache
    with monkeypatch.context() as patch:  # a second load reads the converted folder, it never converts again
        patch.setattr("polar_lib.models._convert_smollm2", lambda target: pytest.fail("converted again"))
        load_model("smollm2-135m")
    # Two processes converting into an empty cache at once: both must get a complete folder.
    code = "from polar_lib.models import smollm2_folder; print(smollm2_folder())"
    env = {**__import__("os").environ, "POLAR_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1] and (tmp_path / "smollm2-135m-fp32" / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".convert-")] == []


def test_minilm_is_pretrained():
    encoder, tokenizer = load_model("minilm-l6", task="encoder")

    def embed(text):
        batch = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(**batch).last_hidden_state
        return torch.nn.functional.normalize(hidden.mean(1), dim=-1)

    same = (embed("A man is playing a guitar.") * embed("Someone plays the guitar.")).sum()
    unrelated = (embed("A man is playing a guitar.") * embed("The stock market fell sharply today.")).sum()
    assert same > 0.5 and unrelated < 0.2
    classifier, _ = load_model("minilm-l6", task="sequence-classification", num_labels=3)
    assert classifier.config.num_labels == 3


@pytest.mark.parametrize("name,task", [("tiny-llama", "causal-lm"), ("tiny-llama", "sequence-classification"),
                                       ("tiny-bert", "sequence-classification"), ("tiny-gemma3", "causal-lm")])
def test_tiny_models_are_seeded(name, task):
    a, _ = load_model(name, task=task, seed=3)
    b, _ = load_model(name, task=task, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_names_raise():
    with pytest.raises(ValueError, match="unknown model 'smollm3'.*smollm2-135m"):
        load_model("smollm3")
    with pytest.raises(ValueError, match="task must be one of"):
        load_model("tiny-llama", task="translation")
    assert set(KNOWN_MODELS) == {"smollm2-135m", "minilm-l6", "tiny-llama", "tiny-bert", "tiny-deberta", "tiny-gemma3"}


def test_the_math_sweeps_adapters_sit_on_gemma3s_language_model_only():
    """Gemma-3's image-text model (what AutoModelForCausalLM builds for google/gemma-3-27b-pt) has q/k/v_proj in
    its vision tower too; the paper-math sweep's targets exclude it: 5 targets × 2 layers of the language model."""
    from polar_lib.methods import make_config, targeted_layers
    from polar_lib.sweeps import get_sweep

    training = get_sweep("paper-math").training
    assert tiny_like(training["model"]) == "tiny-gemma3"
    model, _ = load_model("tiny-gemma3")
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert any("vision_tower" in name and name.endswith("q_proj") for name, _ in model.named_modules())
    config = make_config("polar", r=16, target_modules=training["target_modules"], **training["adapter_options"])
    layers = targeted_layers(model, config)
    assert len(layers) == 5 * 2 and all(".language_model.layers." in name for name in layers)
