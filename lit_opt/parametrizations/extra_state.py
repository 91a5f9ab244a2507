"""``ConfigExtraState``: a module whose ``config()`` is its extra state, checked against a checkpoint's on load."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn


class ConfigExtraState(nn.Module):
    """A module that saves the primitives rebuilding it (:meth:`config`) as its extra state.

    Loading a checkpoint whose extra state differs from :meth:`config` on the keys ``checked``
    (``None``: every key but ``owner``) raises ``ValueError`` naming ``what`` the module is and the
    ``callback`` that installs it. The parametrizations and
    :class:`~lit_opt.nn.ActivationQuantizer` are such modules.

    Example::

        >>> from lit_opt.parametrizations import Mask
        >>> Mask((2, 2)).load_state_dict(Mask((2, 3)).state_dict())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the checkpoint's pruning mask {...} does not match this model's {...}. HINT: resume ...
    """

    what: ClassVar[str]
    callback: ClassVar[str]
    checked: ClassVar[tuple[str, ...] | None] = None
    #: The attributes :meth:`config` holds after ``kind``, in order: constructor arguments, which
    #: :func:`lit_opt.restore` passes back.
    fields: ClassVar[tuple[str, ...]]

    def config(self) -> dict[str, Any]:
        """Primitives that rebuild this module (stored as its extra state): ``kind``, then ``fields``
        (a tuple, such as a shape, as a list)."""
        config: dict[str, Any] = {"kind": type(self).__name__}
        for name in self.fields:
            value = getattr(self, name)
            config[name] = list(value) if isinstance(value, tuple) else value
        return config

    def get_extra_state(self) -> dict[str, Any]:
        return self.config()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        mine = self.config()
        keys = [k for k in mine if k != "owner"] if self.checked is None else self.checked
        if any(state.get(k) != mine.get(k) for k in keys):
            raise ValueError(
                f"the checkpoint's {self.what} {state} does not match this model's {mine}. "
                f"HINT: resume with the same {self.callback} arguments the checkpoint was trained with."
            )
