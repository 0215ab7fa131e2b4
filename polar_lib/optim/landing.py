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
from .base import split_param_groups, wrap_optimizer

DEFAULT_LANDING_LAMBDA = 5e-3  # the PoLAR scripts' value for LLMs (docs/polar.md, 'Choosing λ')


def polar_factors(model: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """(A, B) weight pairs of every trainable adapter of every PoLAR layer, found by module type."""
    pairs = []
    for module in model.modules():
        if isinstance(module, PolarLinear):
            for adapter in module.lora_A:
                A, B = module.lora_A[adapter].weight, module.lora_B[adapter].weight
                if A.requires_grad and B.requires_grad:
                    pairs.append((A, B))
    return pairs


def apply_landing_field(pairs, landing_lambda: float, field: str = "landing") -> None:
    """Replace, in place and in fp32, B.grad by Λ(B, ∇_B) and A.grad by Λ(Aᵀ, ∇_Aᵀ)ᵀ, for all factors
    of one shape, dtype and device at once: one batched ``landing_field`` per such group."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for A, B in pairs:
        for weight, transposed in ((B, False), (A, True)):
            if weight.grad is not None:
                groups.setdefault((tuple(weight.shape), weight.dtype, weight.device, transposed), []).append(weight)
    for (*_, transposed), weights in groups.items():
        Z = torch.stack([w.detach() for w in weights]).float()
        G = torch.stack([w.grad for w in weights]).float()
        if transposed:
            Z, G = Z.mT, G.mT
        Lam = landing_field(Z, G, landing_lambda, field=field)
        torch._foreach_copy_([w.grad for w in weights], list((Lam.mT if transposed else Lam).unbind()))


def create_landing_optimizer(model: nn.Module, optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW, *,
                             lr: float, landing_lambda: float = DEFAULT_LANDING_LAMBDA, field: str = "landing",
                             weight_decay: float = 0.0, decay_factors: bool = False,
                             **optimizer_kwargs) -> torch.optim.Optimizer:
    """An ``optimizer_cls`` that steps PoLAR factors along the landing field.

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
    pairs = polar_factors(model)
    if not pairs:
        raise ValueError("create_landing_optimizer found no trainable PoLAR layer in the model; "
                         "wrap it with get_peft_model(model, PolarConfig(...)) first")
    groups = split_param_groups(model, [p for pair in pairs for p in pair], weight_decay, decay_factors)
    return wrap_optimizer(optimizer_cls, groups, name="Landing", lr=lr,
                          before_step=lambda: apply_landing_field(pairs, landing_lambda, field), **optimizer_kwargs)
