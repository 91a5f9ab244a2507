"""Export (compressed artifact on disk) and load (runnable model on fast kernels)."""

from lit_opt.export.exporter import export
from lit_opt.export.loader import load
from lit_opt.export.onnx import export_onnx
from lit_opt.export.onnx_runtime import load_onnx

__all__ = ["export", "export_onnx", "load", "load_onnx"]
