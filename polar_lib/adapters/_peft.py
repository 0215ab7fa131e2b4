"""Registering a LoRA-family method with stock PEFT, without a fork.

PEFT looks a method up by its ``peft_type`` string in three tables (config class, tuner class,
state-dict prefix). Our methods are LoRA variants: their tuner is PEFT's ``LoraModel`` (subclassed
only to make ``add_weighted_adapter`` exact or refuse it), their prefix ``lora_``, and they differ in
the layer their config maps ``nn.Linear`` to. Registering the string in those tables at
``import polar_lib`` is all that stock ``get_peft_model``, ``PeftModel.from_pretrained`` and
``save_pretrained`` need. (Verified on peft 0.21.)
"""
from __future__ import annotations

import warnings
from pathlib import Path

from peft import LoraConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.lora import LoraModel
from peft.tuners.lora.layer import Linear, LoraVariant
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import load_peft_weights
from torch import nn

from .._checks import check_choice, check_positive_int


class PeftTypeName(str):
    """A ``peft_type`` PEFT's ``PeftType`` enum lacks: a str with the ``.value`` that PEFT's messages read
    (e.g. ``get_peft_model(..., mixed=True)``'s 'not compatible with the PeftMixedModel')."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return str(self)


def register_lora_method(peft_type: str, config_cls: type, tuner_cls: type[LoraModel]) -> None:
    """Make ``peft_type`` (e.g. ``"POLAR"``) a PEFT method served by ``tuner_cls`` and ``config_cls``."""
    PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls
    PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = tuner_cls
    PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = "lora_"


def finish_config(config: LoraConfig, method: str, inits: tuple, peft_type: str, layer_cls: type) -> None:
    """The ``__post_init__`` every method's config shares: check ``init_lora_weights`` against ``inits``,
    refuse ``use_dora``, check r, run ``LoraConfig``'s own checks, then set ``peft_type`` and map
    ``nn.Linear`` targets to ``layer_cls``."""
    check_choice("init_lora_weights", config.init_lora_weights, inits, where=f" for {method}")
    if config.use_dora:
        raise ValueError(f"use_dora=True is not supported by {method} (allowed: False)")
    check_positive_int("r", config.r)
    LoraConfig.__post_init__(config)
    config.peft_type = peft_type
    config._register_custom_module({nn.Module: layer_cls})


def check_linear_target(base_layer: nn.Module, config, method: str) -> None:
    """What PEFT's own dispatch does for an ``nn.Linear`` target, which a custom layer skips: raise
    unless ``base_layer`` is an ``nn.Linear`` (the one layer type our methods support), and reset
    ``config.fan_in_fan_out`` to False with PEFT's warning (an ``nn.Linear`` stores W as out×in)."""
    if not isinstance(base_layer, nn.Linear):
        raise ValueError(
            f"{method} supports target modules of type torch.nn.Linear only; got "
            f"{type(base_layer).__name__}. Choose target_modules that are nn.Linear layers."
        )
    if config.fan_in_fan_out:
        warnings.warn("fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. "
                      "Setting fan_in_fan_out to False.")
        config.fan_in_fan_out = False


def check_rank(r: int, base_layer: nn.Linear, name: str = "") -> None:
    """Raise unless 1 ≤ r ≤ min(in_features, out_features) (``name``: the layer's path, for the message)."""
    limit = min(base_layer.in_features, base_layer.out_features)
    if not 1 <= r <= limit:
        raise ValueError(
            f"r must satisfy 1 <= r <= min(in_features, out_features) = {limit} for every target "
            f"(a {base_layer.in_features}->{base_layer.out_features} nn.Linear{' ' + name if name else ''}); got r={r}."
        )


class MethodLinear(Linear):
    """PEFT's LoRA ``Linear`` as the base of a method's layer: ``method`` names it in messages, and the
    target is checked as PEFT's own dispatch checks an ``nn.Linear`` (``check_linear_target``)."""

    method = "LoRA"

    def __init__(self, base_layer, adapter_name, config, **kwargs):
        base = base_layer.get_base_layer() if isinstance(base_layer, BaseTunerLayer) else base_layer
        check_linear_target(base, config, self.method)
        super().__init__(base_layer, adapter_name, config=config, **kwargs)


def read_adapter_weights(folder) -> dict:
    """The tensors of a saved adapter folder (``adapter_model.safetensors`` or ``.bin``), on CPU."""
    folder = Path(folder)
    if not any((folder / name).exists() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise FileNotFoundError(f"no adapter_model.safetensors or adapter_model.bin in {folder}")
    return load_peft_weights(str(folder), device="cpu")


class FactoredVariant(LoraVariant):
    """PEFT's variant hook for the forward y = result + s · B · inner(A · dropout(x), x), where a
    subclass's ``inner(module, adapter, h, x)`` is what the method puts between A and B (a core C h,
    a gate h ⊙ g(x)); the layer's ``update_layer`` creates its extra modules, so ``init`` has nothing to do."""

    @staticmethod
    def init(module, adapter_name, **kwargs):
        pass

    @staticmethod
    def inner(module, adapter: str, h, x):
        raise NotImplementedError

    def forward(self, module, active_adapter, x, result, **kwargs):
        h = self.inner(module, active_adapter, module.lora_A[active_adapter](module.lora_dropout[active_adapter](x)), x)
        return result + module.lora_B[active_adapter](h) * module.scaling[active_adapter]
