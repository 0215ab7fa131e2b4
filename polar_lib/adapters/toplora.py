"""TopLoRA: LoRA with token-wise gates between A and B, y = W0 x + s · B((A x) ⊙ λ(x)).

TopLoRA (arXiv 2510.23123; docs/toplora.md, 'Parametrisation'). Per token x ∈ Rⁿ the gate is
λ(x) = exp(RMSNorm(x Θ)) ∈ R^r_{>0}, with Θ ∈ R^{n×r} and an RMSNorm over the token's r entries
with gain γ ∈ R^r and eps = the dtype's machine epsilon. The gate reads x before dropout. So
ΔW_x = s · B diag(λ(x)) A depends on the token: the adapter cannot be merged into W0 or exported
as plain LoRA, and both raise an error saying so.

PEFT names: A = ``lora_A`` (PEFT's Kaiming init), B = ``lora_B`` (0 at init, so ΔW₀ = 0), and
``lora_lambda[adapter]``, a ``TokenGate`` with ``weight`` = Θᵀ (r×n,
stored and initialised like ``nn.Linear(n, r).weight``) and ``gain`` = γ (1 at init). All are
trained with plain AdamW.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.lora import LoraModel
from peft.tuners.lora.layer import Linear
from torch import nn

from ._peft import FactoredVariant, MethodLinear, PeftTypeName, check_rank, finish_config, register_lora_method
from .delta import Delta

PEFT_TYPE = PeftTypeName("TOPLORA")
TOPLORA_INITS = (True, False, "gaussian")
NOT_MERGEABLE = ("TopLoRA's update ΔW_x = s·B diag(λ(x)) A depends on the token x through the gate "
                 "λ(x) = exp(RMSNorm(xΘ)), so no single weight matrix reproduces it")


class TokenGate(nn.Module):
    """x (..., n) ↦ λ(x) = exp(RMSNorm(x Θ)) (..., r), with ``weight`` = Θᵀ (r×n) and ``gain`` = γ (r)."""

    def __init__(self, in_features: int, r: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(r, in_features))
        self.gain = nn.Parameter(torch.ones(r))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear(n, r)'s law: U(±1/√n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.weight)
        return torch.exp(F.rms_norm(h, (h.shape[-1],), self.gain, eps=None))  # eps=None: finfo(dtype).eps


class TopLoraVariant(FactoredVariant):
    """PEFT's variant hook for TopLoRA: the gated forward; merging and conversion raise."""

    @staticmethod
    def inner(module, adapter, h, x):
        return h * module.lora_lambda[adapter](x)  # the gate reads x before dropout

    @staticmethod
    def merge_safe(module, active_adapter, orig_weight):
        raise ValueError(f"TopLoRA cannot be merged: {NOT_MERGEABLE}. Keep the adapter unmerged.")

    @staticmethod
    def merge_unsafe(module, active_adapter, orig_weight):
        raise ValueError(f"TopLoRA cannot be merged: {NOT_MERGEABLE}. Keep the adapter unmerged.")

    @staticmethod
    def unmerge(module, active_adapter, orig_weight):
        raise ValueError(f"TopLoRA cannot be unmerged (it is never merged): {NOT_MERGEABLE}.")


@dataclass
class TopLoraConfig(LoraConfig):
    """A ``LoraConfig`` for TopLoRA (``peft_type="TOPLORA"``).

    init_lora_weights: ``True`` (default; PEFT's: A Kaiming-uniform, B = 0, so ΔW₀ = 0), ``"gaussian"``
        (A ~ N(0, 1/r²), B = 0) or ``False`` (nn.Linear defaults for A and B: ΔW₀ ≠ 0). Θ and γ are
        initialised as an ``nn.Linear(n, r)`` weight and 1 in every case.
    """

    def __post_init__(self):
        finish_config(self, "TopLoRA", TOPLORA_INITS, PEFT_TYPE, TopLoraLinear)


class TopLoraLinear(MethodLinear):
    """An ``nn.Linear`` with TopLoRA adapters: y = W0 x + s · B((A dropout(x)) ⊙ exp(RMSNorm(x Θ)))."""

    adapter_layer_names = Linear.adapter_layer_names + ("lora_lambda",)
    method = "TopLoRA"

    def update_layer(self, adapter_name, r, lora_alpha, config, **kwargs):
        check_rank(r, self.get_base_layer())
        if "lora_lambda" not in self._modules:  # PEFT's Linear.__init__ calls update_layer before ours could run
            self.lora_lambda = nn.ModuleDict()
        self.lora_lambda[adapter_name] = TokenGate(self.in_features, r)
        super().update_layer(adapter_name, r, lora_alpha, config=config, **kwargs)

    def resolve_lora_variant(self, *, config, **kwargs):
        return TopLoraVariant()

    def get_delta_weight(self, adapter):
        raise ValueError(f"TopLoRA has no delta weight: {NOT_MERGEABLE}.")

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        raise ValueError(f"TopLoRA cannot be converted to plain LoRA (save_as_lora): {NOT_MERGEABLE}.")

    def __repr__(self) -> str:
        return "toplora." + super().__repr__().removeprefix("lora.")


class TopLoraModel(LoraModel):
    """PEFT's ``LoraModel`` for TopLoRA, whose ``add_weighted_adapter`` refuses every combination type."""

    def add_weighted_adapter(self, adapters, weights, adapter_name, combination_type="svd", **kwargs):
        """Raise: the SVD types need one ΔW, the others mix B and A, and ``cat`` would take one RMSNorm
        over the r₁ + r₂ gate entries instead of one per adapter; none is exact."""
        raise ValueError(f"combination_type {combination_type!r} is not supported by TopLoRA's add_weighted_adapter "
                         f"(allowed: none): {NOT_MERGEABLE}, and concatenated gates would share one RMSNorm")


DELTA = Delta(PEFT_TYPE, "TopLoRA", token_dependent=NOT_MERGEABLE)  # no factors: no stable rank, merge or export
register_lora_method(PEFT_TYPE, TopLoraConfig, TopLoraModel)
