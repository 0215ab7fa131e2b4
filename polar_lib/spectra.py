"""Singular values, stable rank and direction distances of a low-rank update, from its factors.

The stable rank sr(M) = ‖M‖_F² / ‖M‖_2² = Σᵢ σᵢ² / σ₁² lies in [1, rank M]; it is the PoLAR paper's
measure of how many directions an adapter really uses (arXiv 2506.03133, Fig. 1). For an update
ΔW = s · B C A (B m×k, optional core C k×k, A k×n) it is computed without forming ΔW
(docs/stable-rank.md, 'Factored computation'): thin QRs B = Q_B R_B and Aᵀ = Q_A R_A give
σ(ΔW) = s · σ(R_B C R_Aᵀ), a k×k problem, in O((m + n) k² + k³) time and O((m + n) k) memory.
The scale s cancels in sr.

**Convention: sr(0) := 0** (e.g. LoRA or PoLAR at step 0), never NaN; any non-zero update has sr ≥ 1.

- ``stable_rank(B, A, core=None)`` / ``stable_rank(W)``; ``singular_values`` likewise;
  ``stable_rank_from_singular_values(σ)``.
- ``direction_distances(B, A, core=None)``: the paper's pairwise distances between normalised rows
  of ΔW, in average-linkage order (drawn by ``heatmap.plot_direction_heatmap``).

The adapters of a model or a saved folder are read by ``polar_lib.inspection``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["stable_rank", "singular_values", "stable_rank_from_singular_values", "DirectionDistances",
           "direction_distances"]

MAX_HEATMAP_ROWS = 1024


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


def stable_rank_from_singular_values(sigma: torch.Tensor) -> float:
    """Σᵢ (σᵢ/σ₁)² of singular values σ in descending order; 0.0 when σ₁ = 0 or σ is empty (sr(0) := 0)."""
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
    return stable_rank_from_singular_values(singular_values(B, A, core, dtype=dtype))


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
