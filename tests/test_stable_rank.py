"""Stable rank from factors (spectra), per-adapter tables of a model or a folder (inspection), direction
distances and their heatmap, the factored-vs-dense benchmark (bench)."""
import json
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from scipy.spatial.distance import pdist, squareform
from torch import nn

from polar_lib import PolarConfig, TopLoraConfig
from polar_lib.adapters.polar import PolarLinear
from polar_lib.bench import benchmark_stable_rank
from polar_lib.heatmap import plot_direction_heatmap
from polar_lib.inspection import adapter_factors, adapter_stable_ranks
from polar_lib.models import load_model
from polar_lib.spectra import DirectionDistances, direction_distances, singular_values, stable_rank

matplotlib.use("Agg")
F64 = torch.float64
EPS64, EPS32 = torch.finfo(F64).eps, torch.finfo(torch.float32).eps  # 2.2e-16, 1.2e-7
# fp64 stable ranks from two routes (factored QR + k×k SVD, dense SVD): both backward stable, so
# each σᵢ is off by ≲ EPS64·√(mn)·σ₁ ≈ 1e-14·σ₁ (m, n ≤ 200) and sr = Σ(σᵢ/σ₁)² by ≲ 2k of that
# ≈ 2e-13 (k ≤ 10); measured ≤ 3e-14. 1e-10 leaves ≥ 500× over the estimate.
SR_ATOL = 1e-10
# Rows of ΔW normalised by two fp64 routes: ≈ EPS64·(k + n) ≈ 1e-14 apart (measured ≤ 9e-16).
DISTANCE_ATOL = 1e-10


def dense_stable_rank(W: torch.Tensor) -> float:
    """The PoLAR code's definition (stable_rank/analyze_sr.py): ‖W‖_F² / ‖W‖_2²."""
    W = W.detach().to(F64)
    return float(torch.linalg.matrix_norm(W, "fro") ** 2 / torch.linalg.matrix_norm(W, 2) ** 2)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def low_rank(rows, cols, rank, seed):
    return randn(rows, rank, seed=seed) @ randn(rank, cols, seed=seed + 1)


def stiefel(n, k, seed):
    return torch.linalg.qr(randn(n, k, seed=seed)).Q


# (B, core or None, A): full-rank, tall/wide, k > m and n, and rank-deficient factors
FACTORS = {
    "50x5x40": lambda: (randn(50, 5, seed=1), None, randn(5, 40, seed=2)),
    "7x3x200": lambda: (randn(7, 3, seed=3), None, randn(3, 200, seed=4)),
    "6x10x7 (k > m, n)": lambda: (randn(6, 10, seed=5), None, randn(10, 7, seed=6)),
    "core 64x8x48": lambda: (randn(64, 8, seed=7), randn(8, 8, seed=8), randn(8, 48, seed=9)),
    "diagonal core as vector": lambda: (randn(30, 6, seed=10), randn(6, seed=11), randn(6, 20, seed=12)),
    "B rank 2 of 8": lambda: (low_rank(40, 8, 2, seed=13), None, randn(8, 30, seed=15)),
    "A with zero rows": lambda: (randn(40, 8, seed=16), None,
                                 torch.cat([randn(3, 30, seed=17), torch.zeros(5, 30, dtype=F64)])),
    "singular core": lambda: (randn(40, 8, seed=18), low_rank(8, 8, 3, seed=19), randn(8, 30, seed=21)),
    "rank 1 product": lambda: (low_rank(40, 8, 1, seed=22), None, low_rank(8, 30, 1, seed=24)),
    "duplicate columns": lambda: (randn(40, 4, seed=26).repeat(1, 2), None, randn(8, 30, seed=27)),
}


def dense(B, core, A):
    if core is None:
        return B @ A
    return B @ (torch.diag(core) if core.ndim == 1 else core) @ A


