"""Lightning callbacks: one public class per file."""

from lit_opt.callbacks.export import ExportCallback
from lit_opt.callbacks.low_rank import LowRankCallback
from lit_opt.callbacks.pruning import IterativePruningCallback
from lit_opt.callbacks.qat import QATCallback
from lit_opt.callbacks.weight_sharing import WeightSharingCallback

__all__ = [
    "ExportCallback",
    "IterativePruningCallback",
    "LowRankCallback",
    "QATCallback",
    "WeightSharingCallback",
]
