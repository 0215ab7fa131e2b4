"""Stable rank and direction diversity of low-rank updates, computed from their factors.

The stable rank sr(M) = ‖M‖_F² / ‖M‖_2² = Σᵢ σᵢ² / σ₁² lies in [1, rank M]; it is the PoLAR paper's
measure of how many directions an adapter really uses (arXiv 2506.03133, Fig. 1). For an update
ΔW = s · B C A (B m×k, optional core C k×k, A k×n) it is computed without forming ΔW
(docs/stable-rank.md, 'Factored computation'): thin QRs B = Q_B R_B and Aᵀ = Q_A R_A give
σ(ΔW) = s · σ(R_B C R_Aᵀ), a k×k problem, in O((m + n) k² + k³) time and O((m + n) k) memory.
The scale s cancels in sr.

**Convention: sr(0) := 0** (e.g. LoRA or PoLAR at step 0), never NaN; any non-zero update has sr ≥ 1.

Public surface:
- ``stable_rank(B, A, core=None)`` / ``stable_rank(W)``; ``singular_values`` likewise.
- ``adapter_factors(model_or_path)``: (B, C, A, s) of every adapter layer of a PEFT model, a saved
  adapter folder or a hub id; ``adapter_stable_ranks(model_or_path)``: one DataFrame row per layer.
- ``direction_distances(B, A, core=None)`` and ``plot_direction_heatmap``: the paper's heatmap of
  pairwise distances between normalised rows of ΔW, in average-linkage order.
- ``benchmark_stable_rank()``: factored against dense SVD timing.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .adapters._peft import read_adapter_weights

__all__ = ["stable_rank", "singular_values", "AdapterFactors", "adapter_factors", "adapter_stable_ranks",
           "DirectionDistances", "direction_distances", "plot_direction_heatmap", "benchmark_stable_rank"]

MAX_HEATMAP_ROWS = 1024
TOKEN_DEPENDENT_TYPES = ("TOPLORA",)  # peft_type strings whose ΔW depends on the token (saved folders)
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")
_PEFT_PREFIX = "base_model.model."


# ---------------------------------------------------------------------------------------------
# Stable rank of a product
# ---------------------------------------------------------------------------------------------

def _as_tensor(x, name: str, dtype: torch.dtype, ndim=(2,)) -> torch.Tensor:
    t = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x)
    if t.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, got shape {tuple(t.shape)}")
    return t.to(dtype)


def _factor_triangle(B, A, core, dtype) -> torch.Tensor:
    """The small matrix R_B C R_Aᵀ whose singular values are those of B C A."""
    B = _as_tensor(B, "B", dtype)
    A = _as_tensor(A, "A", dtype).to(B.device)
    k_left, k_right = B.shape[1], A.shape[0]
    if core is None:
        if k_left != k_right:
            raise ValueError(f"B (m×k) and A (k×n) must share k; got B {tuple(B.shape)} and A {tuple(A.shape)}")
        C = None
    else:
        C = _as_tensor(core, "core", dtype, ndim=(1, 2)).to(B.device)
        if C.ndim == 1:
            C = torch.diag(C)  # a diagonal core given as its diagonal
        if C.shape != (k_left, k_right):
            raise ValueError(f"core must be {k_left}×{k_right} (or a {k_left}-vector when square) for B "
                             f"{tuple(B.shape)} and A {tuple(A.shape)}; got shape {tuple(C.shape)}")
    R_B = torch.linalg.qr(B, mode="r").R      # min(m, k)×k; Householder, fine when rank-deficient
    R_A = torch.linalg.qr(A.T, mode="r").R    # min(n, k)×k
    return R_B @ R_A.T if C is None else R_B @ C @ R_A.T


def singular_values(B, A=None, core=None, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Singular values, descending, of B (if A is None) or of B · core · A, computed from the factors.

    B: m×k, A: k×n, core: k×k (or a k-vector meaning diag(core)); tensors or arrays, any device.
    Returns min(m, k, n)-ish values (all of ΔW's possibly non-zero ones) in ``dtype``.
    """
    if A is None:
        if core is not None:
            raise ValueError("core needs both factors: stable_rank(B, A, core=C)")
        return torch.linalg.svdvals(_as_tensor(B, "W", dtype))
    return torch.linalg.svdvals(_factor_triangle(B, A, core, dtype))


def _stable_rank_of(sigma: torch.Tensor) -> float:
    if sigma.numel() == 0 or sigma[0] == 0:
        return 0.0  # sr(0) := 0
    return float(((sigma / sigma[0]) ** 2).sum())  # ratio first: no under/overflow of σ²


