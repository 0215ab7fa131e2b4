"""What a method's update ΔW = s · B C A is, read from one layer's saved tensors: ``Delta``.

Every method's module declares one ``Delta`` and its registry entry (``polar_lib.methods.Method``)
points at it; the folder and model readers (``polar_lib.inspection``) and the export
(``polar_lib.export``) find it from an adapter config's ``peft_type`` (``methods.delta_for``).

The outer factors and the scale are PEFT's for every LoRA-family method: B = ``lora_B.weight`` (m×r),
A = ``lora_A.weight`` (r×n) — for an embedding, B = ``lora_embedding_A``ᵀ, A = ``lora_embedding_B``ᵀ,
so ΔW = s (B_e A_e)ᵀ is num_embeddings×dim — and s = α/r, or α/√r with rsLoRA, α from
``alpha_pattern`` when a pattern names the module (r is the factors' own rank, so ``rank_pattern``
is honoured through the shapes). A method adds its core C, or says that ΔW depends on the token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from peft.utils.other import get_pattern_key

Tensors = dict[str, torch.Tensor]  # one layer's saved adapter tensors, by PEFT's key without the module path


@dataclass(frozen=True)
class Delta:
    """How ΔW = s · B C A of one layer is rebuilt from its saved tensors and its adapter config dict.

    peft_type: the adapter config's ``peft_type``; name: the method, for messages.
    core: (tensors, config) ↦ C as the method uses it (r×r, or an r-vector for diag C); None: ΔW = s·BA.
    token_dependent: why ΔW depends on the token, when it does (then there are no factors); else "".
    """

    peft_type: str
    name: str
    core: Callable[[Tensors, dict], torch.Tensor] | None = None
    token_dependent: str = ""

    def factors(self, tensors: Tensors, config: dict, module: str):
        """(B, C or None, A, s) with ΔW = s · B C A for the layer ``module`` (its path, for patterns)."""
        if self.token_dependent:
            raise ValueError(f"{self.name} has no factors: {self.token_dependent}")
        if "lora_embedding_A" in tensors and "lora_embedding_B" in tensors:
            B, A = tensors["lora_embedding_A"].T, tensors["lora_embedding_B"].T
        elif "lora_A.weight" in tensors and "lora_B.weight" in tensors:
            B, A = tensors["lora_B.weight"], tensors["lora_A.weight"]
        else:
            raise ValueError(f"module {module} has adapter tensors {sorted(tensors)} but not both "
                             f"lora_A.weight and lora_B.weight")
        core = None if self.core is None else self.core(tensors, config)
        return B, core, A, lora_scale(config, module, A.shape[0])


def lora_scale(config: dict, module: str, r: int) -> float:
    """PEFT's s = α/r, or α/√r with ``use_rslora``; α from ``alpha_pattern`` when a pattern names ``module``."""
    alpha = config.get("lora_alpha", 8)
    pattern = config.get("alpha_pattern") or {}
    if pattern:
        alpha = pattern.get(get_pattern_key(list(pattern), module), alpha)
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


LORA = Delta("LORA", "LoRA")  # LoRA and DoRA as PEFT defines them (DoRA: s·BA, without the magnitude)
