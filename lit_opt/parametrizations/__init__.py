"""Weight parametrizations: small modules whose state is persistent buffers, ``forward(w) -> w'``."""

from lit_opt.parametrizations.codebook import Codebook
from lit_opt.parametrizations.mask import Mask
from lit_opt.parametrizations.ordering import ORDER, register_in_order
from lit_opt.parametrizations.weight_fake_quant import WeightFakeQuant

__all__ = ["ORDER", "Codebook", "Mask", "WeightFakeQuant", "register_in_order"]