def stable_rank(B, A=None, core=None, *, dtype: torch.dtype = torch.float64) -> float:
    """Stable rank ‖M‖_F² / ‖M‖_2² of M = B · core · A (or of M = B when A is None).

    B: m×k, A: k×n, core: optional k×k (or a k-vector for a diagonal core). Computed from thin QRs
    of B and Aᵀ in O((m + n) k² + k³), never forming M (docs/stable-rank.md, 'Factored
    computation'); in float64 by default.
    Returns a float in [1, rank M], and 0.0 for M = 0 (our convention sr(0) := 0).
    """
    return _stable_rank_of(singular_values(B, A, core, dtype=dtype))


# ---------------------------------------------------------------------------------------------
# Adapters of a model, a saved folder or a hub id
# ---------------------------------------------------------------------------------------------

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


def _warn_excluded(token_dependent: list[str], unsupported: list[str]) -> None:
    if token_dependent:
        warnings.warn(f"{len(token_dependent)} adapter layer(s) excluded: their ΔW depends on the token "
                      f"(TopLoRA: ΔW_x = s·B diag(λ(x)) A), so there is no single ΔW to take a stable rank "
                      f"of: {', '.join(token_dependent)}", UserWarning, stacklevel=3)
    if unsupported:
        warnings.warn(f"{len(unsupported)} adapter layer(s) skipped (not a low-rank product of 2-D factors, e.g. "
                      f"convolutions): {', '.join(unsupported)}", UserWarning, stacklevel=3)


def _model_factors(model: nn.Module, adapter_name: str | None) -> list[AdapterFactors]:
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import Embedding as LoraEmbedding

    configs = getattr(model, "peft_config", None) or {}
    found, token_dependent, unsupported = [], [], []
    for full_name, layer in model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        name = _strip_prefix(full_name)
        adapters = list(getattr(layer, "lora_A", {}).keys()) + list(getattr(layer, "lora_embedding_A", {}).keys())
        for adapter in adapters:
            if adapter_name is not None and adapter != adapter_name:
                continue
            config = configs.get(adapter)
            peft_type = getattr(config, "peft_type", None)
            if (getattr(layer, "token_dependent_delta", False)
                    or str(getattr(peft_type, "value", peft_type)).upper() in TOKEN_DEPENDENT_TYPES):
                token_dependent.append(name if len(adapters) == 1 else f"{name}[{adapter}]")
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


def _folder_core(config: dict, core: torch.Tensor | None) -> torch.Tensor | None:
    """The core as the method uses it. PoLAR's ``theta`` modes keep an r×r tensor
    (docs/polar.md, 'Θ modes')."""
    if core is None or core.ndim == 1:
        return core
    theta = config.get("theta", "full")
    if theta == "diagonal":
        return torch.diagonal(core).clone()
    if theta == "fixed_identity":
        return torch.eye(core.shape[0], dtype=core.dtype)
    return core


def _folder_scale(config: dict, name: str, r: int) -> float:
    """s = α/r, or α/√r with rsLoRA; α from ``alpha_pattern`` when a pattern names this module.
    r is the factors' own rank, so ``rank_pattern`` is honoured through the tensor shapes."""
    alpha = config.get("lora_alpha", 8)
    pattern = config.get("alpha_pattern") or {}
    if pattern:
        from peft.utils.other import get_pattern_key

        key = get_pattern_key(list(pattern), name)
        alpha = pattern.get(key, alpha)
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def _folder_factors(folder: Path, adapter_name: str | None) -> list[AdapterFactors]:
    config = json.loads((folder / "adapter_config.json").read_text())
    method = _method_name(config)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in read_adapter_weights(folder).items():
        # "<module>.lora_A.weight", "<module>.lora_S" (a bare parameter), "<module>.lora_B.bias", ...
        match = re.match(r"^(?P<module>.+?)\.(?P<param>lora_[A-Za-z_]+(?:\..+)?)$", key)
        if match:
            groups.setdefault(_strip_prefix(match["module"]), {})[match["param"]] = tensor
    adapter = adapter_name or "default"
    found, token_dependent, unsupported = [], [], []
    for name, tensors in groups.items():
        if (str(config.get("peft_type", "")).upper() in TOKEN_DEPENDENT_TYPES
                or any(param.startswith("lora_lambda") for param in tensors)):
            token_dependent.append(name)
            continue
        if "lora_embedding_A" in tensors and "lora_embedding_B" in tensors:
            B, A = tensors["lora_embedding_A"].T, tensors["lora_embedding_B"].T
        elif "lora_A.weight" in tensors and "lora_B.weight" in tensors:
            B, A = tensors["lora_B.weight"], tensors["lora_A.weight"]
        else:
            raise ValueError(f"{folder}: module {name} has adapter tensors {sorted(tensors)} but not both "
                             f"lora_A.weight and lora_B.weight")
        if B.ndim != 2 or A.ndim != 2:
            unsupported.append(name)
            continue
        core = _folder_core(config, tensors.get("lora_S.weight", tensors.get("lora_S")))
        found.append(AdapterFactors(name, adapter, method, B, core, A, _folder_scale(config, name, A.shape[0])))
    _warn_excluded(token_dependent, unsupported)
    return found


