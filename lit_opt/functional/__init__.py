"""Pure tensor math (imports only torch): quantization, and later sparsity, distillation, low rank."""

from lit_opt.functional.distillation import causal_lm_cross_entropy, causal_lm_distillation_loss
from lit_opt.functional.quantize import (
    GRANULARITIES,
    dequantize,
    dequantize_weight,
    dynamic_qparams,
    fake_quantize,
    fake_quantize_weight,
    pack_int4,
    qparams_from_range,
    quant_range,
    quantize,
    quantize_weight,
    unpack_int4,
    weight_blocks,
    weight_qparams,
)

__all__ = [
    "GRANULARITIES",
    "causal_lm_cross_entropy",
    "causal_lm_distillation_loss",
    "dequantize",
    "dequantize_weight",
    "dynamic_qparams",
    "fake_quantize",
    "fake_quantize_weight",
    "pack_int4",
    "qparams_from_range",
    "quant_range",
    "quantize",
    "quantize_weight",
    "unpack_int4",
    "weight_blocks",
    "weight_qparams",
]
