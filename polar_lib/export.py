"""Export an adapter for use without polar_lib: as a stock PEFT LoRA adapter or as a merged model.

    python -m polar_lib.export runs/<run> --to lora --output my-lora
    python -m polar_lib.export my-adapter --to merged --output my-model

``--to lora``: a stock PEFT LoRA adapter with the same update ΔW = s·B'A' and the same s (r, α,
rsLoRA, targets unchanged). A layer with a core C (``CoreLinear``, ΔW = s·BCA) gets B' = BC, A' = A:
PoLAR's s·BΘA gives B' = BΘ, StelLA's s·USVᵀ gives B' = US, A' = Vᵀ. LoRA and DoRA adapters (and the
methods that train LoRA with another optimizer) are stock PEFT already and are written as they are
(DoRA keeps ``use_dora``).
``--to merged``: a plain transformers model whose adapted layers hold W0 + ΔW (PEFT's
``merge_and_unload``), saved with its tokenizer.
A method whose ΔW depends on the token (its registry ``Delta``: TopLoRA) is refused for both.

The source is a run directory of ``polar_lib.train`` (its base model is rebuilt from the run's
config) or an adapter folder (its base model is its ``base_model_name_or_path``; a packaged model's
hub id loads the packaged copy, ``polar_lib.models``). Everything is checked before anything is written.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from peft import LoraConfig, PeftModel, PeftType, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from ._cli import prog
from .adapters.core import CORE_KEY, CoreLinear
from .methods import delta_for
from .models import HUB_IDS, TASKS, load_model
from .train import load_trained

TARGETS = ("lora", "merged")
ADAPTER = "default"
MODEL_TASKS = {"CAUSAL_LM": "causal-lm", "SEQ_CLS": "sequence-classification"}  # PEFT task_type -> load_model task
CARD_SECTION = "## How to Get Started with the Model"  # the section of PEFT's model card template we fill in
INSTALL = "pip install git+https://github.com/polar-lib/polar_lib  # the polar_lib package"


def load_source(path: str | Path):
    """``(PeftModel, tokenizer)`` of a run directory (``train.load_trained``) or of an adapter folder
    (on its ``base_model_name_or_path``, with the task its ``task_type`` names; causal LM if none)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    if (path / "config.json").exists() and (path / "adapter").is_dir():
        return load_trained(path)
    if not (path / "adapter_config.json").exists():
        raise ValueError(f"{path} is neither a run directory of polar_lib.train (config.json, adapter/) "
                         "nor an adapter folder (adapter_config.json)")
    config = json.loads((path / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path}/adapter_config.json names no base model (base_model_name_or_path); "
                         "export the run directory the adapter came from")
    packaged = {hub_id: name for name, hub_id in HUB_IDS.items()}
    model, tokenizer = load_model(packaged.get(base, base), task=MODEL_TASKS.get(config.get("task_type"), "causal-lm"))
    return PeftModel.from_pretrained(model, path), tokenizer


def check_exportable(model) -> None:
    """Raise for an adapter whose ΔW is not one matrix (``Delta.token_dependent``: TopLoRA) or whose
    ``peft_type`` no registered method has."""
    delta = delta_for(model.peft_config[ADAPTER].peft_type)
    if delta.token_dependent:
        raise ValueError(f"{delta.name} cannot be exported (to LoRA or merged): {delta.token_dependent}")


def to_lora(model) -> PeftModel:
    """The stock PEFT LoRA model with ``model``'s update: B' = BC, A' = A in every layer with a core C,
    the rest of the adapter (config, other tensors) as it is; a tensor LoRA has no place for raises.
    A LoRA or DoRA model is returned unchanged; otherwise ``model`` gives its base model to the new one."""
    check_exportable(model)
    config = model.peft_config[ADAPTER]
    if config.peft_type == PeftType.LORA:
        return model
    state = get_peft_model_state_dict(model)
    for name, layer in model.named_modules():
        if isinstance(layer, CoreLinear):
            B, C, _, _ = layer.delta_factors(ADAPTER)
            state[f"{name}.lora_B.weight"] = (B @ C).detach()
            del state[f"{name}.{CORE_KEY}"]
    kept = {f.name for f in dataclasses.fields(LoraConfig)} - {"peft_type", "init_lora_weights"}
    lora = get_peft_model(model.unload(), LoraConfig(**{k: v for k, v in config.to_dict().items() if k in kept}))
    unexpected = set_peft_model_state_dict(lora, state).unexpected_keys
    if unexpected:
        raise ValueError(f"export to LoRA: {config.peft_type} layers hold tensors beyond LoRA's and a core "
                         f"({len(unexpected)}, e.g. {unexpected[0]})")
    return lora


