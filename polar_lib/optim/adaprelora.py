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
- Damped inverses (M + δ (tr M / r) I)⁻¹ with δ = 1e-6, by Cholesky in fp32 (δ = √ε where that
  Cholesky fails); tr M = 0 (B = 0 at LoRA's init) makes that inverse 0, so then ΔA = 0 and
  ΔB = P⁻¹ g_B M_A⁻¹.
- LoRA scale: autograd gives ∂L/∂A = s BᵀG, ∂L/∂B = s G Aᵀ. The closed form runs on B̄ = s B,
  ḡ_A = ∂L/∂A, ḡ_B = (∂L/∂B)/s and returns (ΔA, ΔB̄); the factors move by dA = ΔA, dB = ΔB̄/s,
  so the step of s B A does not depend on s.
- ``variant="adamw"`` (default): (dA, dB) replace the factors' gradients and a base AdamW
  (betas 0.9/0.999, eps 1e-8, weight decay 0) steps (the Scaled-AdamW pattern, inferred).
  ``variant="sgd"``: a base SGD steps, so p ← p − lr·d; an explicit ``optimizer_cls`` replaces the
  variant's base class (PEFT's factory signature). ``"sgd"`` has the options: an EMA ``beta1`` of
  (ḡ_A, ḡ_B) before the closed form (default 0), and Adafactor's update clipping
  d ← d / max(1, RMS(J)/c) with c = ``clip_threshold`` (default 1; RMS(J) computed from the factors).
- Order inside ``step()``: (Trainer's gradient clipping and GradScaler's unscaling happen before
  ``step()``) → statistics → closed form → base step. Other trainable parameters: base step.
  Pairs of one shape, dtype and device are stacked and computed as one batch (``optim.base``);
  a factor without a gradient (frozen, inactive adapter) does not move.
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
from .base import (Hooks, check_optimizer_class, copy_shards, cpu_bytes, groups, hooked_optimizer,
                   split_param_groups, sum_over_ranks, whole, work_dtype)

BETA2_DECAY = -0.8           # β̂₂,t = 1 − t^(−0.8)
EPS1 = 1e-30                 # ε₁ inside rowsum(G∘G + ε₁)
DAMPING = 1e-6               # δ in (M + δ (tr M / r) I)⁻¹
VARIANTS = ("adamw", "sgd")
STATE_PREFIX = "adaprelora:"


# --------------------------------------------------------------------------------------------
# The maths, on tensors (any float dtype; the tests run it in float64). Every function takes one
# layer or a batch of k layers of one shape: leading dimensions (k, …) broadcast throughout.
# --------------------------------------------------------------------------------------------

def adafactor_statistics(B: torch.Tensor, A: torch.Tensor, g_B: torch.Tensor, g_A: torch.Tensor):
    """Row and column sums of G̃∘G̃ for the surrogate gradient G̃ = g_B A + B g_A, never forming G̃.

    B : (…, m, r), A : (…, r, n), g_B : (…, m, r), g_A : (…, r, n) — for a LoRA layer the scaled factor
    B̄ = s B and ḡ_B = (∂L/∂B)/s, ḡ_A = ∂L/∂A. With U = [g_B, B] (m×2r), V = [A; g_A] (2r×n),
    G̃ = U V and rowsum(G̃∘G̃) = rowsum((U (V Vᵀ)) ∘ U), colsum(G̃∘G̃) = colsum((Vᵀ (UᵀU)) ∘ Vᵀ):
    exact, O((m+n) r²) time and memory. Returns ``(rowsum (…, m), colsum (…, n))``, clamped at 0
    (the Gram route can round a true 0 to a tiny negative).
    """
    U = torch.cat([g_B, B], dim=-1)
    V = torch.cat([A, g_A], dim=-2)
    rowsum = ((U @ (V @ V.mT)) * U).sum(dim=-1)
    colsum = ((V.mT @ (U.mT @ U)) * V.mT).sum(dim=-1)
    return rowsum.clamp_min(0), colsum.clamp_min(0)


def beta2_at(step, beta2: float | None = None):
    """β̂₂ at step t ≥ 1 (an int, or a tensor of per-layer steps): 1 − t^(−0.8), so 0 at t = 1; or the
    fixed ``beta2`` if given."""
    return float(beta2) if beta2 is not None else 1.0 - step ** BETA2_DECAY


