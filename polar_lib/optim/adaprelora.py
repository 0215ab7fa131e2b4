"""AdaPreLoRA: an Adafactor-preconditioned update for the factors of ΔW = s · B A.

Plain LoRA parametrisation (B = ``lora_B`` m×r, A = ``lora_A`` r×n, s = ``scaling``); only the
optimizer differs. AdaPreLoRA (arXiv 2605.08734; no public code, full text not available to us)
keeps Adafactor's row and column statistics of the gradient G = ∂L/∂ΔW,

    ρ_t = β̂₂ ρ_{t−1} + (1 − β̂₂) rowsum(G∘G + ε₁) ∈ R^m,   κ_t likewise with colsum ∈ R^n,
    V̂ = ρκᵀ / Σρ,   P = diag(√(ρ/Σρ)),   Q = diag(√κ),   H(Y) = P Y Q,   H⁻¹G = G ⊘ √V̂,

and moves the factors so that J = B ΔA + ΔB A is the H-orthogonal projection of H⁻¹G onto
{B X + Y A} (the minimiser of Σᵢⱼ pᵢ qⱼ (J − H⁻¹G)ᵢⱼ²) and, within the r²-dimensional gauge
family (ΔA + K A, ΔB − B K) of such pairs, the one of least H-weighted imbalance ‖ΔB A − B ΔA‖²_H.
With g_A = BᵀG, g_B = G Aᵀ, M_B = BᵀPB, M_A = AQAᵀ (all r×r) the closed form is

    ΔA = M_B⁻¹ [ g_A Q⁻¹ − ½ (g_A Aᵀ) M_A⁻¹ A ],   ΔB = [ P⁻¹ g_B − ½ B M_B⁻¹ (Bᵀ g_B) ] M_A⁻¹,

O((m+n) r² + r³) per layer, never an m×n matrix. The formulas are our derivation
(docs/adaprelora.md, 'Update'), matching a third-party transcription of the paper's Thm 3.2, and
are checked in float64 against a dense weighted least-squares solve in ``tests/test_adaprelora.py``.

Where the paper is open, this module follows docs/adaprelora.md, 'Choices where the paper is open':

- **Statistics from the surrogate gradient** G̃ = ḡ_B A + B̄ ḡ_A, computed from the factors in
  O((m+n) r²) (``adafactor_statistics``); the exact G is m×n and not available from autograd.
  ``exact_statistics=True`` (diagnostics only) captures the exact G with hooks instead.
- β̂₂,t = 1 − t^(−0.8) (Adafactor's schedule, no bias correction; a fixed ``beta2`` is optional),
  ε₁ = 1e-30, statistics kept in fp32 (fp64 for an fp64 model).
- Damped inverses (M + δ (tr M / r) I)⁻¹ with δ = 1e-6, by Cholesky in fp32; tr M = 0 (B = 0 at
  LoRA's init) makes that inverse 0, so then ΔA = 0 and ΔB = P⁻¹ g_B M_A⁻¹.
- LoRA scale: autograd gives ∂L/∂A = s BᵀG, ∂L/∂B = s G Aᵀ. The closed form runs on B̄ = s B,
  ḡ_A = ∂L/∂A, ḡ_B = (∂L/∂B)/s and returns (ΔA, ΔB̄); the factors move by dA = ΔA, dB = ΔB̄/s,
  so the step of s B A does not depend on s.
- ``variant="adamw"`` (default): (dA, dB) replace the factors' gradients and a base AdamW
  (betas 0.9/0.999, eps 1e-8, weight decay 0) steps (the Scaled-AdamW pattern, inferred).
  ``variant="sgd"``: a base SGD steps, so p ← p − lr·d; optional EMA ``beta1`` of (ḡ_A, ḡ_B)
  before the closed form (default 0), and Adafactor's update clipping d ← d / max(1, RMS(J)/c)
  with c = ``clip_threshold`` (default 1; RMS(J) computed from the factors).
- Order inside ``step()``: (Trainer's gradient clipping and GradScaler's unscaling happen before
  ``step()``) → statistics → closed form → base step. Other trainable parameters: base step.
- State per layer, beyond the base optimizer's moments: ρ (m), κ (n), step (1) = m + n + 1 numbers
  (plus the two gradient EMAs, m·r + r·n, only when ``beta1 > 0``), kept in the optimizer's ``state``
  under the key ``"adaprelora:<module name>:<adapter>"``, so ``state_dict``/``load_state_dict``
  save and resume it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from .._checks import check_choice
from .base import check_optimizer_class, hooked_step, split_param_groups

DEFAULT_LR = 4e-4            # docs/adaprelora.md, 'Defaults' (paper's GPT-2 range 1e-4 to 8e-4)
BETA2_DECAY = -0.8           # β̂₂,t = 1 − t^(−0.8)
EPS1 = 1e-30                 # ε₁ inside rowsum(G∘G + ε₁)
DAMPING = 1e-6               # δ in (M + δ (tr M / r) I)⁻¹
VARIANTS = ("adamw", "sgd")
STATE_PREFIX = "adaprelora:"


# --------------------------------------------------------------------------------------------
# The maths, on tensors (any float dtype; the tests run it in float64)
# --------------------------------------------------------------------------------------------

def adafactor_statistics(B: torch.Tensor, A: torch.Tensor, g_B: torch.Tensor, g_A: torch.Tensor):
    """Row and column sums of G̃∘G̃ for the surrogate gradient G̃ = g_B A + B g_A, never forming G̃.

    B : (m, r), A : (r, n), g_B : (m, r), g_A : (r, n) — for a LoRA layer the scaled factor
    B̄ = s B and ḡ_B = (∂L/∂B)/s, ḡ_A = ∂L/∂A. With U = [g_B, B] (m×2r), V = [A; g_A] (2r×n),
    G̃ = U V and rowsum(G̃∘G̃) = rowsum((U (V Vᵀ)) ∘ U), colsum(G̃∘G̃) = colsum((Vᵀ (UᵀU)) ∘ Vᵀ):
    exact, O((m+n) r²) time and memory. Returns ``(rowsum (m,), colsum (n,))``, clamped at 0
    (the Gram route can round a true 0 to a tiny negative).
    """
    U = torch.cat([g_B, B], dim=1)
    V = torch.cat([A, g_A], dim=0)
    rowsum = ((U @ (V @ V.T)) * U).sum(dim=1)
    colsum = ((V.T @ (U.T @ U)) * V.T).sum(dim=1)
    return rowsum.clamp_min(0), colsum.clamp_min(0)


def beta2_at(step: int, beta2: float | None = None) -> float:
    """β̂₂ at step t ≥ 1: 1 − t^(−0.8) (so 0 at t = 1), or the fixed ``beta2`` if given."""
    return float(beta2) if beta2 is not None else 1.0 - float(step) ** BETA2_DECAY


def update_statistics(rho: torch.Tensor, kappa: torch.Tensor, rowsum: torch.Tensor, colsum: torch.Tensor,
                      beta2: float, eps1: float = EPS1):
    """ρ ← β₂ρ + (1−β₂)(rowsum + n ε₁), κ ← β₂κ + (1−β₂)(colsum + m ε₁): Adafactor's EMA of the
    row/column sums of G∘G + ε₁ for G of shape (m, n) = (len(rowsum), len(colsum))."""
    m, n = rowsum.shape[0], colsum.shape[0]
    rho = beta2 * rho + (1 - beta2) * (rowsum + n * eps1)
    kappa = beta2 * kappa + (1 - beta2) * (colsum + m * eps1)
    return rho, kappa


def preconditioner_diagonals(rho: torch.Tensor, kappa: torch.Tensor):
    """p = √(ρ/Σρ), q = √κ: P = diag(p), Q = diag(q), √V̂ = p qᵀ."""
    return (rho / rho.sum()).sqrt(), kappa.sqrt()


def damped_inverse(M: torch.Tensor, damping: float = DAMPING) -> torch.Tensor:
    """(M + δ (tr M / r) I)⁻¹ for a symmetric PSD r×r ``M``, by Cholesky in ≥ fp32; 0 when tr M = 0.

    Falls back to the pseudo-inverse if Cholesky fails (a numerically singular M with δ = 0 or a
    rank-deficient factor in fp32). Returns the dtype of ``M`` promoted to at least fp32.
    """
    M = M.to(torch.promote_types(M.dtype, torch.float32))
    r = M.shape[-1]
    eye = torch.eye(r, dtype=M.dtype, device=M.device)
    trace = torch.diagonal(M).sum()
    zero = trace == 0
    damped = M + (damping * trace / r + zero.to(M.dtype)) * eye  # tr M = 0: invert I, then zero it
    L, info = torch.linalg.cholesky_ex(damped)
    if info.item() != 0:
        inverse = torch.linalg.pinv(damped, hermitian=True)
    else:
        inverse = torch.cholesky_inverse(L)
    return torch.where(zero, torch.zeros_like(inverse), inverse)


def adaprelora_direction(B: torch.Tensor, A: torch.Tensor, g_A: torch.Tensor, g_B: torch.Tensor,
                         rho: torch.Tensor, kappa: torch.Tensor, damping: float = DAMPING):
    """The AdaPreLoRA closed form: ``(ΔA (r, n), ΔB (m, r))`` for ΔW = B A with g_A = BᵀG, g_B = G Aᵀ.

    ΔA = M_B⁻¹ [g_A Q⁻¹ − ½ (g_A Aᵀ) M_A⁻¹ A],  ΔB = [P⁻¹ g_B − ½ B M_B⁻¹ (Bᵀ g_B)] M_A⁻¹,
    M_B = BᵀPB, M_A = AQAᵀ, P = diag(√(ρ/Σρ)), Q = diag(√κ); inverses damped (``damped_inverse``;
    ``damping=0`` gives the exact formula). J = B ΔA + ΔB A is then the P,Q-weighted projection of
    G ⊘ √V̂ onto {BX + YA} with least weighted imbalance ‖ΔB A − B ΔA‖²_H. For a LoRA layer pass
    B̄ = s B and ḡ_B = (∂L/∂B)/s (module docstring). O((m+n) r² + r³).
    """
    p, q = preconditioner_diagonals(rho, kappa)
    M_B = B.T @ (p[:, None] * B)
    M_A = (A * q) @ A.T
    M_B_inv = damped_inverse(M_B, damping).to(B.dtype)
    M_A_inv = damped_inverse(M_A, damping).to(A.dtype)
    dA = M_B_inv @ (g_A / q - 0.5 * (g_A @ A.T) @ (M_A_inv @ A))
    dB = (g_B / p[:, None] - 0.5 * B @ (M_B_inv @ (B.T @ g_B))) @ M_A_inv
    return dA, dB


def factored_frobenius_sq(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """‖U V‖_F² = Σ (UᵀU) ∘ (V Vᵀ) for U (m, k), V (k, n), in O((m+n) k²)."""
    return ((U.T @ U) * (V @ V.T)).sum()


def update_rms(B: torch.Tensor, A: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor) -> torch.Tensor:
    """RMS of J = B dA + dB A (m×n) from the factors: ‖[B, dB][dA; A]‖_F / √(mn)."""
    m, n = B.shape[0], A.shape[1]
    sq = factored_frobenius_sq(torch.cat([B, dB], dim=1), torch.cat([dA, A], dim=0))
    return (sq.clamp_min(0) / (m * n)).sqrt()


# --------------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------------

@dataclass
class _Factors:
    """One (A, B) pair of a LoRA layer's adapter, and its exact-statistics buffer (if any)."""
    key: str
    module: nn.Module
    adapter: str
    A: nn.Parameter
    B: nn.Parameter
    exact_G: torch.Tensor | None = None
    hooks: list = field(default_factory=list)

    @property
    def scaling(self) -> float:
        return float(self.module.scaling[self.adapter])