@pytest.mark.parametrize("case", list(FACTORS))
def test_factored_stable_rank_equals_dense_svd(case):
    B, core, A = FACTORS[case]()
    W = dense(B, core, A)
    assert stable_rank(B, A, core=core) == pytest.approx(dense_stable_rank(W), abs=SR_ATOL)
    assert stable_rank(W) == pytest.approx(dense_stable_rank(W), abs=SR_ATOL)
    sigma, sigma_dense = singular_values(B, A, core), torch.linalg.svdvals(W)
    # fp64 backward-stable SVDs: |δσ| ≲ EPS64·√(mn)·σ₁ ≈ 1e-14·σ₁ (measured ≤ 2e-16·σ₁)
    assert torch.allclose(sigma, sigma_dense[: len(sigma)], atol=1e-10 * sigma_dense[0], rtol=0)
    assert torch.all(sigma_dense[len(sigma):] < 1e-10 * sigma_dense[0])  # nothing left out (measured ≤ 3e-16·σ₁)
    rank = torch.linalg.matrix_rank(W).item()
    # sr ≥ 1 exactly (its first term is (σ₁/σ₁)² = 1); above the rank only by (round-off σ / σ₁)² ≈ 1e-32
    assert 1 - 1e-12 <= stable_rank(B, A, core=core) <= rank + 1e-12


def test_factored_stable_rank_accepts_float32_numpy_and_scale():
    B, A = randn(60, 6, seed=1), randn(6, 50, seed=2)
    expected = dense_stable_rank(B @ A)
    # Rounding B, A to fp32 (then computed in fp64) moves W by ‖E‖_F ≤ (EPS32/2)(‖B‖_F‖A‖₂ + ‖B‖₂‖A‖_F),
    # and sr = ‖W‖_F²/‖W‖₂² by ≤ 4·sr·‖E‖_F/σ₁ to first order: 3.2e-6 here (measured 1.1e-8).
    norms = (torch.linalg.matrix_norm(B) * torch.linalg.matrix_norm(A, 2)
             + torch.linalg.matrix_norm(B, 2) * torch.linalg.matrix_norm(A)).item()
    float32_atol = 4 * expected * (EPS32 / 2) * norms / torch.linalg.matrix_norm(B @ A, 2).item()
    assert stable_rank(B.float(), A.float()) == pytest.approx(expected, abs=float32_atol)  # computed in float64
    assert stable_rank(B.numpy(), A.numpy()) == pytest.approx(expected, abs=SR_ATOL)  # the same fp64 values
    # 1e±150 round each entry by ≤ EPS64 relative: sr moves by ≈ EPS64·k, well inside SR_ATOL
    assert stable_rank(1e-150 * B, 1e150 * A) == pytest.approx(expected, abs=SR_ATOL)  # s cancels, no overflow


@pytest.mark.parametrize("m,n,k", [(40, 30, 6), (100, 64, 16), (9, 9, 9)])
def test_orthonormal_factors_give_the_stable_rank_of_the_core(m, n, k):
    B, A = stiefel(m, k, seed=1), stiefel(n, k, seed=2).T
    theta = randn(k, k, seed=3)
    # fp64 QR factors are orthonormal to ≈ EPS64·√(mk): the same SR_ATOL as two SVD routes (measured ≤ 1.4e-14)
    assert stable_rank(B, A, core=theta) == pytest.approx(stable_rank(theta), abs=SR_ATOL)
    assert stable_rank(B, A, core=theta) == pytest.approx(dense_stable_rank(B @ theta @ A), abs=SR_ATOL)
    rotation = stiefel(k, k, seed=4)  # Θ ∝ orthogonal: sr = k, the only case where sr = r
    assert stable_rank(B, A, core=3.0 * rotation) == pytest.approx(k, abs=SR_ATOL)


@pytest.mark.parametrize("make", [
    lambda: (torch.zeros(20, 4, dtype=F64), None, randn(4, 10)),        # LoRA at init: B = 0
    lambda: (stiefel(20, 4, seed=1), torch.zeros(4, 4, dtype=F64), stiefel(10, 4, seed=2).T),  # PoLAR: Θ = 0
    lambda: (torch.zeros(20, 4), None, torch.zeros(4, 10)),
])
def test_zero_update_has_stable_rank_zero_without_warnings(make):
    B, core, A = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stable_rank(B, A, core=core) == 0.0
        assert stable_rank(dense(B, core, A)) == 0.0


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="share k"):
        stable_rank(randn(5, 3), randn(4, 6))
    with pytest.raises(ValueError, match="core must be 3×3"):
        stable_rank(randn(5, 3), randn(3, 6), core=randn(2, 2))
    with pytest.raises(ValueError, match="A must have 2 dimensions"):
        stable_rank(randn(5, 3), randn(3))
    with pytest.raises(ValueError, match="core needs both factors"):
        stable_rank(randn(5, 3), core=randn(3, 3))


