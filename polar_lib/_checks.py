"""Argument checks shared by every module: a bad value gets an error naming the parameter and the allowed values."""
from __future__ import annotations

from typing import Iterable


def check_choice(name: str, value, allowed: Iterable, where: str = "") -> None:
    """Raise ``ValueError("<name> must be one of <allowed><where>, got <value>")`` unless ``value in allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}{where}, got {value!r}")
