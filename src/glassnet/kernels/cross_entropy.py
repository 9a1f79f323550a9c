"""Fused, threaded cross-entropy kernels (Numba) for float32 rows with class-index targets.

The readable NumPy version is :mod:`glassnet.functional.cross_entropy`; these kernels compute the
same numbers (the tests hold them to it) in fewer passes over memory:

    per row z (C classes):  m = max z            taken while the previous row's exps are
                                                 computed, as z arrives from memory
                            s = sum exp(z - m)   from cache; with a gradient wanted, the exps
                                                 are stored (in the row in place, else in out,
                                                 or in a scratch row to be streamed to out)
                            loss pieces          O(1) per row
    fused backward:         g = e * k            scaled in cache, g written once

so forward + backward reads the logits from memory once and writes the gradient once, the
memory traffic of ``numpy.copyto``, and the arithmetic of one row overlaps the reads of the
next (a row's max waits for memory only at the start of a thread's rows and after an
ignored row). ``out`` may be
the logits array itself (in place): every element is read just before it is overwritten. A
gradient larger than the caches is written with streaming stores (``kernels.intrinsics``),
which skip reading ``out`` into the cache before writing it.

That kernel keeps three rows in L2 (the one it computes on, the next one arriving, and the
scratch row). Rows too long for that (a vocabulary's: 128,000 float32 classes are 512 KB, L2
is 1-2 MB per core) go to a long-row kernel, which reads each row once in chunks of 8 KB and
rescales the chunks' partial sums to the row's max at its end (an "online" softmax); without
it, a row on the Zen 5 machine with 2,048,000 classes took 1.6-1.7x numpy.copyto, 1.1x with
it.

Per row, with weight w (1 when absent), smoothing eps, the unmasked classes U (logit > -inf):
    loss = (1 - eps) w_y (lse - z'_y) + eps / |U| * (W_U lse - sum_U w_c z'_c),  z' = z - m
    grad = scale * (p * S - t),  S = (1 - eps) w_y [y in U] + eps W_U / |U|,
    t_c = (1 - eps) w_y [c = y in U] + eps w_c [c in U] / |U|
exactly the effective-target formulation of the reference (docs/derivations.md, section 6).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from glassnet._environment import cache_bytes
from glassnet.kernels.first_run import expect, kernel_factory, variant
from glassnet.kernels.intrinsics import (
    ROUNDING_MAGIC,
    SOURCE_DIGEST,
    ordered_bits,
    power_of_two_from_magic,
    prefetch,
    rounded_from_magic,
    scale_streaming,
    store_fence,
)
from glassnet.kernels.threads import parallel_for

F = np.float32
_NEG_INF = F(-np.inf)
_EXP_FLOOR = F(-87.0)  # exp(-87) ~ 1.6e-38, the bottom of float32's normal range
# Reassociation lets LLVM vectorise the reductions; no "ninf", because -inf marks a masked
# class and the kernels must see it, and no "nnan", so that a NaN logit makes a NaN loss.
FAST = {"reassoc", "contract", "nsz", "arcp", "afn"}
_BLOCK = 64  # classes per step of the exp loops: four cache lines, each prefetched once


# Not inline="always" like the helpers below: LLVM inlines this scalar function into the exp
# loops all the same (the same AVX-512 code), where Numba's inlining of it at each call site
# took 0.4 s of the kernel's 1.3 s compile. (The helpers hold loops, which must be inlined.)
@njit(fastmath=FAST)
def exp_nonpositive(x):
    """exp(x) for float32 x <= 0, exactly 0 below -87 (so -inf gives 0), NaN for NaN; ~1 ulp.

    Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2, the degree-5 minimax polynomial of
    Cephes' expf for exp(r) (in Horner form), and 2^n assembled from exponent bits. Written as
    plain arithmetic so that LLVM vectorises it (numba's math.exp is a scalar libm call). n
    is rounded by adding a magic constant, whose sum also holds n's exponent bits: 16 vector
    instructions per 16 floats where floor, a NaN guard and int conversions took 22.
    """
    t = x * F(1.44269504) + ROUNDING_MAGIC
    n = rounded_from_magic(t)
    r = x - n * F(0.693359375) - n * F(-2.12194440e-4)
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * r + F(1.0)
    p = p * r + F(1.0)
    # Below -87 (and for -inf, where t, n and r are not numbers) the result is set to 0; a
    # NaN x makes r, p and the result NaN.
    return F(0.0) if x < _EXP_FLOOR else p * power_of_two_from_magic(t)


_NO_KEY = np.int32(-(2**31))  # below the ordered bits of every float, -inf included


@njit(inline="always", fastmath=FAST)
def _max_key(row, lo, hi, best):
    """The largest of ``best`` and the ordered bits of row[lo:hi] (see _shift)."""
    for j in range(lo, hi):
        key = ordered_bits(row[j])
        best = key if key > best else best
    return best


@njit(inline="always", fastmath=FAST)
def _shift(best):
    """The row max m from its largest ordered bits, 0 for an all-masked row (a NaN may win
    the max; it makes the loss NaN either way).

    The maximum is taken over the floats' bit patterns ordered as integers: an integer max
    reduction vectorises as it is, where a float one needs LLVM's no-NaN flag (which would
    let it drop the NaN that must reach the loss); with running maxima per lane in a scratch
    array it took 0.9 cycles per float on an Intel Xeon, 0.1 this way.
    """
    m = ordered_bits(best)
    return m if m > _NEG_INF else F(0.0)


@njit(inline="always")
def _fetch_start(logits, i, ahead):
    """Prefetch the first ``ahead`` logits of row i."""
    for j in range(0, min(ahead, logits.shape[1]), 16):
        prefetch(logits, i, j)


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


@njit(inline="always")
def _fetch_ahead(logits, i, b):
    """Prefetch logits[i, b:b + 64] (four cache lines) if they are in the row."""
    if b + 48 < logits.shape[1]:
        prefetch(logits, i, b)
        prefetch(logits, i, b + 16)
        prefetch(logits, i, b + 32)
        prefetch(logits, i, b + 48)


@njit(inline="always", fastmath=FAST)
def _exps_into(row, grad, m, lo, hi):
    """grad[j] = exp(row[j] - m) for lo <= j < hi; their sum (grad may be row itself)."""
    total = F(0.0)
    for j in range(lo, hi):
        e = exp_nonpositive(row[j] - m)
        grad[j] = e
        total += e
    return total


@njit(inline="always", fastmath=FAST)
def _exp_sum(row, m, lo, hi):
    """sum exp(row[j] - m) over lo <= j < hi."""
    total = F(0.0)
    for j in range(lo, hi):
        total += exp_nonpositive(row[j] - m)
    return total


@njit(inline="always", fastmath=FAST)
def _row_exps(row, grad, m, lo, hi, store, inplace):
    """The exp loop of row[lo:hi] as the kernel's case wants it: stored into the row (in
    place: the same name for loads and stores, which LLVM vectorises), into ``grad`` (the
    gradient or the scratch row), or only summed; returns the sum. ``store`` and ``inplace``
    are the kernel's constants."""
    if store and inplace:
        return _exps_into(row, row, m, lo, hi)
    if store:
        return _exps_into(row, grad, m, lo, hi)
    return _exp_sum(row, m, lo, hi)


