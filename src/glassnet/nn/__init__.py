"""Layers that hold parameters and the caches their backward passes need."""

from glassnet.nn.loss import CrossEntropyLoss

__all__ = ["CrossEntropyLoss"]
