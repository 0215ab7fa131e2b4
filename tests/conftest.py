import subprocess
import sys
import textwrap

import pytest
import torch

from polar_lib.models import load_model


@pytest.fixture
def tiny_llama():
    """A 2-layer random Llama (weights don't matter) and its tokenizer."""
    return load_model("tiny-llama", seed=0)


@pytest.fixture
def token_batch():
    return torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


def run_fresh_process(code: str) -> str:
    """Run ``code`` in a new Python process (nothing registered by this one); return its stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def reload_in_fresh_process(models: dict, inputs: dict, tmp_path, base: str = "tiny-llama",
                            task: str = "causal-lm") -> dict:
    """Save each PEFT model, reload it with stock ``PeftModel.from_pretrained`` in a new process (after
    ``import polar_lib``, nothing else), assert identical logits there, and return per model the class
    names of its reloaded adapter layers."""
    expected = {"inputs": inputs}
    for name, model in models.items():
        model.save_pretrained(tmp_path / name)
        with torch.no_grad():
            expected[name] = model(**inputs).logits
    torch.save(expected, tmp_path / "expected.pt")
    out = run_fresh_process(f"""
        import torch, polar_lib
        from peft import PeftModel
        from peft.tuners.lora import LoraLayer
        from polar_lib.models import load_model
        expected = torch.load("{tmp_path / 'expected.pt'}")
        for name in {list(models)!r}:
            base, _ = load_model("{base}", task="{task}")
            model = PeftModel.from_pretrained(base, "{tmp_path}/" + name)
            with torch.no_grad():
                assert torch.equal(model(**expected["inputs"]).logits, expected[name]), name
            print(name, *sorted({{type(m).__name__ for m in model.modules() if isinstance(m, LoraLayer)}}))
    """)
    return {line.split()[0]: line.split()[1:] for line in out.splitlines()}
