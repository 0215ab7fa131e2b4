"""Optimizers for geometry-aware adapters: each wraps any torch optimizer class."""
from .adaprelora import create_adaprelora_optimizer
from .landing import create_landing_optimizer
from .stella import create_stella_optimizer

__all__ = ["create_adaprelora_optimizer", "create_landing_optimizer", "create_stella_optimizer"]
