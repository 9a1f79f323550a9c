"""Minibatches and a validation split."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def validation_split(
    x: np.ndarray, y: np.ndarray, fraction: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The last ``fraction`` of the samples as validation data, as Keras's ``validation_split``.

    Returns:
        ((x_train, y_train), (x_val, y_val)); views, no copies.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction={fraction!r} must be in [0, 1)")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    n_val = round(len(x) * fraction)
    cut = len(x) - n_val
    if cut == 0 and len(x):
        raise ValueError(
            f"validation fraction={fraction!r} leaves no training samples of {len(x)}: "
            "use a smaller fraction"
        )
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