def lora_factor_pairs(model: nn.Module) -> list[_Factors]:
    """Every trainable (A, B) pair of every ``LoraLayer`` (PoLAR-style subclasses included) whose
    ``lora_A``/``lora_B`` are ``nn.Linear``, found by module type, in ``named_modules`` order."""
    pairs = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in module.lora_A:
            if adapter not in module.lora_B:
                continue
            lin_A, lin_B = module.lora_A[adapter], module.lora_B[adapter]
            if not (isinstance(lin_A, nn.Linear) and isinstance(lin_B, nn.Linear)):
                continue
            A, B = lin_A.weight, lin_B.weight
            if A.requires_grad and B.requires_grad:
                pairs.append(_Factors(f"{STATE_PREFIX}{name}:{adapter}", module, adapter, A, B))
    return pairs


def _install_exact_hooks(pair: _Factors) -> None:
    """Accumulate the exact G = Σ_tokens δy xᵀ (m×n) of ΔW = s B A into ``pair.exact_G``.

    x is the input of ``lora_A`` (after dropout); ∂L/∂(lora_B output) = s δy. Each forward pairs
    its own x with its own backward, so micro-batches add up; a backward that finds B.grad = None
    (gradients zeroed since the last one) restarts the sum.
    """
    lin_A, lin_B = pair.module.lora_A[pair.adapter], pair.module.lora_B[pair.adapter]
    stash = {}

    def keep_input(_module, args):
        stash["x"] = args[0]

    def hook_output(_module, _args, output):
        x = stash.pop("x", None)
        if x is None or not output.requires_grad:
            return

        def accumulate(grad_out):
            with torch.no_grad():
                if pair.B.grad is None:
                    pair.exact_G = None
                dtype = torch.promote_types(grad_out.dtype, torch.float32)
                dy = grad_out.reshape(-1, grad_out.shape[-1]).to(dtype) / pair.scaling
                G = dy.T @ x.detach().reshape(-1, x.shape[-1]).to(dy.dtype)
                pair.exact_G = G if pair.exact_G is None else pair.exact_G + G

        output.register_hook(accumulate)

    pair.hooks = [lin_A.register_forward_pre_hook(keep_input), lin_B.register_forward_hook(hook_output)]


