"""Mean squared error and negative log-likelihood, with their backward passes.

Shapes follow ``torch.nn.functional``:
    mse_loss    input and target of one shape (...); loss () or, for "none", that shape
    nll_loss    log_probs (C,), (N, C) or (N, C, d1, ..., dk), classes on axis 1 (0 unbatched);
                target class indices (), (N,) or (N, d1, ..., dk); weight (C,)

``nll_loss(log_softmax(z), y)`` is ``cross_entropy(z, y)``, so it shares cross_entropy's input
checks, row layout (M rows of C classes) and reductions.
"""

from __future__ import annotations

import numpy as np

from glassnet.functional._checks import as_float_array, check_reduction, compute_dtype
from glassnet.functional._rows import (
    CrossEntropyCache,
    reduce_loss,
    restore_layout,
    row_scale,
    to_rows,
)
from glassnet.functional.cross_entropy import Reduction, check_options, check_weight


def _mse_inputs(input: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """input and target as floating arrays of one shape, and input - target (compute dtype)."""
    input, target = as_float_array(input, "input"), as_float_array(target, "target")
    if input.shape != target.shape:
        raise ValueError(
            f"target of shape {target.shape} must have the input's shape {input.shape}"
        )
    return input, input.astype(compute_dtype(input.dtype), copy=False) - target


def mse_loss(input: np.ndarray, target: np.ndarray, reduction: Reduction = "mean") -> np.ndarray:
    """Squared error ``(input - target)^2``, averaged ("mean"), summed ("sum") or kept ("none").

    Args:
        input: predictions, any shape, float16/32/64.
        target: the values to match, input's shape.
        reduction: "mean" (over all elements), "sum" or "none" (elementwise).
    Returns:
        loss, () or input's shape for "none"; input's dtype.

    Matches ``torch.nn.functional.mse_loss``, except that a target of another shape raises
    ValueError (PyTorch broadcasts it with a warning).

    >>> float(mse_loss(np.array([1.0, 2.0]), np.array([0.0, 4.0])))
    2.5
    """
    check_reduction(reduction)
    input, diff = _mse_inputs(input, target)
    squared = diff * diff
    if reduction == "none":
        return squared.astype(input.dtype, copy=False)
    total = squared.sum(dtype=np.float64)
    if reduction == "mean":
        total = total / squared.size if squared.size else np.nan
    return np.asarray(total, dtype=input.dtype)


def mse_loss_backward(
    input: np.ndarray,
    target: np.ndarray,
    grad_output: object = 1.0,
    reduction: Reduction = "mean",
) -> np.ndarray:
    """dL/dinput of :func:`mse_loss`: ``2 * (input - target) * grad_output``, / numel for "mean".

    Args:
        input, target, reduction: as for :func:`mse_loss`.
        grad_output: dL_outer/dloss; a scalar, or for "none" an array of input's shape.
    Returns:
        grad_input with input's shape and dtype (dL/dtarget is its negative).

    Matches ``input.grad`` after ``F.mse_loss(input, target, reduction=...).backward(grad_output)``.
    """
    check_reduction(reduction)
    input, diff = _mse_inputs(input, target)
    grad_output = np.asarray(grad_output, dtype=diff.dtype)
    if grad_output.ndim and (reduction != "none" or grad_output.shape != input.shape):
        raise ValueError(
            f"grad_output of shape {grad_output.shape} must be a scalar, or have the input's "
            f"shape {input.shape} for reduction='none'"
        )
    # dL/dinput = 2 * (input - target) * grad_output / (numel if mean else 1)
    scale = 2 * grad_output / (diff.size if reduction == "mean" and diff.size else 1)
    return (diff * scale).astype(input.dtype, copy=False)


def nll_loss_forward(
    log_probs: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> tuple[np.ndarray, CrossEntropyCache]:
    """:func:`nll_loss`, plus the cache for :func:`nll_loss_backward_from_cache`."""
    check_options(ignore_index, reduction, 0.0, "nan")
    log_probs = as_float_array(log_probs, "log_probs")
    target = np.asarray(target)
    index_shape = log_probs.shape[:1] + log_probs.shape[2:] if log_probs.ndim > 1 else ()
    if log_probs.ndim == 0 or target.shape != index_shape:
        raise ValueError(
            f"log_probs of shape {log_probs.shape} and target of shape {target.shape} do not "
            "fit: expected log_probs (C,), (N, C) or (N, C, d1, ...) and class indices of "
            "shape (), (N,) or (N, d1, ...)"
        )
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(f"target must hold class indices (integers), got dtype {target.dtype}")
    rows = to_rows(log_probs, target, ignore_index)  # checks the class indices' range
    weight = check_weight(weight, rows.logits.shape[1], rows.logits.dtype)
    coef = np.ones(len(rows.labels), rows.logits.dtype) if weight is None else weight[rows.labels]
    coef[~rows.keep] = 0
    picked = rows.logits[np.arange(len(rows.labels)), rows.labels]
    row_loss = np.zeros_like(picked)
    with np.errstate(invalid="ignore"):  # weight 0 times log p = -inf is NaN, as in PyTorch
        np.multiply(-coef, picked, out=row_loss, where=rows.keep)
    denominator = float(coef.sum(dtype=np.float64))
    cache = CrossEntropyCache(
        None, None, rows.labels, coef, None, denominator, rows, reduction, "nan"
    )
    return reduce_loss(row_loss, cache), cache


def nll_loss_backward_from_cache(cache: CrossEntropyCache, grad_output: object = 1.0) -> np.ndarray:
    """dL/dlog_probs from the cache of :func:`nll_loss_forward`; the cache is left intact."""
    scale = row_scale(cache, grad_output)  # (M, 1)
    grad = np.zeros_like(cache.rows.logits)
    # dL/dlog_probs[row, c] = -weight[target] * scale where c = target, else 0
    grad[np.arange(len(grad)), cache.labels] = -cache.coef * scale[:, 0]
    return restore_layout(grad, cache.rows)


def nll_loss(
    log_probs: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> np.ndarray:
    """Negative log-likelihood ``-weight[y] * log_probs[y]`` of each target class y.

    Args:
        log_probs: log-probabilities (e.g. from log_softmax), shape (C,), (N, C) or
            (N, C, d1, ..., dk); float16/32/64.
        target: class indices, shape (), (N,) or (N, d1, ..., dk).
        weight: per-class rescaling, shape (C,).
        ignore_index: targets equal to this add nothing to the loss or the mean.
        reduction: "none" (per position; ignored ones 0), "mean" (sum / the summed weights of
            the counted targets; NaN when there are none, as PyTorch) or "sum".
    Returns:
        loss, () or the target's shape for "none"; log_probs' dtype.

    Matches ``torch.nn.functional.nll_loss``.

    >>> float(nll_loss(np.log(np.array([[0.25, 0.75]])), np.array([1])).round(4))
    0.2877
    """
    loss, _ = nll_loss_forward(
        log_probs, target, weight=weight, ignore_index=ignore_index, reduction=reduction
    )
    return loss


def nll_loss_backward(
    log_probs: np.ndarray,
    target: np.ndarray,
    grad_output: object = 1.0,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> np.ndarray:
    """dL/dlog_probs of :func:`nll_loss`: ``-weight[y] * grad_output`` at the target class.

    Args:
        log_probs, target and the keyword options: as for :func:`nll_loss`.
        grad_output: dL_outer/dloss; a scalar, or for "none" an array of the loss's shape.
    Returns:
        grad_log_probs, log_probs' shape and dtype; zero off the target classes, and "mean"
        divides by the summed weights. When they sum to 0 the gradient is 0 (PyTorch: 0 if
        every target is ignored, NaN if the counted targets' weights are all 0).

    Matches ``log_probs.grad`` after ``F.nll_loss(log_probs, target, ...).backward(grad_output)``.
    """
    _, cache = nll_loss_forward(
        log_probs, target, weight=weight, ignore_index=ignore_index, reduction=reduction
    )
    return nll_loss_backward_from_cache(cache, grad_output)
