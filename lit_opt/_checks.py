"""Argument checks shared across lit_opt: each error names the argument, the value and what is accepted."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= {minimum}.")


def check_str(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a non-empty ``str``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}={value!r} is not accepted; expected a non-empty string.")


def check_flag(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not accepted; expected true or false.")


def check_fraction(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(
            f"{name}={value!r} is not accepted; expected a float strictly between 0 and 1 "
            "(the share of the samples that goes to that split)."
        )


def check_split_fractions(val_fraction: Any, test_fraction: Any, defaults: tuple[float, float]) -> None:
    """Check both fractions, and that they leave something to train on (``defaults`` go into the hint)."""
    check_fraction("val_fraction", val_fraction)
    check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction={val_fraction!r} and test_fraction={test_fraction!r} add up to "
            f"{val_fraction + test_fraction:g}; expected a sum below 1 so that samples are left for training. "
            f"HINT: the defaults are {defaults[0]} and {defaults[1]}."
        )


def check_module(name: str, value: Any, hint: str = "") -> None:
    """Raise ``TypeError`` unless ``value`` is a ``torch.nn.Module``."""
    if not isinstance(value, nn.Module):
        raise TypeError(
            f"{name}={_short(value)} is a {type(value).__name__}; expected a torch.nn.Module. {hint}".rstrip()
        )


def check_path(name: str, value: Any) -> None:
    """Raise ``TypeError`` unless ``value`` is a non-empty ``str`` or ``os.PathLike``."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TypeError(f"{name}={_short(value)} is not accepted; expected a path (a non-empty str or Path).")


def check_number(name: str, value: Any, minimum: float, inclusive: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` is a real number (not a bool) ``>= minimum`` (or ``>``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and not math.isnan(value)
    ok = ok and (value >= minimum if inclusive else value > minimum)
    if not ok:
        bound = ">=" if inclusive else ">"
        raise ValueError(f"{name}={value!r} is not accepted; expected a number {bound} {minimum}.")


def check_device(name: str, value: Any) -> torch.device:
    """Return ``torch.device(value)``, or raise ``ValueError`` naming the argument if torch rejects it."""
    try:
        return torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{name}={value!r} is not a device torch knows; expected e.g. 'cpu', 'cuda' or 'cuda:1'."
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
