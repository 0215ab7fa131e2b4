"""A toy method added the way a new method is: this one module and one line in ``methods.METHODS``.

ΔW = s · B diag(c) A: LoRA's factors (A Kaiming-uniform, B = 0, so ΔW₀ = 0) with a trainable
diagonal core c initialised to ones, trained with plain AdamW. ``DELTA`` says how a saved layer
gives those factors (c is saved as ``lora_S.weight``, an r-vector). ``test_toy_method.py`` adds the
line ``METHODS["toy"] = Method(ToyConfig, create_adamw, 1e-3, delta=DELTA)``.
"""
from dataclasses import dataclass

import torch
from peft import LoraConfig
from torch import nn

from polar_lib.adapters._peft import PeftTypeName, finish_config, register_lora_method
from polar_lib.adapters.core import Core, CoreLinear, CoreLoraModel, saved_core
from polar_lib.adapters.delta import Delta

PEFT_TYPE = PeftTypeName("TOY")


@dataclass
class ToyConfig(LoraConfig):
    """A ``LoraConfig`` for the toy method (``peft_type="TOY"``)."""

    def __post_init__(self):
        finish_config(self, "Toy", (True, False), PEFT_TYPE, ToyLinear)


class ToyLinear(CoreLinear):
    """An ``nn.Linear`` with toy adapters: y = W0 x + s · B diag(c) A dropout(x)."""

    method = "Toy"

    def make_core(self, r, config):
        core = Core(r, diagonal=True)
        nn.init.ones_(core.weight)
        return core


DELTA = Delta(PEFT_TYPE, "Toy", core=saved_core)  # ΔW = s · B diag(c) A, c as saved
register_lora_method(PEFT_TYPE, ToyConfig, CoreLoraModel)
