"""Fused, multi-threaded cross-entropy kernels (Numba) for float32 rows with class-index targets.

The readable NumPy version is :mod:`glassnet.functional.cross_entropy`; these kernels compute the
same numbers (the tests hold them to it) in fewer passes over memory:

    per row z (C classes):  m = max z            one read of the row from memory
                            s = sum exp(z - m)   from cache (a 128 KB row stays in L2)
                            loss pieces          O(1) per row
    fused backward:         g = exp(z - m) * k   the row again from cache, g written once

so forward + backward reads the logits from memory once and writes the gradient once, the
memory bound of ``numpy.copyto``. ``out`` may be the logits array itself (in place): every
element is read just before it is overwritten.

Per row, with weight w (1 when absent), smoothing eps, the unmasked classes U (logit > -inf):
    loss = (1 - eps) w_y (lse - z'_y) + eps / |U| * (W_U lse - sum_U w_c z'_c),  z' = z - m
    grad = scale * (p * S - t),  S = (1 - eps) w_y [y in U] + eps W_U / |U|,
    t_c = (1 - eps) w_y [c = y in U] + eps w_c [c in U] / |U|
exactly the effective-target formulation of the reference (docs/derivations.md, section 6).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

F = np.float32
_NEG_INF = F(-np.inf)
_EXP_FLOOR = F(-87.0)  # exp(-87) ~ 1.6e-38, the bottom of float32's normal range
# Reassociation lets LLVM vectorise the reductions; no "nnan"/"ninf", because -inf marks a
# masked class and the kernels must see it.
FAST = {"reassoc", "contract", "nsz", "arcp", "afn"}


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (a free bitcast, vectorisable)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@njit(inline="always", fastmath=FAST)
def exp_nonpositive(x):
    """exp(x) for float32 x <= 0, exactly 0 below -87 (so -inf gives 0); ~1 ulp.

    Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2, the degree-5 minimax polynomial of
    Cephes' expf for exp(r), and 2^n assembled from its exponent bits. Written as plain
    arithmetic so that LLVM vectorises it (numba's math.exp is a scalar libm call).
    """
    y = x if x > _EXP_FLOOR else _EXP_FLOOR
    n = math.floor(y * F(1.44269504) + F(0.5))
    r = y - n * F(0.693359375) - n * F(-2.12194440e-4)
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * r * r + r + F(1.0)
    two_n = _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
    return p * two_n if x > _EXP_FLOOR else F(0.0)


@njit(inline="always", fastmath=FAST)
def _row_max(row):
    m = _NEG_INF
    for j in range(row.shape[0]):
        v = row[j]
        m = v if v > m else m
    return m if m > _NEG_INF else F(0.0)  # an all-masked row shifts by 0


@njit(inline="always", fastmath=FAST)
def _smoothing_sums(row, m, weight, has_weight):
    """(|U|, W_U, sum_U w_c (z_c - m)) over the unmasked classes U of one row."""
    count = F(0.0)
    w_total = F(0.0)
    wz_total = F(0.0)
    for j in range(row.shape[0]):
        v = row[j]
        w = weight[j] if has_weight else F(1.0)
        unmasked = v > _NEG_INF
        count += F(1.0) if unmasked else F(0.0)
        w_total += w if unmasked else F(0.0)
        wz_total += w * (v - m) if unmasked else F(0.0)
    return count, w_total, wz_total


def _cross_entropy_rows(
    logits, labels, class_weight, weight, has_weight, eps, scale, out, want_grad
):
    """Loss per row (returned) and, if want_grad, dL/dlogits * scale[row] into ``out``.

    logits, out (M, C) float32 (out may be logits); labels (M,) int64, -1 for ignored rows;
    class_weight (M,) float32 = w_y; weight (C,) float32 (read only if has_weight).
    """
    rows, classes = logits.shape
    loss = np.zeros(rows, dtype=np.float32)
    for i in prange(rows):
        row = logits[i]
        label = labels[i]
        if label < 0:  # ignored: no loss, no gradient
            if want_grad:
                out[i, :] = F(0.0)
            continue
        w_y = class_weight[i]
        z_y = row[label]  # read before an in-place write replaces the row
        m = _row_max(row)
        if eps > 0:
            count, w_unmasked, wz_unmasked = _smoothing_sums(row, m, weight, has_weight)
        else:
            count, w_unmasked, wz_unmasked = F(1.0), F(0.0), F(0.0)
        total = F(0.0)
        for j in range(classes):
            total += exp_nonpositive(row[j] - m)
        lse = math.log(total) if total > 0 else F(0.0)
        target_unmasked = z_y > _NEG_INF
        nll = lse - (z_y - m) if target_unmasked else F(np.inf)
        value = F(0.0)
        if w_y != 0:  # (a zero weight times an infinite nll counts as 0)
            value = (F(1.0) - eps) * w_y * nll
        if eps > 0 and count > 0:
            value += eps / count * (w_unmasked * lse - wz_unmasked)
        loss[i] = value
        if not want_grad:
            continue
        c = scale[i]
        target_mass = (F(1.0) - eps) * w_y if target_unmasked else F(0.0)
        spread = eps / count if eps > 0 and count > 0 else F(0.0)
        mass = target_mass + spread * w_unmasked
        k = c * mass / total if total > 0 else F(0.0)
        grad = out[i]
        # Each element is read just before it is written, so out may be the logits (in place).
        if spread > 0:
            for j in range(classes):
                v = row[j]
                w = weight[j] if has_weight else F(1.0)
                smoothing = c * spread * w if v > _NEG_INF else F(0.0)
                grad[j] = exp_nonpositive(v - m) * k - smoothing
        else:
            for j in range(classes):
                grad[j] = exp_nonpositive(row[j] - m) * k
        grad[label] -= c * target_mass
    return loss


_serial = njit(fastmath=FAST, cache=True)(_cross_entropy_rows)
_parallel = njit(fastmath=FAST, cache=True, parallel=True)(_cross_entropy_rows)

# Below this many elements a parallel region costs more than it saves.
PARALLEL_THRESHOLD = 1 << 16


def cross_entropy_rows(logits, labels, class_weight, weight, eps, scale, out=None):
    """Dispatch to the serial or threaded kernel; returns the per-row loss (float32)."""
    kernel = _parallel if logits.size >= PARALLEL_THRESHOLD else _serial
    has_weight = weight is not None
    weight = weight if has_weight else np.ones(1, dtype=np.float32)
    want_grad = out is not None
    out = out if want_grad else logits
    return kernel(logits, labels, class_weight, weight, has_weight, F(eps), scale, out, want_grad)
