"""LightningDataModules for the shipped recipes."""

from lit_opt.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule"]
