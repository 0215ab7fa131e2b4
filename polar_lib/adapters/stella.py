"""StelLA: ΔW = s · U S Vᵀ with U ∈ St(m, r), V ∈ St(n, r) and S diagonal (default) or full.

StelLA: Subspace Learning in Low-rank Adaptation using Stiefel Manifold (Li et al., NeurIPS 2025,
arXiv 2510.01938; code SonyResearch/stella). Here U = ``lora_B`` (m×r), Vᵀ = ``lora_A`` (r×n) and
S = ``lora_S`` (an r-vector for diagonal S, else r×r). The layer is a ``CoreLinear``; U and V are
kept on the Stiefel manifold by the optimizer (``polar_lib.optim.stella.create_stella_optimizer``:
Riemannian gradient before the step, tangent projection and retraction after it).

Initialisation (faithful to the original, docs/stella.md, 'Initialisation'): S = I and nothing is
subtracted from W0, so ΔW₀ = s · U Vᵀ ≠ 0 (all r singular values equal to s).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import LoraConfig
from torch import nn

from ._peft import PeftTypeName, finish_config, register_lora_method
from .core import Core, CoreLinear, CoreLoraModel, saved_core
from .delta import Delta

PEFT_TYPE = PeftTypeName("STELLA")
STELLA_INITS = (True, "rando", "svd_major", "svd_minor")


@dataclass
class StellaConfig(LoraConfig):
    """A ``LoraConfig`` for StelLA (``peft_type="STELLA"``).

    diag_s: ``True`` (default; the paper's and every experiment's setting) for a diagonal S stored as
        an r-vector, ``False`` for a full r×r S.
    init_lora_weights: ``True`` or ``"rando"`` (default; ``orthogonal_`` U and Vᵀ), ``"svd_major"``
        (U, V = the top r left/right singular vectors of W0) or ``"svd_minor"`` (the bottom r).
        S = I in every case, so ΔW₀ = s · U Vᵀ ≠ 0.
    """

    diag_s: bool = field(default=True, metadata={"help": "True: diagonal S (r-vector); False: full r×r S"})

    def __post_init__(self):
        if not isinstance(self.diag_s, bool):
            raise ValueError(f"diag_s must be True (diagonal S) or False (full r×r S), got {self.diag_s!r}")
        finish_config(self, "StelLA", STELLA_INITS, PEFT_TYPE, StellaLinear)


class StellaLinear(CoreLinear):
    """An ``nn.Linear`` with StelLA adapters: y = W0 x + s · U S Vᵀ dropout(x)."""

    method = "StelLA"

    def make_core(self, r, config):
        core = Core(r, diagonal=config.diag_s)
        with torch.no_grad():
            core.weight.copy_(torch.ones(r) if config.diag_s else torch.eye(r))  # S = I
        return core

    def reset_lora_parameters(self, adapter_name, init_lora_weights):
        if adapter_name not in self.lora_A:
            return
        Vt, U = self.lora_A[adapter_name].weight, self.lora_B[adapter_name].weight
        with torch.no_grad():
            if init_lora_weights in ("svd_major", "svd_minor"):
                r = self.r[adapter_name]
                W = self.get_base_layer().weight
                W = W.T if self.fan_in_fan_out else W
                work = W.detach().to(torch.float64 if W.dtype == torch.float64 else torch.float32)
                P, _, Qh = torch.linalg.svd(work, full_matrices=False)  # singular values descending
                cols = slice(0, r) if init_lora_weights == "svd_major" else slice(P.shape[1] - r, P.shape[1])
                U.copy_(P[:, cols])
                Vt.copy_(Qh[cols, :])
            else:  # True / "rando"
                nn.init.orthogonal_(Vt)
                nn.init.orthogonal_(U)


DELTA = Delta(PEFT_TYPE, "StelLA", core=saved_core)  # ΔW = s·U S Vᵀ, S as saved (an r-vector when diagonal)
register_lora_method(PEFT_TYPE, StellaConfig, CoreLoraModel)
