"""The adapters of a PEFT model, a saved adapter folder or a hub id: their factors and stable ranks.

``adapter_factors(model_or_path)`` gives (B, C, A, s) with ΔW = s · B C A for every adapter layer;
``adapter_stable_ranks(model_or_path)`` one DataFrame row per layer, from the factors
(``spectra.singular_values``: thin QRs, no dense ΔW). What a method's ΔW is comes from its
registry entry (``methods.delta_for(peft_type)``): a layer whose ΔW depends on the token has no
single ΔW and is excluded with a warning.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .adapters._peft import read_adapter_weights
from .methods import delta_for
from .spectra import singular_values, stable_rank_from_singular_values

__all__ = ["AdapterFactors", "adapter_factors", "adapter_stable_ranks"]

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")
_PEFT_PREFIX = "base_model.model."


@dataclass
class AdapterFactors:
    """ΔW = scale · B · core · A (out×in) of one adapter of one layer; core is None for plain LoRA."""

    name: str               # module path without PEFT's "base_model.model." prefix
    adapter: str
    method: str             # lower-case: "lora", "dora", "polar", "stella", ...
    B: torch.Tensor         # m×k
    core: torch.Tensor | None  # k×k (or a k-vector: diagonal)
    A: torch.Tensor         # k×n
    scale: float

    @property
    def layer(self) -> int | None:
        """The block index parsed from the name (``...layers.<i>...``), None if there is none."""
        match = _LAYER_INDEX.search(self.name)
        return int(match.group(1)) if match else None

    @property
    def module(self) -> str:
        """The last component of the name (``q_proj``, ``down_proj``, ...)."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    def delta_weight(self) -> torch.Tensor:
        """The dense ΔW (m×n), for checks on small layers."""
        M = self.A if self.core is None else (torch.diag(self.core) if self.core.ndim == 1 else self.core) @ self.A
        return self.scale * (self.B @ M)


def _method_name(config, layer=None, adapter=None) -> str:
    if config is None:
        if layer is not None and getattr(layer, "use_dora", {}).get(adapter, False):
            return "dora"
        return str(getattr(layer, "method", "lora")).lower()
    peft_type = config.get("peft_type") if isinstance(config, dict) else getattr(config, "peft_type", None)
    peft_type = str(getattr(peft_type, "value", peft_type) or "LORA")
    use_dora = config.get("use_dora") if isinstance(config, dict) else getattr(config, "use_dora", False)
    if peft_type.upper() == "LORA" and use_dora:
        return "dora"
    return peft_type.lower()


def _strip_prefix(name: str) -> str:
    return name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name


def _warn_excluded(token_dependent: dict[str, list[str]], unsupported: list[str]) -> None:
    """One warning per reason why a method's ΔW depends on the token, naming its layers; one for the rest."""
    for reason, names in token_dependent.items():
        warnings.warn(f"{len(names)} adapter layer(s) excluded, as there is no single ΔW to take a stable rank of "
                      f"({reason}): {', '.join(names)}", UserWarning, stacklevel=3)
    if unsupported:
        warnings.warn(f"{len(unsupported)} adapter layer(s) skipped (not a low-rank product of 2-D factors, e.g. "
                      f"convolutions): {', '.join(unsupported)}", UserWarning, stacklevel=3)


def _model_factors(model: nn.Module, adapter_name: str | None) -> list[AdapterFactors]:
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import Embedding as LoraEmbedding

    configs = getattr(model, "peft_config", None) or {}
    found, token_dependent, unsupported = [], {}, []
    for full_name, layer in model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        name = _strip_prefix(full_name)
        adapters = list(getattr(layer, "lora_A", {}).keys()) + list(getattr(layer, "lora_embedding_A", {}).keys())
        for adapter in adapters:
            if adapter_name is not None and adapter != adapter_name:
                continue
            config = configs.get(adapter)
            delta = delta_for(getattr(config, "peft_type", None) or "LORA")
            if delta.token_dependent:
                token_dependent.setdefault(delta.token_dependent, []).append(
                    name if len(adapters) == 1 else f"{name}[{adapter}]")
                continue
            if hasattr(layer, "delta_factors"):
                B, core, A, scale = layer.delta_factors(adapter)
            elif isinstance(layer, LoraEmbedding):
                # lora_embedding_A: r×num_embeddings, lora_embedding_B: dim×r, ΔW = s·(B A)ᵀ (num_embeddings×dim)
                B, core, A = layer.lora_embedding_A[adapter].T, None, layer.lora_embedding_B[adapter].T
                scale = layer.scaling[adapter]
            else:
                lora_A, lora_B = layer.lora_A[adapter], layer.lora_B[adapter]
                weights = (getattr(lora_A, "weight", None), getattr(lora_B, "weight", None))
                if not (isinstance(lora_A, nn.Linear) and isinstance(lora_B, nn.Linear)
                        and type(layer).__name__ != "ParamWrapper" and all(w.ndim == 2 for w in weights)):
                    unsupported.append(name)
                    continue
                B, core, A, scale = weights[1], None, weights[0], layer.scaling[adapter]
            found.append(AdapterFactors(name, adapter, _method_name(config, layer, adapter),
                                        B.detach(), None if core is None else core.detach(), A.detach(),
                                        float(scale)))
    _warn_excluded(token_dependent, unsupported)
    return found


