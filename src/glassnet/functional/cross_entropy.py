"""Cross-entropy on logits, its fused gradient, and the long way round through the Jacobian.

Shapes follow ``torch.nn.functional.cross_entropy``:
    logits          (C,), (N, C) or (N, C, d1, ..., dk); classes on axis 1 (axis 0 unbatched)
    index target    integers of shape (), (N,) or (N, d1, ..., dk), each in [0, C) or ignore_index
    prob. target    floats of the logits' shape (class probabilities, "soft labels")
    weight          (C,)
    loss            reduction "none": the index-target shape; "mean" / "sum": ()

Inside, logits are viewed as M rows of C classes (M = N * d1 * ... * dk). Every row's loss is
``L = -sum_c t_c * log p_c`` for an effective target ``t`` (weights and label smoothing folded in),
so its gradient is ``dL/dz = p * sum(t) - t``: ``p - y`` for a plain one-hot target.

For float32 class-index targets a fused Numba kernel (:mod:`glassnet.kernels.cross_entropy`)
computes the same numbers when :func:`glassnet.kernels.enabled`; the NumPy code here is the
reference it is tested against.
"""

from __future__ import annotations

import numbers
from typing import Literal

import numpy as np

from glassnet import kernels
from glassnet.functional._checks import as_float_array, check_reduction
from glassnet.functional._rows import (
    CrossEntropyCache,
    Rows,
    reduce_loss,
    restore_layout,
    row_scale,
    spread_grad_output,
    to_rows,
)
from glassnet.functional.softmax import exp_and_sum, shift_by_max, softmax, softmax_jacobian

try:  # the fused kernel; it runs when kernels.enabled()
    from glassnet.kernels import cross_entropy as ce_kernels
except ImportError:  # no Numba: kernels.enabled() is False
    ce_kernels = None

Reduction = Literal["none", "mean", "sum"]
AllIgnored = Literal["nan", "zero"]


def check_options(ignore_index, reduction, label_smoothing, all_ignored) -> None:
    """Validate cross_entropy's scalar options (shared with nn.LinearCrossEntropy)."""
    check_reduction(reduction)
    if all_ignored not in ("nan", "zero"):
        raise ValueError(f"{all_ignored=} must be 'nan' or 'zero'")
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    if not isinstance(label_smoothing, numbers.Real) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing!r} must be a number in [0.0, 1.0]")


def check_weight(weight: object, num_classes: int, dtype: np.dtype) -> np.ndarray | None:
    """Validate a per-class weight (C,) and cast it (shared with nn.LinearCrossEntropy)."""
    if weight is None:
        return None
    weight = np.asarray(weight)
    if not np.issubdtype(weight.dtype, np.number) or np.iscomplexobj(weight):
        raise TypeError(f"weight must be a real-valued array, got dtype {weight.dtype}")
    if weight.shape != (num_classes,):
        raise ValueError(
            f"weight must have shape (C,) = ({num_classes},), one entry per class, "
            f"got shape {weight.shape}"
        )
    return weight.astype(dtype)


def _dense_target(rows: Rows, masked: np.ndarray, weight, label_smoothing: float) -> np.ndarray:
    """The effective target t (M, C): smoothed over the unmasked classes, then weighted."""
    dtype = rows.logits.dtype
    allowed = ~masked
    # Label smoothing spreads its mass over the classes that are not masked.
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(allowed, 1.0 / allowed.sum(axis=1, keepdims=True), 0.0)
    if rows.probs_target is not None:
        target = rows.probs_target * (1 - label_smoothing) + label_smoothing * spread
    else:
        target = label_smoothing * spread
        target[np.arange(len(target)), rows.labels] += 1 - label_smoothing
        target[~rows.keep] = 0
    if weight is not None:
        target = target * weight
    return target.astype(dtype, copy=False)


