"""The one shape every optimizer here shares: any torch optimizer class, with a method's hooks around ``step()``.

``hooked_class(hooks_cls, optimizer_cls)`` is the subclass of ``optimizer_cls`` whose ``step()`` is

    closure (under grad) → hooks.before_step (rewrite gradients) → the base step → hooks.after_step
    (e.g. a retraction), both hooks under ``no_grad``;

it is created once per (hooks class, optimizer class) and cached, so ``type(a) is type(b)`` for two
optimizers of one method, ``isinstance(optimizer, optimizer_cls)`` holds, and instances pickle and
deep-copy (with their hooks) by reference to the two classes. Trainer's gradient clipping and
``GradScaler``'s unscaling happen before ``step()`` is called, so the hooks see the final, clipped,
unscaled gradient of the real step — the pattern of ``peft.optimizers.create_riemannian_optimizer``.

A method keeps state of its own under string keys ``f"{hooks.state_prefix}..."`` of the optimizer's
``state``; torch's ``state_dict``/``load_state_dict`` carry such keys unchanged, and ``load_state_dict``
refuses a saved set of keys that is not the hooks' own (another model).

Factors of one shape, dtype and device are stepped together: ``groups`` collects them, the hooks
stack each group into one (k, …) batch, compute once with batched kernels and write back with
``torch._foreach_*``. ``optimizer.batched = False`` makes every group a single factor: the per-layer
reference the tests compare against, and the benchmark's baseline.

The hooks hold the adapters' layers and read their weights at each step, so parameters that a wrapper
replaces after the optimizer was made (accelerate's FSDP2 ``prepare`` switches the optimizer's to the
sharded ones) are followed. Sharded factors (FSDP2's ``fully_shard``: parameters and gradients are
DTensors, rows split over the ranks): the hooks read each factor and gradient whole (``whole``: one
all-gather each, issued together) and write back only the rank's own shard (``copy_shards``), so every
rank runs the single-process maths on the same whole operands and the base optimizer steps its shard
(docs/runtime.md, 'Sharded training (FSDP2)'). Plain tensors pass through both untouched.
"""
from __future__ import annotations

import inspect
from typing import Callable, Hashable, Iterable, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

if torch.distributed.is_available():
    from torch.distributed.tensor import DTensor, Partial, Replicate, distribute_tensor
else:  # a torch build without torch.distributed: no tensor is ever a DTensor
    DTensor = ()

T = TypeVar("T")