@kernel_factory
def _rows_kernel(want_grad: bool, inplace: bool, smoothing: bool, streaming: bool):
    """The row kernel specialised to one case, compiled (and cached) on its first use.

    The flags are constants of the closure, so LLVM drops the paths a case cannot take
    before it optimises: the convnet's case (gradient, no smoothing) compiles one exp loop
    instead of four, which cuts its compile time by about 3x. Numba keys its disk cache on
    the closure's values, so each case is cached on its own. ``streaming`` (a gradient
    without smoothing, not in place) keeps each row's exps in a scratch row and writes the
    gradient with streaming stores: for a gradient larger than the caches.
    """
    # (bools, also when the helper asks with 1 and 0: the disk cache keys on their values)
    want_grad, inplace, smoothing = bool(want_grad), bool(inplace), bool(smoothing)
    store = want_grad and not smoothing  # keep the exps in the gradient as they are summed
    streaming = bool(streaming) and store and not inplace
    intrinsics = SOURCE_DIGEST  # a closure value: part of the cache key (see intrinsics)

    @njit(fastmath=FAST, nogil=True, cache=True)
    @variant(want_grad, inplace, smoothing, streaming)
    def kernel(
        logits, labels, class_weight, weight, has_weight, eps, scale, ahead, out, loss,
        first, last,
    ):  # fmt: skip
        """Loss per row into ``loss`` and, if want_grad, dL/dlogits * scale[row] into
        ``out``, for rows first..last-1.

        logits, out (M, C) float32; labels (M,) int64, -1 for ignored rows; class_weight (M,)
        float32 = w_y; weight (C,) float32 (read only if has_weight); ``ahead``: how many
        logits in front of its max the next row is prefetched. With ``inplace`` the gradient
        is written through ``logits`` itself: stores through the array they load from let
        LLVM vectorise (through a second name for the same memory its alias check would fall
        back to scalar code).
        """
        classes = logits.shape[1]
        body = classes - classes % _BLOCK
        _ = intrinsics
        scratch = np.empty(classes if streaming else 0, F)
        # Each row's max is taken while the row before computes its exps (the first row's
        # alone), as its blocks arrive from memory: ``ahead`` logits in front of the block
        # whose max is taken, the next row's first ``ahead`` while a row is scaled.
        m_next = _shift(_max_key(logits[first], 0, classes, _NO_KEY)) if first < last else F(0)
        for i in range(first, last):
            row = logits[i]
            m = m_next
            following = i + 1 if i + 1 < last else i
            next_row = logits[following]
            label = labels[i]
            if label < 0:  # ignored: no loss, no gradient
                loss[i] = F(0.0)
                if want_grad and inplace:
                    row[:] = F(0.0)
                elif want_grad:
                    out[i, :] = F(0.0)
                m_next = _shift(_max_key(next_row, 0, classes, _NO_KEY))
                continue
            w_y = class_weight[i]
            z_y = row[label]  # read before an in-place write replaces the row
            if smoothing:
                count, w_unmasked, wz_unmasked = _smoothing_sums(row, m, weight, has_weight)
            else:
                count, w_unmasked, wz_unmasked = F(1.0), F(0.0), F(0.0)
            grad = scratch if streaming else out[i]
            # Without smoothing the exps are stored as they are summed and scaled below (the
            # row is still in cache); with smoothing they are recomputed there, because a
            # stored exp of 0 would no longer tell a masked class from an underflowed one.
            total = F(0.0)
            best = _NO_KEY
            for b in range(0, body, _BLOCK):
                _fetch_ahead(logits, following, b + ahead)
                best = _max_key(next_row, b, b + _BLOCK, best)
                total += _row_exps(row, grad, m, b, b + _BLOCK, store, inplace)
            best = _max_key(next_row, body, classes, best)
            total += _row_exps(row, grad, m, body, classes, store, inplace)
            m_next = _shift(best)
            _fetch_start(logits, i + 2 if i + 2 < last else following, ahead)
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
            if streaming:
                scale_streaming(scratch, out[i], k)
                out[i, label] = scratch[label] * k - c * target_mass
            elif store and inplace:
                for j in range(classes):
                    row[j] *= k
                row[label] -= c * target_mass
            elif store:
                for j in range(classes):
                    grad[j] *= k
                grad[label] -= c * target_mass
            else:  # each element is read just before it is written: the row may be its output
                grad = row if inplace else out[i]
                for j in range(classes):
                    v = row[j]
                    w = weight[j] if has_weight else F(1.0)
                    smoothing_part = c * spread * w if v != _NEG_INF else F(0.0)
                    grad[j] = exp_nonpositive(v - m) * k - smoothing_part
                grad[label] -= c * target_mass
        if streaming:
            store_fence()  # the streamed rows are in memory before another thread reads them
        return loss

    return kernel


