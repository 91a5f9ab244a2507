"""lit_opt: PyTorch Lightning plugins that compress models while they train.

Example::

    from lightning import Trainer
    from lit_opt import QATCallback, export, load

    trainer = Trainer(max_steps=500, callbacks=[QATCallback(weight_bits=8)])
    trainer.fit(model, datamodule)
    path = export(model, "artifacts/model-int8")
    fast = load(path, model=MyModel())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lit_opt.export import export, export_onnx, load, load_onnx
from lit_opt.quantization import QuantizationConfig
from lit_opt.restore import restore
from lit_opt.vocabulary import prune_vocabulary, token_ids_in_use

if TYPE_CHECKING:
    from lit_opt.callbacks import (
        ExportCallback,
        IterativePruningCallback,
        LowRankCallback,
        QATCallback,
        WeightSharingCallback,
    )
    from lit_opt.distillation import CausalLMDistillationModule, DistillationModule

# The Lightning adapters are imported on first use, so that `import lit_opt.functional` (pure
# torch) and `lit_opt.load` do not pull in Lightning; the names above it need torch only.
_LAZY = {
    "CausalLMDistillationModule": "lit_opt.distillation",
    "DistillationModule": "lit_opt.distillation",
    "ExportCallback": "lit_opt.callbacks",
    "IterativePruningCallback": "lit_opt.callbacks",
    "LowRankCallback": "lit_opt.callbacks",
    "QATCallback": "lit_opt.callbacks",
    "WeightSharingCallback": "lit_opt.callbacks",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lit_opt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__version__ = "0.1.0"

__all__ = [
    "CausalLMDistillationModule",
    "DistillationModule",
    "ExportCallback",
    "IterativePruningCallback",
    "LowRankCallback",
    "QATCallback",
    "WeightSharingCallback",
    "QuantizationConfig",
    "__version__",
    "export",
    "export_onnx",
    "load",
    "load_onnx",
    "prune_vocabulary",
    "restore",
    "token_ids_in_use",
]