def adapter_factors(model_or_path, adapter_name: str | None = None) -> list[AdapterFactors]:
    """The factors (B, core, A, scale) with ΔW = scale · B · core · A of every adapter layer.

    model_or_path: a PEFT model (any module holding PEFT ``LoraLayer``s), a folder written by
    ``save_pretrained`` (read directly: no base model is loaded), or a hub id (downloaded with
    ``huggingface_hub.snapshot_download``; needs internet).
    adapter_name: only this adapter (a model may hold several); for a folder, the name to report.

    Layer contract: a layer with ``delta_factors(adapter) -> (B, core_or_None, A, scale)`` is read
    through it (PoLAR, StelLA, ...); PEFT's own LoRA/DoRA layers give (lora_B, None, lora_A,
    scaling) — for DoRA that is ΔW as PEFT's ``get_delta_weight`` defines it, s·BA, without the
    magnitude rescaling. Layers with ``token_dependent_delta = True`` (TopLoRA) are skipped with a
    warning naming them.
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
                     "stable_rank": _stable_rank_of(sigma), "singular_values": sigma.cpu().numpy(),
                     "name": f.name, "adapter": f.adapter, "scale": f.scale,
                     "out_features": int(f.B.shape[0]), "in_features": int(f.A.shape[1])})
    columns = ["layer", "module", "method", "rank", "stable_rank", "singular_values", "name", "adapter", "scale",
               "out_features", "in_features"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["layer"] = frame["layer"].astype("Int64")
    # one order for a model and its saved folder: by adapter, block index (none last), module path
    return frame.sort_values(["adapter", "layer", "name"], na_position="last", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Direction diversity: pairwise distances between normalised rows of ΔW
# ---------------------------------------------------------------------------------------------

@dataclass
class DirectionDistances:
    """Distances d_ij = ‖w_i/‖w_i‖ − w_j/‖w_j‖‖ ∈ [0, 2] between rows of ΔW (d² = 2 − 2 cos)."""

    distances: np.ndarray   # p×p, in the order of ``rows``
    order: np.ndarray       # average-linkage leaf order: a permutation of range(p)
    rows: np.ndarray        # which rows of ΔW (sampled, zero rows dropped), ascending

    @property
    def ordered(self) -> np.ndarray:
        """The distance matrix permuted into the average-linkage order (what the heatmap shows)."""
        return self.distances[np.ix_(self.order, self.order)]


def direction_distances(B, A=None, core=None, *, max_rows: int = MAX_HEATMAP_ROWS, seed: int = 0,
                        dtype: torch.dtype = torch.float64) -> DirectionDistances:
    """Pairwise distances between the normalised rows of ΔW = B · core · A (or of W = B if A is None).

    At most ``max_rows`` rows are used, drawn without replacement by a generator seeded with
    ``seed`` when ΔW has more; rows that are exactly zero are dropped. Factored
    (docs/stable-rank.md, 'Direction heatmap'): with a thin QR (core·A)ᵀ = Q R, row i of ΔW is
    bᵢ Rᵀ Qᵀ, and Q is an isometry, so the rows of B_S Rᵀ (p×k) have exactly ΔW's norms, cosines
    and distances — O(n k² + p² k), no ΔW, no m×m.
    Order: ``scipy.cluster.hierarchy`` average linkage of those distances (as the PoLAR code).
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    left = _as_tensor(B, "B" if A is not None else "W", dtype)
    m = left.shape[0]
    if m > max_rows:
        generator = torch.Generator().manual_seed(seed)
        rows = torch.randperm(m, generator=generator)[:max_rows].sort().values
    else:
        rows = torch.arange(m)
    if A is None:
        if core is not None:
            raise ValueError("core needs both factors: direction_distances(B, A, core=C)")
        Y = left[rows.to(left.device)]
    else:
        right = _as_tensor(A, "A", dtype).to(left.device)
        if core is not None:
            C = _as_tensor(core, "core", dtype, ndim=(1, 2)).to(left.device)
            right = (C[:, None] * right) if C.ndim == 1 else C @ right
        if left.shape[1] != right.shape[0]:
            raise ValueError(f"factors do not chain: B {tuple(left.shape)}, core·A {tuple(right.shape)}")
        R = torch.linalg.qr(right.T, mode="r").R
        Y = left[rows.to(left.device)] @ R.T
    norms = torch.linalg.vector_norm(Y, dim=1)
    keep = norms > 0
    U = Y[keep] / norms[keep, None]
    D = torch.cdist(U, U, compute_mode="donot_use_mm_for_euclid_dist")
    D = ((D + D.T) / 2).clamp_(0, 2).fill_diagonal_(0).cpu().numpy()
    if D.shape[0] > 1:
        from scipy.cluster.hierarchy import leaves_list, linkage
        from scipy.spatial.distance import squareform

        order = leaves_list(linkage(squareform(D, checks=False), method="average"))
    else:
        order = np.arange(D.shape[0])
    return DirectionDistances(D, np.asarray(order), rows[keep.cpu()].numpy())


