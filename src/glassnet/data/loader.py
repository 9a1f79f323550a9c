"""Minibatches and a validation split."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from glassnet.data.dataset import validation_cut


def validation_split(
    x: np.ndarray, y: np.ndarray, fraction: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The last ``fraction`` of the samples as validation data, as Keras's ``validation_split``.

    Returns:
        ((x_train, y_train), (x_val, y_val)); views, no copies.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    cut = validation_cut(len(x), fraction)
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x_batch, y_batch)`` pairs of ``batch_size`` (the last may be smaller).

    ``order`` holds the sample indices to visit (``rng.permutation(len(x))`` for a shuffled
    epoch, or the rest of one); without it all samples come in their stored order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    count = len(x) if order is None else len(order)
    for start in range(0, count, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            yield x[index], y[index]
