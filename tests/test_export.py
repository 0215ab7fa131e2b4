"""Adapters others can use: what a saved adapter records (base model, task, card), and
``python -m polar_lib.export`` to a stock LoRA adapter or a merged model, reloaded without polar_lib."""
import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from polar_lib import models
from polar_lib.export import main as export_main, write_model_card
from polar_lib.methods import METHODS, prepare
from polar_lib.models import HUB_IDS, load_model
from polar_lib.train import RunConfig, load_trained, train

from .conftest import run_fresh_process

TARGETS = ["q_proj", "v_proj", "down_proj"]
EXPORTABLE = [name for name, method in METHODS.items() if not method.delta.token_dependent]
# fp32, two evaluation orders of ≈ 10 matmuls of ≤ 128 terms, O(1) activations, |logits| ≤ 1.3: ≲ 10·√128·EPS32·1.3 ≈ 1.8e-5; 1e-4 ≥ 5× that (measured ≤ 5e-7)
LOGITS_ATOL = 1e-4


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """The tiny Llama saved as a folder, so that a child process loads the same base without polar_lib."""
    folder = tmp_path_factory.mktemp("base")
    model, tokenizer = load_model("tiny-llama", seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def adapted(method, base_dir, seed=0):
    """The tiny Llama from ``base_dir`` with the adapter of ``method``, trained-looking: every trainable
    tensor moved by N(0, 0.1²), so Θ, S and LoRA's B leave 0 and ΔW ≠ 0 in every layer."""
    base, _ = load_model(str(base_dir))
    model = prepare(base, method, r=4, target_modules=TARGETS, lora_dropout=0.0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


@pytest.fixture(scope="module")
def exported(base_dir, tmp_path_factory):
    """Every exportable method's adapter saved, exported to LoRA and merged, then all reloaded in one
    fresh process without polar_lib: per method, its logits before export and the reloaded ones."""
    root = tmp_path_factory.mktemp("exported")
    token_batch = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    torch.save(token_batch, root / "inputs.pt")
    expected = {}
    for method in EXPORTABLE:
        model = adapted(method, base_dir)
        with torch.no_grad():
            expected[method] = model(token_batch).logits
        model.save_pretrained(root / method / "adapter")
        for to in ("lora", "merged"):
            export_main([str(root / method / "adapter"), "--to", to, "--output", str(root / method / to)])
    run_fresh_process(f"""
        import sys, torch
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
        from transformers import AutoModelForCausalLM
        inputs = torch.load("{root / 'inputs.pt'}")
        logits = {{"base": AutoModelForCausalLM.from_pretrained("{base_dir}")(inputs).logits.detach()}}
        for method in {EXPORTABLE!r}:
            lora = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base_dir}"), "{root}/" + method + "/lora")
            merged = AutoModelForCausalLM.from_pretrained("{root}/" + method + "/merged")
            with torch.no_grad():
                logits[method] = {{"lora": lora(inputs).logits, "merged": merged(inputs).logits}}
            logits[method]["layers"] = sorted({{f"{{type(m).__module__}}.{{type(m).__name__}}" for m in lora.modules()
                                               if isinstance(m, LoraLayer)}})
        assert "polar_lib" not in sys.modules
        torch.save(logits, "{root / 'reloaded.pt'}")
    """)
    return root, expected, torch.load(root / "reloaded.pt")


@pytest.mark.parametrize("method", EXPORTABLE)
def test_export_reloads_without_polar_lib_with_the_same_logits(method, exported):
    root, expected, reloaded = exported
    config = json.loads((root / method / "lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["use_dora"] == (method == "dora")
    assert (config["r"], config["lora_alpha"], config["task_type"]) == (4, 8, "CAUSAL_LM")
    assert not [key for key in load_file(root / method / "lora" / "adapter_model.safetensors") if "lora_S" in key]
    assert reloaded[method]["layers"] == ["peft.tuners.lora.layer.Linear"]  # stock PEFT LoRA layers
    assert (reloaded["base"] - expected[method]).abs().max() > 100 * LOGITS_ATOL  # the adapter matters (measured ≥ 0.78)
    for to in ("lora", "merged"):
        assert torch.allclose(reloaded[method][to], expected[method], atol=LOGITS_ATOL, rtol=0), to


@pytest.mark.parametrize("to", ["lora", "merged"])
def test_toplora_is_refused_with_the_reason(to, base_dir, tmp_path, capsys):
    adapted("toplora", base_dir).save_pretrained(tmp_path / "adapter")
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(tmp_path / "adapter"), "--to", to, "--output", str(tmp_path / "out")])
    errors = error_lines(capsys)
    assert exit_info.value.code == 2 and len(errors) == 1, errors
    assert "TopLoRA cannot be exported (to LoRA or merged)" in errors[0] and "depends on the token" in errors[0]
    assert not (tmp_path / "out").exists()


def test_run_directory_exports_and_its_adapter_says_how_to_load(tmp_path, token_batch):
    config = RunConfig(model="tiny-llama", method="polar", task="arc_easy", train_limit=8, batch_size=4,
                       max_length=64, max_steps=2, lora_dropout=0.0)
    run_dir = train(config, tmp_path / "runs", progress=False)
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    card = (run_dir / "adapter" / "README.md").read_text()
    assert "import polar_lib" in card and "library_name: peft" in card  # PEFT's card, extended
    export_main([str(run_dir), "--to", "lora", "--output", str(tmp_path / "lora")])
    assert "import polar_lib" not in (tmp_path / "lora" / "README.md").read_text()
    model, _ = load_trained(run_dir)
    base, _ = load_model("tiny-llama", seed=config.seed)
    lora = PeftModel.from_pretrained(base, tmp_path / "lora")
    with torch.no_grad():
        assert torch.allclose(lora(token_batch).logits, model(token_batch).logits, atol=LOGITS_ATOL, rtol=0)


def test_packaged_model_adapter_records_its_hub_id_task_type_and_card(tmp_path, monkeypatch):
    cases = {"minilm-l6": ("sequence-classification", "SEQ_CLS"), "smollm2-135m": ("causal-lm", "CAUSAL_LM")}
    for name, (task, task_type) in cases.items():
        if name == "smollm2-135m":  # the registry entry without the GGUF conversion: the tiny Llama stands in
            tiny, tokenizer = load_model("tiny-llama")
            tiny.save_pretrained(tmp_path / "stand-in")
            tokenizer.save_pretrained(tmp_path / "stand-in")
            monkeypatch.setattr(models, "model_folder", lambda _: str(tmp_path / "stand-in"))
        model, _ = load_model(name, task=task)
        prepare(model, "polar", r=4).save_pretrained(tmp_path / name)
        config = json.loads((tmp_path / name / "adapter_config.json").read_text())
        assert (config["base_model_name_or_path"], config["task_type"]) == (HUB_IDS[name], task_type)
        card = write_model_card(tmp_path / name).read_text()
        assert f"base_model: {HUB_IDS[name]}" in card and "import polar_lib" in card
        assert f'from_pretrained("{HUB_IDS[name]}")' in card and "python -m polar_lib.export" in card
        assert write_model_card(tmp_path / name).read_text() == card  # a second call changes nothing


def test_adapter_folder_on_a_packaged_hub_id_exports_offline(tmp_path):
    """base_model_name_or_path = the hub id of MiniLM: the export loads the packaged copy, no hub needed."""
    model, tokenizer = load_model("minilm-l6", task="sequence-classification")
    model = prepare(model, "stella", r=4, lora_dropout=0.0).eval()
    model.save_pretrained(tmp_path / "adapter")
    export_main([str(tmp_path / "adapter"), "--to", "lora", "--output", str(tmp_path / "lora")])
    inputs = dict(tokenizer(["is the sky blue?", "no"], padding=True, return_tensors="pt"))
    base, _ = load_model("minilm-l6", task="sequence-classification", seed=1)  # another head: the adapter's is saved
    lora = PeftModel.from_pretrained(base, tmp_path / "lora").eval()
    with torch.no_grad():  # fp32, 6 blocks of sums of ≤ 1536 terms, |logits| < 0.1: ≲ 10·√1536·EPS32 ≈ 5e-5 < 1e-4 (measured 0)
        assert torch.allclose(lora(**inputs).logits, model(**inputs).logits, atol=1e-4, rtol=0)


BAD = [
    (["/no/such/dir", "--to", "lora"], "/no/such/dir is not a directory"),
    (["{adapter}", "--to", "gguf"], "argument --to: invalid choice: 'gguf'"),
    (["{empty}", "--to", "lora"], "is neither a run directory of polar_lib.train"),
    (["{nameless}", "--to", "merged"], "names no base model (base_model_name_or_path); export the run directory"),
    (["{adapter}", "--to", "lora", "--output", "{full}"], "already holds files: choose a new or empty directory"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_cli_errors_are_one_line_and_write_nothing(args, message, base_dir, tmp_path, capsys):
    folders = {name: tmp_path / name for name in ("adapter", "empty", "nameless", "full")}
    adapted("lora", base_dir).save_pretrained(folders["adapter"])
    prepare(load_model("tiny-llama")[0], "lora", r=4).save_pretrained(folders["nameless"])  # by name: no base recorded
    folders["empty"].mkdir()
    folders["full"].mkdir()
    (folders["full"] / "notes.txt").write_text("keep")
    before = sorted(p for p in tmp_path.rglob("*"))
    argv = [arg.format(**folders) for arg in args]
    with pytest.raises(SystemExit) as exit_info:
        export_main(argv + ([] if "--output" in argv else ["--output", str(tmp_path / "out")]))
    errors = error_lines(capsys)
    assert exit_info.value.code == 2 and len(errors) == 1 and message in errors[0], errors
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_overwrite_writes_into_a_folder_holding_files(base_dir, tmp_path, capsys):
    adapted("polar", base_dir).save_pretrained(tmp_path / "adapter")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    export_main([str(tmp_path / "adapter"), "--to", "lora", "--output", str(tmp_path / "out"), "--overwrite"])
    assert (tmp_path / "out" / "adapter_model.safetensors").exists() and (tmp_path / "out" / "notes.txt").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        export_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "refused unless --overwrite" in help_text and "other files are left as they are" in help_text