# Classes per chunk of a long row: 8 KB, which its max loop reads from memory into L1 and its
# exp loop reads again from there.
_CHUNK = 2048


@njit(inline="always", fastmath=FAST)
def _chunk_max(chunk, best):
    """The largest of ``best`` and the ordered bits of a chunk (blocks of _BLOCK, then the
    tail: loops of a constant length from 0, which vectorise)."""
    n = chunk.shape[0]
    body = n - n % _BLOCK
    for b in range(0, body, _BLOCK):
        best = _max_key(chunk, b, b + _BLOCK, best)
    return _max_key(chunk, body, n, best)


@njit(inline="always", fastmath=FAST)
def _chunk_exps(logits, i, lo, chunk, grad, following, m, store, inplace, ahead):
    """The exps of a chunk (logits[i, lo:lo + len]) against m, stored as ``_row_exps``
    stores them, and the max key of the ``following`` chunk; returns (sum, key). A full
    chunk's blocks take the following one's max as they go (prefetched ``ahead`` floats in
    front), so that it arrives from memory while this one is computed on."""
    n = chunk.shape[0]
    if following.shape[0] < _CHUNK:  # the last chunks of a row
        total = F(0.0)
        for b in range(0, n - n % _BLOCK, _BLOCK):
            total += _row_exps(chunk, grad, m, b, b + _BLOCK, store, inplace)
        total += _row_exps(chunk, grad, m, n - n % _BLOCK, n, store, inplace)
        return total, _chunk_max(following, _NO_KEY)
    total = F(0.0)
    key = _NO_KEY
    for b in range(0, _CHUNK, _BLOCK):
        _fetch_ahead(logits, i, lo + _CHUNK + b + ahead)
        key = _max_key(following, b, b + _BLOCK, key)
        total += _row_exps(chunk, grad, m, b, b + _BLOCK, store, inplace)
    return total, key


