import pytest
import torch

from polar_lib.geometry import (dense_landing_field, gram_polar_retraction, landing_field, orthogonality_error, polar_retraction, project_tangent,
                                qr_retraction, random_stiefel, riemannian_gradient, sym)


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)

SHAPES = [(7, 3), (40, 8), (16, 16)]


@pytest.mark.parametrize("n,r", SHAPES)
@pytest.mark.parametrize("lam", [0.0, 5e-3, 1.0])
def test_landing_field_equals_dense_formula(n, r, lam):
    g = torch.Generator().manual_seed(n * r)
    Z, G = torch.randn(n, r, generator=g), torch.randn(n, r, generator=g)
    # fp64, unnormalised Gaussian Z, G: |Λ| ≲ 100, sums of ≤ 2n = 80 terms: ≲ 80·EPS64·100 ≈ 2e-12 (measured 8.5e-14)
    assert torch.allclose(landing_field(Z, G, lam), dense_landing_field(Z, G, lam), atol=1e-10, rtol=0)


@pytest.mark.parametrize("n,r", SHAPES)
def test_landing_field_vanishes_at_a_critical_point(n, r):
    g = torch.Generator().manual_seed(0)
    Z = random_stiefel(n, r, generator=g)
    S = sym(torch.randn(r, r, generator=g))
    # fp64: cancelling terms of size |S| ≲ 5, r-term sums: ≈ r·EPS64·5 ≈ 2e-14 (measured 8.9e-16)
    assert landing_field(Z, Z @ S, 1.0).abs().max() < 1e-12
    assert landing_field(Z, torch.randn(n, r, generator=g), 1.0).abs().max() > 1e-3  # not zero elsewhere (measured ≥ 1.7)


def test_landing_terms_are_orthogonal_and_tangent_term_is_riemannian_gradient():
    g = torch.Generator().manual_seed(3)
    Z, G = torch.randn(30, 5, generator=g), torch.randn(30, 5, generator=g)
    tangent, penalty = landing_field(Z, G, 0.0), landing_field(Z, G, 1.0) - landing_field(Z, G, 0.0)
    # fp64, relative to the scale (Cauchy–Schwarz): a cosine of ≈ EPS64·√(nr) ≈ 3e-15 from round-off
    # (the penalty is a difference of two fields ~ ‖Z‖³); 1e-12 (measured 4e-17)
    assert abs((tangent * penalty).sum()) < 1e-12 * tangent.norm() * penalty.norm()
    X = random_stiefel(30, 5, generator=g)
    # fp64: |G| ≲ 3, r = 5-term products: ≈ 30·EPS64·3 ≈ 2e-14 (measured 2.2e-15)
    assert torch.allclose(landing_field(X, G, 0.0), riemannian_gradient(X, G), atol=1e-12, rtol=0)


def test_euclidean_field_is_gradient_of_penalised_loss():
    g = torch.Generator().manual_seed(4)
    Z, G, lam = torch.randn(9, 3, generator=g).requires_grad_(), torch.randn(9, 3, generator=g), 0.7
    loss = (G * Z).sum() + lam / 4 * ((Z.T @ Z - torch.eye(3)) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, Z)
    # fp64, 9×3 of O(1): the same products in another order, ≈ 10·EPS64·|grad| (measured: identical)
    assert torch.allclose(landing_field(Z.detach(), G, lam, field="euclidean"), grad, atol=1e-12, rtol=0)


def test_orthogonality_error_and_retractions():
    g = torch.Generator().manual_seed(5)
    Y = torch.randn(20, 4, generator=g)
    P = polar_retraction(Y)
    # polar factor: Y (YᵀY)^{-1/2}
    evals, evecs = torch.linalg.eigh(Y.T @ Y)
    # fp64, 20×4 Gaussian Y (κ(Y) ≈ 2): ≈ EPS64·κ²·√n ≈ 1e-14 (measured 7.2e-16)
    assert torch.allclose(P, Y @ evecs @ torch.diag(evals ** -0.5) @ evecs.T, atol=1e-12, rtol=0)
    for X in (P, qr_retraction(Y), random_stiefel(20, 4, generator=g)):
        assert orthogonality_error(X) < 1e-12  # fp64 QR/SVD: ≈ √(nr)·EPS64 ≈ 2e-15 (measured ≤ 1.5e-15)
    # ‖4I − I‖_F = 3·√4; fp64, 4·(1 + 1e-15) → torch.isclose's default rtol 1e-5 is 1e10 × that
    assert torch.isclose(orthogonality_error(2 * P), torch.tensor(3.0 * 2))