def model_card_usage(config: dict) -> str:
    """The card's "How to Get Started" text for an adapter with this ``adapter_config.json``."""
    peft_type, base = config["peft_type"], config.get("base_model_name_or_path") or "<base model>"
    auto = TASKS[MODEL_TASKS.get(config.get("task_type"), "causal-lm")].__name__
    stock = peft_type == PeftType.LORA
    register = [] if stock else [f"import polar_lib  # registers {peft_type!r} with PEFT (without it: KeyError: {peft_type!r})"]
    load = "\n".join(["```python", *register, "from peft import PeftModel", f"from transformers import {auto}", "",
                      f'model = PeftModel.from_pretrained({auto}.from_pretrained("{base}"), "path/to/this/folder")',
                      "```"])
    export = "`python -m polar_lib.export path/to/this/folder --output DIR --to"
    if stock:
        return (f"A stock PEFT {'DoRA' if config.get('use_dora') else 'LoRA'} adapter: it loads without polar_lib."
                f"\n\n{load}\n\n{export} merged` (or PEFT's `merge_and_unload()`) gives a model with ΔW merged "
                "into its weights.")
    token_dependent = delta_for(peft_type).token_dependent
    exporting = (f"It cannot be exported to plain LoRA or merged: {token_dependent}." if token_dependent
                 else f"To use it without polar_lib, {export} lora` writes a stock PEFT LoRA adapter with the same "
                      f"update ΔW, and {export} merged` a transformers model with ΔW merged into its weights.")
    return (f"A [polar_lib](https://github.com/polar-lib/polar_lib) adapter (`peft_type` {peft_type}, a LoRA variant "
            f"on stock PEFT). Install polar_lib and import it before `PeftModel.from_pretrained`:\n\n```bash\n"
            f"{INSTALL}\n```\n\n{load}\n\n{exporting}")


def write_model_card(folder: str | Path) -> Path:
    """Fill the "How to Get Started" section of the model card (README.md) that PEFT's ``save_pretrained``
    wrote in the adapter ``folder`` with how to load and export it (``model_card_usage``); the rest of
    the card is kept, the section is appended if absent, and a second call gives the same card."""
    folder = Path(folder)
    card = folder / "README.md"
    text = card.read_text() if card.exists() else ""
    section = f"{CARD_SECTION}\n\n{model_card_usage(json.loads((folder / 'adapter_config.json').read_text()))}\n"
    start = text.find(CARD_SECTION)
    if start < 0:
        text = f"{text}\n{section}"
    else:
        end = text.find("\n## ", start + len(CARD_SECTION))
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    card.write_text(text)
    return card


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an ``output`` that is a file, or a directory holding files unless ``overwrite``."""
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"--output {output} is a file, not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"--output {output} already holds files: choose a new or empty directory, "
                              "or pass --overwrite")


def export(source: str | Path, to: str, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write the adapter of ``source`` (a run directory or an adapter folder) to ``output`` as a stock
    LoRA adapter (``to="lora"``, with its model card) or as a merged model with its tokenizer
    (``to="merged"``); everything is checked before anything is written. Returns ``output``."""
    if to not in TARGETS:
        raise ValueError(f"to must be one of {TARGETS}, got {to!r}")
    output = Path(output)
    check_output(output, overwrite)
    model, tokenizer = load_source(source)
    check_exportable(model)
    if to == "lora":
        to_lora(model).save_pretrained(output)
        write_model_card(output)
    else:
        model.merge_and_unload().save_pretrained(output)
        tokenizer.save_pretrained(output)
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("export"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a run directory of polar_lib.train or an adapter folder")
    parser.add_argument("--to", required=True, choices=TARGETS,
                        help="lora: a stock PEFT LoRA adapter; merged: a transformers model with ΔW merged in")
    parser.add_argument("--output", required=True, help="directory to write (created if missing); one that "
                        "already holds files is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="write into an --output that holds files: files "
                        "of the same names are replaced, other files are left as they are")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        print(export(args.source, args.to, args.output, overwrite=args.overwrite))
    except (ValueError, OSError) as error:
        parser.error(str(error).splitlines()[0])


if __name__ == "__main__":
    main(sys.argv[1:])
