"""Select submodules by fnmatch patterns over their fully qualified names.

Every lit_opt callback chooses the layers it compresses with ``targets`` and ``exclude`` lists of
:mod:`fnmatch` patterns, matched against the names that :meth:`torch.nn.Module.named_modules`
yields (``"encoder.layer.0.attention.self.query"``), so the choice can be written in YAML. This
module holds that matching and its error messages: a pattern that selects nothing is an error that
names the argument, the pattern, what was expected and the module names closest to it.

Example::

    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> list(select_modules(model, targets=["*"], exclude=["2"], types=(nn.Linear,)))
    ['0']
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from typing import Any

from torch import nn

__all__ = ["select_modules", "validate_patterns"]

_PATTERN_HINT = "HINT: patterns are fnmatch over qualified names from model.named_modules()"
_MAX_NAMES_SHOWN = 5


def validate_patterns(value: Any, argument: str = "targets") -> list[str]:
    """Check that ``value`` is a list or tuple of pattern strings and return it as a list.

    Constructors call this so that a malformed ``targets`` or ``exclude`` fails at ``__init__``,
    long before a model exists. Emptiness is not checked here: an empty ``exclude`` is normal,
    and :func:`select_modules` rejects an empty ``targets``.

    Args:
        value: The user's value, expected to be a ``list`` or ``tuple`` of ``str``.
        argument: The argument's name, used in the error message.

    Returns:
        The patterns as a new ``list[str]``.

    Raises:
        ValueError: If ``value`` is a bare string, not a list/tuple, or holds a non-string.

    Example::

        >>> validate_patterns(("encoder.*", "*.dense"), "targets")
        ['encoder.*', '*.dense']
    """
    if isinstance(value, str):
        raise ValueError(
            f"{argument}={value!r} must be a list of fnmatch patterns, not a string. "
            f"HINT: write {argument}=[{value!r}]"
        )
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"{argument}={value!r} must be a list or tuple of fnmatch pattern strings, "
            f"got {type(value).__name__}. {_PATTERN_HINT}"
        )
    bad = [item for item in value if not isinstance(item, str)]
    if bad:
        raise ValueError(
            f"{argument}={list(value)!r} must hold only strings; {bad[0]!r} is a "
            f"{type(bad[0]).__name__}. HINT: choose modules by name pattern (e.g. '*.dense'), "
            "not by module object"
        )
    return list(value)


def _type_names(types: tuple[type[nn.Module], ...] | None) -> str:
    if not types:
        return ""
    return "/".join(t.__name__ for t in types) + " "


def _nearest(pattern: str, names: list[str]) -> str:
    """Format the module names closest to ``pattern`` for an error message."""
    if not names:
        return "the model has no submodules"
    close = difflib.get_close_matches(pattern, names, n=_MAX_NAMES_SHOWN, cutoff=0.4)
    return "modules include " + _shown(close or names, total=len(names))


def _shown(names: list[str], total: int | None = None) -> str:
    """Quote the first few ``names``, with ``...`` when ``total`` is larger than shown."""
    shown = names[:_MAX_NAMES_SHOWN]
    more = ", ..." if (total if total is not None else len(names)) > len(shown) else ""
    return ", ".join(repr(n) for n in shown) + more


def select_modules(
    model: nn.Module,
    targets: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    types: tuple[type[nn.Module], ...] | None = None,
    argument: str = "targets",
) -> dict[str, nn.Module]:
    """Select the submodules of ``model`` whose qualified names match ``targets``.

    A module is selected when its name (as yielded by ``model.named_modules()``, the root ``""``
    left out) matches any pattern in ``targets`` (:func:`fnmatch.fnmatchcase`), matches no pattern
    in ``exclude``, and, if ``types`` is given, is an instance of one of ``types``. Every target
    pattern must select at least one module of the accepted types before exclusion, so a typo
    fails loudly instead of silently compressing nothing.

    Args:
        model: The model to search.
        targets: fnmatch patterns of module names to select; ``["*"]`` selects all.
        exclude: fnmatch patterns of module names to leave out, applied after ``targets``.
        types: If given, only instances of these classes are selected.
        argument: The name of the user-facing argument that held ``targets``, for messages.

    Returns:
        An ordered ``dict`` of name to module, in ``named_modules()`` order.

    Raises:
        ValueError: If ``targets`` is empty or not a list/tuple of strings, if ``exclude`` is not
            a list/tuple of strings, if a target pattern matches no module, if it matches only
            modules of other types, or if ``exclude`` removes every selected module.

    Example::

        >>> from torch import nn
        >>> model = nn.Sequential()
        >>> model.add_module("encoder", nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
        >>> model.add_module("classifier", nn.Linear(4, 2))
        >>> sorted(select_modules(model, ["encoder.*", "classifier"], types=(nn.Linear,)))
        ['classifier', 'encoder.0']
    """
    target_list = validate_patterns(targets, argument)
    exclude_list = validate_patterns(exclude, "exclude")
    if not target_list:
        raise ValueError(f"{argument}=[] selects nothing. HINT: use {argument}=['*'] to select every module")

    named = [(name, module) for name, module in model.named_modules() if name]
    names = [name for name, _ in named]
    accepted = [(n, m) for n, m in named if types is None or isinstance(m, types)]
    accepted_names = [n for n, _ in accepted]
    kind = _type_names(types)

    for pattern in target_list:
        if any(fnmatch.fnmatchcase(n, pattern) for n in accepted_names):
            continue
        matched_other = [(n, m) for n, m in named if fnmatch.fnmatchcase(n, pattern)]
        if matched_other:
            found = sorted({type(m).__name__ for _, m in matched_other})
            raise ValueError(
                f"{argument}=[{pattern!r}] matched {len(matched_other)} module(s) but no {kind}module; "
                f"it matched {', '.join(found)} (e.g. {matched_other[0][0]!r}). "
                + (
                    f"HINT: {kind}modules include {_shown(accepted_names)}"
                    if accepted_names
                    else f"HINT: the model has no {kind}modules at all"
                )
            )
        nearest = _nearest(pattern, accepted_names or names)
        stop = "" if nearest.endswith("...") else "."
        raise ValueError(f"{argument}=[{pattern!r}] matched no {kind}module; {nearest}{stop} {_PATTERN_HINT}")

    selected: dict[str, nn.Module] = {}
    excluded: list[str] = []
    for name, module in accepted:
        if not any(fnmatch.fnmatchcase(name, p) for p in target_list):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude_list):
            excluded.append(name)
            continue
        selected[name] = module
    if not selected:
        raise ValueError(
            f"exclude={exclude_list!r} removed every {kind}module that {argument}={target_list!r} "
            f"selected ({_shown(excluded)}). "
            "HINT: narrow exclude or widen targets"
        )
    return selected
