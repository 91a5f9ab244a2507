"""Modules: activation quantizers and low-rank layers for training, and the inference modules ``load()`` builds."""

from lit_opt.nn.activation_quantizer import ActivationQuantizer, attach_input_quantizer
from lit_opt.nn.low_rank import LowRankLinear
from lit_opt.nn.quantized import KERNELS, QuantizedEmbedding, QuantizedLinear
from lit_opt.nn.remapped_embedding import RemappedEmbedding

__all__ = [
    "KERNELS",
    "ActivationQuantizer",
    "LowRankLinear",
    "QuantizedEmbedding",
    "QuantizedLinear",
    "RemappedEmbedding",
    "attach_input_quantizer",
]