# ---------------------------------------------------------------------------------------------
# Direction distances (the heatmap)
# ---------------------------------------------------------------------------------------------

def dense_distances(W: torch.Tensor) -> np.ndarray:
    """The PoLAR code's computation: normalise the rows, pdist, squareform."""
    W_tilde = W / torch.linalg.vector_norm(W, dim=1, keepdim=True)
    return squareform(pdist(W_tilde.numpy()))


@pytest.mark.parametrize("case", ["50x5x40", "core 64x8x48", "diagonal core as vector", "B rank 2 of 8",
                                  "rank 1 product"])
def test_factored_distances_equal_dense(case):
    B, core, A = FACTORS[case]()
    result = direction_distances(B, A, core=core)
    W = dense(B, core, A)
    np.testing.assert_allclose(result.distances, dense_distances(W), atol=DISTANCE_ATOL, rtol=0)
    np.testing.assert_array_equal(result.rows, np.arange(B.shape[0]))
    np.testing.assert_allclose(direction_distances(W).distances, result.distances, atol=DISTANCE_ATOL, rtol=0)
    assert sorted(result.order) == list(range(B.shape[0]))
    assert result.distances.min() >= 0 and result.distances.max() <= 2  # exact: clamped to [0, 2]
    np.testing.assert_array_equal(np.diag(result.distances), 0)
    np.testing.assert_array_equal(result.distances, result.distances.T)


def test_distances_sample_seeded_rows_and_drop_zero_rows():
    B, A = randn(300, 6, seed=1), randn(6, 40, seed=2)
    B[[3, 77]] = 0  # two zero rows of ΔW
    result = direction_distances(B, A, max_rows=100, seed=5)
    again = direction_distances(B, A, max_rows=100, seed=5)
    other = direction_distances(B, A, max_rows=100, seed=6)
    np.testing.assert_array_equal(result.rows, again.rows)
    np.testing.assert_array_equal(result.distances, again.distances)
    assert not np.array_equal(result.rows, other.rows)
    assert len(result.rows) <= 100 and np.all(np.diff(result.rows) > 0)
    full = direction_distances(B, A)
    assert len(full.rows) == 298 and 3 not in full.rows and 77 not in full.rows
    np.testing.assert_allclose(result.distances, dense_distances((B @ A)[result.rows]), atol=DISTANCE_ATOL, rtol=0)
    np.testing.assert_allclose(full.ordered, full.distances[np.ix_(full.order, full.order)])


def test_distances_of_a_zero_update_are_empty():
    result = direction_distances(torch.zeros(10, 3), torch.randn(3, 8))
    assert result.distances.shape == (0, 0) and len(result.order) == 0 and len(result.rows) == 0


def test_collapsed_directions_give_distances_zero_or_two():
    """Rank 1: every row is ± one direction, so every distance is 0 or 2 (one dark block per sign)."""
    u, v = randn(30, 1, seed=1), randn(1, 20, seed=2)
    d = direction_distances(u, v).distances
    # fp64: the normalised rows are ±one unit vector up to ≈ EPS64·√k, so d is 0 or 2 to ≈ 1e-15 (measured 0)
    assert np.all(np.minimum(d, 2 - d) < 1e-12)


def test_heatmap_plot_uses_vmin_0_vmax_2_in_linkage_order():
    B, A = randn(40, 4, seed=1), randn(4, 30, seed=2)
    result = direction_distances(B, A)
    ax = plot_direction_heatmap(result, title="q_proj")
    image = ax.get_images()[0]
    assert image.get_clim() == (0.0, 2.0)
    np.testing.assert_array_equal(np.asarray(image.get_array()), result.ordered)
    ax2 = plot_direction_heatmap(result.distances, colorbar=False)  # a bare matrix, original order
    np.testing.assert_array_equal(np.asarray(ax2.get_images()[0].get_array()), result.distances)
    matplotlib.pyplot.close("all")


# ---------------------------------------------------------------------------------------------
# Adapters (polar_lib.inspection): PEFT models, saved folders, the delta_factors contract, TopLoRA exclusion
# ---------------------------------------------------------------------------------------------