def _folder_factors(folder: Path, adapter_name: str | None) -> list[AdapterFactors]:
    config = json.loads((folder / "adapter_config.json").read_text())
    delta = delta_for(config.get("peft_type") or "LORA")
    method = _method_name(config)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in read_adapter_weights(folder).items():
        # "<module>.lora_A.weight", "<module>.lora_S.weight", "<module>.lora_B.bias", ...
        match = re.match(r"^(?P<module>.+?)\.(?P<param>lora_[A-Za-z_]+(?:\..+)?)$", key)
        if match:
            groups.setdefault(_strip_prefix(match["module"]), {})[match["param"]] = tensor
    if delta.token_dependent:
        _warn_excluded({delta.token_dependent: list(groups)}, [])
        return []
    adapter = adapter_name or "default"
    found, unsupported = [], []
    for name, tensors in groups.items():
        try:
            B, core, A, scale = delta.factors(tensors, config, name)
        except ValueError as error:
            raise ValueError(f"{folder}: {error}") from None
        if B.ndim != 2 or A.ndim != 2:
            unsupported.append(name)
            continue
        found.append(AdapterFactors(name, adapter, method, B, core, A, scale))
    _warn_excluded({}, unsupported)
    return found


def adapter_factors(model_or_path, adapter_name: str | None = None) -> list[AdapterFactors]:
    """The factors (B, core, A, scale) with ΔW = scale · B · core · A of every adapter layer.

    model_or_path: a PEFT model (any module holding PEFT ``LoraLayer``s), a folder written by
    ``save_pretrained`` (read directly: no base model is loaded), or a hub id (downloaded with
    ``huggingface_hub.snapshot_download``; needs internet).
    adapter_name: only this adapter (a model may hold several); for a folder, the name to report.

    What ΔW is comes from the method's ``Delta`` (``methods.delta_for`` of the adapter config's
    ``peft_type``): a saved folder is read through ``Delta.factors``; in a model, a layer with
    ``delta_factors(adapter) -> (B, core_or_None, A, scale)`` is read through it (PoLAR, StelLA, ...) and
    PEFT's own LoRA/DoRA layers give (lora_B, None, lora_A, scaling) — for DoRA that is ΔW as PEFT's
    ``get_delta_weight`` defines it, s·BA, without the magnitude rescaling. Layers of a method whose ΔW
    depends on the token (``Delta.token_dependent``: TopLoRA) are skipped with a warning naming them;
    an unregistered ``peft_type`` raises ``ValueError``.
    """
    if isinstance(model_or_path, nn.Module):
        return _model_factors(model_or_path, adapter_name)
    folder = Path(model_or_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            patterns = ["adapter_config.json", "adapter_model.*"]
            folder = Path(snapshot_download(str(model_or_path), allow_patterns=patterns))
        except Exception as error:  # offline, unknown id, invalid name
            raise FileNotFoundError(f"{model_or_path!r} is not a folder, and fetching it as a hub id failed: "
                                    f"{type(error).__name__}: {error}") from error
    if not (folder / "adapter_config.json").exists():
        raise FileNotFoundError(f"{model_or_path!r}: no adapter_config.json in {folder}")
    return _folder_factors(folder, adapter_name)


def adapter_stable_ranks(model_or_path, adapter_name: str | None = None) -> pd.DataFrame:
    """One row per adapter layer: the stable rank of its ΔW, from the factors (see ``adapter_factors``).

    Columns: ``layer`` (block index, nullable int), ``module`` (``q_proj``, ...), ``method``
    (lower-case peft_type; ``dora`` for LoRA with use_dora), ``rank`` (adapter rank k),
    ``stable_rank`` (0 for a zero update), ``singular_values`` (numpy array, descending, of ΔW
    including the scale), ``name`` (full module path), ``adapter``, ``scale``, ``out_features``,
    ``in_features``. Rows are sorted by adapter, layer (layers without an index last) and name.
    """
    rows = []
    for f in adapter_factors(model_or_path, adapter_name):
        sigma = abs(f.scale) * singular_values(f.B, f.A, f.core)
        rows.append({"layer": f.layer, "module": f.module, "method": f.method, "rank": f.rank,
                     "stable_rank": stable_rank_from_singular_values(sigma), "singular_values": sigma.cpu().numpy(),
                     "name": f.name, "adapter": f.adapter, "scale": f.scale,
                     "out_features": int(f.B.shape[0]), "in_features": int(f.A.shape[1])})
    columns = ["layer", "module", "method", "rank", "stable_rank", "singular_values", "name", "adapter", "scale",
               "out_features", "in_features"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["layer"] = frame["layer"].astype("Int64")
    # one order for a model and its saved folder: by adapter, block index (none last), module path
    return frame.sort_values(["adapter", "layer", "name"], na_position="last", kind="stable").reset_index(drop=True)
