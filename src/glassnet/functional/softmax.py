"""Softmax, log-softmax and their derivatives.

Shapes: any batch shape ``(...)``; the class axis ``axis`` has length C. As in PyTorch, a 0-d
array is one row of one class (``axis`` 0 or -1): its softmax is 1 and its log-softmax 0; an
empty array gives an empty array of its shape, also when C = 0.
A logit of ``-inf`` marks a masked class: its probability is exactly 0. A row in which every
class is masked has no distribution; it gets probabilities 0 (PyTorch gives NaN) and
log-probabilities ``-inf``. A row holding ``+inf`` is all NaN, as in PyTorch.
"""

from __future__ import annotations

import numpy as np

from glassnet.functional._checks import as_float_array, compute_dtype, normalize_axis


def shift_by_max(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``x - max(x)`` along ``axis`` and the max (kept dims); all-masked and empty rows
    shift by 0."""
    row_max = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    # An all -inf row would give -inf - (-inf) = NaN; shifting it by 0 keeps it at -inf.
    row_max = np.where(row_max == -np.inf, 0, row_max).astype(x.dtype, copy=False)
    with np.errstate(invalid="ignore"):  # +inf - (+inf) is NaN, the answer PyTorch gives too
        return x - row_max, row_max


def exp_and_sum(shifted: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Exponentiate ``shifted`` in place; return it and its sum, with 1 standing in for 0.

    After the shift the largest entry of a row is exp(0) = 1, so a sum is either >= 1 or 0, and 0
    only for an all-masked (or empty) row, whose exponentials are all 0 anyway.
    """
    exps = np.exp(shifted, out=shifted)
    total = exps.sum(axis=axis, keepdims=True)
    total[total == 0] = 1
    return exps, total


def _class_axis_view(x: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """``x`` at least 1-d in its compute dtype, and ``axis`` checked and made non-negative.

    A 0-d ``x`` becomes shape (1,): one row of one class, with ``axis`` 0 or -1 as in PyTorch.
    """
    axis = normalize_axis(axis, max(x.ndim, 1))
    return np.atleast_1d(x).astype(compute_dtype(x.dtype), copy=False), axis


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities ``exp(x) / sum(exp(x))`` along ``axis``, computed as ``exp(x - max x)``.

    Args:
        x: logits, shape ``(..., C, ...)``, float16/32/64.
        axis: the class axis.
    Returns:
        probs with the shape and dtype of ``x``; each row sums to 1.

    Matches ``torch.softmax``, except that an all ``-inf`` row gives zeros instead of NaN.

    >>> softmax(np.array([-0.8, 1.1, 0.1])).round(3)
    array([0.099, 0.659, 0.242])
    """
    x = as_float_array(x, "x")
    logits, axis = _class_axis_view(x, axis)
    shifted, _ = shift_by_max(logits, axis)
    exps, total = exp_and_sum(shifted, axis)
    exps /= total
    return exps.reshape(x.shape).astype(x.dtype, copy=False)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log-probabilities ``(x - max x) - log(sum(exp(x - max x)))`` along ``axis``.

    Args:
        x: logits, shape ``(..., C, ...)``, float16/32/64.
        axis: the class axis.
    Returns:
        log-probs with the shape and dtype of ``x``; masked classes stay ``-inf``.

    Matches ``torch.log_softmax``; never computed as ``log(softmax(x))``, which underflows.

    >>> log_softmax(np.array([0.0, 1000.0]))
    array([-1000.,     0.])
    """
    x = as_float_array(x, "x")
    logits, axis = _class_axis_view(x, axis)
    shifted, _ = shift_by_max(logits, axis)
    _, total = exp_and_sum(shifted.copy(), axis)
    shifted -= np.log(total)
    return shifted.reshape(x.shape).astype(x.dtype, copy=False)


def softmax_backward(grad_out: np.ndarray, probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vector-Jacobian product of softmax: ``probs * (grad_out - sum(grad_out * probs))``.

    Args:
        grad_out: dL/dprobs, shape ``(..., C, ...)``.
        probs: the softmax output that ``grad_out`` belongs to, same shape.
        axis: the class axis.
    Returns:
        grad_x = dL/dx, same shape and dtype as ``probs``. O(C) per row; the (C, C)
        Jacobian is never formed.

    Matches the backward of ``torch.softmax`` (and ``jax.nn.softmax``).

    >>> p = softmax(np.array([2.0, 1.0, 0.1]))
    >>> softmax_backward(np.array([0.0, 0.0, -1 / p[2]]), p).round(2)
    array([ 0.66,  0.24, -0.9 ])
    """
    grad_out = as_float_array(grad_out, "grad_out")
    probs = as_float_array(probs, "probs")
    if grad_out.shape != probs.shape:
        raise ValueError(
            f"grad_out of shape {grad_out.shape} must have the shape of probs {probs.shape}"
        )
    g, _ = _class_axis_view(grad_out.astype(compute_dtype(probs.dtype), copy=False), axis)
    p, axis = _class_axis_view(probs, axis)
    # dL/dx_j = sum_i g_i * p_i * (delta_ij - p_j) = p_j * (g_j - sum_i g_i p_i)
    grad_x = p * (g - np.sum(g * p, axis=axis, keepdims=True))
    return grad_x.reshape(probs.shape).astype(probs.dtype, copy=False)


def log_softmax_backward(grad_out: np.ndarray, log_probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vector-Jacobian product of log-softmax: ``grad_out - exp(log_probs) * sum(grad_out)``.

    Args:
        grad_out: dL/dlog_probs, shape ``(..., C, ...)``.
        log_probs: the log_softmax output that ``grad_out`` belongs to, same shape.
        axis: the class axis.
    Returns:
        grad_x = dL/dx, same shape and dtype as ``log_probs``.

    Matches the backward of ``torch.log_softmax``.

    >>> log_softmax_backward(np.array([0.0, -1.0, 0.0]), log_softmax(np.array([-0.8, 1.1, 0.1])))
    array([ 0.09856589, -0.34099886,  0.24243297])
    """
    grad_out = as_float_array(grad_out, "grad_out")
    log_probs = as_float_array(log_probs, "log_probs")
    if grad_out.shape != log_probs.shape:
        raise ValueError(
            f"grad_out of shape {grad_out.shape} must have the shape of log_probs {log_probs.shape}"
        )
    g, _ = _class_axis_view(grad_out.astype(compute_dtype(log_probs.dtype), copy=False), axis)
    log_p, axis = _class_axis_view(log_probs, axis)
    # dL/dx_j = g_j - p_j * sum_i g_i
    grad_x = g - np.exp(log_p) * g.sum(axis=axis, keepdims=True)
    return grad_x.reshape(log_probs.shape).astype(log_probs.dtype, copy=False)


def softmax_jacobian(probs: np.ndarray) -> np.ndarray:
    """The explicit softmax Jacobian ``J[..., i, j] = dp_i/dx_j = p_i * (delta_ij - p_j)``.

    Args:
        probs: softmax output, shape ``(..., C)`` (classes on the last axis).
    Returns:
        J of shape ``(..., C, C)``, i.e. ``diag(p) - p p^T`` for every row; symmetric.

    For teaching and checking: it costs O(C^2) per row, so the training path uses
    :func:`softmax_backward` instead.

    >>> softmax_jacobian(np.array([0.5, 0.5]))
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    probs = as_float_array(probs, "probs")
    if probs.ndim == 0:
        raise ValueError("probs must have at least one dimension (the class axis), got a scalar")
    p = probs.astype(compute_dtype(probs.dtype), copy=False)
    jac = -p[..., :, None] * p[..., None, :]
    classes = np.arange(p.shape[-1])
    jac[..., classes, classes] += p
    return jac.astype(probs.dtype, copy=False)
