"""PoLAR: ΔW = s · B Θ A with B ∈ St(m, r), Aᵀ ∈ St(n, r) and a free Θ ∈ R^{r×r}.

PoLAR: Polar-Decomposed Low-Rank Adapter Representation (Lion et al., NeurIPS 2025,
arXiv 2506.03133). The paper writes ΔW = X Θ Yᵀ; here X = B = ``lora_B``, Yᵀ = A = ``lora_A`` and
Θ = ``lora_S``. B and Aᵀ are kept near the Stiefel manifold by the landing optimizer
(``polar_lib.optim.create_landing_optimizer``), not by the layer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from peft.tuners.lora.variants import _register_frozen_peft_weight
from torch import nn

from .._checks import check_choice
from ._peft import PeftTypeName, finish_config, read_adapter_weights, register_lora_method
from .core import CORE_KEY, Core, CoreLinear, CoreLoraModel, saved_core
from .delta import Delta

PEFT_TYPE = PeftTypeName("POLAR")
THETA_MODES = ("full", "diagonal", "fixed_identity")
POLAR_INITS = (True, False, "symmetric_gaussian", "gaussian")


@dataclass
class PolarConfig(LoraConfig):
    """A ``LoraConfig`` for PoLAR (``peft_type="POLAR"``).

    theta: how Θ is parametrised — ``"full"`` (default, the paper's), ``"diagonal"`` (diag(Θ) is
        used; Θ stays r×r so checkpoints keep their shape) or ``"fixed_identity"`` (Θ ≡ I, the
        paper's "removal" ablation; ``lora_S`` is then frozen, also after ``set_adapter``, as it gets no
        gradient and DDP requires one for every trainable parameter).
    init_lora_weights: ``True`` (default; orthogonal A and B, Θ = 0, so ΔW₀ = 0),
        ``"symmetric_gaussian"`` (A, B ~ N(0, 0.02²), Θ = 0), ``"gaussian"`` (A ~ N(0, 1/r²),
        B as nn.Linear, Θ = 0) or ``False`` (nn.Linear defaults for all: ΔW₀ ≠ 0).
    """

    theta: str = field(default="full", metadata={"help": f"Θ parametrisation, one of {THETA_MODES}"})

    def __post_init__(self):
        check_choice("theta", self.theta, THETA_MODES)
        finish_config(self, "PoLAR", POLAR_INITS, PEFT_TYPE, PolarLinear)


class PolarLinear(CoreLinear):
    """An ``nn.Linear`` with PoLAR adapters: y = W0 x + s · B Θ A dropout(x)."""

    method = "PoLAR"
    other_param_names = CoreLinear.other_param_names + ("polar_theta",)

    def __init__(self, base_layer, adapter_name, config, **kwargs):
        self.polar_theta = {}  # adapter name -> theta mode; set before PEFT's __init__ adds the first adapter
        super().__init__(base_layer, adapter_name, config=config, **kwargs)

    def make_core(self, r, config):
        return Core(r)  # Θ = 0 unless init_lora_weights=False

    def update_layer(self, adapter_name, r, lora_alpha, config, **kwargs):
        super().update_layer(adapter_name, r, lora_alpha, config=config, **kwargs)
        self.polar_theta[adapter_name] = config.theta
        if config.theta == "fixed_identity":  # PEFT re-freezes it wherever it marks adapter weights trainable
            _register_frozen_peft_weight(self, adapter_name, "lora_S")
        if config.init_lora_weights is False:
            nn.init.kaiming_uniform_(self.lora_S[adapter_name].weight, a=5**0.5)

    def reset_lora_parameters(self, adapter_name, init_lora_weights):
        if adapter_name not in self.lora_A:
            return
        A, B = self.lora_A[adapter_name].weight, self.lora_B[adapter_name].weight
        r = self.r[adapter_name]
        if init_lora_weights is True:
            nn.init.orthogonal_(A)
            nn.init.orthogonal_(B)
        elif init_lora_weights == "symmetric_gaussian":
            nn.init.normal_(A, std=0.02)
            nn.init.normal_(B, std=0.02)
        elif init_lora_weights == "gaussian":
            nn.init.normal_(A, std=1 / r)
        nn.init.zeros_(self.lora_S[adapter_name].weight)

    def core_matrix(self, adapter):
        return theta_as_used(self.lora_S[adapter].weight, self.polar_theta[adapter])

    def apply_core(self, adapter, h):
        mode = self.polar_theta[adapter]
        if mode == "full":
            return self.lora_S[adapter](h)
        if mode == "diagonal":
            return h * torch.diagonal(self.lora_S[adapter].weight)
        return h


def theta_as_used(theta: torch.Tensor, mode: str) -> torch.Tensor:
    """The r×r core ΔW uses under a ``theta`` mode: Θ (``full``), diag(diag Θ) (``diagonal``) or I
    (``fixed_identity``); the stored Θ keeps its shape in every mode."""
    if mode == "diagonal":
        return torch.diag(torch.diagonal(theta))
    if mode == "fixed_identity":
        return torch.eye(theta.shape[0], dtype=theta.dtype, device=theta.device)
    return theta


def saved_theta(tensors: dict, config: dict) -> torch.Tensor:
    """Θ of a saved layer as its saved config's ``theta`` mode uses it (``Delta.core``)."""
    return theta_as_used(saved_core(tensors, config), config.get("theta", "full"))


DELTA = Delta(PEFT_TYPE, "PoLAR", core=saved_theta)  # ΔW = s·B Θ A
register_lora_method(PEFT_TYPE, PolarConfig, CoreLoraModel)

# The original code's config fields and key names, and ours (docs/polar.md, 'Deviations from the
# original code').
_ORIGINAL_THETA = {"identity": "full", "diagonal": "diagonal", "removal": "fixed_identity"}
_ORIGINAL_ONLY_FIELDS = ("parameterize_S", "parameterization_lora_S", "adapter_name", "peft_type")


def load_original_polar(model: nn.Module, path, adapter_name: str = "default"):
    """Load an adapter folder written by the original PoLAR code (kcc-lion/polar) as a PoLAR adapter.

    The original saves ``peft_type: LORA`` with extra fields ``parameterize_S`` (``identity`` |
    ``diagonal`` | ``removal``) and ``adapter_name``, and Θ under the parametrisation key
    ``…lora_S.parametrizations.weight.original``. They map to ``PolarConfig(theta=…)`` and
    ``…lora_S.weight``. Returns the PEFT model; ``save_pretrained`` then writes our format.
    """
    folder = Path(path)
    raw = json.loads((folder / "adapter_config.json").read_text())
    original_theta = raw.get("parameterize_S", raw.get("parameterization_lora_S", "identity"))
    if original_theta not in _ORIGINAL_THETA:
        raise ValueError(f"parameterize_S must be one of {tuple(_ORIGINAL_THETA)}, got {original_theta!r} in {folder}")
    known = set(PolarConfig.__dataclass_fields__)
    kwargs = {k: v for k, v in raw.items() if k in known and k not in _ORIGINAL_ONLY_FIELDS}
    config = PolarConfig(**kwargs, theta=_ORIGINAL_THETA[original_theta])
    state_dict = {k.replace("lora_S.parametrizations.weight.original", CORE_KEY): v
                  for k, v in read_adapter_weights(folder).items()}
    peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(peft_model, state_dict, adapter_name=adapter_name)
    missing = [k for k in result.missing_keys if "lora_" in k and f".{adapter_name}." in k]
    if missing:
        raise ValueError(f"{folder} lacks adapter weights for {len(missing)} tensors, e.g. {missing[0]}")
    return peft_model
