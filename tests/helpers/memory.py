"""``LiveBytes``: peak bytes of the tensors an operation allocates, measured on any device (CPU too).

A ``TorchDispatchMode`` sees every tensor an ATen operation returns; a storage it has not seen
(and that is not one of the operation's inputs, as a view's is) counts as allocated until the last
tensor on it is garbage-collected. ``peak`` is the largest total alive at once.

Example::

    with LiveBytes() as probe:
        loss.backward()
    assert probe.peak < 2 * logits.nbytes
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """Track bytes of storages allocated inside the ``with`` block; ``peak`` and ``live`` in bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, tuple[int, int]] = {}  # storage pointer -> (tensors alive on it, bytes)

    def _release(self, pointer: int) -> None:
        count, size = self._refs[pointer]
        if count == 1:
            del self._refs[pointer]
            self.live -= size
        else:
            self._refs[pointer] = (count - 1, size)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
            if pointer in inputs and pointer not in self._refs:  # a view of (or in place on) an older tensor
                continue
            count, size = self._refs.get(pointer, (0, storage.nbytes()))
            if count == 0:
                self.live += size
                self.peak = max(self.peak, self.live)
            self._refs[pointer] = (count + 1, size)
            weakref.finalize(tensor, self._release, pointer)
        return out