def cross_entropy_forward(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    all_ignored: AllIgnored = "nan",
    want_grad: bool = True,
    inplace: bool = False,
    out: np.ndarray | None = None,
    grad_scale: float = 1.0,
) -> tuple[np.ndarray, CrossEntropyCache]:
    """:func:`cross_entropy`, plus the cache for :func:`cross_entropy_backward_from_cache`.

    For float32 class-index targets a fused kernel computes the loss and, when ``want_grad``,
    the gradient in the same pass: into the logits themselves when ``inplace``, else into
    ``out`` when it is a writeable, C-contiguous float32 array of the rows' shape (M, C) that
    does not overlap the logits (a buffer to reuse), else into a new one.
    ``grad_scale`` multiplies every gradient this cache yields (an upstream factor known in
    advance, applied inside the kernel instead of as another pass).
    """
    check_options(ignore_index, reduction, label_smoothing, all_ignored)
    rows = to_rows(logits, target, ignore_index, allow_no_classes=True)
    weight = check_weight(weight, rows.logits.shape[1], rows.logits.dtype)
    if inplace and (rows.labels is None or not inplace_possible(logits)):
        raise ValueError(
            "inplace=True needs writeable, C-contiguous float32 logits of shape (N, C), "
            "class-index targets and the Numba kernels on (numba installed, no "
            f"GLASSNET_KERNELS=0, not inside kernels.disabled()); got {np.asarray(logits).dtype} "
            f"logits of shape {np.shape(logits)}, kernels {'on' if kernels.enabled() else 'off'}"
        )
    if rows.logits.size == 0:
        return _no_logits(rows, reduction, all_ignored, inplace, grad_scale)
    if kernels.enabled() and rows.labels is not None and rows.logits.dtype == np.float32:
        return _kernel_forward(
            rows, weight, label_smoothing, reduction, all_ignored, want_grad, inplace, out,
            grad_scale,
        )  # fmt: skip
    shifted, _ = shift_by_max(rows.logits, axis=1)  # z - max z, a fresh (M, C) array

    if rows.labels is not None and label_smoothing == 0:
        # Sparse path: only the target class of each row matters. loss = w_y * (log sum e^z - z_y)
        shifted_at_target = shifted[np.arange(len(shifted)), rows.labels]
        exps, sums = exp_and_sum(shifted, axis=1)
        class_weight = np.ones_like(shifted_at_target) if weight is None else weight[rows.labels]
        class_weight[~rows.keep] = 0
        with np.errstate(invalid="ignore"):  # 0 * inf on ignored rows is resolved just below
            row_loss = class_weight * (np.log(sums[:, 0]) - shifted_at_target)
        row_loss[class_weight == 0] = 0
        # A masked target class (z_y = -inf) gives an infinite loss and no usable gradient.
        coef = np.where(shifted_at_target == -np.inf, 0, class_weight)
        dense = None
        denominator = float(class_weight.sum(dtype=np.float64))
        labels = rows.labels
    else:
        masked = shifted == -np.inf
        dense = _dense_target(rows, masked, weight, label_smoothing)
        exps, sums = exp_and_sum(shifted.copy(), axis=1)
        neg_log_probs = np.log(sums) - shifted
        # Sum t_c * (-log p_c) over the classes the target touches (0 * inf counts as 0).
        products = np.multiply(dense, neg_log_probs, out=np.zeros_like(dense), where=dense != 0)
        row_loss = products.sum(axis=1)
        dense[masked] = 0  # masked classes get no gradient
        coef = labels = None
        if rows.labels is not None:
            class_weight = np.ones(len(shifted)) if weight is None else weight[rows.labels]
            denominator = float(np.where(rows.keep, class_weight, 0).sum(dtype=np.float64))
        else:
            denominator = float(len(shifted))

    cache = CrossEntropyCache(
        exps, sums, labels, coef, dense, denominator, rows, reduction, all_ignored, None,
        grad_scale,
    )  # fmt: skip
    return reduce_loss(row_loss, cache), cache


def expect_kernel(inplace: bool = False, label_smoothing: float = 0.0, weighted: bool = False):
    """Name the fused kernel a training loss with these options will call, so that a first
    run on an empty kernel cache compiles it in the background while the forward pass
    compiles its own (``glassnet.kernels.first_run``); nothing when the kernels are off."""
    if ce_kernels is not None and kernels.enabled():
        ce_kernels.expect_training_kernel(inplace, label_smoothing > 0, weighted)


def inplace_possible(logits: np.ndarray) -> bool:
    """Whether ``cross_entropy_forward(logits, ..., inplace=True)`` can write the gradient into
    ``logits``: the kernels are on and logits is a writeable, C-contiguous float32 (N, C) array
    (the target must hold class indices)."""
    return (
        kernels.enabled()
        and isinstance(logits, np.ndarray)
        and logits.ndim == 2
        and logits.dtype == np.float32
        and logits.flags.c_contiguous
        and logits.flags.writeable
    )


