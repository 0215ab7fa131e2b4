"""One interface to every method: a name → its PEFT adapter config and its optimizer.

``prepare(model, "polar", r=8)`` returns the PEFT model; ``make_optimizer(model, "polar")`` the
matching optimizer, with the paper's learning rate unless ``lr`` is given. Adding a method is one
module (its config, layer and ``Delta``, and/or its optimizer factory) and one line in ``METHODS``;
``delta_for(peft_type)`` gives the readers of saved adapters and the export a method's ``Delta``.

Default learning rates (docs/README.md, 'Defaults at a glance', and each method's page): PoLAR
4e-3 and LoRA/DoRA 4e-4 (the PoLAR paper's commonsense runs), StelLA 5e-4 (its Llama-3-8B script),
TopLoRA 1e-4 (its repository default), AdaPreLoRA 4e-4 and PEFT's Riemannian-preconditioned AdamW
8e-4 (the range reported for scaled AdamW on GPT-2).
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from peft import LoraConfig, get_peft_model
from peft.optimizers import create_riemannian_optimizer
from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists
from torch import nn
from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                  MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)

from .adapters import PolarConfig, StellaConfig, TopLoraConfig, polar, stella, toplora
from .adapters._peft import check_rank
from .adapters.delta import LORA, Delta
from .optim import create_adaprelora_optimizer, create_landing_optimizer, create_stella_optimizer


def create_adamw(model, *, lr: float, **kwargs) -> torch.optim.Optimizer:
    """Plain AdamW on every trainable parameter (LoRA, DoRA, TopLoRA)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, **kwargs)


@dataclass(frozen=True)
class Method:
    """A method: its adapter config class (which maps ``nn.Linear`` to its layer), its optimizer
    factory, its default lr, the config's defaults, and ``delta``: what its ΔW is, read from a saved
    layer (``adapters.delta.Delta``; PEFT's LoRA unless given)."""

    config_cls: type
    optimizer_factory: Callable[..., torch.optim.Optimizer]
    lr: float
    config_defaults: dict = field(default_factory=dict)
    delta: Delta = LORA


METHODS: dict[str, Method] = {
    "lora": Method(LoraConfig, create_adamw, 4e-4),
    "dora": Method(LoraConfig, create_adamw, 4e-4, {"use_dora": True}),
    "polar": Method(PolarConfig, create_landing_optimizer, 4e-3, delta=polar.DELTA),
    "stella": Method(StellaConfig, create_stella_optimizer, 5e-4, delta=stella.DELTA),
    "toplora": Method(TopLoraConfig, create_adamw, 1e-4, delta=toplora.DELTA),
    "lora+adaprelora": Method(LoraConfig, create_adaprelora_optimizer, 4e-4),
    "lora+riemannian": Method(LoraConfig, partial(create_riemannian_optimizer, optimizer_cls=torch.optim.AdamW), 8e-4),
}


def get_method(name: str) -> Method:
    """The registry entry of ``name``; an unknown name lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def delta_for(peft_type) -> Delta:
    """The ``Delta`` of the registry's methods whose adapter config has ``peft_type`` (a saved config's
    string or PEFT's enum; those sharing one, as LoRA's optimizers do, share their ΔW)."""
    peft_type = str(getattr(peft_type, "value", peft_type))
    known = {method.delta.peft_type: method.delta for method in METHODS.values()}
    if peft_type not in known:
        raise ValueError(f"no method of polar_lib.methods.METHODS has peft_type {peft_type!r} "
                         f"(known: {', '.join(known)})")
    return known[peft_type]


def make_config(method: str, *, r: int = 8, lora_alpha: float | None = None, target_modules="all-linear",
                lora_dropout: float = 0.05, **overrides):
    """The PEFT config of ``method``; ``lora_alpha`` defaults to 2r, ``overrides`` go to the config."""
    entry = get_method(method)
    kwargs = {**entry.config_defaults, **overrides}
    return entry.config_cls(r=r, lora_alpha=2 * r if lora_alpha is None else lora_alpha,
                            target_modules=target_modules, lora_dropout=lora_dropout, **kwargs)


def targeted_layers(model: nn.Module, config) -> dict[str, nn.Module]:
    """The modules of ``model`` that PEFT would adapt under ``config`` (``"all-linear"`` expanded as PEFT does)."""
    resolved = _maybe_include_all_linear_layers(copy.deepcopy(config), model)
    return {name: module for name, module in model.named_modules()
            if name and check_target_module_exists(resolved, name)}


def check_targets(model: nn.Module, config) -> None:
    """Refuse, before any adapter is built, targets that match nothing, targets that are not
    ``nn.Linear``, and an ``r`` above min(in_features, out_features) of a targeted layer."""
    layers = targeted_layers(model, config)
    if not layers:
        suffixes = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        targets = config.target_modules
        targets = targets if isinstance(targets, str) or targets is None else sorted(targets)
        raise ValueError(f"target_modules {targets!r} match no layer of {type(model).__name__}; "
                         f"allowed: 'all-linear' or names among {suffixes}")
    for name, module in layers.items():
        if not isinstance(module, nn.Linear):
            raise ValueError(f"target_modules: {name} is a {type(module).__name__}; polar_lib adapts nn.Linear "
                             "layers only (use peft.get_peft_model for LoRA on other layer types)")
        check_rank(config.r, module, name)


def task_type(model) -> str | None:
    """PEFT's ``task_type`` for ``model``: ``CAUSAL_LM`` for a causal LM, ``SEQ_CLS`` for a sequence
    classifier (PEFT then also trains and saves its head), else None."""
    name = type(model).__name__
    return ("CAUSAL_LM" if name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() else
            "SEQ_CLS" if name in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values() else None)


def prepare(model, method: str, *, r: int = 8, lora_alpha: float | None = None, target_modules="all-linear",
            lora_dropout: float = 0.05, **overrides):
    """Wrap ``model`` with the adapter of ``method`` (stock ``peft.get_peft_model``), after ``check_targets``;
    ``task_type`` defaults to the model's (``task_type(model)``), so the saved adapter names it."""
    config = make_config(method, r=r, lora_alpha=lora_alpha, target_modules=target_modules,
                         lora_dropout=lora_dropout, **{"task_type": task_type(model), **overrides})
    check_targets(model, config)
    return get_peft_model(model, config)


def optimizer_settings(method: str, *, lr: float | None = None, **overrides) -> dict:
    """The keyword arguments ``make_optimizer`` builds the optimizer of ``method`` with: ``lr`` (the
    registry's unless given), ``weight_decay`` (0 unless given, for every method, as in the papers),
    ``overrides``, and the factory's own defaults for the rest (e.g. PoLAR's ``landing_lambda``)."""
    entry = get_method(method)
    parameters = inspect.signature(entry.optimizer_factory).parameters.values()
    settings = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return settings | {"lr": entry.lr if lr is None else lr, "weight_decay": 0.0} | overrides


def make_optimizer(model, method: str, *, lr: float | None = None, **overrides) -> torch.optim.Optimizer:
    """The optimizer of ``method`` for a model made by ``prepare``, built with ``optimizer_settings``
    (``lr`` defaults to the paper's, ``weight_decay`` to 0 for every method)."""
    return get_method(method).optimizer_factory(model, **optimizer_settings(method, lr=lr, **overrides))
