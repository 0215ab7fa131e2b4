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
