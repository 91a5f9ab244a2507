"""Export (compressed artifact on disk) and load (runnable model on fast kernels)."""

from lit_opt.export.exporter import export
from lit_opt.export.loader import load

__all__ = ["export", "load"]
