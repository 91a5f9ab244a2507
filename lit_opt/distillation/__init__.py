"""Knowledge distillation: ``DistillationModule`` (classifiers) and ``CausalLMDistillationModule``."""

from lit_opt.distillation.causal_lm import CausalLMDistillationModule
from lit_opt.distillation.module import DistillationModule

__all__ = ["CausalLMDistillationModule", "DistillationModule"]
