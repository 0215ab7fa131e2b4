"""lm-eval's own CLI with polar_lib's adapters registered with PEFT, so that ``peft=<run>/adapter``
loads PoLAR and its peers: ``python -m polar_lib.lm_eval_cli run --model hf --model_args
pretrained=<model>,peft=<run_dir>/adapter --tasks arc_easy``."""
import polar_lib  # noqa: F401  (registers the adapters' peft_type strings)
from lm_eval.__main__ import cli_evaluate

if __name__ == "__main__":
    cli_evaluate()
