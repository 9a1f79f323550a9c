"""Logits as M rows of C classes: the layout, cache and reductions cross_entropy and nll_loss share.

Shapes: logits (C,), (N, C) or (N, C, d1, ..., dk), classes on axis 1 (axis 0 unbatched), are
viewed as (M, C) with M = N * d1 * ... * dk; index targets (), (N,) or (N, d1, ..., dk) as (M,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from glassnet.functional._checks import as_float_array, compute_dtype


@dataclass
class Rows:
    """Validated logits and target, flattened to rows of C classes (class axis last)."""

    logits: np.ndarray  # (M, C), compute dtype
    labels: np.ndarray | None  # (M,) int64 class indices; ignored rows hold 0
    keep: np.ndarray | None  # (M,) bool; False where the target is ignore_index
    probs_target: np.ndarray | None  # (M, C), compute dtype
    loss_shape: tuple[int, ...]
    logits_shape: tuple[int, ...]
    logits_dtype: np.dtype


@dataclass
class CrossEntropyCache:
    """What the forward pass keeps so the backward pass needs no second look at the logits."""

    exps: np.ndarray | None  # (M, C) exp(z - max z), unnormalised (NumPy paths)
    sums: np.ndarray | None  # (M, 1) row sums of exps (1 for all-masked rows)
    labels: np.ndarray | None  # sparse path: (M,) class indices
    coef: np.ndarray | None  # sparse path: (M,) weight of the target class, 0 if not counted
    dense_target: np.ndarray | None  # dense path: (M, C) effective target, 0 on masked classes
    denominator: float  # what "mean" divides by
    rows: Rows
    reduction: str
    all_ignored: str
    grad: np.ndarray | None = None  # kernel path, empty logits: (M, C) dL/dz for grad_output = 1
    grad_scale: float = 1.0  # an upstream factor folded into every gradient


def to_rows(
    logits: np.ndarray, target: object, ignore_index: int, *, allow_no_classes: bool = False
) -> Rows:
    """Check logits and target against each other and view them as rows; see the module doc.

    ``allow_no_classes``: accept C = 0 (then every index target must be ignored), as
    ``torch.nn.functional.cross_entropy`` does.
    """
    logits = as_float_array(logits, "logits")
    if logits.ndim == 0:
        raise ValueError("logits must have a class axis: shape (C,), (N, C) or (N, C, d1, ...)")
    unbatched = logits.ndim == 1
    num_classes = logits.shape[0 if unbatched else 1]
    if num_classes == 0 and not allow_no_classes:
        raise ValueError(f"logits of shape {logits.shape} have no classes (C = 0)")
    dtype = compute_dtype(logits.dtype)
    index_shape = () if unbatched else logits.shape[:1] + logits.shape[2:]
    num_rows = math.prod(index_shape)
    # Move classes to the last axis: (N, C, d1..dk) -> (N, d1..dk, C) -> (M, C)
    moved = logits if logits.ndim <= 2 else np.moveaxis(logits, 1, -1)  # (N, C) already is
    flat = moved.reshape(num_rows, num_classes).astype(dtype, copy=False)

    target = np.asarray(target)
    if target.shape == logits.shape:
        if not np.issubdtype(target.dtype, np.floating):
            raise TypeError(
                f"target has the logits' shape {logits.shape}, so it is read as class "
                f"probabilities and must be floating-point, got dtype {target.dtype}; "
                f"pass class indices of shape {index_shape} or a float (one-hot) array"
            )
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index={ignore_index} is not supported with probability targets "
                "(as in PyTorch); give ignored positions zero probability instead"
            )
        probs = target if target.ndim <= 2 else np.moveaxis(target, 1, -1)
        probs = probs.reshape(num_rows, num_classes).astype(dtype)
        return Rows(flat, None, None, probs, index_shape, logits.shape, logits.dtype)

    if target.shape != index_shape:
        raise ValueError(
            f"target of shape {target.shape} does not fit logits of shape {logits.shape}: "
            f"expected class indices of shape {index_shape} or probabilities of shape "
            f"{logits.shape}"
        )
    if not np.issubdtype(target.dtype, np.integer):
        raise TypeError(
            f"class-index target must have an integer dtype, got {target.dtype}; "
            f"probability targets must have the logits' shape {logits.shape}"
        )
    if num_classes == 0 and logits.ndim > 2 and num_rows:
        raise ValueError(
            f"logits of shape {logits.shape} have no classes (C = 0); with class-index targets "
            "that is accepted for logits (N, 0) only, or when there are no positions (PyTorch "
            "raises here too)"
        )
    labels = target.reshape(-1).astype(np.int64)
    keep = labels != ignore_index
    bad = keep & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), index_shape) if index_shape else ()
        raise ValueError(
            f"target holds class {labels[bad][0]} at position {tuple(map(int, where))}; "
            f"class indices must be in [0, {num_classes}) or equal ignore_index={ignore_index}"
        )
    labels = np.where(keep, labels, 0)
    return Rows(flat, labels, keep, None, index_shape, logits.shape, logits.dtype)


def reduce_loss(row_loss: np.ndarray, cache: CrossEntropyCache) -> np.ndarray:
    """Per-row losses (M,) reduced as ``cache.reduction`` says, in the logits' dtype.

    "mean" divides by ``cache.denominator``; with nothing to divide by it is NaN (PyTorch's
    0 / 0), or 0 for ``all_ignored="zero"``.
    """
    dtype = cache.rows.logits_dtype
    if cache.reduction == "none":
        return row_loss.reshape(cache.rows.loss_shape).astype(dtype)
    total = row_loss.sum(dtype=np.float64)
    if cache.reduction == "sum":
        return np.asarray(total, dtype=dtype)
    if cache.denominator == 0:
        return np.asarray(0.0 if cache.all_ignored == "zero" else np.nan, dtype=dtype)
    return np.asarray(total / cache.denominator, dtype=dtype)


def spread_grad_output(cache: CrossEntropyCache, grad_output: object) -> np.ndarray:
    """grad_output checked against the reduction and spread over the rows: shape (M, 1)."""
    dtype = cache.rows.logits.dtype
    grad_output = np.asarray(grad_output, dtype=np.float64)
    num_rows = cache.rows.logits.shape[0]
    if cache.reduction == "none":
        if grad_output.ndim and grad_output.shape != cache.rows.loss_shape:
            raise ValueError(
                f"grad_output of shape {grad_output.shape} must have the loss's shape "
                f"{cache.rows.loss_shape} (reduction='none') or be a scalar"
            )
        scale = np.broadcast_to(grad_output, cache.rows.loss_shape).reshape(num_rows, 1)
        return scale.astype(dtype)
    if grad_output.ndim:
        raise ValueError(
            f"grad_output must be a scalar for reduction={cache.reduction!r}, "
            f"got shape {grad_output.shape}"
        )
    return np.full((num_rows, 1), grad_output, dtype)


def row_scale(cache: CrossEntropyCache, grad_output: object) -> np.ndarray:
    """dL_total/dL_row for every row: grad_output spread by the reduction, shape (M, 1)."""
    scale = spread_grad_output(cache, grad_output) * cache.grad_scale
    if cache.reduction == "mean":
        # With nothing to average over, the loss does not depend on the logits at all.
        return scale / cache.denominator if cache.denominator else np.zeros_like(scale)
    return scale


def restore_layout(grad: np.ndarray, rows: Rows) -> np.ndarray:
    """(M, C) rows back to the logits' layout and dtype."""
    shape = rows.logits_shape
    if len(shape) <= 2:
        return grad.reshape(shape).astype(rows.logits_dtype, copy=False)
    moved = grad.reshape(shape[:1] + shape[2:] + shape[1:2])
    return np.ascontiguousarray(np.moveaxis(moved, -1, 1), dtype=rows.logits_dtype)
