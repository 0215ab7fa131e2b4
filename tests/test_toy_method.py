"""Adding a method is one module and one registry line: the toy method of ``toy_method.py`` goes
through prepare, make_optimizer, train, the finetune CLI, adapter_stable_ranks (of the model and, through
its ``Delta``, of its saved folder) and the conformance matrix's generic checks, with nothing else written for it."""
import inspect
import json

import pytest
import torch

from polar_lib import methods
from polar_lib.finetune import main as finetune_main
from polar_lib.methods import Method, create_adamw, make_optimizer, prepare
from polar_lib.models import load_model
from polar_lib.inspection import adapter_factors, adapter_stable_ranks
from polar_lib.spectra import stable_rank
from polar_lib.train import RunConfig, load_run, load_trained, train

from . import test_conformance as conformance  # imported before the toy is registered (its tables read METHODS)
from .toy_method import DELTA, ToyConfig, ToyLinear

TARGETS = ["q_proj", "v_proj"]
ATOL = 1e-5  # fp32 logits of a 2-layer model with |logit| ≲ 10: a few hundred ulps of slack


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(methods.METHODS, "toy", Method(ToyConfig, create_adamw, 1e-3, delta=DELTA))  # the one line
    return "toy"


def trained_looking(model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def test_prepare_and_optimizer_give_the_toy_formula(toy, token_batch):
    base, _ = load_model("tiny-llama")
    model = trained_looking(prepare(base, toy, r=4, target_modules=TARGETS)).eval()  # eval: no dropout
    layers = [m for m in model.modules() if isinstance(m, ToyLinear)]
    assert len(layers) == 2 * len(TARGETS)  # every target of both blocks
    assert isinstance(make_optimizer(model, toy), torch.optim.AdamW)
    layer = layers[0]
    B, A, c = layer.lora_B["default"].weight, layer.lora_A["default"].weight, layer.lora_S["default"].weight
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(2))
    expected = layer.get_base_layer()(x) + layer.scaling["default"] * (x @ A.T * c) @ B.T  # W0 x + s B diag(c) A x
    assert torch.allclose(layer(x), expected, atol=ATOL, rtol=0)
    with torch.no_grad():
        unmerged = model(token_batch).logits
        model.merge_adapter()
        merged = model(token_batch).logits
        model.unmerge_adapter()
        assert torch.allclose(merged, unmerged, atol=ATOL, rtol=0)
        assert torch.allclose(model(token_batch).logits, unmerged, atol=ATOL, rtol=0)


def test_train_reload_and_stable_ranks(toy, tmp_path, token_batch):
    config = RunConfig(method=toy, task="arc_easy", r=4, target_modules=TARGETS, max_steps=3, batch_size=2,
                       train_limit=8, save_steps=3)
    run_dir = train(config, tmp_path, progress=False)
    assert load_run(run_dir)[1]["steps"] == 3
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["peft_type"] == "TOY"
    model, _ = load_trained(run_dir)
    from_model = adapter_stable_ranks(model).set_index("name").stable_rank
    from_folder = adapter_stable_ranks(run_dir / "adapter").set_index("name").stable_rank
    assert len(from_model) == 2 * len(TARGETS) and (adapter_stable_ranks(model).method == "toy").all()
    assert torch.allclose(torch.tensor(from_model.sort_index().values), torch.tensor(from_folder.sort_index().values),
                          atol=1e-4, rtol=0)  # the same factors, fp32 thin QRs: ~1e-6 relative
    layer = next(m for m in model.modules() if isinstance(m, ToyLinear))
    assert stable_rank(layer.get_delta_weight("default")) == pytest.approx(from_model.iloc[0], rel=1e-4)


def test_the_finetune_cli_accepts_it(toy, tmp_path, capsys):
    finetune_main(["--model", "tiny-llama", "--method", toy, "--task", "arc_easy", "--r", "2",
                   "--target-modules", "q_proj", "--max-steps", "2", "--batch-size", "2", "--train-limit", "4",
                   "--save-steps", "2", "--runs-dir", str(tmp_path), "--no-progress"])
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("arc_easy-toy-r2")]
    assert load_run(run_dir)[1]["steps"] == 2


@pytest.mark.parametrize("check", ["test_merge_unmerge_safe_merge", "test_several_adapters",
                                   "test_gradient_checkpointing_gives_the_same_gradients",
                                   "test_save_without_embedding_layers_then_from_pretrained",
                                   "test_save_as_lora_is_exact_or_refused"])
def test_the_conformance_checks_pass(toy, check, tmp_path):
    """The conformance matrix's generic checks, run on a toy row (they build it through the registry)."""
    run = getattr(conformance, check)
    row = conformance.case(toy, conformance.ATTN, 4)
    run(row, tmp_path) if "tmp_path" in inspect.signature(run).parameters else run(row)


def test_its_saved_folder_is_read_through_its_delta(toy, tmp_path, monkeypatch):
    """Folder inspection knows the toy only from its registry line: the folder gives the layers' own
    factors (c saved as an r-vector), and without the line its peft_type is refused."""
    base, _ = load_model("tiny-llama")
    model = trained_looking(prepare(base, toy, r=4, target_modules=TARGETS))
    model.save_pretrained(tmp_path)
    layers = {name.removeprefix("base_model.model."): m for name, m in model.named_modules() if isinstance(m, ToyLinear)}
    factors = adapter_factors(tmp_path)
    assert sorted(f.name for f in factors) == sorted(layers) and {f.method for f in factors} == {"toy"}
    for f in factors:
        layer = layers[f.name]
        assert torch.equal(f.core, layer.lora_S["default"].weight) and f.scale == layer.scaling["default"]
        # the same fp32 tensors and the same operations as get_delta_weight's s·(B (diag(c) A)): bitwise equal
        assert torch.equal(f.delta_weight(), layer.get_delta_weight("default"))
    from_model, from_folder = adapter_stable_ranks(model), adapter_stable_ranks(tmp_path)
    assert list(from_folder["name"]) == list(from_model["name"])
    # both fp64 from the same fp32 values through the same operations (measured: identical)
    assert torch.allclose(torch.tensor(from_folder["stable_rank"].values), torch.tensor(from_model["stable_rank"].values),
                          rtol=1e-12, atol=0)
    monkeypatch.delitem(methods.METHODS, toy)  # without its registry line
    with pytest.raises(ValueError, match="no method of polar_lib.methods.METHODS has peft_type 'TOY'"):
        adapter_stable_ranks(tmp_path)
