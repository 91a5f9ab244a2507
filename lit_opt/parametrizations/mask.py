"""``Mask``: a parametrization that zeroes pruned entries of a weight (or bias)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_opt.parametrizations.extra_state import ConfigExtraState


class Mask(ConfigExtraState):
    """Multiplies the tensor it parametrizes by a persistent boolean ``mask`` buffer.

    The effective tensor is exactly zero where the mask is False, whatever the optimizer does, and
    the gradient there is zero while it multiplies. :meth:`zero_pruned` zeroes those entries of the
    original in place: until the original changes again (another tensor, or its version counter
    moves) or :meth:`forget_zeroed`, forwards with gradients enabled return it as it is, without the
    multiply, and its gradient there is then not zero. ``IterativePruningCallback`` does this during
    ``fit`` only, re-zeroing after every optimizer step. Optional
    ``score`` / ``score_count`` buffers hold data-dependent importance (accumulated movement,
    summed |activation| per output unit) so that a resumed run continues from the same scores.

    Args:
        shape: shape of the tensor.
        score_shape: shape of the ``score`` buffer, or None when the criterion needs no state.
        owner: ``state_key`` of the callback that installed it.

    Example::

        >>> from torch.nn.utils import parametrize
        >>> layer = torch.nn.Linear(2, 2)
        >>> mask = Mask((2, 2))
        >>> mask.mask[0, 1] = False
        >>> _ = parametrize.register_parametrization(layer, "weight", mask)
        >>> layer.weight[0, 1].item() == 0.0
        True
        >>> original = layer.parametrizations.weight.original
        >>> mask.zero_pruned(original)
        >>> original[0, 1].item() == 0.0, layer.weight is original  # no multiply until original changes
        (True, True)
    """

    what, callback, checked = "pruning mask", "IterativePruningCallback", ("shape", "score_shape")
    fields = ("shape", "score_shape", "owner")
    mask: Tensor
    score: Tensor
    score_count: Tensor
    factor: Tensor

    def __init__(
        self,
        shape: tuple[int, ...] | list[int] | torch.Size,
        score_shape: list[int] | None = None,
        owner: str = "",
    ) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.score_shape = None if score_shape is None else [int(d) for d in score_shape]
        self.owner = owner
        self.register_buffer("mask", torch.ones(self.shape, dtype=torch.bool))
        # ``mask`` as a multiplier in the weight's dtype, rebuilt only when ``mask`` changes (its in-place
        # version counter moves, or it is a new tensor after ``.to()``); not part of the state_dict
        self.register_buffer("factor", torch.ones(self.shape), persistent=False)
        self._seen: tuple[int, int] | None = None
        self._zeroed: tuple[int, int, int] | None = None  # _identity() of an original zero where pruned
        self._dense = True
        self._held: Tensor | None = None
        if self.score_shape is not None:
            self.register_buffer("score", torch.zeros(self.score_shape))
            self.register_buffer("score_count", torch.tensor(0.0))

    @property
    def sparsity(self) -> float:
        """Fraction of entries pruned."""
        return 1.0 - float(self.mask.float().mean())

    def _refresh(self, dtype: torch.dtype) -> None:
        """Rebuild ``factor`` if ``mask`` changed since the last call (or the weight's dtype did)."""
        seen = (id(self.mask), self.mask._version)
        if seen == self._seen and self.factor.dtype == dtype and self.factor.device == self.mask.device:
            return
        # a normal tensor even when the first forward after a change runs under inference_mode
        with torch.no_grad(), torch.inference_mode(False):
            if self.factor.dtype == dtype and self.factor.device == self.mask.device:
                self.factor.copy_(self.mask)  # in place: DDP and others holding the buffer see it
            else:
                self.factor = self.mask.to(dtype)
        self._dense = bool(self.mask.all())
        self._seen = (id(self.mask), self.mask._version)
        self._zeroed = None  # zeroed for the old mask, not for this one

    def zero_pruned(self, original: Tensor) -> None:
        """Zero ``original`` in place where the mask is False, so that :meth:`forward` can return it unmultiplied
        until it changes again. Its gradient is then not masked: mask ``original.grad`` before each
        optimizer step (:meth:`mask_grad`) to keep the gradient there exactly zero. The class example
        shows it.
        """
        self._refresh(original.dtype)
        if self._dense:
            return
        with torch.no_grad():
            original.mul_(self.factor)
        self._zeroed = self._identity(original)

    def forget_zeroed(self) -> None:
        """Multiply on every forward again (what :meth:`zero_pruned` allowed ends; e.g. when training does)."""
        self._zeroed = None

    @staticmethod
    def _identity(tensor: Tensor) -> tuple[int, int, int]:
        # a swapped tensor or storage changes id or data_ptr; an in-place edit moves the version counter
        # (edits through ``.data`` or numpy do not, which is why only training forwards trust this)
        return id(tensor), tensor.data_ptr(), tensor._version

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_zeroed"] = None  # names a tensor of this process, not of the copy
        return state

    def mask_grad(self, original: Tensor) -> None:
        """Zero ``original.grad`` in place where the mask is False (see :meth:`zero_pruned`)."""
        self._refresh(original.dtype)
        if not self._dense and original.grad is not None:
            original.grad.mul_(self.factor)

    def forward(self, w: Tensor) -> Tensor:
        self._refresh(w.dtype)
        if self._dense or (self._zeroed == self._identity(w) and torch.is_grad_enabled()):
            # nothing pruned, or a training forward of a w still zero where pruned: w itself, no multiply
            self._held = None
            return w
        masked = w * self.factor
        # While training, hold the product's memory until the next forward replaces it, as
        # torch.nn.utils.prune's hooks do: freed after each backward, glibc hands it back to the OS and
        # the next step page-faults it in again (MiniLM-shaped BERT, 90% masks, 2 threads: 1.07-1.09x a dense
        # step without this, 1.02-1.03x with it). Detached, so deepcopy and pickling still work.
        self._held = masked.detach() if torch.is_grad_enabled() else None
        return masked

    def extra_repr(self) -> str:
        return f"shape={self.shape}, sparsity={self.sparsity:.3f}"
