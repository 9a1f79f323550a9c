"""Kernels (Numba) for max pooling and its backward pass on channels-last (N, H, W, C) arrays.

The readable NumPy versions are in :mod:`glassnet.functional.pool`; the tests hold these to
them. As in :mod:`glassnet.kernels.conv`: the innermost loop runs over C contiguous channels,
the batch is split across threads (:mod:`glassnet.kernels.threads`), outputs are allocated
by the caller, and padding is implicit (a tap outside the image is never picked).
"""

from __future__ import annotations

from numba import njit

from glassnet.kernels.first_run import follows
from glassnet.kernels.threads import parallel_for


def max_pool2d(x, kh, kw, sh, sw, top, left, out, argmax):
    """out[n, y, x, :] = max over the kH x kW window at (sh y - top, sw x - left); argmax the
    window offset i * kW + j it came from. Same rule as the NumPy reference: a running max over
    the window's taps inside x (padding never wins) in offset order, from the first of them;
    ties stay with the first, a NaN propagates to out (and argmax keeps the last offset that
    was strictly greater).

    x (N, H, W, C); out (N, H_out, W_out, C); argmax like out, an integer dtype.
    """
    parallel_for(_max_pool2d, x.shape[0], x, kh, kw, sh, sw, top, left, out, argmax,
                 work=x.size)  # fmt: skip
    return out, argmax


@njit(nogil=True, cache=True)
def _max_pool2d(x, kh, kw, sh, sw, top, left, out, argmax, first, last):
    """:func:`max_pool2d` for images first..last-1."""
    h, w, c = x.shape[1:]
    h_out, w_out = out.shape[1], out.shape[2]
    for b in range(first, last):
        for y in range(h_out):
            for xo in range(w_out):
                i_first, j_first = max(0, top - sh * y), max(0, left - sw * xo)
                row, col = sh * y + i_first - top, sw * xo + j_first - left
                for ch in range(c):
                    out[b, y, xo, ch] = x[b, row, col, ch]
                    argmax[b, y, xo, ch] = i_first * kw + j_first
                # Bounds tests per tap, not clamped loop ranges: those measured 5-10% slower.
                for i in range(kh):
                    row = sh * y + i - top
                    if row < 0 or row >= h:
                        continue
                    for j in range(kw):
                        col = sw * xo + j - left
                        if col < 0 or col >= w or (i == i_first and j == j_first):
                            continue
                        offset = i * kw + j
                        for ch in range(c):
                            v = x[b, row, col, ch]
                            current = out[b, y, xo, ch]
                            if v > current:
                                argmax[b, y, xo, ch] = offset
                            if v > current or v != v:
                                out[b, y, xo, ch] = v
    return out, argmax


def max_pool2d_backward(grad_out, argmax, kh, kw, sh, sw, top, left, grad_x):
    """grad_x[window's argmax] += grad_out; every other input gets 0.

    grad_out, argmax (N, H_out, W_out, C); grad_x (N, H, W, C), overwritten.
    """
    parallel_for(_max_pool2d_backward, grad_x.shape[0], grad_out, argmax, kh, kw, sh, sw, top,
                 left, grad_x, work=grad_x.size)  # fmt: skip
    return grad_x


@njit(nogil=True, cache=True)
def _max_pool2d_backward(grad_out, argmax, kh, kw, sh, sw, top, left, grad_x, first, last):
    """:func:`max_pool2d_backward` for images first..last-1."""
    h, w, c = grad_x.shape[1:]
    h_out, w_out = grad_out.shape[1], grad_out.shape[2]
    for b in range(first, last):
        grad_x[b] = 0  # one view per image (a view per pixel would cost a refcount each)
        for y in range(h_out):
            for xo in range(w_out):
                for i in range(kh):
                    row = sh * y + i - top
                    if row < 0 or row >= h:
                        continue
                    for j in range(kw):
                        col = sw * xo + j - left
                        if col < 0 or col >= w:
                            continue
                        offset = i * kw + j
                        for ch in range(c):
                            if argmax[b, y, xo, ch] == offset:
                                grad_x[b, row, col, ch] += grad_out[b, y, xo, ch]
    return grad_x


# What a training step runs after the forward kernel (see glassnet.kernels.first_run).
follows(
    _max_pool2d,
    lambda x, kh, kw, sh, sw, top, left, out, argmax: (
        _max_pool2d_backward,
        (out, argmax, kh, kw, sh, sw, top, left, x),
    ),
)
