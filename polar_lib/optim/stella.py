"""The StelLA optimizer: any Euclidean torch optimizer, made Riemannian on the Stiefel manifold.

StelLA (arXiv 2510.01938; docs/stella.md, 'Optimizer'). U (``lora_B``, m×r) and V (``lora_A``ᵀ,
n×r) are tall factors X with orthonormal columns; S and every other parameter stay Euclidean.
Around each real ``step()`` (after gradient clipping and unscaling, once per accumulated step):

1. before the base step: G ← G − X Gᵀ X (the Riemannian gradient in the canonical metric), and X
   is remembered;
2. the base step, unchanged (Adam's moments accumulate Riemannian gradients without transport, as
   in the original);
3. after it: Δ = X_new − X; Δ ← Δ·√(c/h) (grad scaling, h = rows of X, c = the model's hidden
   size); Δ ← Δ − X sym(XᵀΔ) (tangent projection, embedded metric); X ← retraction(X, Δ), by
   default the polar factor of X + Δ (from its r×r Gram, ``geometry.gram_polar_retraction``; by
   SVD with the original's driver when ``svd_driver`` is given).

Steps 1 and 3 run in fp32 (fp64 for fp64 weights) on whatever device the weights live, factors of
equal shape batched together. X is held only between the two hooks of one ``step()``: the
optimizer has no state of its own, so its ``state_dict`` is the base optimizer's.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .._checks import check_choice
from ..adapters.stella import StellaLinear
from ..geometry import (SVD_DRIVERS, exp_map_retraction, gram_polar_retraction, polar_retraction, project_tangent,
                        riemannian_gradient)
from .base import Hooks, cpu_bytes, groups, hooked_optimizer, split_param_groups, stack_tall, work_dtype, write_tall

RETRACTIONS = ("polar", "exp_map")


def stella_layers(model: nn.Module) -> list[tuple[nn.Linear, bool]]:
    """(layer, transposed) for the layer of every trainable U (``lora_B``, tall as stored) and Vᵀ (``lora_A``,
    transposed to the tall V) of every StelLA layer, found by module type."""
    layers = []
    for module in model.modules():
        if isinstance(module, StellaLinear):
            for adapter in module.lora_A:
                for layer, transposed in ((module.lora_B[adapter], False), (module.lora_A[adapter], True)):
                    if layer.weight.requires_grad:
                        layers.append((layer, transposed))
    return layers


def model_hidden_size(model: nn.Module) -> int | None:
    """``hidden_size`` of the model's (text) config, or None when it has none."""
    config = getattr(model, "config", None)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    size = getattr(config, "hidden_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def resolve_grad_scaling(model: nn.Module, grad_scaling) -> float | None:
    """The c of the grad scaling Δ·√(c/h), or None for no scaling (see ``create_stella_optimizer``)."""
    if isinstance(grad_scaling, bool):
        if not grad_scaling:
            return None
        size = model_hidden_size(model)
        if size is None:
            raise ValueError("grad_scaling=True needs the model's hidden size, but model.config has no positive integer "
                             "hidden_size; pass grad_scaling=<c> (a positive number), 'auto' or False")
        return float(size)
    if grad_scaling == "auto":
        size = model_hidden_size(model)
        if size is None:
            warnings.warn("create_stella_optimizer: model.config has no hidden_size, so grad scaling is off "
                          "(pass grad_scaling=<c> to scale updates by sqrt(c / rows))")
        return None if size is None else float(size)
    if isinstance(grad_scaling, (int, float)) and math.isfinite(grad_scaling) and grad_scaling > 0:
        return float(grad_scaling)
    raise ValueError(f"grad_scaling must be 'auto', True, False or a positive number (the c in sqrt(c / rows)), "
                     f"got {grad_scaling!r}")


class StellaHooks(Hooks):
    """The two hooks of one StelLA step. ``cache`` holds, between them only, the groups of factors that
    had a gradient (one tall shape, dtype and device each) with their stacked pre-step values X. The factors
    are read from their layers at each step (``optim.base``: parameters replaced by a wrapper are followed)."""

    name = "Stella"

    def __init__(self, layers, retraction: str, scaling_size: float | None, svd_driver: str | None):
        self.layers, self.retraction = layers, retraction
        self.scaling_size, self.svd_driver = scaling_size, svd_driver
        self.cache = None

    def before_step(self, optimizer) -> None:
        """G ← G − X Gᵀ X (canonical metric), X kept: one batched conversion per group."""
        factors = [(layer.weight, t) for layer, t in self.layers if layer.weight.grad is not None]
        key = lambda f: (f[0].shape[::-1] if f[1] else f[0].shape, f[0].dtype, f[0].device)
        self.cache = []
        for group in groups(factors, key, optimizer.batched, lambda f: cpu_bytes(f[0])):
            weights, transposed = [w for w, _ in group], [t for _, t in group]
            X = stack_tall([w.detach() for w in weights], transposed, work_dtype(weights[0].dtype))  # a copy
            G = stack_tall([w.grad for w in weights], transposed, X.dtype)
            write_tall([w.grad for w in weights], transposed, riemannian_gradient(X, G))
            self.cache.append((weights, transposed, X))

    def after_step(self, optimizer) -> None:
        """Δ = X_new − X, Δ·√(c/h), Δ − X sym(XᵀΔ) (embedded metric), X ← retraction(X, Δ): batched per group."""
        for weights, transposed, X in self.cache:
            D = stack_tall([w.detach() for w in weights], transposed, X.dtype) - X
            rows = X.shape[-2]
            if self.scaling_size is not None and rows != self.scaling_size:
                D = D * math.sqrt(self.scaling_size / rows)
            D = project_tangent(X, D)
            if self.retraction == "exp_map":
                X_new = exp_map_retraction(X, D)
            elif self.svd_driver is None:
                X_new = gram_polar_retraction(X + D)  # σ(X + Δ) ≥ 1: no SVD needed (and gesdd can fail there)
            else:
                X_new = polar_retraction(X + D, self.svd_driver)
            write_tall(weights, transposed, X_new)
        self.cache = None


def create_stella_optimizer(model: nn.Module, optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW, *,
                            lr: float, retraction: str = "polar", grad_scaling="auto", weight_decay: float = 0.0,
                            svd_driver: str | None = None, **optimizer_kwargs) -> torch.optim.Optimizer:
    """An ``optimizer_cls`` (subclass ``Stella<optimizer_cls>``) that keeps every StelLA U and V on the
    Stiefel manifold.

    Parameters
    ----------
    model : a PEFT model with StelLA adapters (``StellaConfig``).
    optimizer_cls : any torch optimizer whose ``step`` takes an optional closure (default AdamW).
    lr : learning rate (the StelLA Llama-3-8B script: 5e-4).
    retraction : ``"polar"`` (default; X ← polar factor of X + Δ: from the r×r Gram,
        ``geometry.gram_polar_retraction``, or by thin SVD, ``geometry.polar_retraction``, when
        ``svd_driver`` is given) or ``"exp_map"`` (the canonical-metric geodesic,
        ``geometry.exp_map_retraction``).
    grad_scaling : the c of Δ ← Δ·√(c/h), h = rows of the factor. ``"auto"`` (default): c =
        ``model.config.hidden_size`` when there is one, else no scaling (with a warning); ``True``: the
        hidden size, an error without one (the original's ``True``); ``False``: no scaling; a positive
        number: that c (e.g. Llama-3-8B, c = 4096: the 1024-row k/v U move ×2).
    weight_decay : for S and every other trainable parameter; U and V never decay (decay would pull
        them off the manifold).
    svd_driver : ``None`` (default: the polar factor from the Gram, no SVD) or a driver for an SVD
        polar retraction (``geometry.polar_retraction``): a cuSOLVER one (``"gesvda"`` is the
        original's) is used for CUDA tensors, falling back, per matrix, to the default driver where it
        returns non-finite values; other devices use the default driver.
    optimizer_kwargs : passed to ``optimizer_cls`` (betas, eps, momentum, ...).

    The returned optimizer has an attribute ``stella_scaling_size``: the c in use, or None.
    """
    check_choice("retraction", retraction, RETRACTIONS)
    check_choice("svd_driver", svd_driver, SVD_DRIVERS)
    layers = stella_layers(model)
    if not layers:
        raise ValueError("create_stella_optimizer found no trainable StelLA layer in the model; "
                         "wrap it with get_peft_model(model, StellaConfig(...)) first")
    hooks = StellaHooks(layers, retraction, resolve_grad_scaling(model, grad_scaling), svd_driver)
    param_groups = split_param_groups(model, [layer.weight for layer, _ in layers], weight_decay)
    optimizer = hooked_optimizer(hooks, optimizer_cls, param_groups, lr=lr, **optimizer_kwargs)
    optimizer.stella_scaling_size = hooks.scaling_size
    return optimizer
