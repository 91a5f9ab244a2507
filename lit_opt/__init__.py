"""lit_opt: PyTorch Lightning plugins that compress models while they train.

Example::

    from lightning import Trainer
    from lit_opt import QATCallback, export, load

    trainer = Trainer(max_steps=500, callbacks=[QATCallback(weight_bits=8)])
    trainer.fit(model, datamodule)
    path = export(model, "artifacts/model-int8")
    fast = load(path, model=MyModel())
"""

from lit_opt.callbacks import (
    ExportCallback,
    IterativePruningCallback,
    LowRankCallback,
    QATCallback,
    WeightSharingCallback,
)
from lit_opt.distillation import DistillationModule
from lit_opt.export import export, export_onnx, load, load_onnx
from lit_opt.quantization import QuantizationConfig
from lit_opt.restore import restore
from lit_opt.vocabulary import prune_vocabulary, token_ids_in_use

__version__ = "0.1.0"

__all__ = [
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
