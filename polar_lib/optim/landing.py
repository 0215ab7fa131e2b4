"""The landing optimizer of PoLAR: any torch optimizer, fed the landing field instead of the gradient.

PoLAR (arXiv 2506.03133), Algorithm 2: at each step the gradients of B (m×r) and Aᵀ (n×r) are
replaced by the landing field Λ(Z, G) = (G Zᵀ − Z Gᵀ) Z + λ Z (ZᵀZ − I) (``geometry.landing_field``),
Θ keeps its Euclidean gradient, and the base optimizer steps. No retraction is ever computed: the
penalty term pulls the factors back towards the Stiefel manifold.
"""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice
from ..adapters.polar import PolarLinear
from ..geometry import LANDING_FIELDS, landing_field
from .base import Hooks, cpu_bytes, groups, hooked_optimizer, split_param_groups, stack_tall, work_dtype, write_tall

DEFAULT_LANDING_LAMBDA = 5e-3  # the PoLAR scripts' value for LLMs (docs/polar.md, 'Choosing λ')


def polar_layers(model: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    """(``lora_A``, ``lora_B``) layers of every trainable adapter of every PoLAR layer, found by module type."""
    pairs = []
    for module in model.modules():
        if isinstance(module, PolarLinear):
            for adapter in module.lora_A:
                lin_A, lin_B = module.lora_A[adapter], module.lora_B[adapter]
                if lin_A.weight.requires_grad and lin_B.weight.requires_grad:
                    pairs.append((lin_A, lin_B))
    return pairs


def polar_factors(model: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """(A, B) weight pairs of every trainable adapter of every PoLAR layer (``polar_layers``' weights)."""
    return [(lin_A.weight, lin_B.weight) for lin_A, lin_B in polar_layers(model)]


def apply_landing_field(pairs, landing_lambda: float, field: str = "landing", batched: bool = True) -> None:
    """Replace, in place, B.grad by Λ(B, ∇_B) and A.grad by Λ(Aᵀ, ∇_Aᵀ)ᵀ, computed in fp32 (fp64 for
    fp64 weights): the factors of one tall shape, dtype and device are stacked into one (k, n, r) batch,
    one batched ``landing_field``, one ``_foreach_copy_`` back (``batched=False``: one factor at a time,
    the per-layer reference). Factors without a gradient are left alone."""
    factors = [(w, t) for A, B in pairs for w, t in ((B, False), (A, True)) if w.grad is not None]
    key = lambda f: (f[0].shape[::-1] if f[1] else f[0].shape, f[0].dtype, f[0].device)
    for group in groups(factors, key, batched, lambda f: cpu_bytes(f[0])):
        weights, transposed = [w for w, _ in group], [t for _, t in group]
        dtype = work_dtype(weights[0].dtype)
        Z = stack_tall([w.detach() for w in weights], transposed, dtype)
        G = stack_tall([w.grad for w in weights], transposed, dtype)
        write_tall([w.grad for w in weights], transposed, landing_field(Z, G, landing_lambda, field=field))


class LandingHooks(Hooks):
    """PoLAR's rewrite before the base step: every factor's gradient becomes its landing field. The factors
    are read from their layers at each step (``optim.base``: parameters replaced by a wrapper are followed)."""

    name = "Landing"

    def __init__(self, layers, landing_lambda: float, field: str):
        self.layers, self.landing_lambda, self.field = layers, landing_lambda, field

    def before_step(self, optimizer) -> None:
        pairs = [(lin_A.weight, lin_B.weight) for lin_A, lin_B in self.layers]
        apply_landing_field(pairs, self.landing_lambda, self.field, optimizer.batched)


def create_landing_optimizer(model: nn.Module, optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW, *,
                             lr: float, landing_lambda: float = DEFAULT_LANDING_LAMBDA, field: str = "landing",
                             weight_decay: float = 0.0, decay_factors: bool = False,
                             **optimizer_kwargs) -> torch.optim.Optimizer:
    """An ``optimizer_cls`` (subclass ``Landing<optimizer_cls>``) that steps PoLAR factors along the landing field.

    Parameters
    ----------
    model : a PEFT model with PoLAR adapters (``PolarConfig``).
    optimizer_cls : any torch optimizer whose ``step`` takes an optional closure (default AdamW).
    lr : learning rate (the paper: 4e-3 for PoLAR on LLMs).
    landing_lambda : λ ≥ 0, weight of the pull towards St (the PoLAR code's λ; 5e-3 by default).
    field : ``"landing"`` or ``"euclidean"`` (the paper's ablation G + λ Z (ZᵀZ − I)).
    weight_decay : applied to Θ and other trainable parameters; the factors get none unless
        ``decay_factors=True`` (which reproduces the original GLUE runs, where decay pulls A, B off St).
    optimizer_kwargs : passed to ``optimizer_cls`` (betas, eps, momentum, ...).
    """
    if landing_lambda < 0:
        raise ValueError(f"landing_lambda must be >= 0, got {landing_lambda!r}")
    check_choice("field", field, LANDING_FIELDS)
    layers = polar_layers(model)
    if not layers:
        raise ValueError("create_landing_optimizer found no trainable PoLAR layer in the model; "
                         "wrap it with get_peft_model(model, PolarConfig(...)) first")
    factors = [lin.weight for pair in layers for lin in pair]
    param_groups = split_param_groups(model, factors, weight_decay, decay_factors)
    return hooked_optimizer(LandingHooks(layers, landing_lambda, field), optimizer_cls, param_groups, lr=lr,
                            **optimizer_kwargs)
