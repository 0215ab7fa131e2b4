"""Stiefel-manifold maths shared by every geometry-aware adapter.

St(n, r) = {Z ∈ R^{n×r} : ZᵀZ = I_r}, Z tall (n ≥ r). Everything here costs O(n r²) time and
O(n r) memory: no n×n matrix is ever formed, except in ``dense_landing_field``, the original's
form kept as the reference the tests and the benchmark compare against. Wide factors (PEFT's ``lora_A``, r×n) are passed
through their transpose. Every map takes a batch (…, n, r) as well as one matrix.

**Metrics.** Two metrics on the tangent space T_Z St = {Δ : ZᵀΔ + ΔᵀZ = 0} are in use, and each map
below says which one it belongs to (Edelman, Arias & Smith, SIAM J. Matrix Anal. Appl. 1998, §2):

- *embedded* (Euclidean): ⟨Δ₁, Δ₂⟩_e = tr(Δ₁ᵀ Δ₂), the metric of R^{n×r} restricted to T_Z St;
- *canonical*: ⟨Δ₁, Δ₂⟩_c = tr(Δ₁ᵀ (I − ½ Z Zᵀ) Δ₂), the quotient metric of the orthogonal group.

The retractions (polar, QR) need no metric; the exp map is the canonical metric's geodesic.

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
    "gram_polar_retraction",
    "qr_retraction",
    "exp_map_retraction",
    "random_stiefel",
]

LANDING_FIELDS = ("landing", "euclidean")
SVD_DRIVERS = (None, "gesvd", "gesvdj", "gesvda")  # torch.linalg.svd's ``driver``: None, or a cuSOLVER one


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
    """Riemannian gradient in the **canonical** metric on St(n, r): G − Z Gᵀ Z (Edelman et al. 1998, eq. 2.53).

    (The embedded metric's would be ``project_tangent(Z, G)`` = G − Z sym(ZᵀG).)
    Equals the tangent term (G Zᵀ − Z Gᵀ) Z of the landing field when ZᵀZ = I. StelLA's gradient
    conversion (its step 1) is this map.
    """
    return G - Z @ (G.mT @ Z)


def project_tangent(Z: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection onto T_Z St in the **embedded** metric: D − Z sym(ZᵀD).

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
    L + (λ/4)‖ZᵀZ − I‖_F². Metric: on St the tangent term is the **canonical** Riemannian gradient
    (``riemannian_gradient``); the normal term is the **embedded** (Euclidean) gradient of the penalty.
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


def polar_retraction(Y: torch.Tensor, svd_driver: str | None = None) -> torch.Tensor:
    """The polar factor of a tall Y (n×r): P Qᵀ from the thin SVD Y = P Σ Qᵀ, i.e. Y (YᵀY)^{-1/2}.

    No metric: it is the point of St nearest to Y in the Frobenius norm, and X ↦ polar(X + Δ) is a
    retraction (StelLA's). Computed in at least fp32 (the SVD has no bf16 kernel). ``svd_driver``
    (one of ``SVD_DRIVERS``) is used for CUDA tensors only — the default driver runs elsewhere; where
    it returns a non-finite factor (``"gesvda"`` does for a zero matrix, pytorch#136085) the default
    driver's factor is taken, per matrix, by ``torch.where`` (no host sync, so a cuSOLVER driver
    costs a second SVD: it reproduces the original's numerics, it does not save time).
    """
    check_choice("svd_driver", svd_driver, SVD_DRIVERS)
    work = Y if Y.dtype in (torch.float32, torch.float64) else Y.float()
    P, _, Qh = torch.linalg.svd(work, full_matrices=False)
    result = P @ Qh
    if svd_driver is not None and work.device.type == "cuda":
        P, _, Qh = torch.linalg.svd(work, full_matrices=False, driver=svd_driver)
        driven = P @ Qh
        result = torch.where(torch.isfinite(driven).all(dim=(-2, -1), keepdim=True), driven, result)
    return result.to(Y.dtype)


def gram_polar_retraction(Y: torch.Tensor) -> torch.Tensor:
    """The polar factor Y (YᵀY)^{-1/2} of a tall, **well-conditioned** Y, from the eigendecomposition of the
    r×r Gram: YᵀY = V Λ Vᵀ, polar(Y) = Y V Λ^{-1/2} Vᵀ. O(n r² + r³), no SVD of Y.

    Round-off ≈ ε·κ(Y)²: meant for the retraction polar(X + Δ) with X on St and Δ tangent, where
    ‖(X + Δ)v‖² = ‖v‖² + ‖Δv‖² (XᵀΔ skew), so 1 ≤ σ(X + Δ) ≤ √(1 + ‖Δ‖₂²). There LAPACK's SVD (gesdd)
    can fail to converge in fp32 on the clustered singular values σ ≈ 1 (measured: a 576×32 factor of
    a StelLA step); the symmetric eigensolver does not. Computed in at least fp32.
    """
    work = Y if Y.dtype in (torch.float32, torch.float64) else Y.float()
    eigenvalues, V = torch.linalg.eigh(work.mT @ work)
    return (work @ ((V * eigenvalues.rsqrt().unsqueeze(-2)) @ V.mT)).to(Y.dtype)


def qr_retraction(Y: torch.Tensor) -> torch.Tensor:
    """Q factor of the thin QR of a tall Y with signs fixed so that diag(R) > 0 (unique, smooth).

    No metric: X ↦ qr(X + Δ) is a first-order retraction."""
    Q, R = torch.linalg.qr(Y)
    signs = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return Q * signs.unsqueeze(-2)


def exp_map_retraction(X: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The **canonical**-metric geodesic from X (n×r, on St) along the tangent D, at time 1.

    With the thin QR D − X XᵀD = Q R: X ← [X Q] · expm([[XᵀD, −Rᵀ], [R, 0]])[:, :r] (Edelman, Arias &
    Smith 1998, eq. 2.45). D must be tangent (XᵀD skew), e.g. from ``project_tangent``.
    """
    A = X.mT @ D
    Q, R = torch.linalg.qr(D - X @ A)
    top = torch.cat([A, -R.mT], dim=-1)
    bottom = torch.cat([R, torch.zeros_like(R)], dim=-1)
    E = torch.linalg.matrix_exp(torch.cat([top, bottom], dim=-2))
    return torch.cat([X, Q], dim=-1) @ E[..., :, : X.shape[-1]]


def random_stiefel(n: int, r: int, *, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """A random point of St(n, r): the sign-fixed Q of a Gaussian n×r matrix (Haar distributed)."""
    return qr_retraction(torch.randn(n, r, generator=generator, dtype=dtype))
