"""The hooked-optimizer base shared by landing, StelLA and AdaPreLoRA (``polar_lib.optim.base``): one cached class
per (method, optimizer class), pickling with its hooks, and batched steps equal to the per-layer reference on
mixed shapes, several adapters and frozen adapters."""
import copy
import pickle

import pytest
import torch
from peft import LoraConfig, get_peft_model

from polar_lib.adapters import PolarConfig, StellaConfig
from polar_lib.geometry import exp_map_retraction, landing_field, polar_retraction, project_tangent, riemannian_gradient
from polar_lib.methods import make_optimizer
from polar_lib.models import load_model
from polar_lib.optim import create_adaprelora_optimizer, create_landing_optimizer, create_stella_optimizer
from polar_lib.optim.adaprelora import (adafactor_statistics, adaprelora_direction, beta2_at, damped_inverse,
                                        update_rms, update_statistics)
from polar_lib.optim import adaprelora, landing, stella
from polar_lib.optim.base import HookedOptimizer, copy_shards, hooked_class, whole
from polar_lib.optim.landing import LandingHooks

BATCHED_MAP = {"polar": (landing, "landing_field"), "stella": (stella, "riemannian_gradient"),  # once per group
               "lora+adaprelora": (adaprelora, "adaprelora_direction")}
METHODS = {  # config class and extra config fields, factory with SGD as the base (linear in the direction)
    "polar": (PolarConfig, {}, lambda model, lr: create_landing_optimizer(model, torch.optim.SGD, lr=lr,
                                                                           landing_lambda=0.3)),
    "stella": (StellaConfig, {}, lambda model, lr: create_stella_optimizer(model, torch.optim.SGD, lr=lr)),
    "lora+adaprelora": (LoraConfig, {"init_lora_weights": False},  # B ≠ 0
                        lambda model, lr: create_adaprelora_optimizer(model, lr=lr, variant="sgd", beta1=0.9)),
}


def three_adapter_model(method, dtype=torch.float64):
    """Tiny Llama with three adapters: "default" (q, v, down, v at r = 2 by rank_pattern: 5 factor shapes),
    "second" (q at r = 3), both active, and "third" (q at r = 2), inactive (frozen). Cores and, except for
    StelLA's orthonormal U, V, the factors are moved off their init so every gradient is generic."""
    config_cls, extra, _ = METHODS[method]
    base, _ = load_model("tiny-llama", seed=0, dtype=dtype)
    model = get_peft_model(base, config_cls(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                            rank_pattern={"v_proj": 2}, lora_dropout=0.0, **extra))
    model.add_adapter("second", config_cls(r=3, target_modules=["q_proj"], lora_dropout=0.0, **extra))
    model.add_adapter("third", config_cls(r=2, target_modules=["q_proj"], lora_dropout=0.0, **extra))
    model.base_model.set_adapter(["default", "second"])
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name and (method != "stella" or "lora_S" in name):
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=dtype))
    return model