def split_param_groups(model: nn.Module, factors: Iterable[nn.Parameter], weight_decay: float,
                       decay_factors: bool = False) -> list[dict]:
    """Two parameter groups: the manifold ``factors`` (no weight decay unless ``decay_factors``)
    and every other trainable parameter (``weight_decay``). Empty groups are dropped."""
    factor_ids = {id(p) for p in factors}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in factor_ids], "weight_decay": weight_decay if decay_factors else 0.0},
        {"params": [p for p in trainable if id(p) not in factor_ids], "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]


def check_optimizer_class(optimizer_cls) -> None:
    """Raise unless ``optimizer_cls`` is a torch optimizer class whose ``step()`` takes an optional closure."""
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise TypeError(f"optimizer_cls must be a subclass of torch.optim.Optimizer, got {optimizer_cls!r}")
    closure_param = inspect.signature(optimizer_cls.step).parameters.get("closure")
    if closure_param is not None and closure_param.default is inspect.Parameter.empty:
        raise ValueError(f"optimizer_cls={optimizer_cls.__name__} needs a closure in step() (it re-evaluates the "
                         "loss); use an optimizer whose step() takes an optional closure (SGD, Adam, AdamW, ...)")


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the hooks compute in: fp32, or fp64 for fp64 weights."""
    return torch.promote_types(dtype, torch.float32)


CPU_BATCH_BYTES = 1 << 20  # one stacked operand of a CPU batch: about L2-sized (docs/runtime.md, 'Batched steps')


def groups(items: Sequence[T], key: Callable[[T], Hashable], batched: bool = True,
           cpu_bytes: Callable[[T], int] | None = None) -> list[list[T]]:
    """``items`` with equal ``key`` together, in first-seen order; one item per group unless ``batched``.

    ``cpu_bytes(item)``: the bytes of one item's operand when it lives on the CPU (0 elsewhere); a CPU
    group is then cut into batches of at most ``CPU_BATCH_BYTES`` per stacked operand, since larger
    batches fall out of cache and run slower than one matrix at a time (measured, SmolLM2 shapes, r = 32).
    """
    found: dict = {}
    for index, item in enumerate(items):
        found.setdefault(key(item) if batched else index, []).append(item)
    result = []
    for group in found.values():
        size = cpu_bytes(group[0]) if cpu_bytes is not None else 0
        step = max(1, CPU_BATCH_BYTES // size) if size else len(group)
        result += [group[i:i + step] for i in range(0, len(group), step)]
    return result


def cpu_bytes(weight: torch.Tensor) -> int:
    """Bytes of ``weight`` in the hooks' work dtype if it lives on the CPU, else 0 (see ``groups``)."""
    return weight.numel() * work_dtype(weight.dtype).itemsize if weight.device.type == "cpu" else 0


def whole(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor whole, as a plain tensor: a plain one as it is; a DTensor (a sharded parameter or gradient)
    all-gathered, the gathers of the list issued together (async) and awaited on first use."""
    return [t.redistribute(placements=[Replicate()] * t.device_mesh.ndim, async_op=True).to_local()
            if isinstance(t, DTensor) else t for t in tensors]


def copy_shards(targets: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    """``targets[i] ← values[i]`` in one ``_foreach_copy_``; a DTensor target takes only its own shard of the
    whole ``values[i]`` (split locally, no communication: every rank holds the same whole value)."""
    torch._foreach_copy_([t.to_local() if isinstance(t, DTensor) else t for t in targets],
                         [distribute_tensor(v, t.device_mesh, t.placements, src_data_rank=None).to_local()
                          if isinstance(t, DTensor) else v for t, v in zip(targets, values)])


def sum_over_ranks(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks that train ``like`` (one all-reduce): over ``like``'s device mesh if it is
    a DTensor (FSDP2); over the default process group if ``torch.distributed`` runs several processes and ``like``
    is a plain tensor (DDP, where every rank holds all of it and the gradients are averaged); else ``tensor``."""
    if isinstance(like, DTensor):
        return DTensor.from_local(tensor, like.device_mesh, [Partial()] * like.device_mesh.ndim).full_tensor()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def stack_tall(weights: Sequence[torch.Tensor], transposed: Sequence[bool], dtype: torch.dtype) -> torch.Tensor:
    """(k, n, r) copy, in ``dtype``, of tall factors stored as they are (n×r) or transposed (r×n); whole
    factors where they are sharded (``whole``)."""
    return torch.stack([w.mT if t else w for w, t in zip(whole(weights), transposed)]).to(dtype)


def write_tall(targets: Sequence[torch.Tensor], transposed: Sequence[bool], values: torch.Tensor) -> None:
    """``targets[i] ← values[i]`` (transposed back where ``transposed[i]``), in one ``_foreach_copy_``; a sharded
    target takes its own shard (``copy_shards``)."""
    copy_shards(targets, [v.mT if t else v for v, t in zip(values.unbind(0), transposed)])


class Hooks:
    """What one method adds to a base optimizer's ``step()``; subclass and override.

    ``name`` prefixes the hooked class's name (``f"{name}{optimizer_cls.__name__}"``, e.g. ``LandingAdamW``).
    ``state_prefix``: the prefix of the string keys this method keeps in ``optimizer.state`` (None: no
    state of its own, the ``state_dict`` is the base optimizer's).
    """

    name = "Hooked"
    state_prefix: str | None = None

    def before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called under ``no_grad`` after the closure, before the base step."""

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Called under ``no_grad`` after the base step."""

    def state_keys(self) -> set[str]:
        """The keys of ``optimizer.state`` this method may write (all start with ``state_prefix``)."""
        return set()

    def zero_grad(self) -> None:
        """Called after the base ``zero_grad``."""


class HookedOptimizer:
    """The mixin of ``hooked_class``: ``step()`` around ``self.hooks``; see the module docstring."""

    hooks: Hooks
    batched = True

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self.hooks.before_step(self)
        super().step()
        with torch.no_grad():
            self.hooks.after_step(self)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        self.hooks.zero_grad()

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        prefix = self.hooks.state_prefix
        saved = {k for k in self.state if prefix is not None and isinstance(k, str) and k.startswith(prefix)}
        ours = self.hooks.state_keys()
        if saved and saved != ours:
            missing, unknown = sorted(ours - saved)[:3], sorted(saved - ours)[:3]
            raise ValueError(f"{self.hooks.name} state does not match this model's layers (e.g. not saved: {missing}, "
                             f"saved but not in the model: {unknown}); create the optimizer on the same (wrapped) "
                             "model that was saved")

    def __getstate__(self):
        return {**super().__getstate__(), "hooks": self.hooks, "batched": self.batched}

    def __reduce_ex__(self, protocol):
        return _new_hooked, (type(self.hooks), self._base_cls), self.__getstate__()


_CLASSES: dict[tuple[type, type], type] = {}


def hooked_class(hooks_cls: type[Hooks], optimizer_cls: type[torch.optim.Optimizer]) -> type:
    """The subclass of ``optimizer_cls`` whose ``step()`` runs ``hooks_cls``'s hooks, cached per pair."""
    check_optimizer_class(optimizer_cls)
    key = (hooks_cls, optimizer_cls)
    if key not in _CLASSES:
        name = f"{hooks_cls.name}{optimizer_cls.__name__}"
        _CLASSES[key] = type(name, (HookedOptimizer, optimizer_cls),
                             {"__module__": __name__, "__qualname__": name, "_base_cls": optimizer_cls})
    return _CLASSES[key]


def _new_hooked(hooks_cls: type[Hooks], optimizer_cls: type[torch.optim.Optimizer]):
    """An empty instance of ``hooked_class(hooks_cls, optimizer_cls)`` (pickle's constructor)."""
    cls = hooked_class(hooks_cls, optimizer_cls)
    return cls.__new__(cls)


def hooked_optimizer(hooks: Hooks, optimizer_cls: type[torch.optim.Optimizer], param_groups,
                     **optimizer_kwargs) -> torch.optim.Optimizer:
    """An instance of ``hooked_class(type(hooks), optimizer_cls)`` over ``param_groups``, running ``hooks``."""
    optimizer = hooked_class(type(hooks), optimizer_cls)(param_groups, **optimizer_kwargs)
    optimizer.hooks = hooks
    return optimizer