def plot_direction_heatmap(result: DirectionDistances | np.ndarray, order=None, *, ax=None, title: str | None = None,
                           cmap: str = "viridis", colorbar: bool = True):
    """Show the distance matrix in average-linkage order: ``imshow``, vmin 0, vmax 2 (as the PoLAR paper).

    result: a ``DirectionDistances`` (its order is used) or a square distance array with an
    optional ``order``. Dark diagonal blocks are collapsed directions. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    if isinstance(result, DirectionDistances):
        distances, order = result.distances, result.order if order is None else order
    else:
        distances = np.asarray(result)
    if order is not None:
        distances = distances[np.ix_(order, order)]
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5))
    image = ax.imshow(distances, vmin=0.0, vmax=2.0, cmap=cmap, interpolation="nearest")
    ax.set_xlabel("row $i$ (linkage order)")
    ax.set_ylabel("row $j$ (linkage order)")
    if title:
        ax.set_title(title, wrap=True)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label=r"$\|\tilde w_i - \tilde w_j\|$")
    return ax


# ---------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------

def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark_stable_rank(m: int = 4096, n: int = 4096, k: int = 32, *, repeats: int = 3, factored_repeats: int = 25,
                          dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                          seed: int = 0, num_threads: int | None = None) -> dict:
    """Time the factored stable rank of B·A against the dense one (``svdvals`` of the formed m×n ΔW).

    Gaussian B (m×k), A (k×n); both routes compute in ``dtype`` on ``device``. The dense matrix is
    formed before timing (so the ratio is conservative). Each route: one untimed warm-up for the
    factored route, then the median of ``repeats`` (dense) / ``factored_repeats`` (factored)
    ``time.perf_counter`` timings. Returns a dict with the sizes, ``factored_s``, ``dense_s``,
    ``ratio`` = dense_s / factored_s, both stable ranks and their absolute difference.
    num_threads: CPU threads for the duration (then restored); 1 gives steadier timings on a busy
    machine, where multi-threaded LAPACK slows down badly.
    """
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _benchmark(m, n, k, repeats, factored_repeats, dtype, torch.device(device), seed)
    finally:
        torch.set_num_threads(previous)


def _benchmark(m, n, k, repeats, factored_repeats, dtype, device, seed) -> dict:
    generator = torch.Generator().manual_seed(seed)
    B = torch.randn(m, k, generator=generator, dtype=dtype).to(device)
    A = torch.randn(k, n, generator=generator, dtype=dtype).to(device)
    W = B @ A
    results = {}

    def factored():
        results["factored"] = stable_rank(B, A, dtype=dtype)

    def dense():
        results["dense"] = _stable_rank_of(torch.linalg.svdvals(W))

    factored()
    factored_s = _median_seconds(factored, factored_repeats, device)
    dense_s = _median_seconds(dense, repeats, device)
    return {"m": m, "n": n, "k": k, "dtype": str(dtype).removeprefix("torch."), "device": str(device),
            "num_threads": torch.get_num_threads() if device.type == "cpu" else None,
            "repeats": repeats, "factored_repeats": factored_repeats, "factored_s": factored_s, "dense_s": dense_s,
            "ratio": dense_s / factored_s, "stable_rank_factored": results["factored"],
            "stable_rank_dense": results["dense"], "abs_difference": abs(results["factored"] - results["dense"])}
