"""Argument checks shared across lit_opt: each error names the argument, the value and what is accepted."""

from __future__ import annotations

from typing import Any


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= {minimum}.")


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
