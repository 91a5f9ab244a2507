"""LightningDataModules for the shipped recipes."""

from lit_opt.data.causal_lm import CausalLMDataModule
from lit_opt.data.digits import DigitsDataModule
from lit_opt.data.text_classification import TextClassificationDataModule

__all__ = ["CausalLMDataModule", "DigitsDataModule", "TextClassificationDataModule"]