class AdaPreLoRAMixin:
    """``step()`` of AdaPreLoRA on top of a base optimizer class (see the module docstring)."""

    def _setup_adaprelora(self, pairs, variant, beta2, eps1, damping, beta1, clip_threshold, exact_statistics):
        self.adaprelora_pairs = pairs
        self.adaprelora_defaults = dict(variant=variant, beta2=beta2, eps1=eps1, damping=damping, beta1=beta1,
                                        clip_threshold=clip_threshold, exact_statistics=exact_statistics)
        if exact_statistics:
            for pair in pairs:
                _install_exact_hooks(pair)

    def step(self, closure=None):
        return hooked_step(super().step, closure, before_step=self._precondition, after_step=self._forget_exact_G)

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        self._forget_exact_G()

    def _forget_exact_G(self) -> None:
        for pair in self.adaprelora_pairs:
            pair.exact_G = None

    def remove_hooks(self) -> None:
        """Remove the exact-statistics hooks (``exact_statistics=True``) from the model."""
        for pair in self.adaprelora_pairs:
            for handle in pair.hooks:
                handle.remove()
            pair.hooks = []

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        ours = {pair.key for pair in self.adaprelora_pairs}
        saved = {k for k in self.state if isinstance(k, str) and k.startswith(STATE_PREFIX)}
        if saved and saved != ours:
            missing, unknown = sorted(ours - saved)[:3], sorted(saved - ours)[:3]
            raise ValueError("AdaPreLoRA state does not match this model's LoRA layers "
                             f"(e.g. not saved: {missing}, saved but not in the model: {unknown}); "
                             "create the optimizer on the same (wrapped) model that was saved")

    def _precondition(self) -> None:
        cfg = self.adaprelora_defaults
        for pair in self.adaprelora_pairs:
            A, B = pair.A, pair.B
            if A.grad is None and B.grad is None:
                continue
            s = pair.scaling
            if s == 0:
                raise ValueError(f"AdaPreLoRA: {pair.key} has scaling 0 (lora_alpha = 0), so ΔW = s·BA ≡ 0")
            dtype = torch.promote_types(A.dtype, torch.float32)
            A_ = A.detach().to(dtype)
            B_bar = s * B.detach().to(dtype)
            g_A = A.grad.to(dtype) if A.grad is not None else torch.zeros_like(A_)
            g_B = B.grad.to(dtype) / s if B.grad is not None else torch.zeros_like(B_bar)
            m, n = B.shape[0], A.shape[1]

            state = self.state[pair.key]
            if not state:
                state["rho"] = torch.zeros(m, dtype=dtype, device=A.device)
                state["kappa"] = torch.zeros(n, dtype=dtype, device=A.device)
                state["step"] = torch.tensor(0.0)
            step = int(state["step"].item()) + 1

            if cfg["exact_statistics"]:
                if pair.exact_G is None:
                    raise RuntimeError(f"exact_statistics: no exact gradient was captured for {pair.key} although "
                                       "its factors have gradients (a forward other than y += s·B A x, gradient "
                                       "checkpointing, or hooks removed); use exact_statistics=False")
                G = pair.exact_G.to(dtype)
                # Match G to the clipped / unscaled autograd gradients (one scale c for the layer).
                eA, eB = B_bar.T @ G, G @ A_.T
                num, den = (eA * g_A).sum() + (eB * g_B).sum(), eA.square().sum() + eB.square().sum()
                G = G * torch.where(den > 0, num / den, torch.ones_like(den))
                rowsum, colsum = G.square().sum(dim=1), G.square().sum(dim=0)
            else:
                rowsum, colsum = adafactor_statistics(B_bar, A_, g_B, g_A)
            rho, kappa = update_statistics(state["rho"].to(A.device, dtype), state["kappa"].to(A.device, dtype),
                                           rowsum, colsum, beta2_at(step, cfg["beta2"]), cfg["eps1"])
            state["rho"], state["kappa"], state["step"] = rho, kappa, torch.tensor(float(step))

            if cfg["beta1"]:
                b1 = cfg["beta1"]
                if "exp_avg_A" not in state:
                    state["exp_avg_A"], state["exp_avg_B"] = torch.zeros_like(g_A), torch.zeros_like(g_B)
                state["exp_avg_A"] = b1 * state["exp_avg_A"].to(A.device, dtype) + (1 - b1) * g_A
                state["exp_avg_B"] = b1 * state["exp_avg_B"].to(A.device, dtype) + (1 - b1) * g_B
                g_A, g_B = state["exp_avg_A"], state["exp_avg_B"]

            dA, dB_bar = adaprelora_direction(B_bar, A_, g_A, g_B, rho, kappa, cfg["damping"])
            if cfg["variant"] == "sgd" and cfg["clip_threshold"] is not None:
                shrink = (update_rms(B_bar, A_, dA, dB_bar) / cfg["clip_threshold"]).clamp_min(1.0)
                dA, dB_bar = dA / shrink, dB_bar / shrink
            _write_grad(A, dA)
            _write_grad(B, dB_bar / s)


