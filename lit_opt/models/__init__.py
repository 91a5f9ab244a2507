"""Small LightningModules that the shipped configs and the tests compress."""

from lit_opt.models.mlp_classifier import MLPClassifier
from lit_opt.models.sequence_classifier import SequenceClassifier

__all__ = ["MLPClassifier", "SequenceClassifier"]
