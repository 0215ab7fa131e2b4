"""Stiefel-manifold maths shared by every geometry-aware adapter.

St(n, r) = {Z ∈ R^{n×r} : ZᵀZ = I_r}, Z tall (n ≥ r). Everything here costs O(n r²) time and
O(n r) memory: no n×n matrix is ever formed, except in ``dense_landing_field``, the original's
form kept as the reference the tests and the benchmark compare against. Wide factors (PEFT's ``lora_A``, r×n) are passed
through their transpose.

References: landing (Ablin & Peyré, AISTATS 2022; Ablin, Vary, Gao & Absil, 2024), as used by
PoLAR (arXiv 2506.03133, Algorithm 2); Riemannian conversion and polar retraction as in StelLA
(arXiv 2510.01938).
"""
from __future__ import annotations

import torch

from ._checks import check_choice

__all__ = [
    "sym",
    "orthogonality_error",
    "riemannian_gradient",
    "project_tangent",
    "landing_field",
    "dense_landing_field",
    "polar_retraction",
    "qr_retraction",
    "random_stiefel",
]

LANDING_FIELDS = ("landing", "euclidean")


def sym(M: torch.Tensor) -> torch.Tensor:
    """sym(M) = (M + Mᵀ) / 2 for a square M."""
    return (M + M.mT) / 2


def _eye_like(C: torch.Tensor) -> torch.Tensor:
    return torch.eye(C.shape[-1], dtype=C.dtype, device=C.device)


def orthogonality_error(Z: torch.Tensor) -> torch.Tensor:
    """‖ZᵀZ − I‖_F for a tall Z (n×r); zero exactly on St(n, r)."""
    C = Z.mT @ Z
    return torch.linalg.matrix_norm(C - _eye_like(C))


def riemannian_gradient(Z: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Riemannian gradient under the canonical metric on St(n, r): G − Z Gᵀ Z.

    Equals the tangent term (G Zᵀ − Z Gᵀ) Z of the landing field when ZᵀZ = I. StelLA's gradient
    conversion (its step 1) is this map.
    """
    return G - Z @ (G.mT @ Z)


def project_tangent(Z: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection onto the tangent space at Z in the embedded metric: D − Z sym(ZᵀD).

    The result Δ satisfies ZᵀΔ + ΔᵀZ = 0 whenever ZᵀZ = I.
    """
    return D - Z @ sym(Z.mT @ D)


def landing_field(
    Z: torch.Tensor, G: torch.Tensor, landing_lambda: float, field: str = "landing"
) -> torch.Tensor:
    """The landing field Λ(Z, G) = (G Zᵀ − Z Gᵀ) Z + λ Z (ZᵀZ − I), without the n×n matrix.

    Z, G: n×r matrices (n ≥ r), or batches (…, n, r) of them, G the Euclidean gradient of the loss
    at Z. With C = ZᵀZ (r×r) the same field is Λ = G C + Z M with M = λ (C − I) − Gᵀ Z: O(n r²),
    four thin products fused into ``addmm`` (``baddbmm`` for a batch) calls — at small r on a CPU
    the cost is the number of calls, so a batch of same-shape factors costs about one. This is the
    field of the PoLAR code (no factor ½ on the skew term; ``landing_lambda`` is its λ).
    ``field="euclidean"`` is the paper's ablation G + λ Z (ZᵀZ − I), the gradient of
    L + (λ/4)‖ZᵀZ − I‖_F².
    """
    if landing_lambda < 0:
        raise ValueError(f"landing_lambda must be >= 0, got {landing_lambda!r}")
    check_choice("field", field, LANDING_FIELDS)
    if Z.ndim not in (2, 3) or Z.shape != G.shape or Z.shape[-2] < Z.shape[-1]:
        raise ValueError(f"Z and G must be tall n×r matrices (or a batch of them) with n >= r and equal shapes, "
                         f"got {tuple(Z.shape)} and {tuple(G.shape)}")
    addmm = torch.addmm if Z.ndim == 2 else torch.baddbmm
    C = Z.mT @ Z
    M = landing_lambda * C if field == "euclidean" else addmm(C, G.mT, Z, beta=landing_lambda, alpha=-1)
    M.diagonal(dim1=-2, dim2=-1).sub_(landing_lambda)
    return addmm(G if field == "euclidean" else G @ C, Z, M)


def dense_landing_field(Z: torch.Tensor, G: torch.Tensor, landing_lambda: float) -> torch.Tensor:
    """The PoLAR code's form of the landing field, with its n×n skew matrix: O(n² r) time, O(n²) memory.

    (G Zᵀ − Z Gᵀ) Z + λ Z (ZᵀZ − I); ``landing_field`` computes the same field in O(n r²).
    """
    return (G @ Z.mT - Z @ G.mT) @ Z + landing_lambda * Z @ (Z.mT @ Z - _eye_like(Z.mT @ Z))


def polar_retraction(Y: torch.Tensor) -> torch.Tensor:
    """The polar factor of a tall Y (n×r): P Qᵀ from the thin SVD Y = P Σ Qᵀ, i.e. Y (YᵀY)^{-1/2}.

    Computed in at least fp32 with the default SVD driver, so it runs on CPU and GPU alike.
    """
    work = Y if Y.dtype in (torch.float32, torch.float64) else Y.float()
    P, _, Qh = torch.linalg.svd(work, full_matrices=False)
    return (P @ Qh).to(Y.dtype)


def qr_retraction(Y: torch.Tensor) -> torch.Tensor:
    """Q factor of the thin QR of a tall Y with signs fixed so that diag(R) > 0 (unique, smooth)."""
    Q, R = torch.linalg.qr(Y)
    signs = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return Q * signs.unsqueeze(-2)


def random_stiefel(n: int, r: int, *, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """A random point of St(n, r): the sign-fixed Q of a Gaussian n×r matrix (Haar distributed)."""
    return qr_retraction(torch.randn(n, r, generator=generator, dtype=dtype))