def test_tangent_projection():
    g = torch.Generator().manual_seed(6)
    X, D = random_stiefel(15, 4, generator=g), torch.randn(15, 4, generator=g)
    Delta = project_tangent(X, D)
    # fp64, 15-term products of O(1): ≈ 15·EPS64·3 ≈ 1e-14 (measured 3e-15, 8e-16)
    assert (X.T @ Delta + Delta.T @ X).abs().max() < 1e-12
    assert torch.allclose(project_tangent(X, Delta), Delta, atol=1e-12, rtol=0)  # a projection


def test_landing_rejects_bad_arguments():
    Z = torch.randn(5, 2)
    with pytest.raises(ValueError, match="landing_lambda"):
        landing_field(Z, Z, -1.0)
    with pytest.raises(ValueError, match="field"):
        landing_field(Z, Z, 1.0, field="riemannian")
    with pytest.raises(ValueError, match="tall"):
        landing_field(Z.T, Z.T, 1.0)


@pytest.mark.parametrize("field", ["landing", "euclidean"])
def test_a_batch_of_landing_fields_is_each_one(field):
    g = torch.Generator().manual_seed(5)
    Z, G = torch.randn(4, 30, 3, generator=g, dtype=torch.float64), torch.randn(4, 30, 3, generator=g, dtype=torch.float64)
    batched = landing_field(Z, G, 0.7, field=field)
    assert torch.allclose(batched, torch.stack([landing_field(z, q, 0.7, field=field) for z, q in zip(Z, G)]),
                          atol=1e-12, rtol=0)  # fp64, O(1) entries: the same products in another kernel


def test_polar_retraction_svd_driver():
    """A cuSOLVER driver is used for CUDA tensors only: on the CPU the result is the default driver's; a bad name raises."""
    Y = torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(polar_retraction(Y, svd_driver="gesvda"), polar_retraction(Y))  # the same kernel, bit for bit
    with pytest.raises(ValueError, match=r"svd_driver must be one of \(None, 'gesvd', 'gesvdj', 'gesvda'\), got 'fast'"):
        polar_retraction(Y, svd_driver="fast")
    if torch.cuda.is_available():  # gesvda returns NaN for a zero matrix (pytorch#136085): the default driver's factor
        Z = torch.stack([torch.zeros(20, 4), Y[0]]).cuda()
        result = polar_retraction(Z, svd_driver="gesvda")
        assert torch.isfinite(result).all()
        # fp64 (the fixture's default dtype), κ(Y) ≈ 2: the two drivers agree to ≈ EPS64·κ²·√n ≈ 1e-14
        assert torch.allclose(result[1], polar_retraction(Z[1:]).squeeze(0), atol=1e-10, rtol=0)


def test_gram_polar_retraction_is_the_polar_factor_off_a_tangent_step():
    g = torch.Generator().manual_seed(8)
    X = random_stiefel(40, 6, generator=g)
    Y = X + project_tangent(X, 0.5 * torch.randn(40, 6, generator=g))  # σ(Y) ∈ [1, √(1 + ‖Δ‖²)]
    # fp64, κ(Y)² ≈ 3: ≈ EPS64·κ²·√(nr) ≈ 1e-14 (measured 5e-16)
    assert torch.allclose(gram_polar_retraction(Y), polar_retraction(Y), atol=1e-12, rtol=0)
    Y32 = Y.float()
    # fp32, the same κ: ≈ EPS32·κ²·√(nr) ≈ 6e-6; 1e-4 (measured 1.1e-6)
    assert orthogonality_error(gram_polar_retraction(Y32)) < 1e-4
