"""Small LightningModules that the shipped configs and the tests compress."""

from lit_opt.models.mlp_classifier import MLPClassifier

__all__ = ["MLPClassifier"]
