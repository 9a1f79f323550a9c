"""Loss layers: they take logits and hand back the gradient that starts backpropagation."""

from __future__ import annotations

import numpy as np

from glassnet.functional.cross_entropy import (
    AllIgnored,
    CrossEntropyCache,
    Reduction,
    cross_entropy_backward_from_cache,
    cross_entropy_forward,
)


class CrossEntropyLoss:
    """Softmax + cross-entropy on logits, with the fused backward ``p - y``.

    Args: as :func:`glassnet.functional.cross_entropy` (weight (C,), ignore_index, reduction,
    label_smoothing, all_ignored). Matches ``torch.nn.CrossEntropyLoss``.

    ``forward`` keeps the exponentials it computed, so ``backward`` turns them into the gradient
    without reading the logits again: the pair costs one softmax, and no softmax backward runs.

    >>> loss_fn = CrossEntropyLoss()
    >>> float(loss_fn(np.array([[-0.8, 1.1, 0.1]]), np.array([1])).round(3))
    0.417
    >>> loss_fn.backward().round(3)
    array([[ 0.099, -0.341,  0.242]])
    """

    def __init__(
        self,
        weight: np.ndarray | None = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        all_ignored: AllIgnored = "nan",
    ) -> None:
        self.weight = None if weight is None else np.asarray(weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.all_ignored = all_ignored
        self._cache: CrossEntropyCache | None = None

    def forward(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Loss of ``logits`` (N, C, ...) against ``target``; keeps what backward needs."""
        loss, self._cache = cross_entropy_forward(
            logits,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            all_ignored=self.all_ignored,
        )
        return loss

    __call__ = forward

    def backward(self, grad_output: object = 1.0) -> np.ndarray:
        """dL/dlogits for the last forward call, shape and dtype of its logits."""
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss.backward() called before forward()")
        return cross_entropy_backward_from_cache(self._cache, grad_output)

    def __repr__(self) -> str:
        return (
            f"CrossEntropyLoss(reduction={self.reduction!r}, ignore_index={self.ignore_index}, "
            f"label_smoothing={self.label_smoothing})"
        )