def _write_grad(param: nn.Parameter, direction: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = direction.to(param.dtype)
    else:
        param.grad.copy_(direction)


_CLASSES: dict[type, type] = {}


def adaprelora_class(optimizer_cls: type[torch.optim.Optimizer]) -> type:
    """The subclass of ``optimizer_cls`` with AdaPreLoRA's ``step()`` (cached per class)."""
    check_optimizer_class(optimizer_cls)
    if optimizer_cls not in _CLASSES:
        name = f"AdaPreLoRA{optimizer_cls.__name__}"
        _CLASSES[optimizer_cls] = type(name, (AdaPreLoRAMixin, optimizer_cls),
                                       {"__module__": __name__, "__qualname__": name})
    return _CLASSES[optimizer_cls]


AdaPreLoRAAdamW = adaprelora_class(torch.optim.AdamW)  # module-level names: picklable
AdaPreLoRASGD = adaprelora_class(torch.optim.SGD)


def create_adaprelora_optimizer(model: nn.Module, *, lr: float = DEFAULT_LR, variant: str = "adamw",
                                optimizer_cls: type[torch.optim.Optimizer] | None = None,
                                beta2: float | None = None, eps1: float = EPS1, damping: float = DAMPING,
                                beta1: float = 0.0, clip_threshold: float | None = 1.0,
                                exact_statistics: bool = False, weight_decay: float = 0.0,
                                decay_factors: bool = False, **optimizer_kwargs) -> torch.optim.Optimizer:
    """An optimizer that steps every LoRA (B, A) pair of ``model`` along the AdaPreLoRA direction.

    Parameters
    ----------
    model : a model with PEFT LoRA layers (any ``LoraLayer`` whose ``lora_A``/``lora_B`` are
        ``nn.Linear``, every adapter with trainable factors). A layer with an r×r core (PoLAR,
        StelLA) is preconditioned as if ΔW = s·B A; its core takes the base step.
    lr : learning rate (4e-4 by default; docs/adaprelora.md, 'Defaults').
    variant : ``"adamw"`` (default) — the directions replace the factors' gradients and AdamW
        (betas 0.9/0.999, eps 1e-8 unless given in ``optimizer_kwargs``) steps; ``"sgd"`` — SGD
        steps, p ← p − lr·d.
    optimizer_cls : base class instead of the variant's AdamW/SGD (its ``step`` must take an
        optional closure).
    beta2 : fixed β₂ for the statistics; None (default) uses β̂₂,t = 1 − t^(−0.8), no bias correction.
    eps1 : ε₁ in rowsum(G∘G + ε₁) (1e-30). damping : δ in (M + δ (tr M/r) I)⁻¹ (1e-6).
    beta1 : ``"sgd"`` only: EMA of the factors' gradients before the closed form (0 = off, the
        default; when on, adds m·r + r·n numbers of state per layer).
    clip_threshold : ``"sgd"`` only: Adafactor's clipping d ← d / max(1, RMS(J)/c); None = off.
    exact_statistics : diagnostics only — statistics from the exact G = ∂L/∂ΔW (m×n, captured by
        hooks on ``lora_A``/``lora_B``, summed over micro-batches, freed after each step, rescaled to
        the clipped/unscaled autograd gradients) instead of the surrogate G̃. Assumes the plain LoRA
        forward y += s·B A dropout(x); not for DoRA or gradient checkpointing.
    weight_decay : for the other trainable parameters; the factors get none unless ``decay_factors``.
    optimizer_kwargs : passed to the base optimizer (betas, eps, momentum, ...).

    The state per layer beyond the base optimizer's is ρ (m), κ (n) and the step (1), under
    ``optimizer.state["adaprelora:<module name>:<adapter>"]``; it is saved and resumed by
    ``state_dict``/``load_state_dict``. Works under HF Trainer: clipping happens before ``step()``.
    """
    check_choice("variant", variant, VARIANTS)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if beta2 is not None and not 0 <= beta2 < 1:
        raise ValueError(f"beta2 must be None or in [0, 1), got {beta2!r}")
    if not eps1 >= 0:
        raise ValueError(f"eps1 must be >= 0, got {eps1!r}")
    if not damping >= 0:
        raise ValueError(f"damping must be >= 0, got {damping!r}")
    if not 0 <= beta1 < 1:
        raise ValueError(f"beta1 must be in [0, 1), got {beta1!r}")
    if beta1 and variant != "sgd":
        raise ValueError(f"beta1 is for variant='sgd' (AdamW keeps its own momentum), got beta1={beta1!r} "
                         f"with variant={variant!r}")
    if clip_threshold is not None and not clip_threshold > 0:
        raise ValueError(f"clip_threshold must be None or > 0, got {clip_threshold!r}")
    pairs = lora_factor_pairs(model)
    if not pairs:
        raise ValueError("create_adaprelora_optimizer found no trainable LoRA layer (a peft LoraLayer with "
                         "nn.Linear lora_A/lora_B) in the model; wrap it with get_peft_model(model, "
                         "LoraConfig(...)) first")
    if optimizer_cls is None:
        optimizer_cls = torch.optim.AdamW if variant == "adamw" else torch.optim.SGD
        if variant == "adamw":
            optimizer_kwargs = {"betas": (0.9, 0.999), "eps": 1e-8, **optimizer_kwargs}
    groups = split_param_groups(model, [p for pair in pairs for p in (pair.A, pair.B)], weight_decay, decay_factors)
    optimizer = adaprelora_class(optimizer_cls)(groups, lr=lr, **optimizer_kwargs)
    optimizer._setup_adaprelora(pairs, variant, beta2, eps1, damping, beta1, clip_threshold, exact_statistics)
    return optimizer
