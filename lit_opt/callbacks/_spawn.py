"""Hand the compressed structure back to the launching process of a ``ddp_spawn`` run.

Lightning's spawn launcher copies the trained weights back into the parent's model with
``load_state_dict(strict=False)``; keys of parametrizations and quantizers the parent's model
lacks would be dropped without a word (the parent never ran ``setup``). lit_opt's callbacks call
:func:`install` when constructed (in the parent), which wraps the launcher's recovery step so it
first installs the structure the checkpoint describes (:func:`lit_opt.restore.install_structure`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)
_MARK = "_lit_opt_restores_structure"


def install() -> None:
    """Wrap ``_MultiProcessingLauncher._recover_results_in_main_process`` once (idempotent)."""
    try:
        from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
    except ImportError:  # pragma: no cover - lightning layout changed
        log.warning("lit_opt: cannot find Lightning's spawn launcher; ddp_spawn parents keep plain models.")
        return
    original = getattr(_MultiProcessingLauncher, "_recover_results_in_main_process", None)
    if original is None or getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def recover(self: Any, worker_output: Any, trainer: Any) -> None:
        from lit_opt.restore import install_structure

        path = getattr(worker_output, "weights_path", None)
        if path is not None and trainer.lightning_module is not None:
            state_dict = self._strategy.checkpoint_io.load_checkpoint(path)
            install_structure(trainer.lightning_module, state_dict)
        original(self, worker_output, trainer)

    setattr(recover, _MARK, True)
    _MultiProcessingLauncher._recover_results_in_main_process = recover  # type: ignore[method-assign]
