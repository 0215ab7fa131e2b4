"""A LoRA layer with an r×r core between its factors: ΔW = s · B C A.

B = ``lora_B`` (m×r), A = ``lora_A`` (r×n), C = ``lora_S`` (r×r, or an r-vector for a diagonal
core), s = ``scaling``. PoLAR (C = Θ) and StelLA (C = S) are this layer with their own core
parametrisation and initialisation. Forward, merge, unmerge and mixed-batch inference go through
PEFT's ``LoraVariant`` hook, so stock PEFT code paths (``merge_and_unload``, ``save_as_lora``,
multiple adapters) treat it as LoRA with a core; ``CoreLoraModel`` keeps the core in
``add_weighted_adapter``.
"""
from __future__ import annotations

import torch
from peft.tuners.lora import LoraModel
from peft.tuners.lora.layer import Linear
from peft.utils.other import transpose
from torch import nn

from .._checks import check_choice
from ._peft import FactoredVariant, MethodLinear, check_rank

# add_weighted_adapter's combination types that combine the dense ΔWᵢ (then factorise by SVD)
SVD_COMBINATIONS = ("svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd")
CORE_KEY = "lora_S.weight"  # the core's saved tensor, beside lora_A.weight and lora_B.weight


def saved_core(tensors: dict, config: dict) -> torch.Tensor:
    """C as saved (``Delta.core`` of a core stored as it is used): r×r, or the r-vector of diag C."""
    return tensors[CORE_KEY]


class Core(nn.Module):
    """The core C: a ``weight`` of shape (r, r), or (r,) for a diagonal core diag(weight)."""

    def __init__(self, r: int, diagonal: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(r) if diagonal else torch.zeros(r, r))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h ↦ h Cᵀ for a batch of rows h (..., r)."""
        return h * self.weight if self.weight.ndim == 1 else h @ self.weight.T


class CoreVariant(FactoredVariant):
    """PEFT's variant hook for ΔW = s · B C A."""

    @staticmethod
    def inner(module, adapter, h, x):
        return module.apply_core(adapter, h)

    @staticmethod
    def merge_safe(module, active_adapter, orig_weight):
        return orig_weight + module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module, active_adapter, orig_weight):
        orig_weight.data += module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def unmerge(module, active_adapter, orig_weight):
        return orig_weight.data - module.get_delta_weight(active_adapter).to(orig_weight.dtype)


class CoreLinear(MethodLinear):
    """Base class of LoRA layers with a core. Subclasses set ``method`` and define ``make_core``
    (a fresh, initialised ``Core``) and ``reset_lora_parameters`` (the factors' initialisation)."""

    adapter_layer_names = Linear.adapter_layer_names + ("lora_S",)
    method = "core"

    def make_core(self, r: int, config) -> Core:
        raise NotImplementedError

    def update_layer(self, adapter_name, r, lora_alpha, config, **kwargs):
        check_rank(r, self.get_base_layer())
        if "lora_S" not in self._modules:  # PEFT's Linear.__init__ calls update_layer before ours could run
            self.lora_S = nn.ModuleDict()
        self.lora_S[adapter_name] = self.make_core(r, config)
        super().update_layer(adapter_name, r, lora_alpha, config=config, **kwargs)
        bias = self.lora_B[adapter_name].bias
        if bias is not None and config.init_lora_weights is not False:
            nn.init.zeros_(bias)  # lora_bias: the initial update stays what the method defines (as PEFT's LoRA)

    def resolve_lora_variant(self, *, config, **kwargs):
        return CoreVariant()

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        """PEFT's ``save_as_lora`` hook: refuse an adapter with ``lora_bias`` (PEFT 0.21's conversion reads
        ``config.bias`` and would silently drop ``lora_B.bias``); ``polar_lib.export --to lora`` keeps it."""
        if self.lora_B[adapter_name].bias is not None:
            raise ValueError(f"{self.method} with lora_bias=True cannot be converted by save_as_lora (PEFT's "
                             "conversion drops lora_B.bias); use python -m polar_lib.export --to lora instead")
        return True

    def core_matrix(self, adapter: str) -> torch.Tensor:
        """C as an r×r matrix."""
        weight = self.lora_S[adapter].weight
        return torch.diag(weight) if weight.ndim == 1 else weight

    def apply_core(self, adapter: str, h: torch.Tensor) -> torch.Tensor:
        """h ↦ h Cᵀ (rows h of shape (..., r))."""
        return self.lora_S[adapter](h)

    def delta_factors(self, adapter: str):
        """(B, C, A, s) with ΔW = s · B C A (before any fan_in_fan_out transpose)."""
        return (self.lora_B[adapter].weight, self.core_matrix(adapter), self.lora_A[adapter].weight,
                self.scaling[adapter])

    def set_core(self, adapter: str, C: torch.Tensor) -> None:
        """Make ΔW = s · B C A for an r×r C: C is stored as the core where the parametrisation holds it,
        else (a diagonal core and a non-diagonal C, PoLAR's Θ ≡ I and C ≠ I) A ← C A and the core is I."""
        S = self.lora_S[adapter].weight
        with torch.no_grad():
            S.copy_(C if S.ndim == 2 else torch.diagonal(C))
            if not torch.equal(self.core_matrix(adapter), C):
                A = self.lora_A[adapter].weight
                A.copy_(C @ A)
                S.copy_(torch.eye(len(C)) if S.ndim == 2 else torch.ones(len(C)))

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """ΔW = s · B C A (out×in), computed in fp32 for half-precision weights on every device."""
        B, C, A, s = self.delta_factors(adapter)
        dtype = B.dtype
        if dtype in (torch.float16, torch.bfloat16):
            B, C, A = B.float(), C.float(), A.float()
        return (transpose(B @ (C @ A), self.fan_in_fan_out) * s).to(dtype)

    def __repr__(self) -> str:
        return f"{self.method}." + super().__repr__().removeprefix("lora.")


