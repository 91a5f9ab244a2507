"""Which Lightning strategies lit_opt's callbacks run under, and a clear refusal of the others.

Every lit_opt callback works on whole weights held by each process: masks, codebooks and fake
quantizers are parametrizations of full tensors, scores and ranges are all-reduced across replicas,
and the export reads the complete model on rank 0. Replicating strategies (single device, ``ddp``,
``ddp_spawn``, ``ddp_fork``, ``ddp`` across nodes launched by ``torchrun`` or SLURM) keep whole
weights and are supported; strategies that shard parameters across processes (FSDP, DeepSpeed,
ModelParallel) are refused at ``setup``, before anything is modified.
"""

from __future__ import annotations

from typing import Any

#: Strategy classes (matched by name along the class hierarchy, so none needs to be importable) that
#: shard parameters across processes.
SHARDING_STRATEGIES: tuple[str, ...] = (
    "FSDPStrategy",
    "XLAFSDPStrategy",
    "DeepSpeedStrategy",
    "ModelParallelStrategy",
)


def require_whole_weights(trainer: Any, callback: object) -> None:
    """Raise ``ValueError`` if ``trainer``'s strategy shards parameters, which ``callback`` cannot handle.

    Example::

        >>> from types import SimpleNamespace
        >>> from lightning.pytorch.strategies import DDPStrategy
        >>> require_whole_weights(SimpleNamespace(strategy=DDPStrategy()), object())  # no error
    """
    strategy = getattr(trainer, "strategy", None)
    names = [cls.__name__ for cls in type(strategy).__mro__]
    sharding = next((name for name in names if name in SHARDING_STRATEGIES), None)
    if sharding is not None:
        raise ValueError(
            f"{type(callback).__name__} does not support the {type(strategy).__name__} strategy: it shards "
            "parameters across processes, while lit_opt's masks, quantizers and codebooks parametrize whole "
            "weights on every process. HINT: use strategy='ddp' (across nodes: Trainer(num_nodes=N, "
            "strategy='ddp') launched by torchrun or SLURM); see README 'Multi-GPU and multi-node'."
        )