def lora_model(**kw):
    model, _ = load_model("tiny-llama", dtype=F64)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **kw)
    return get_peft_model(model, config)


def check_against_get_delta_weight(frame, model, adapter="default"):
    layers = {name.removeprefix("base_model.model."): m for name, m in model.named_modules()
              if isinstance(m, LoraLayer) and adapter in {*m.lora_A, *m.lora_embedding_A}}
    assert set(frame["name"]) == set(layers)
    for row in frame.itertuples():
        delta = layers[row.name].get_delta_weight(adapter).detach().to(F64)
        assert row.stable_rank == pytest.approx(dense_stable_rank(delta), abs=SR_ATOL)  # fp64 models (measured 3e-14)
        sigma = torch.linalg.svdvals(delta)[: row.rank].numpy()
        # fp64: |δσᵢ| ≲ EPS64·√(mn)·σ₁ ≈ 2e-14·σ₁ and σᵢ/σ₁ ≳ 0.1 for these random rank-4 updates
        # (measured: ≤ 5e-7 of the tolerance)
        np.testing.assert_allclose(row.singular_values, sigma, rtol=1e-8, atol=1e-12)


def test_lora_model_table_matches_dense_svd_of_get_delta_weight():
    model = lora_model()
    frame = adapter_stable_ranks(model)
    assert list(frame.columns[:6]) == ["layer", "module", "method", "rank", "stable_rank", "singular_values"]
    assert len(frame) == 4  # 2 layers × (q_proj, v_proj)
    assert sorted(zip(frame["layer"], frame["module"])) == [(0, "q_proj"), (0, "v_proj"), (1, "q_proj"), (1, "v_proj")]
    assert set(frame["method"]) == {"lora"} and set(frame["rank"]) == {4} and set(frame["scale"]) == {2.0}
    assert frame.loc[0, "name"] == "model.layers.0.self_attn.q_proj"
    assert (frame["stable_rank"] >= 1).all() and (frame["stable_rank"] <= 4).all()  # exact: each (σᵢ/σ₁)² ≤ 1
    check_against_get_delta_weight(frame, model)


def test_zero_lora_update_reports_zero():
    model, _ = load_model("tiny-llama", dtype=F64)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"]))  # B = 0 at init
    frame = adapter_stable_ranks(model)
    assert (frame["stable_rank"] == 0).all()
    assert all(np.all(s == 0) for s in frame["singular_values"])


def test_dora_is_named_and_measured_as_peft_defines_its_delta():
    model = lora_model(use_dora=True)
    frame = adapter_stable_ranks(model)
    assert set(frame["method"]) == {"dora"}
    check_against_get_delta_weight(frame, model)


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings")
def test_embedding_adapters_are_included():
    model, _ = load_model("tiny-llama", dtype=F64)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False))
    frame = adapter_stable_ranks(model)
    assert "embed_tokens" in set(frame["module"])
    assert frame.loc[frame["module"] == "embed_tokens", "layer"].isna().all()
    check_against_get_delta_weight(frame, model)


def test_multiple_adapters_and_adapter_filter():
    model = lora_model()
    model.add_adapter("second", LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    frame = adapter_stable_ranks(model)
    assert sorted(frame.groupby("adapter").size().items()) == [("default", 4), ("second", 2)]
    only = adapter_stable_ranks(model, adapter_name="second")
    assert set(only["adapter"]) == {"second"} and set(only["rank"]) == {2}
    check_against_get_delta_weight(only, model, adapter="second")


@pytest.mark.parametrize("kwargs", [
    dict(use_rslora=True, rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 3}),  # scale as PEFT's
    dict(use_dora=True),  # the magnitude vector is saved too, and ignored
    dict(lora_bias=True),  # lora_B.bias is saved beside lora_B.weight
], ids=["rslora-patterns", "dora", "lora_bias"])
@pytest.mark.filterwarnings("ignore::UserWarning")  # PEFT's: lora_bias on a bias-free layer
def test_saved_folder_equals_model(kwargs, tmp_path):
    model = lora_model(**kwargs)
    model.save_pretrained(tmp_path)
    from_model, from_folder = adapter_stable_ranks(model), adapter_stable_ranks(tmp_path)
    if "rank_pattern" in kwargs:
        assert set(from_model["rank"]) == {2, 4}
    for column in ["name", "layer", "module", "method", "rank", "adapter"]:
        assert list(from_model[column]) == list(from_folder[column]), column
    # The folder holds the same fp64 tensors (safetensors keeps the dtype) and the same α/r: the same
    # fp64 operations on the same values, equal up to a few EPS64 (measured: identical)
    np.testing.assert_allclose(from_folder["scale"], from_model["scale"], rtol=1e-12)
    np.testing.assert_allclose(from_folder["stable_rank"], from_model["stable_rank"], rtol=1e-12)
    for a, b in zip(from_folder["singular_values"], from_model["singular_values"]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert adapter_stable_ranks(str(tmp_path)).shape == from_folder.shape


def polar_model(theta="full"):
    model, _ = load_model("tiny-llama", dtype=F64)
    model = get_peft_model(model, PolarConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], theta=theta))
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, PolarLinear):
            m.lora_S["default"].weight.data = torch.randn(4, 4, generator=g, dtype=F64)
    return model