def update_statistics(rho: torch.Tensor, kappa: torch.Tensor, rowsum: torch.Tensor, colsum: torch.Tensor,
                      beta2, eps1: float = EPS1):
    """ρ ← β₂ρ + (1−β₂)(rowsum + n ε₁), κ ← β₂κ + (1−β₂)(colsum + m ε₁): Adafactor's EMA of the
    row/column sums of G∘G + ε₁ for G of shape (m, n) = (rowsum.shape[-1], colsum.shape[-1]).
    ``beta2``: a float, or a tensor of the batch's shape (one β₂ per layer)."""
    m, n = rowsum.shape[-1], colsum.shape[-1]
    if isinstance(beta2, torch.Tensor):
        beta2 = beta2.unsqueeze(-1)
    rho = beta2 * rho + (1 - beta2) * (rowsum + n * eps1)
    kappa = beta2 * kappa + (1 - beta2) * (colsum + m * eps1)
    return rho, kappa


def preconditioner_diagonals(rho: torch.Tensor, kappa: torch.Tensor):
    """p = √(ρ/Σρ), q = √κ: P = diag(p), Q = diag(q), √V̂ = p qᵀ."""
    return (rho / rho.sum(dim=-1, keepdim=True)).sqrt(), kappa.sqrt()


def damped_inverse(M: torch.Tensor, damping: float = DAMPING) -> torch.Tensor:
    """(M + δ (tr M / r) I)⁻¹ for symmetric PSD r×r ``M`` (or a batch), by Cholesky in ≥ fp32; 0 where tr M = 0.

    Where that Cholesky fails (M singular at working precision, e.g. with δ = 0 or a rank-deficient
    factor in fp32), the damping √ε (3.5e-4 in fp32, 1.5e-8 in fp64) is used instead, per matrix.
    Tensor expressions only (``torch.where``, no host sync). Returns the dtype of ``M`` promoted to
    at least fp32.
    """
    M = M.to(torch.promote_types(M.dtype, torch.float32))
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    mean_eigenvalue = torch.diagonal(M, dim1=-2, dim2=-1).mean(dim=-1)[..., None, None]  # tr M / r
    zero = (mean_eigenvalue == 0).to(M.dtype)  # tr M = 0: invert I, then zero it
    L, info = torch.linalg.cholesky_ex(M + (damping * mean_eigenvalue + zero) * eye)
    L_safe, _ = torch.linalg.cholesky_ex(M + (torch.finfo(M.dtype).eps ** 0.5 * mean_eigenvalue + zero) * eye)
    L = torch.where((info == 0)[..., None, None], L, L_safe)
    return torch.where(zero > 0, 0.0, torch.cholesky_inverse(L))


def adaprelora_direction(B: torch.Tensor, A: torch.Tensor, g_A: torch.Tensor, g_B: torch.Tensor,
                         rho: torch.Tensor, kappa: torch.Tensor, damping: float = DAMPING):
    """The AdaPreLoRA closed form: ``(ΔA (…, r, n), ΔB (…, m, r))`` for ΔW = B A with g_A = BᵀG, g_B = G Aᵀ.

    ΔA = M_B⁻¹ [g_A Q⁻¹ − ½ (g_A Aᵀ) M_A⁻¹ A],  ΔB = [P⁻¹ g_B − ½ B M_B⁻¹ (Bᵀ g_B)] M_A⁻¹,
    M_B = BᵀPB, M_A = AQAᵀ, P = diag(√(ρ/Σρ)), Q = diag(√κ); inverses damped (``damped_inverse``;
    ``damping=0`` gives the exact formula). J = B ΔA + ΔB A is then the P,Q-weighted projection of
    G ⊘ √V̂ onto {BX + YA} with least weighted imbalance ‖ΔB A − B ΔA‖²_H. For a LoRA layer pass
    B̄ = s B and ḡ_B = (∂L/∂B)/s (module docstring). O((m+n) r² + r³).
    """
    p, q = preconditioner_diagonals(rho, kappa)
    p, q = p.unsqueeze(-1), q.unsqueeze(-2)  # (…, m, 1), (…, 1, n)
    M_B_inv = damped_inverse(B.mT @ (p * B), damping).to(B.dtype)
    M_A_inv = damped_inverse((A * q) @ A.mT, damping).to(A.dtype)
    dA = M_B_inv @ (g_A / q - 0.5 * (g_A @ A.mT) @ (M_A_inv @ A))
    dB = (g_B / p - 0.5 * B @ (M_B_inv @ (B.mT @ g_B))) @ M_A_inv
    return dA, dB


