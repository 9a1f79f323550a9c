"""Fused, threaded cross-entropy kernels (Numba) for float32 rows with class-index targets.

The readable NumPy version is :mod:`glassnet.functional.cross_entropy`; these kernels compute the
same numbers (the tests hold them to it) in fewer passes over memory:

    per row z (C classes):  m = max z            one read of the row from memory
                            s = sum exp(z - m)   from cache (a 128 KB row stays in L2); with
                                                 a gradient wanted, the exps are stored in it
                            loss pieces          O(1) per row
    fused backward:         g = e * k            scaled in cache, g written back once

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
from numba import njit, types
from numba.extending import intrinsic

from glassnet.kernels.first_run import expect, kernel_factory
from glassnet.kernels.threads import parallel_for

F = np.float32
_NEG_INF = F(-np.inf)
_EXP_FLOOR = F(-87.0)  # exp(-87) ~ 1.6e-38, the bottom of float32's normal range
# Reassociation lets LLVM vectorise the reductions; no "ninf", because -inf marks a masked
# class and the kernels must see it, and no "nnan", so that a NaN logit makes a NaN loss.
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
    """exp(x) for float32 x <= 0, exactly 0 below -87 (so -inf gives 0), NaN for NaN; ~1 ulp.

    Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2, the degree-5 minimax polynomial of
    Cephes' expf for exp(r), and 2^n assembled from its exponent bits. Written as plain
    arithmetic so that LLVM vectorises it (numba's math.exp is a scalar libm call).
    """
    y = _EXP_FLOOR if x < _EXP_FLOOR else x  # NaN stays NaN
    n = np.floor(y * F(1.44269504) + F(0.5))  # np.floor stays float32; math.floor is int64
    r = y - n * F(0.693359375) - n * F(-2.12194440e-4)
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * r * r + r + F(1.0)
    # float -> int of NaN is poison to LLVM (it may then drop the NaN from a sum): convert a
    # NaN exponent as 0 and let the NaN in p carry through.
    n = n if n == n else F(0.0)
    two_n = _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
    return F(0.0) if x < _EXP_FLOOR else p * two_n


@njit(inline="always", fastmath=FAST)
def _row_max(row, lanes):
    """max(row), 0 for an all-masked row. ``lanes`` (16 floats of scratch) holds one running
    maximum per vector lane: LLVM vectorises those updates, not a single running max (3x
    slower)."""
    lanes[:] = _NEG_INF
    body = row.shape[0] - row.shape[0] % 16
    for j in range(0, body, 16):
        for lane in range(16):
            v = row[j + lane]
            lanes[lane] = v if v > lanes[lane] else lanes[lane]
    m = _NEG_INF
    for lane in range(16):
        m = lanes[lane] if lanes[lane] > m else m
    for j in range(body, row.shape[0]):
        m = row[j] if row[j] > m else m
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
        unmasked = v != _NEG_INF  # NaN counts as present, so that it propagates
        count += F(1.0) if unmasked else F(0.0)
        w_total += w if unmasked else F(0.0)
        wz_total += w * (v - m) if unmasked else F(0.0)
    return count, w_total, wz_total


@kernel_factory
def _rows_kernel(want_grad: bool, inplace: bool, smoothing: bool):
    """The row kernel specialised to one case, compiled (and cached) on its first use.

    The three flags are constants of the closure, so LLVM drops the paths a case cannot take
    before it optimises: the convnet's case (gradient, no smoothing) compiles one exp loop
    instead of four, which cuts its compile time by about 3x. Numba keys its disk cache on
    the closure's values, so each case is cached on its own.
    """
    # (bools, also when the helper asks with 1 and 0: the disk cache keys on their values)
    want_grad, inplace, smoothing = bool(want_grad), bool(inplace), bool(smoothing)
    store = want_grad and not smoothing  # keep the exps in the gradient as they are summed

    @njit(fastmath=FAST, nogil=True, cache=True)
    def kernel(
        logits, labels, class_weight, weight, has_weight, eps, scale, out, loss, first, last
    ):  # fmt: skip
        """Loss per row into ``loss`` and, if want_grad, dL/dlogits * scale[row] into
        ``out``, for rows first..last-1.

        logits, out (M, C) float32; labels (M,) int64, -1 for ignored rows; class_weight (M,)
        float32 = w_y; weight (C,) float32 (read only if has_weight). With ``inplace`` the
        gradient is written through ``logits`` itself: stores through the array they load
        from let LLVM vectorise (through a second name for the same memory its alias check
        would fall back to scalar code).
        """
        classes = logits.shape[1]
        lanes = np.empty(16, F)
        for i in range(first, last):
            row = logits[i]
            label = labels[i]
            if label < 0:  # ignored: no loss, no gradient
                loss[i] = F(0.0)
                if want_grad and inplace:
                    row[:] = F(0.0)
                elif want_grad:
                    out[i, :] = F(0.0)
                continue
            w_y = class_weight[i]
            z_y = row[label]  # read before an in-place write replaces the row
            m = _row_max(row, lanes)
            if smoothing:
                count, w_unmasked, wz_unmasked = _smoothing_sums(row, m, weight, has_weight)
            else:
                count, w_unmasked, wz_unmasked = F(1.0), F(0.0), F(0.0)
            grad = row if inplace else out[i]
            # Without smoothing the exps are stored as they are summed and scaled in place
            # below (the row is still in cache); with smoothing they are recomputed there,
            # because a stored exp of 0 would no longer tell a masked class from an
            # underflowed one.
            total = F(0.0)
            if store and inplace:
                for j in range(classes):
                    e = exp_nonpositive(row[j] - m)
                    row[j] = e
                    total += e
            elif store:
                for j in range(classes):
                    e = exp_nonpositive(row[j] - m)
                    grad[j] = e
                    total += e
            else:
                for j in range(classes):
                    total += exp_nonpositive(row[j] - m)
            lse = math.log(total) if total != 0 else F(0.0)
            target_unmasked = z_y != _NEG_INF
            # A masked target class costs inf; lse + inf keeps the NaN of a row holding +inf.
            nll = lse - (z_y - m) if target_unmasked else lse + F(np.inf)
            value = F(0.0)
            if w_y != 0:  # (a zero weight times an infinite nll counts as 0)
                value = (F(1.0) - eps) * w_y * nll
            if smoothing and count > 0:
                value += eps / count * (w_unmasked * lse - wz_unmasked)
            loss[i] = value
            if not want_grad:
                continue
            c = scale[i]
            target_mass = (F(1.0) - eps) * w_y if target_unmasked else F(0.0)
            spread = eps / count if smoothing and count > 0 else F(0.0)
            mass = target_mass + spread * w_unmasked
            k = c * mass / total if total != 0 else F(0.0)
            if store:
                for j in range(classes):
                    grad[j] *= k
            else:  # each element is read just before it is written: the row may be its output
                for j in range(classes):
                    v = row[j]
                    w = weight[j] if has_weight else F(1.0)
                    smoothing_part = c * spread * w if v != _NEG_INF else F(0.0)
                    grad[j] = exp_nonpositive(v - m) * k - smoothing_part
            grad[label] -= c * target_mass
        return loss

    return kernel


def expect_training_kernel(inplace: bool, smoothing: bool, weighted: bool) -> None:
    """Tell a first run (:func:`first_run.expect`) which kernel a training loss will call, for
    the argument types :func:`cross_entropy_rows` will give it (float32 logits, class
    indices), so that an empty cache compiles it beside the forward pass."""
    logits, rows = np.zeros((1, 1), F), np.zeros(1, F)
    out = logits if inplace else np.zeros((1, 1), F)
    weight = rows if weighted else np.ones(1, F)
    labels = np.zeros(1, np.int64)
    args = (logits, labels, rows, weight, weighted, F(0.0), rows, out, rows)
    expect(_rows_kernel(True, inplace, smoothing), args)


def cross_entropy_rows(logits, labels, class_weight, weight, eps, scale, out=None):
    """The kernel on ranges of rows, one per thread; returns the per-row loss (float32).

    ``out``, a writeable C-contiguous (M, C) float32 array, receives dL/dz * scale when given;
    it may be ``logits`` itself (in place). Logits the kernel does not take as they are
    (read-only, broadcast or strided) are first copied: into ``out``, which the kernel then
    works on in place, or into a new array. Numba compiles the in-place stores even where
    they do not run, so it cannot type a read-only array at all.
    """
    has_weight = weight is not None
    weight = weight if has_weight else np.ones(1, dtype=np.float32)
    want_grad = out is not None
    inplace = want_grad and out is logits
    if not (logits.flags.c_contiguous and logits.flags.writeable):
        if inplace:
            raise ValueError(
                "out is the logits array, so it must be writeable and C-contiguous to take "
                f"the gradient in place (writeable={logits.flags.writeable}, "
                f"C-contiguous={logits.flags.c_contiguous})"
            )
        if want_grad:
            np.copyto(out, logits)
            logits, inplace = out, True
        else:
            logits = np.array(logits, dtype=np.float32, order="C")
    out = out if want_grad else logits
    loss = np.empty(len(logits), dtype=np.float32)
    kernel = _rows_kernel(want_grad, inplace, eps > 0)
    args = (logits, labels, class_weight, weight, has_weight, F(eps), scale, out, loss)
    parallel_for(kernel, len(logits), *args, work=logits.size)
    return loss
