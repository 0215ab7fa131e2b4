"""Argument checks shared by every module: a bad value gets an error naming the parameter and the allowed values."""
from __future__ import annotations

from typing import Iterable


def check_choice(name: str, value, allowed: Iterable, where: str = "") -> None:
    """Raise ``ValueError("<name> must be one of <allowed><where>, got <value>")`` unless ``value in allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}{where}, got {value!r}")


def check_positive_int(name: str, value) -> None:
    """Raise ``ValueError("<name> must be a positive integer, got <value>")`` unless ``value`` is an int ≥ 1
    (``True`` is not: bool is a subclass of int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_open_unit(name: str, value: float) -> None:
    """Raise ``ValueError("<name> must be in (0, 1), got <value>")`` unless 0 < ``value`` < 1."""
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
