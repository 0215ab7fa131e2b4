"""Adapters on stock PEFT: importing this package registers their ``peft_type`` strings."""
from .polar import PolarConfig, PolarLinear, load_original_polar
from .stella import StellaConfig, StellaLinear
from .toplora import TopLoraConfig, TopLoraLinear

__all__ = ["PolarConfig", "PolarLinear", "load_original_polar", "StellaConfig", "StellaLinear",
           "TopLoraConfig", "TopLoraLinear"]
