"""Weight parametrizations: small modules whose state is persistent buffers, ``forward(w) -> w'``."""

from lit_opt.parametrizations.weight_fake_quant import WeightFakeQuant

__all__ = ["WeightFakeQuant"]