def lora_parameters(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


@pytest.mark.parametrize("method", METHODS)
def test_batched_steps_equal_the_per_layer_reference(method, token_batch, monkeypatch):
    """Two SGD steps, batched and per layer (``optimizer.batched = False``): step 1 with "default" and "second"
    active, step 2 with "second" frozen by ``set_adapter("default")``. Equal to fp64 round-off; the frozen and the
    inactive adapters do not move; the batched step calls the method's map on fewer, larger batches."""
    module, function = BATCHED_MAP[method]
    original, batch_sizes = getattr(module, function), []
    monkeypatch.setattr(module, function, lambda *args, **kw: batch_sizes.append(args[0].shape[0]) or original(*args, **kw))
    models, optimizers = [], []
    for batched in (True, False):
        model = three_adapter_model(method)
        optimizer = METHODS[method][2](model, 0.05)
        optimizer.batched = batched
        models.append(model)
        optimizers.append(optimizer)
    start = lora_parameters(models[0])
    for step in range(2):
        sizes = []
        for model, optimizer in zip(models, optimizers):
            if step == 1:
                model.base_model.set_adapter("default")
            optimizer.zero_grad()
            model(token_batch, labels=token_batch).loss.backward()
            batch_sizes.clear()
            optimizer.step()
            sizes.append(list(batch_sizes))
        assert set(sizes[1]) == {1} and sum(sizes[0]) == len(sizes[1]) and max(sizes[0]) > 1
        if step == 0:
            after_first = lora_parameters(models[0])
        batched, per_layer = lora_parameters(models[0]), lora_parameters(models[1])
        for name in batched:
            # fp64, the same formulas through batched and single-matrix kernels, entries O(1); the most sensitive
            # part is AdaPreLoRA's r×r inverses (κ ≤ r/δ = 4e6 at δ = 1e-6): ≤ κ·EPS64·|·| ≈ 1e-9 worst case
            # (measured: identical, here ATen's batched kernels run the per-matrix ones); 1e-8 absolute
            torch.testing.assert_close(batched[name], per_layer[name], atol=1e-8, rtol=0, msg=name)
    moved = {name for name in start if not torch.equal(start[name], after_first[name])}
    assert {n for n in start if ".third." in n}.isdisjoint(moved)  # inactive: never moves
    assert {n for n in start if (".default." in n or ".second." in n) and ("lora_A" in n or "lora_B" in n)} <= moved
    final = lora_parameters(models[0])
    assert all(torch.equal(final[n], after_first[n]) for n in start if ".second." in n)  # frozen in step 2
    assert all(not torch.equal(final[n], after_first[n]) for n in start if ".default." in n and "lora_B" in n)


@pytest.mark.parametrize("method", METHODS)
def test_one_cached_class_per_method_and_optimizer_class(method):
    model = three_adapter_model(method, torch.float32)
    factory = METHODS[method][2]
    first, second = factory(model, 0.1), factory(model, 0.1)
    assert type(first) is type(second) and isinstance(first, torch.optim.SGD) and isinstance(first, HookedOptimizer)
    assert type(first) is hooked_class(type(first.hooks), torch.optim.SGD)
    assert type(first).__name__ == {"polar": "LandingSGD", "stella": "StellaSGD",
                                    "lora+adaprelora": "AdaPreLoRASGD"}[method]
    assert type(make_optimizer(model, method)).__name__.endswith("AdamW")  # the registry's default base
    clone = copy.deepcopy(first)  # deepcopy and pickle go through the same reduction: class by reference, hooks kept
    assert type(clone) is type(first) and type(clone.hooks) is type(first.hooks) and clone.batched


def test_pickle_round_trip_keeps_the_class_and_the_hooks(token_batch):
    model = three_adapter_model("polar", torch.float32)
    optimizer = create_landing_optimizer(model, lr=1e-2)
    model(token_batch, labels=token_batch).loss.backward()
    optimizer.step()
    loaded = pickle.loads(pickle.dumps(optimizer))
    assert type(loaded) is type(optimizer) is hooked_class(LandingHooks, torch.optim.AdamW)
    assert isinstance(loaded.hooks, LandingHooks) and loaded.hooks.landing_lambda == optimizer.hooks.landing_lambda
    assert loaded.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_adaprelora_variant_and_optimizer_class():
    """The variant chooses the default base class; an explicit class wins; the registry path (every factory
    default filled in) still reaches SGD through ``variant="sgd"`` alone."""
    model = three_adapter_model("lora+adaprelora", torch.float32)
    assert type(create_adaprelora_optimizer(model, lr=1e-3)).__name__ == "AdaPreLoRAAdamW"
    assert type(create_adaprelora_optimizer(model, lr=1e-3, variant="sgd")).__name__ == "AdaPreLoRASGD"
    assert type(create_adaprelora_optimizer(model, torch.optim.Adam, lr=1e-3, variant="sgd")).__name__ == "AdaPreLoRAAdam"
    assert type(make_optimizer(model, "lora+adaprelora", variant="sgd")).__name__ == "AdaPreLoRASGD"


def test_damped_inverse_falls_back_without_a_host_sync():
    """A rank-1 M with δ = 0: Cholesky fails, the √ε-damped inverse is returned for that matrix only."""
    v = torch.arange(1.0, 5.0, dtype=torch.float64)
    singular, regular = torch.outer(v, v), torch.eye(4, dtype=torch.float64) * 2
    inverse = damped_inverse(torch.stack([singular, regular]), damping=0.0)
    eps_damping = torch.finfo(torch.float64).eps ** 0.5 * singular.trace() / 4
    # fp64: (M + 1.5e-8·7.5 I) has κ ≈ 3e8, so its computed inverse is good to ≈ κ·EPS64 ≈ 7e-8 relative; 1e-6
    torch.testing.assert_close(inverse[0], torch.linalg.inv(singular + eps_damping * torch.eye(4, dtype=torch.float64)),
                               atol=0, rtol=1e-6)
    torch.testing.assert_close(inverse[1], torch.eye(4, dtype=torch.float64) / 2, atol=1e-15, rtol=0)  # exact in fp64


def test_step_maths_capture_in_one_graph():
    """No Python branching on tensor values in the maths of the three steps: Dynamo captures each with
    fullgraph=True (backend "eager": capture only, eager kernels)."""
    g = torch.Generator().manual_seed(0)
    X = polar_retraction(torch.randn(3, 20, 4, generator=g))
    G = torch.randn(3, 20, 4, generator=g)
    B, A = torch.randn(3, 12, 4, generator=g), torch.randn(3, 4, 9, generator=g)
    g_B, g_A = torch.randn(3, 12, 4, generator=g), torch.randn(3, 4, 9, generator=g)

    def steps(X, G, B, A, g_B, g_A, step):
        D = project_tangent(X, riemannian_gradient(X, G))
        rowsum, colsum = adafactor_statistics(B, A, g_B, g_A)
        rho, kappa = update_statistics(torch.zeros_like(rowsum), torch.zeros_like(colsum), rowsum, colsum,
                                       beta2_at(step))
        dA, dB = adaprelora_direction(B, A, g_A, g_B, rho, kappa)
        return (landing_field(X, G, 0.3), polar_retraction(X + D), exp_map_retraction(X, D), dA, dB,
                update_rms(B, A, dA, dB))

    torch._dynamo.reset()
    compiled = torch.compile(steps, backend="eager", fullgraph=True)
    step = torch.tensor([1.0, 2.0, 5.0])
    for want, got in zip(steps(X, G, B, A, g_B, g_A, step), compiled(X, G, B, A, g_B, g_A, step)):
        assert torch.equal(want, got)  # the same eager kernels on the same inputs


def test_plain_tensors_take_no_distributed_path():
    """One process: ``whole`` returns the tensors themselves (no gather, no copy), ``copy_shards`` copies whole values."""
    a, b = torch.randn(3, 2), torch.randn(4, 2)
    assert all(x is y for x, y in zip(whole([a, b]), [a, b]))
    targets = [torch.zeros(3, 2), torch.zeros(4, 2, dtype=torch.float64)]
    copy_shards(targets, [a, b])
    assert torch.equal(targets[0], a) and torch.equal(targets[1], b.double())
