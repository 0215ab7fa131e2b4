"""The shape every optimizer wrapper here shares: any torch optimizer, with hooks around ``step()``.

``wrap_optimizer`` returns an instance of a subclass of the given optimizer class whose ``step()``
runs ``before_step`` (rewrite gradients), the base step, then ``after_step`` (e.g. a retraction),
all under ``no_grad``. Trainer's gradient clipping and ``GradScaler``'s unscaling happen before
``step()`` is called, so the hooks see the final, clipped, unscaled gradient of the real step.
The pattern is the one of ``peft.optimizers.create_riemannian_optimizer``.
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch
from torch import nn


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


def hooked_step(base_step: Callable[[], object], closure=None, before_step: Callable[[], None] | None = None,
                after_step: Callable[[], None] | None = None):
    """closure (with grad) → ``before_step`` → ``base_step()`` → ``after_step``, hooks under ``no_grad``;
    returns the closure's loss."""
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    with torch.no_grad():
        if before_step is not None:
            before_step()
    base_step()
    with torch.no_grad():
        if after_step is not None:
            after_step()
    return loss


def wrap_optimizer(optimizer_cls: type[torch.optim.Optimizer], param_groups, *, name: str,
                   before_step: Callable[[], None] | None = None, after_step: Callable[[], None] | None = None,
                   **optimizer_kwargs) -> torch.optim.Optimizer:
    """An ``optimizer_cls`` instance whose ``step()`` is wrapped by the two hooks."""
    check_optimizer_class(optimizer_cls)

    def step(self, closure=None):
        return hooked_step(lambda: optimizer_cls.step(self), closure, before_step, after_step)

    wrapped_cls = type(f"{name}{optimizer_cls.__name__}", (optimizer_cls,), {"step": step, "__module__": __name__})
    return wrapped_cls(param_groups, **optimizer_kwargs)