@kernel_factory
def _long_rows_kernel(want_grad: bool, inplace: bool, streaming: bool):
    """The row kernel for rows too long to stay in L2 beside the next one (a vocabulary's
    logits), without label smoothing, specialised like :func:`_rows_kernel`.

    Each row is read from memory once, a chunk at a time: the chunk's max, then its exps
    against the running max m_c (kept in the gradient, in place, or in a scratch row to be
    streamed) and their sum S_c. With the row's max m known at its end, the sum is
    sum_c S_c exp(m_c - m) and chunk c's gradient is its exps times k exp(m_c - m), every
    factor at most 1, so nothing overflows. The short-row kernel instead takes a row's max
    while the row before computes its exps, which keeps two rows (and the scratch row) in
    L2 at once: past L2's size, a row is read from memory twice.
    """
    want_grad, inplace = bool(want_grad), bool(inplace)
    streaming = bool(streaming) and want_grad and not inplace
    store = want_grad
    intrinsics = SOURCE_DIGEST  # a closure value: part of the cache key (see intrinsics)

    @njit(fastmath=FAST, nogil=True, cache=True)
    @variant(want_grad, inplace, streaming)
    def kernel(logits, labels, class_weight, scale, ahead, out, loss, first, last):
        """Loss per row into ``loss`` and, if want_grad, dL/dlogits * scale[row] into ``out``
        (``logits`` itself in place), for rows first..last-1; arguments as _rows_kernel's."""
        classes = logits.shape[1]
        chunks = (classes + _CHUNK - 1) // _CHUNK
        _ = intrinsics
        scratch = np.empty(classes if streaming else 0, F)
        shifts = np.empty(chunks, F)  # m_c: the running max chunk c's exps are taken from
        sums = np.empty(chunks, F)  # S_c
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
            grad = scratch if streaming else (row if inplace else out[i])
            best = _NO_KEY
            m = F(0.0)
            # (chunks are slices, looped over from 0: an index Numba cannot prove non-negative
            # is wrapped around at every access, which kept these loops scalar, 6x slower)
            key = _chunk_max(row[:_CHUNK], _NO_KEY)
            for c in range(chunks):
                lo = c * _CHUNK
                if key > best:
                    best = key
                    m = _shift(key)
                shifts[c] = m
                sums[c], key = _chunk_exps(
                    logits, i, lo, row[lo : lo + _CHUNK], grad[lo : lo + _CHUNK],
                    row[lo + _CHUNK : lo + 2 * _CHUNK], m, store, inplace, ahead,
                )  # fmt: skip
            total = F(0.0)
            for c in range(chunks):
                shifts[c] = exp_nonpositive(shifts[c] - m)  # now the chunk's factor
                total += sums[c] * shifts[c]
            _fetch_start(logits, i + 1 if i + 1 < last else i, ahead)
            lse = math.log(total) if total != 0 else F(0.0)
            target_unmasked = z_y != _NEG_INF
            nll = lse - (z_y - m) if target_unmasked else lse + F(np.inf)
            loss[i] = w_y * nll if w_y != 0 else F(0.0)
            if not want_grad:
                continue
            c_i = scale[i]
            target_mass = w_y if target_unmasked else F(0.0)
            k = c_i * target_mass / total if total != 0 else F(0.0)
            for c in range(chunks):
                lo = c * _CHUNK
                factor = k * shifts[c]
                if streaming:
                    scale_streaming(scratch[lo : lo + _CHUNK], out[i, lo : lo + _CHUNK], factor)
                else:
                    part = grad[lo : lo + _CHUNK]
                    for j in range(part.shape[0]):
                        part[j] *= factor
            if streaming:
                out[i, label] = scratch[label] * (k * shifts[label // _CHUNK]) - c_i * target_mass
            else:
                grad[label] -= c_i * target_mass
        if streaming:
            store_fence()  # the streamed rows are in memory before another thread reads them
        return loss

    return kernel


# How far ahead of its max the next row (or chunk) is prefetched (8 KB: a few hundred
# nanoseconds of the exp loop), from which size a gradient streams past the caches (half of
# L3, glibc's rule for memcpy), and from which row size the long-row kernel takes over: the
# short-row kernel keeps a row, the next one and a scratch row in L2.
_AHEAD = 2048
_STREAMING_BYTES = cache_bytes(3) // 2
_LONG_ROW_BYTES = cache_bytes(2) // 3


def expect_training_kernel(inplace: bool, smoothing: bool, weighted: bool) -> None:
    """Tell a first run (:func:`first_run.expect`) which kernel a training loss will call, for
    the argument types :func:`cross_entropy_rows` will give it (float32 logits, class
    indices), so that an empty cache compiles it beside the forward pass (the one for a
    gradient that fits the caches: a classifier's, not a vocabulary's)."""
    logits, rows = np.zeros((1, 1), F), np.zeros(1, F)
    out = logits if inplace else np.zeros((1, 1), F)
    weight = rows if weighted else np.ones(1, F)
    labels = np.zeros(1, np.int64)
    args = (logits, labels, rows, weight, weighted, F(0.0), rows, _AHEAD, out, rows)
    expect(_rows_kernel(True, inplace, smoothing, False), args)


def cross_entropy_rows(logits, labels, class_weight, weight, eps, scale, out=None):
    """The kernel on ranges of rows, one per thread; returns the per-row loss (float32).
    Rows of _LONG_ROW_BYTES or more without label smoothing take the long-row kernel, the
    others the short-row one (label smoothing's sums need the row's max before its exps).

    ``out``, a writeable C-contiguous (M, C) float32 array, receives dL/dz * scale when given;
    it may be ``logits`` itself (in place). Logits the kernel does not take as they are
    (read-only, broadcast or strided) are first copied into a new C-contiguous array, so that
    they give the numbers of the same logits in C order bit for bit (the in-place kernel's
    loops round differently in the last bit). Numba compiles the in-place stores even where
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
        logits = np.array(logits, dtype=np.float32, order="C")
    out = out if want_grad else logits
    streaming = want_grad and not inplace and eps == 0 and out.nbytes >= _STREAMING_BYTES
    loss = np.empty(len(logits), dtype=np.float32)
    if eps == 0 and logits.shape[1] * logits.itemsize >= _LONG_ROW_BYTES:
        kernel = _long_rows_kernel(want_grad, inplace, streaming)
        args = (logits, labels, class_weight, scale, _AHEAD, out, loss)
    else:
        kernel = _rows_kernel(want_grad, inplace, eps > 0, streaming)
        args = (logits, labels, class_weight, weight, has_weight, F(eps), scale, _AHEAD, out, loss)
    parallel_for(kernel, len(logits), *args, work=logits.size)
    return loss
