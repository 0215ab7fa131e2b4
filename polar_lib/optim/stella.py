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
   default the polar factor of X + Δ.

Steps 1 and 3 run in fp32 (fp64 for fp64 weights) on whatever device the weights live, factors of
equal shape batched together. X is held only between the two hooks of one ``step()``: the
optimizer has no state of its own, so its ``state_dict`` is the base optimizer's.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict

import torch
from torch import nn

from .._checks import check_choice
from ..adapters.stella import StellaLinear
from ..geometry import polar_retraction, project_tangent, riemannian_gradient
from .base import split_param_groups, wrap_optimizer

RETRACTIONS = ("polar", "exp_map")
SVD_DRIVERS = (None, "gesvd", "gesvdj", "gesvda")


def stella_factors(model: nn.Module) -> list[tuple[nn.Parameter, bool]]:
    """(weight, transposed) for every trainable U (``lora_B``, tall as stored) and Vᵀ (``lora_A``,
    transposed to the tall V) of every StelLA layer, found by module type."""
    factors = []
    for module in model.modules():
        if isinstance(module, StellaLinear):
            for adapter in module.lora_A:
                for weight, transposed in ((module.lora_B[adapter].weight, False), (module.lora_A[adapter].weight, True)):
                    if weight.requires_grad:
                        factors.append((weight, transposed))
    return factors


def exp_map_retraction(X: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The canonical-metric geodesic from X (n×r, on St) along the tangent D, at time 1.

    With the thin QR D − X XᵀD = Q R: X ← [X Q] · expm([[XᵀD, −Rᵀ], [R, 0]])[:, :r] (Edelman, Arias &
    Smith 1998, eq. 2.45). D must be tangent (XᵀD skew), e.g. from ``project_tangent``.
    """
    A = X.mT @ D
    Q, R = torch.linalg.qr(D - X @ A)
    top = torch.cat([A, -R.mT], dim=-1)
    bottom = torch.cat([R, torch.zeros_like(R)], dim=-1)
    E = torch.linalg.matrix_exp(torch.cat([top, bottom], dim=-2))
    return torch.cat([X, Q], dim=-1) @ E[..., :, : X.shape[-1]]


def _polar(Y: torch.Tensor, svd_driver: str | None) -> torch.Tensor:
    """The polar factor of Y; ``svd_driver`` (cuSOLVER only) is used on CUDA tensors, with a fallback to
    the default driver when it returns non-finite values (gesvda does on a zero matrix, pytorch#136085)."""
    if svd_driver is None or Y.device.type != "cuda":
        return polar_retraction(Y)
    P, _, Qh = torch.linalg.svd(Y, full_matrices=False, driver=svd_driver)
    result = P @ Qh
    return result if torch.isfinite(result).all() else polar_retraction(Y)


def _work_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def _tall(weight: torch.Tensor, transposed: bool, dtype: torch.dtype) -> torch.Tensor:
    return (weight.T if transposed else weight).to(dtype)


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


class StellaHooks:
    """The two hooks of one StelLA step. ``cache`` holds, between them only, the factors that had a
    gradient, grouped by (shape, device, dtype) with their stacked pre-step values X."""

    def __init__(self, factors, retraction: str, scaling_size: float | None, svd_driver: str | None):
        self.factors, self.retraction = factors, retraction
        self.scaling_size, self.svd_driver = scaling_size, svd_driver
        self.cache = None

    def before_step(self) -> None:
        groups = defaultdict(list)
        for weight, transposed in self.factors:
            if weight.grad is not None:
                shape = tuple(weight.shape[::-1] if transposed else weight.shape)
                groups[(shape, weight.device, _work_dtype(weight))].append((weight, transposed))
        self.cache = []
        for (_, _, dtype), members in groups.items():
            X = torch.stack([_tall(w.detach(), t, dtype) for w, t in members])  # a copy: the step writes in place
            G = torch.stack([_tall(w.grad, t, dtype) for w, t in members])
            for (w, t), g in zip(members, riemannian_gradient(X, G).unbind(0)):
                w.grad.copy_(g.T if t else g)
            self.cache.append((members, X))

    def after_step(self) -> None:
        for members, X in self.cache:
            D = torch.stack([_tall(w.detach(), t, X.dtype) for w, t in members]) - X
            rows = X.shape[-2]
            if self.scaling_size is not None and rows != self.scaling_size:
                D = D * math.sqrt(self.scaling_size / rows)
            D = project_tangent(X, D)
            X_new = exp_map_retraction(X, D) if self.retraction == "exp_map" else _polar(X + D, self.svd_driver)
            for (w, t), x in zip(members, X_new.unbind(0)):
                w.copy_(x.T if t else x)
        self.cache = None


def create_stella_optimizer(model: nn.Module, optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW, *,
                            lr: float, retraction: str = "polar", grad_scaling="auto", weight_decay: float = 0.0,
                            svd_driver: str | None = None, **optimizer_kwargs) -> torch.optim.Optimizer:
    """An ``optimizer_cls`` that keeps every StelLA U and V on the Stiefel manifold.

    Parameters
    ----------
    model : a PEFT model with StelLA adapters (``StellaConfig``).
    optimizer_cls : any torch optimizer whose ``step`` takes an optional closure (default AdamW).
    lr : learning rate (the StelLA Llama-3-8B script: 5e-4).
    retraction : ``"polar"`` (default; X ← polar factor of X + Δ, by thin SVD) or ``"exp_map"`` (the
        canonical-metric geodesic, ``exp_map_retraction``).
    grad_scaling : the c of Δ ← Δ·√(c/h), h = rows of the factor. ``"auto"`` (default): c =
        ``model.config.hidden_size`` when there is one, else no scaling (with a warning); ``True``: the
        hidden size, an error without one (the original's ``True``); ``False``: no scaling; a positive
        number: that c (e.g. Llama-3-8B, c = 4096: the 1024-row k/v U move ×2).
    weight_decay : for S and every other trainable parameter; U and V never decay (decay would pull
        them off the manifold).
    svd_driver : ``None`` (default driver, CPU and GPU) or a cuSOLVER driver (``"gesvda"`` is the
        original's) used for the polar retraction of CUDA tensors only, falling back to the default
        driver when it returns non-finite values.
    optimizer_kwargs : passed to ``optimizer_cls`` (betas, eps, momentum, ...).

    The returned optimizer has an attribute ``stella_scaling_size``: the c in use, or None.
    """
    check_choice("retraction", retraction, RETRACTIONS)
    check_choice("svd_driver", svd_driver, SVD_DRIVERS)
    factors = stella_factors(model)
    if not factors:
        raise ValueError("create_stella_optimizer found no trainable StelLA layer in the model; "
                         "wrap it with get_peft_model(model, StellaConfig(...)) first")
    hooks = StellaHooks(factors, retraction, resolve_grad_scaling(model, grad_scaling), svd_driver)
    groups = split_param_groups(model, [w for w, _ in factors], weight_decay)
    optimizer = wrap_optimizer(optimizer_cls, groups, name="Stella", lr=lr, before_step=hooks.before_step,
                               after_step=hooks.after_step, **optimizer_kwargs)
    optimizer.stella_scaling_size = hooks.scaling_size
    return optimizer
