"""Adapters on stock PEFT: importing this package registers their ``peft_type`` strings."""
from .polar import PolarConfig, PolarLinear, load_original_polar

__all__ = ["PolarConfig", "PolarLinear", "load_original_polar"]
