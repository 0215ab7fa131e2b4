"""The registry's wiring: every method name builds its own optimizer class, at its registry lr, with
weight decay 0 unless asked, over exactly the model's trainable parameters; its ``Delta`` is found
from the peft_type its config saves."""
import json

import pytest

from polar_lib import PolarConfig, StellaConfig, TopLoraConfig

from polar_lib.methods import METHODS, delta_for, make_config, make_optimizer, optimizer_settings, prepare
from polar_lib.models import load_model

# The optimizer class each method must get (a method pointed at another factory fails here).
OPTIMIZER_CLASS = {"lora": "AdamW", "dora": "AdamW", "polar": "LandingAdamW", "stella": "StellaAdamW",
                   "toplora": "AdamW", "lora+adaprelora": "AdaPreLoRAAdamW",
                   "lora+riemannian": "RiemannianPreconditionedOptimizer"}


def test_every_method_is_wired():
    assert set(OPTIMIZER_CLASS) == set(METHODS)


@pytest.mark.parametrize("method", OPTIMIZER_CLASS)
def test_optimizer_class_lr_weight_decay_and_parameters(method):
    model, _ = load_model("tiny-llama", seed=0)
    model = prepare(model, method, r=4, target_modules=["q_proj", "v_proj"])
    optimizer = make_optimizer(model, method)
    assert type(optimizer).__name__ == OPTIMIZER_CLASS[method]
    assert {group["lr"] for group in optimizer.param_groups} == {METHODS[method].lr}
    assert {group["weight_decay"] for group in optimizer.param_groups} == {0.0}  # the papers' default, every method
    in_groups = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each exactly once


def test_optimizer_settings_fill_in_the_factory_defaults():
    settings = optimizer_settings("polar")
    assert settings["lr"] == METHODS["polar"].lr and settings["weight_decay"] == 0.0
    assert settings["landing_lambda"] == 5e-3  # the PoLAR code's λ
    assert optimizer_settings("polar", lr=1e-3, landing_lambda=1.0) == settings | {"lr": 1e-3, "landing_lambda": 1.0}


@pytest.mark.parametrize("config_cls", [PolarConfig, StellaConfig, TopLoraConfig])
@pytest.mark.parametrize("r", [True, 0, 2.0])
def test_every_config_refuses_an_r_that_is_not_a_positive_int(config_cls, r):
    with pytest.raises(ValueError, match=f"r must be a positive integer, got {r!r}"):
        config_cls(r=r, target_modules=["q_proj"])


@pytest.mark.parametrize("method", OPTIMIZER_CLASS)
def test_the_saved_peft_type_finds_the_methods_delta(method, tmp_path):
    """A saved adapter names its method only by ``peft_type``: it must lead back to the method's ``Delta``
    (methods sharing a peft_type, as LoRA's optimizers, share one); only TopLoRA's ΔW depends on the token."""
    make_config(method).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"]
    assert delta_for(saved) is METHODS[method].delta and METHODS[method].delta.peft_type == saved
    assert bool(METHODS[method].delta.token_dependent) == (method == "toplora")
