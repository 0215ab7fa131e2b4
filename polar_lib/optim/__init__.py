"""Optimizers for geometry-aware adapters: each wraps any torch optimizer class."""
from .landing import create_landing_optimizer

__all__ = ["create_landing_optimizer"]