def factored_frobenius_sq(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """‖U V‖_F² = Σ (UᵀU) ∘ (V Vᵀ) for U (…, m, k), V (…, k, n), in O((m+n) k²)."""
    return ((U.mT @ U) * (V @ V.mT)).sum(dim=(-2, -1))


def update_rms(B: torch.Tensor, A: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor) -> torch.Tensor:
    """RMS of J = B dA + dB A (…, m, n) from the factors: ‖[B, dB][dA; A]‖_F / √(mn)."""
    m, n = B.shape[-2], A.shape[-1]
    sq = factored_frobenius_sq(torch.cat([B, dB], dim=-1), torch.cat([dA, A], dim=-2))
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

    def refresh(self) -> None:
        """A, B ← the layers' current weights (a wrapper may have replaced the parameters: ``optim.base``)."""
        self.A, self.B = self.module.lora_A[self.adapter].weight, self.module.lora_B[self.adapter].weight


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
                if lin_B.weight.grad is None:
                    pair.exact_G = None
                dtype = torch.promote_types(grad_out.dtype, torch.float32)
                dy = grad_out.reshape(-1, grad_out.shape[-1]).to(dtype) / pair.scaling
                G = dy.T @ x.detach().reshape(-1, x.shape[-1]).to(dy.dtype)
                pair.exact_G = G if pair.exact_G is None else pair.exact_G + G

        output.register_hook(accumulate)

    pair.hooks = [lin_A.register_forward_pre_hook(keep_input), lin_B.register_forward_hook(hook_output)]


class AdaPreLoRAHooks(Hooks):
    """AdaPreLoRA's rewrite before the base step (see the module docstring): per group of pairs of one
    shape, dtype and device, the statistics and the closed form on stacked (k, …) batches."""

    name = "AdaPreLoRA"
    state_prefix = STATE_PREFIX

    def __init__(self, pairs: list[_Factors], variant: str, beta2: float | None, eps1: float, damping: float,
                 beta1: float, clip_threshold: float | None, exact_statistics: bool):
        self.pairs, self.variant, self.beta2, self.eps1, self.damping = pairs, variant, beta2, eps1, damping
        self.beta1, self.clip_threshold, self.exact_statistics = beta1, clip_threshold, exact_statistics
        if exact_statistics:
            for pair in pairs:
                _install_exact_hooks(pair)

    def state_keys(self) -> set[str]:
        return {pair.key for pair in self.pairs}

    def before_step(self, optimizer) -> None:
        for pair in self.pairs:
            pair.refresh()
        active = [pair for pair in self.pairs if pair.A.grad is not None or pair.B.grad is not None]
        key = lambda pair: (pair.A.shape, pair.B.shape, pair.A.dtype, pair.A.device)
        for group in groups(active, key, optimizer.batched, lambda pair: cpu_bytes(pair.B)):
            self._precondition(optimizer.state, group)

    def after_step(self, optimizer) -> None:
        self.zero_grad()

    def zero_grad(self) -> None:
        """Forget the captured exact gradients (``exact_statistics``)."""
        for pair in self.pairs:
            pair.exact_G = None

    def remove_hooks(self) -> None:
        """Remove the exact-statistics hooks (``exact_statistics=True``) from the model."""
        for pair in self.pairs:
            for handle in pair.hooks:
                handle.remove()
            pair.hooks = []

    def _state(self, state: dict, pair: _Factors, dtype: torch.dtype, device: torch.device) -> dict:
        """The pair's own state, created (ρ = 0, κ = 0, step = 0; EMAs = 0 with ``beta1``) or moved to the
        factors' device (after a ``load_state_dict`` from the CPU)."""
        own = state[pair.key]
        if not own:
            own.update(rho=torch.zeros(pair.B.shape[0], dtype=dtype, device=device),
                       kappa=torch.zeros(pair.A.shape[1], dtype=dtype, device=device),
                       step=torch.zeros((), dtype=torch.float32, device=device))
        if self.beta1 and "exp_avg_A" not in own:
            own.update(exp_avg_A=torch.zeros(pair.A.shape, dtype=dtype, device=device),
                       exp_avg_B=torch.zeros(pair.B.shape, dtype=dtype, device=device))
        for name, value in own.items():
            if value.device != device:
                own[name] = value.to(device)
        return own

    def _precondition(self, state: dict, group: list[_Factors]) -> None:
        dtype, device = work_dtype(group[0].A.dtype), group[0].A.device
        for pair in group:
            if pair.scaling == 0:
                raise ValueError(f"AdaPreLoRA: {pair.key} has scaling 0 (lora_alpha = 0), so ΔW = s·BA ≡ 0")
        s = torch.tensor([pair.scaling for pair in group], dtype=dtype, device=device)[:, None, None]
        A = torch.stack(whole([pair.A.detach() for pair in group])).to(dtype)  # whole where sharded (optim.base)
        B_bar = s * torch.stack(whole([pair.B.detach() for pair in group])).to(dtype)
        zero = lambda p: torch.zeros(p.shape, dtype=dtype, device=device)
        g_A = torch.stack(whole([pair.A.grad if pair.A.grad is not None else zero(pair.A) for pair in group]))
        g_B = torch.stack(whole([pair.B.grad if pair.B.grad is not None else zero(pair.B) for pair in group]))
        g_A, g_B = g_A.to(dtype), g_B.to(dtype) / s
        own = [self._state(state, pair, dtype, device) for pair in group]

        if self.exact_statistics:
            rowsum, colsum = self._exact_statistics(group, B_bar, A, g_A, g_B)
        else:
            rowsum, colsum = adafactor_statistics(B_bar, A, g_B, g_A)
        step = torch.stack([o["step"] for o in own]) + 1
        rho, kappa = update_statistics(torch.stack([o["rho"] for o in own]), torch.stack([o["kappa"] for o in own]),
                                       rowsum, colsum, beta2_at(step.to(dtype), self.beta2), self.eps1)
        targets, values = [o[name] for name in ("rho", "kappa", "step") for o in own], [rho, kappa, step]
        if self.beta1:
            g_A = torch.lerp(g_A, torch.stack([o["exp_avg_A"] for o in own]), self.beta1)  # β₁ m + (1 − β₁) g
            g_B = torch.lerp(g_B, torch.stack([o["exp_avg_B"] for o in own]), self.beta1)
            targets += [o[name] for name in ("exp_avg_A", "exp_avg_B") for o in own]
            values += [g_A, g_B]
        torch._foreach_copy_(targets, [row for value in values for row in value.unbind(0)])

        dA, dB_bar = adaprelora_direction(B_bar, A, g_A, g_B, rho, kappa, self.damping)
        if self.variant == "sgd" and self.clip_threshold is not None:
            shrink = (update_rms(B_bar, A, dA, dB_bar) / self.clip_threshold).clamp_min(1.0)[:, None, None]
            dA, dB_bar = dA / shrink, dB_bar / shrink
        grads, directions = [], []
        for pair, a, b in zip(group, dA.unbind(0), (dB_bar / s).unbind(0)):
            for param, direction in ((pair.A, a), (pair.B, b)):
                if param.grad is not None:  # a factor without a gradient does not move
                    grads.append(param.grad)
                    directions.append(direction)
        copy_shards(grads, directions)

    def _exact_statistics(self, group, B_bar, A, g_A, g_B):
        """Row/column sums of the captured exact G (k, m, n), matched to the clipped / unscaled autograd
        gradients by one least-squares scale c per layer: c = ⟨e, g⟩/⟨e, e⟩ for e = (B̄ᵀG, G Aᵀ). Under DDP or
        FSDP each rank's G (from its own tokens) is summed over the ranks first (``sum_over_ranks``); c absorbs
        the 1/world of the averaged gradients."""
        for pair in group:
            if pair.exact_G is None:
                raise RuntimeError(f"exact_statistics: no exact gradient was captured for {pair.key} although "
                                   "its factors have gradients (a forward other than y += s·B A x, gradient "
                                   "checkpointing, or hooks removed); use exact_statistics=False")
        G = torch.stack([sum_over_ranks(pair.exact_G, pair.A) for pair in group]).to(A.dtype)
        eA, eB = B_bar.mT @ G, G @ A.mT
        dims = (-2, -1)
        num = (eA * g_A).sum(dim=dims) + (eB * g_B).sum(dim=dims)
        den = eA.square().sum(dim=dims) + eB.square().sum(dim=dims)
        G = G * torch.where(den > 0, num / den, torch.ones_like(den))[:, None, None]
        return G.square().sum(dim=-1), G.square().sum(dim=-2)


def create_adaprelora_optimizer(model: nn.Module, optimizer_cls: type[torch.optim.Optimizer] | None = None, *,
                                lr: float, variant: str = "adamw", beta2: float | None = None, eps1: float = EPS1,
                                damping: float = DAMPING, beta1: float = 0.0, clip_threshold: float | None = 1.0,
                                exact_statistics: bool = False, weight_decay: float = 0.0,
                                decay_factors: bool = False, **optimizer_kwargs) -> torch.optim.Optimizer:
    """An ``optimizer_cls`` (subclass ``AdaPreLoRA<optimizer_cls>``) that steps every LoRA (B, A) pair of
    ``model`` along the AdaPreLoRA direction; PEFT's factory signature (``create_loraplus_optimizer``).

    Parameters
    ----------
    model : a model with PEFT LoRA layers (any ``LoraLayer`` whose ``lora_A``/``lora_B`` are
        ``nn.Linear``, every adapter with trainable factors). A layer with an r×r core (PoLAR,
        StelLA) is preconditioned as if ΔW = s·B A; its core takes the base step.
    optimizer_cls : the base optimizer class (its ``step`` must take an optional closure). None
        (default): the variant's — AdamW (betas 0.9/0.999, eps 1e-8 unless given in
        ``optimizer_kwargs``) for ``"adamw"``, SGD for ``"sgd"``. A class given here wins: the
        variant then only chooses the treatment below. (None rather than AdamW, so that
        ``variant="sgd"`` alone — e.g. from ``make_optimizer``, which passes every default — gets SGD.)
    lr : learning rate (the registry's 4e-4; docs/adaprelora.md, 'Defaults').
    variant : ``"adamw"`` (default) — the directions replace the factors' gradients and the base
        (adaptive) optimizer steps; ``"sgd"`` — the base steps p ← p − lr·d, with the options
        ``beta1`` and ``clip_threshold``.
    beta2 : fixed β₂ for the statistics; None (default) uses β̂₂,t = 1 − t^(−0.8), no bias correction.
    eps1 : ε₁ in rowsum(G∘G + ε₁) (1e-30). damping : δ in (M + δ (tr M/r) I)⁻¹ (1e-6).
    beta1 : ``"sgd"`` only: EMA of the factors' gradients before the closed form (0 = off, the
        default; when on, adds m·r + r·n numbers of state per layer).
    clip_threshold : ``"sgd"`` only: Adafactor's clipping d ← d / max(1, RMS(J)/c); None = off.
    exact_statistics : diagnostics only — statistics from the exact G = ∂L/∂ΔW (m×n, captured by
        hooks on ``lora_A``/``lora_B``, summed over micro-batches, freed after each step, rescaled to
        the clipped/unscaled autograd gradients) instead of the surrogate G̃. Assumes the plain LoRA
        forward y += s·B A dropout(x); not for DoRA or gradient checkpointing. The hooks live on
        ``optimizer.hooks`` (``optimizer.hooks.remove_hooks()`` removes them).
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
    check_optimizer_class(optimizer_cls)  # before the hooks go onto the model
    hooks = AdaPreLoRAHooks(pairs, variant, beta2, eps1, damping, beta1, clip_threshold, exact_statistics)
    param_groups = split_param_groups(model, [p for pair in pairs for p in (pair.A, pair.B)], weight_decay,
                                      decay_factors)
    return hooked_optimizer(hooks, optimizer_cls, param_groups, lr=lr, **optimizer_kwargs)