def _no_logits(rows, reduction, all_ignored, inplace, grad_scale):
    """Empty logits (N = 0, some d_i = 0, or C = 0): each row's loss is 0, the gradient is empty,
    and "mean" has nothing to divide by: no counted index target, and for probability targets
    PyTorch's numel / C is 0 or 0 / 0. So it is NaN, as in PyTorch."""
    grad = rows.logits if inplace else np.zeros_like(rows.logits)
    row_loss = np.zeros(len(rows.logits), rows.logits.dtype)
    cache = CrossEntropyCache(
        None, None, None, None, None, 0.0, rows, reduction, all_ignored, grad, grad_scale
    )
    return reduce_loss(row_loss, cache), cache


def _kernel_forward(
    rows, weight, label_smoothing, reduction, all_ignored, want_grad, inplace, out, grad_scale
):
    """The fused-kernel path: loss per row, and dL/dz (for grad_output = 1) if wanted."""
    class_weight = np.ones(len(rows.labels), np.float32) if weight is None else weight[rows.labels]
    class_weight[~rows.keep] = 0
    denominator = float(class_weight.sum(dtype=np.float64))
    grad = None
    if want_grad and inplace:
        grad = rows.logits
    elif want_grad:
        reusable = (
            out is not None
            and out.shape == rows.logits.shape
            and out.dtype == np.float32
            and out.flags.c_contiguous
            and out.flags.writeable
            and not np.may_share_memory(out, rows.logits)
        )
        grad = out if reusable else np.empty(rows.logits.shape, np.float32)  # C order
    factor = grad_scale
    if reduction == "mean":
        factor = grad_scale / denominator if denominator else 0.0
    scale = np.full(len(rows.labels), factor, dtype=np.float32)
    labels = np.where(rows.keep, rows.labels, -1)
    row_loss = ce_kernels.cross_entropy_rows(
        rows.logits, labels, class_weight, weight, label_smoothing, scale, grad
    )
    cache = CrossEntropyCache(
        None, None, None, None, None, denominator, rows, reduction, all_ignored, grad, grad_scale
    )
    return reduce_loss(row_loss, cache), cache


def cross_entropy_backward_from_cache(
    cache: CrossEntropyCache, grad_output: object = 1.0
) -> np.ndarray:
    """dL/dlogits from the cache of :func:`cross_entropy_forward`; the cache is left intact.

    On the kernel path the gradient was computed by the forward pass: for ``grad_output = 1``
    it is returned as is (not a copy; in place, it is the logits array).
    """
    if cache.grad is not None:
        return _scale_stored_grad(cache, grad_output)
    if cache.exps is None:
        raise RuntimeError("this forward pass ran with want_grad=False: there is no gradient")
    scale = row_scale(cache, grad_output)
    if cache.dense_target is None:
        # dL/dz = w_y * (p - onehot(y)), scaled by the reduction
        row_coef = scale * cache.coef[:, None]
        grad = cache.exps * (row_coef / cache.sums)
        grad[np.arange(len(grad)), cache.labels] -= row_coef[:, 0]
    else:
        # dL/dz = p * sum(t) - t, scaled by the reduction
        target = cache.dense_target
        grad = cache.exps * (scale * target.sum(axis=1, keepdims=True) / cache.sums)
        grad -= scale * target
    return restore_layout(grad, cache.rows)


def _scale_stored_grad(cache: CrossEntropyCache, grad_output: object) -> np.ndarray:
    """The stored gradient already holds the reduction and grad_scale; apply grad_output."""
    grad = cache.grad
    if np.ndim(grad_output) or float(grad_output) != 1.0:
        grad = grad * spread_grad_output(cache, grad_output)
    return restore_layout(grad, cache.rows)


def cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    all_ignored: AllIgnored = "nan",
) -> np.ndarray:
    """Cross-entropy between softmax(logits) and a target: ``-sum_c t_c * log_softmax(z)_c``.

    Args:
        logits: z, shape (C,), (N, C) or (N, C, d1, ..., dk); float16/32/64.
        target: class indices of shape (), (N,) or (N, d1, ..., dk), or class probabilities
            of the logits' shape.
        weight: per-class rescaling, shape (C,).
        ignore_index: index targets equal to this add nothing to the loss or the mean.
        reduction: "none" (per position), "mean" (sum / summed target weights of the
            counted positions; for probability targets, / number of positions) or "sum".
        label_smoothing: epsilon in [0, 1]; the target becomes (1 - eps) * y + eps / C.
        all_ignored: "nan" (PyTorch) or "zero": what "mean" returns when nothing is counted.
    Returns:
        loss, shape () or the index-target shape for "none"; the logits' dtype.

    Matches ``torch.nn.functional.cross_entropy`` option for option, also for empty logits
    (N = 0, d_i = 0, or C = 0 with every index target ignored): "mean" is NaN, "sum" 0, "none"
    zeros of the loss's shape, and the gradient is empty. A row holding +inf gives NaN.
    Deviations, for input PyTorch turns into NaN or inf: ignored rows never produce NaN (even
    with all -inf logits, or C = 0 with label smoothing); ``-inf`` (masked) classes get zero
    gradient and label smoothing spreads its mass over the unmasked classes only;
    ``all_ignored="zero"``.

    >>> float(cross_entropy(np.array([[-0.8, 1.1, 0.1]]), np.array([1])).round(3))
    0.417
    """
    loss, _ = cross_entropy_forward(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        all_ignored=all_ignored,
        want_grad=False,
    )
    return loss


def cross_entropy_backward(
    logits: np.ndarray,
    target: np.ndarray,
    grad_output: object = 1.0,
    *,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    all_ignored: AllIgnored = "nan",
    inplace: bool = False,
) -> np.ndarray:
    """dL/dlogits of :func:`cross_entropy`, by the fused formula ``p * sum(t) - t``.

    Args:
        logits, target and the keyword options: as for :func:`cross_entropy`.
        grad_output: dL_outer/dloss; a scalar, or for reduction "none" an array of the
            loss's shape.
        inplace: write the gradient into ``logits`` (float32 (N, C) with index targets), so
            forward + backward allocate O(N), not O(N * C), as Liger Kernel does on GPUs.
    Returns:
        grad_logits with the logits' shape and dtype. One-hot target, no weights, mean:
        ``(softmax(z) - onehot(y)) / N``. O(N * C); the softmax Jacobian is never formed.

    Matches ``logits.grad`` after ``F.cross_entropy(logits, target, ...).backward(grad_output)``.

    >>> cross_entropy_backward(np.array([[-0.8, 1.1, 0.1]]), np.array([1])).round(3)
    array([[ 0.099, -0.341,  0.242]])
    """
    _, cache = cross_entropy_forward(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        all_ignored=all_ignored,
        inplace=inplace,
    )
    return cross_entropy_backward_from_cache(cache, grad_output)


def cross_entropy_backward_jacobian(
    logits: np.ndarray, target: np.ndarray, reduction: Reduction = "mean"
) -> np.ndarray:
    """dL/dlogits the long way: ``dL/dp = -y / p``, chained through ``J = diag(p) - p p^T``.

    Args:
        logits: z, shape (N, C).
        target: class indices (N,) or probabilities (N, C).
        reduction: "mean" or "sum" ("none" gives the per-row gradients, as "sum" does).
    Returns:
        grad_logits (N, C), equal to :func:`cross_entropy_backward` (no weights, no smoothing).

    For teaching and checking only: it costs O(N * C^2) time and memory, and it divides by
    probabilities, which fails when one underflows to 0.
    """
    check_reduction(reduction)
    logits = as_float_array(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {logits.shape}")
    target = np.asarray(target)
    if target.shape != logits.shape:
        if target.shape != logits.shape[:1] or not np.issubdtype(target.dtype, np.integer):
            raise ValueError(
                f"target must be class indices of shape {logits.shape[:1]} or probabilities "
                f"of shape {logits.shape}, got {target.dtype} of shape {target.shape}"
            )
        target = np.eye(logits.shape[1], dtype=logits.dtype)[target]
    probs = softmax(logits, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        grad_probs = np.where(target == 0, 0, -target / probs)  # dL/dp_i = -y_i / p_i
    # dL/dz_j = sum_i dL/dp_i * dp_i/dz_j
    grad = np.einsum("ni,nij->nj", grad_probs, softmax_jacobian(probs))
    return grad / len(grad) if reduction == "mean" else grad
