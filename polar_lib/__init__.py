"""polar_lib: PoLAR and its peers on stock Hugging Face PEFT.

Importing the package registers the adapters' ``peft_type`` strings with PEFT, so that stock
``get_peft_model``, ``save_pretrained`` and ``PeftModel.from_pretrained`` handle them.
``load_model``, ``RunConfig``, ``train`` and ``evaluate_run`` are imported on first use.
"""
__version__ = "0.2.0"  # part of every run's identity: bump it when a change alters what training computes

import importlib

from .adapters import PolarConfig, StellaConfig, TopLoraConfig, load_original_polar
from .methods import METHODS, make_optimizer, prepare
from .optim import create_adaprelora_optimizer, create_landing_optimizer, create_stella_optimizer

_LAZY = {"load_model": "models", "RunConfig": "train", "evaluate_run": "evaluate"}

__all__ = ["PolarConfig", "StellaConfig", "TopLoraConfig", "load_original_polar", "create_landing_optimizer",
           "create_stella_optimizer", "create_adaprelora_optimizer", "METHODS", "prepare", "make_optimizer",
           "load_model", "train", "RunConfig", "evaluate_run"]


def __getattr__(name: str):
    """``polar_lib.train`` is the module, callable as its function ``train``; the other names of ``_LAZY``
    come from their modules."""
    if name == "train":
        return importlib.import_module(".train", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
