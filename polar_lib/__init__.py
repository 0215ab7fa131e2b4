"""polar_lib: PoLAR and its peers on stock Hugging Face PEFT.

Importing the package registers the adapters' ``peft_type`` strings with PEFT, so that stock
``get_peft_model``, ``save_pretrained`` and ``PeftModel.from_pretrained`` handle them.
"""
__version__ = "0.2.0"  # part of every run's identity: bump it when a change alters what training computes

from .adapters import PolarConfig, StellaConfig, TopLoraConfig, load_original_polar
from .methods import METHODS, make_optimizer, prepare
from .optim import create_adaprelora_optimizer, create_landing_optimizer, create_stella_optimizer

__all__ = ["PolarConfig", "StellaConfig", "TopLoraConfig", "load_original_polar", "create_landing_optimizer",
           "create_stella_optimizer", "create_adaprelora_optimizer", "METHODS", "prepare", "make_optimizer"]
