"""``CompressionCallback``: what the QAT, pruning, weight-sharing and low-rank callbacks share.

Constructing one installs the ``ddp_spawn`` hand-back (:mod:`lit_opt.callbacks._spawn`); its ``setup``
refuses strategies that shard weights (:mod:`lit_opt.callbacks._strategy`), then calls the subclass's
``install`` and logs what it installed; its ``state_key`` and checkpointed state follow rule 3 of
``docs/architecture.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sized
from operator import attrgetter
from typing import Any, ClassVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lit_opt.callbacks import _spawn
from lit_opt.callbacks._strategy import require_whole_weights


class CompressionCallback(Callback):
    """A callback that compresses the modules its ``targets``/``exclude`` patterns select.

    :attr:`state_key` is the class with the values of the attributes ``identity`` names (the patterns
    first), so two instances keep their states, and the modules they own, apart. The checkpointed state
    is the attributes ``progress`` names, each passed through its type when saved and when loaded, so it
    holds only primitives. :meth:`setup` checks the strategy, calls :meth:`install` and logs the number of
    modules it returns, worded by ``installs``: subclasses put their setup work in :meth:`install` (one
    that overrides ``setup`` itself calls this one first).

    Example::

        class MyCallback(CompressionCallback):
            identity = ("config.targets", "config.exclude", "config.bits")  # MyCallback{'targets': [...], ...}
            progress = {"last_step": int}  # state_dict(): {"last_step": int(self.last_step)}
            installs = "quantizes %d modules"  # setup logs: MyCallback{...} quantizes 3 modules

            def install(self, trainer, pl_module):
                self.modules = prepare_my_compression(pl_module, self.config, owner=self.state_key)
                return self.modules
    """

    #: Attribute paths whose values (keyed by their last name) tell two instances of a class apart.
    identity: ClassVar[tuple[str, ...]]
    #: The attributes :meth:`state_dict` saves, each with the type it is saved and loaded as.
    progress: ClassVar[dict[str, Callable[[Any], Any]]]
    #: What :meth:`setup` logs after :meth:`install`, ``%d`` standing for the number it installed; "": nothing.
    installs: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        _spawn.install()

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**{p.rpartition(".")[2]: attrgetter(p)(self) for p in self.identity})

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_whole_weights(trainer, self)
        installed = self.install(trainer, pl_module)
        if self.installs:  # logged under the subclass's module, as "QATCallback{...} quantizes 3 modules"
            log = logging.getLogger(type(self).__module__)
            log.info("%s %s %s", type(self).__name__, self.state_key, self.installs % len(installed))

    def install(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Sized:
        """Installs this callback's modules in ``pl_module`` (called by :meth:`setup`); returns them."""
        return ()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {name: kind(getattr(self, name)) for name, kind in self.progress.items()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, kind in self.progress.items():
            setattr(self, name, kind(state_dict[name]))