@pytest.mark.parametrize("theta", ["full", "diagonal", "fixed_identity"])
def test_polar_model_and_folder(theta, tmp_path):
    model = polar_model(theta)
    frame = adapter_stable_ranks(model)
    assert set(frame["method"]) == {"polar"}
    check_against_get_delta_weight(frame, model)
    if theta == "fixed_identity":  # orthonormal B, Aᵀ at init and Θ = I: sr = r
        # orthogonal_ runs in fp32 (then cast to fp64): ‖BᵀB − I‖₂, ‖AAᵀ − I‖₂ ≤ δ ≲ n·EPS32 ≈ 1.5e-5 each
        # (n ≤ 128), so every σᵢ² ∈ [1 − 2δ, 1 + 2δ] and |sr − r| ≤ 4r·δ ≈ 2.4e-4 (measured 1.6e-6)
        np.testing.assert_allclose(frame["stable_rank"], 4, atol=2.5e-4, rtol=0)
    model.save_pretrained(tmp_path)
    folder = adapter_stable_ranks(tmp_path)
    assert set(folder["method"]) == {"polar"}
    merged = frame.merge(folder, on="name", suffixes=("", "_folder"))
    assert len(merged) == len(frame) == 4
    # same fp64 tensors and operations (fixed_identity: the folder's Θ = I replaces the saved one; measured: identical)
    np.testing.assert_allclose(merged["stable_rank_folder"], merged["stable_rank"], rtol=1e-12)


class FakeLayer(nn.Module, LoraLayer):
    """A layer with the ``delta_factors`` contract only (as PoLAR/StelLA layers expose it)."""

    def __init__(self, B, core, A, scale, adapter="default"):
        nn.Module.__init__(self)
        self.lora_A = nn.ModuleDict({adapter: nn.Linear(A.shape[1], A.shape[0], bias=False)})
        self.lora_B = nn.ModuleDict({adapter: nn.Linear(B.shape[1], B.shape[0], bias=False)})
        self.factors = (B, core, A, scale)

    def delta_factors(self, adapter):
        return self.factors


def fake_model(token_dependent_blocks=()):
    """Three blocks with a fake down_proj; those of ``token_dependent_blocks`` hold the adapter "gated",
    whose config (``peft_config``, as a PEFT model's) is TopLoRA's."""
    blocks = nn.ModuleList()
    for i in range(3):
        B, core, A = stiefel(32, 4, seed=i), randn(4, 4, seed=10 + i), stiefel(24, 4, seed=20 + i).T
        block = nn.Module()
        block.mlp = nn.Module()
        block.mlp.down_proj = FakeLayer(B, core, A, 0.5, "gated" if i in token_dependent_blocks else "default")
        blocks.append(block)
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = blocks
    if token_dependent_blocks:
        model.peft_config = {"default": LoraConfig(), "gated": TopLoraConfig()}
    return model