class CoreLoraModel(LoraModel):
    """PEFT's ``LoraModel`` for layers with a core (PoLAR, StelLA), with an exact ``add_weighted_adapter``."""

    def add_weighted_adapter(self, adapters, weights, adapter_name, combination_type="svd", **kwargs):
        """PEFT's, then the new adapter's core C (its scaling s) chosen so ΔW = s · B C A is exact:

        - ``cat``: PEFT's B = [B₁ … B_k], A = [w₁s₁A₁; …; w_k s_k A_k] and C = blockdiag(C₁, …, C_k) / s
          (zero-padded where a layer lacks an adapter), so ΔW = Σ wᵢ sᵢ Bᵢ Cᵢ Aᵢ = Σ wᵢ ΔWᵢ. A single
          adapter, which PEFT combines as ``linear`` whatever the type, gets the same formula (k = 1).
        - the SVD types: PEFT's B = U_ρ Σ_ρ and A = V_ρᵀ of the merged dense M = merge(wᵢ ΔWᵢ),
          ρ = ``svd_rank``, and C = I / s, so ΔW = U_ρ Σ_ρ V_ρᵀ (= M when ρ ≥ rank M), as for LoRA.

        ``set_core`` moves C into A where the core cannot hold it. The types that mix the factors (``linear``,
        ``ties``, ``dare_*``, ``magnitude_prune``) raise: B C A is not linear in (B, A).
        """
        check_choice("combination_type", combination_type, ("cat",) + SVD_COMBINATIONS,
                     where=" for adapters with a core, ΔW = s·B C A (the others mix B and A)")
        new = adapter_name not in self.peft_config  # PEFT leaves an existing adapter as it is
        super().add_weighted_adapter(adapters, weights, adapter_name, combination_type=combination_type, **kwargs)
        for layer in self.model.modules() if new else ():
            if isinstance(layer, CoreLinear) and adapter_name in layer.lora_A:
                like = layer.lora_S[adapter_name].weight
                r = layer.r[adapter_name]
                if combination_type == "cat" or len(adapters) == 1:
                    cores = [layer.core_matrix(a) for a in adapters if a in layer.lora_A]
                    pad = r - sum(len(c) for c in cores)
                    C = torch.block_diag(*cores, like.new_zeros(pad, pad))
                else:
                    C = torch.eye(r, dtype=like.dtype, device=like.device)
                layer.set_core(adapter_name, C / layer.scaling[adapter_name])