def test_delta_factors_contract_and_core():
    model = fake_model()
    frame = adapter_stable_ranks(model)
    assert list(frame["layer"]) == [0, 1, 2] and set(frame["module"]) == {"down_proj"}
    for row, i in zip(frame.itertuples(), range(3)):
        core = randn(4, 4, seed=10 + i)
        assert row.stable_rank == pytest.approx(stable_rank(core), abs=SR_ATOL)  # orthonormal (fp64 QR) B, Aᵀ
        # fp64: relative σ error ≈ EPS64·√(mn)·σ₁/σᵢ ≈ 1e-13 for this core's σ₁/σ₄ (measured 2.4e-16)
        np.testing.assert_allclose(row.singular_values, 0.5 * torch.linalg.svdvals(core).numpy(), rtol=1e-10)
    factors = adapter_factors(model)
    assert factors[1].layer == 1 and factors[1].module == "down_proj" and factors[1].core is not None
    assert factors[1].delta_weight().shape == (32, 24)


def test_token_dependent_layers_are_excluded_with_a_warning():
    model = fake_model(token_dependent_blocks=(1,))
    with pytest.warns(UserWarning, match=r"depends on the token.*model\.layers\.1\.mlp\.down_proj"):
        frame = adapter_stable_ranks(model)
    assert list(frame["layer"]) == [0, 2]


def test_token_dependent_folder_is_excluded_with_a_warning(tmp_path):
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": torch.randn(4, 16), f"{prefix}.lora_B.weight": torch.randn(16, 4),
               f"{prefix}.lora_lambda.weight": torch.randn(4, 16)}, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "TOPLORA", "r": 4, "lora_alpha": 8}))
    with pytest.warns(UserWarning, match="depends on the token"):
        frame = adapter_stable_ranks(tmp_path)
    assert frame.empty


def test_folder_of_an_unregistered_peft_type_is_refused(tmp_path):
    """What ΔW is comes from the registry (methods.delta_for): a peft_type no method has is named, not guessed."""
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": torch.randn(4, 16), f"{prefix}.lora_B.weight": torch.randn(16, 4)},
              tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "UNKNOWN", "r": 4, "lora_alpha": 8}))
    with pytest.raises(ValueError, match=r"no method of polar_lib.methods.METHODS has peft_type 'UNKNOWN' \(known: LORA, "):
        adapter_stable_ranks(tmp_path)


def test_folder_with_vector_core_and_missing_folder(tmp_path):
    """A diagonal core saved as a vector (StelLA's ``lora_S.weight`` with diag_s)."""
    prefix = "base_model.model.model.layers.3.mlp.up_proj"
    B, A = stiefel(20, 3, seed=1).contiguous(), stiefel(12, 3, seed=2).T.contiguous()
    S = torch.tensor([3.0, 2.0, 1.0], dtype=F64)
    save_file({f"{prefix}.lora_A.weight": A, f"{prefix}.lora_B.weight": B, f"{prefix}.lora_S.weight": S},
              tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "STELLA", "r": 3, "lora_alpha": 6}))
    frame = adapter_stable_ranks(tmp_path)
    columns = ["layer", "module", "method", "rank", "scale"]
    assert frame.loc[0, columns].tolist() == [3, "up_proj", "stella", 3, 2.0]
    # fp64 QR of 20×3 / 12×3 orthonormal factors and a 3×3 SVD: ≈ 10·EPS64 (measured 2e-16, 1.3e-15 relative)
    assert frame.loc[0, "stable_rank"] == pytest.approx((9 + 4 + 1) / 9, abs=1e-12)
    np.testing.assert_allclose(frame.loc[0, "singular_values"], [6.0, 4.0, 2.0], rtol=1e-12)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        adapter_stable_ranks(tmp_path.parent)  # a folder, but not an adapter
    with pytest.raises(FileNotFoundError, match="not a folder"):
        adapter_stable_ranks(tmp_path / "missing")  # neither a folder nor a valid hub id


# ---------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------

def test_benchmark_reports_both_routes_and_restores_threads():
    """Correctness only: the speed-up itself is measured by ``python -m polar_lib.bench`` (its
    factored-vs-dense stable rank at 4096², rank 32), never asserted in a test."""
    threads = torch.get_num_threads()
    result = benchmark_stable_rank(256, 256, 8, repeats=1, factored_repeats=1, num_threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert result["abs_difference"] < SR_ATOL and result["num_threads"] == 1  # fp64 (measured 3e-14 at 1024²)
    assert {"factored_s", "dense_s", "ratio"} <= set(result) and result["ratio"] > 0
