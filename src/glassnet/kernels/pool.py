"""Kernels (Numba) for max pooling and its backward pass on channels-last (N, H, W, C) arrays.

The readable NumPy versions are in :mod:`glassnet.functional.pool`; the tests hold these to
them. As in :mod:`glassnet.kernels.conv`: the innermost loop runs over C contiguous channels,
the batch is split across threads (:mod:`glassnet.kernels.threads`), outputs are allocated
by the caller, and padding is implicit (a tap outside the image is never picked).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from glassnet.kernels.first_run import expect, follows, kernel_factory, variant
from glassnet.kernels.threads import parallel_for


def max_pool2d(x, kh, kw, sh, sw, top, left, out, argmax, relu=False):
    """out[n, y, x, :] = max over the kH x kW window at (sh y - top, sw x - left); argmax the
    window offset i * kW + j it came from. Same rule as the NumPy reference: a running max over
    the window's taps inside x (padding never wins) in offset order, from the first of them;
    ties stay with the first, a NaN propagates to out (and argmax keeps the last offset that
    was strictly greater). With ``relu``, a maximum <= 0 becomes 0 and, where the output is
    not positive (NaN included), argmax is -1: no gradient goes back there.

    x (N, H, W, C); out (N, H_out, W_out, C); argmax like out, a signed integer dtype.
    """
    parallel_for(_max_pool2d, x.shape[0], x, kh, kw, sh, sw, top, left, bool(relu), out,
                 argmax, work=x.size)  # fmt: skip
    return out, argmax


@njit(nogil=True, cache=True)
def _max_pool2d(x, kh, kw, sh, sw, top, left, relu, out, argmax, first, last):
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
                if relu:  # the ReLU after the pooling, on the channel vector still in cache
                    for ch in range(c):
                        v = out[b, y, xo, ch]
                        if not v > 0:
                            argmax[b, y, xo, ch] = -1
                        if v <= 0:
                            out[b, y, xo, ch] = 0
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


def conv_weight_grad_2x2(grad_out, argmax, psh, psw, x, kh, kw, sh, sw, acc):
    """A convolution's weight gradient straight from the gradient of the 2 x 2 max pooling
    that follows it: acc[n] = image n's [dL/dW^T; dL/db] ((kH * kW * C_in + 1, C_out), rows
    in (i, j, c) order, the bias's last).

    What it replaces: max_pool2d_backward scatters grad_out onto the convolution's output, three
    quarters of it zeros, and the weight gradient's product reads that back. Here, per tap, the
    four input values under a window's four pixels are loaded once and each channel picks the
    one its argmax names (a vector select), so the scattered array is never made.

    grad_out, argmax (N, H_p, W_p, C_out): the pooling's, 2 x 2 windows at stride (psh, psw).
    x (N, H, W, C_in): the convolution's input (kh x kw windows, stride (sh, sw)), padded so
    that window (yo, xo)'s first pixel reads from row sh * psh * yo, column sw * psw * xo,
    and every read is inside (the caller pads for both layers; a pixel in the pooling's
    padding is read but never picked).
    """
    kernel = _conv_weight_grad_2x2(kh, kw, x.shape[3])
    parallel_for(kernel, x.shape[0], grad_out, argmax, psh, psw, x, sh, sw, acc,
                 work=grad_out.size * acc.shape[1])  # fmt: skip
    return acc


def expect_conv_weight_grad_2x2(kh: int, kw: int, c_in: int, dtype: np.dtype) -> None:
    """Ask a first run's helper (:func:`first_run.expect`) for the kernel above, as
    :func:`conv_weight_grad_2x2` will call it for this convolution: the pooling after it
    cannot name it as a follower, since it does not know the convolution's kernel size."""
    image, index = np.zeros((1, 1, 1, 1), dtype), np.zeros((1, 1, 1, 1), np.int8)
    args = (image, index, 1, 1, image, 1, 1, np.zeros((1, 1, 1), dtype))
    expect(_conv_weight_grad_2x2(kh, kw, c_in), args)


@kernel_factory
def _conv_weight_grad_2x2(kh: int, kw: int, c_in: int):
    """The kernel for one kernel size and input channel count: with those constant, LLVM
    unrolls the taps and vectorises the loop over output channels (with them read at run
    time it kept that loop scalar, 2x slower than the unfused pair)."""
    kh, kw, c_in = int(kh), int(kw), int(c_in)  # (the disk cache keys on their values)
    k = kh * kw * c_in

    @njit(nogil=True, cache=True, fastmath={"contract"})
    @variant(kh, kw, c_in)
    def kernel(grad_out, argmax, psh, psw, x, sh, sw, acc, first, last):
        """:func:`conv_weight_grad_2x2` for images first..last-1."""
        h_p, w_p, c_out = grad_out.shape[1:]
        for b in range(first, last):
            for t in range(k + 1):
                for c in range(c_out):
                    acc[b, t, c] = 0
            for yo in range(h_p):
                for xo in range(w_p):
                    r0, c0 = sh * psh * yo, sw * psw * xo  # tap (0, 0) of the window's first pixel
                    # argmax -1: a ReLU after the pooling let no gradient through (g - g and
                    # v - v are zeros of the arrays' dtype, NaN where the unfused pair's
                    # products with 0 would be)
                    for c in range(c_out):
                        g = grad_out[b, yo, xo, c]
                        acc[b, k, c] += g if argmax[b, yo, xo, c] >= 0 else g - g
                    for i in range(kh):
                        for j in range(kw):
                            for ci in range(c_in):
                                p00 = x[b, r0 + i, c0 + j, ci]
                                p01 = x[b, r0 + i, c0 + sw + j, ci]
                                p10 = x[b, r0 + sh + i, c0 + j, ci]
                                p11 = x[b, r0 + sh + i, c0 + sw + j, ci]
                                t = (i * kw + j) * c_in + ci
                                for c in range(c_out):
                                    o = argmax[b, yo, xo, c]
                                    v = p00 if o == 0 else p01 if o == 1 else p10 if o == 2 else p11
                                    v = v if o >= 0 else v - v
                                    acc[b, t, c] += grad_out[b, yo, xo, c] * v
        return acc

    return kernel


def conv_max_pool_2x2(x, w, bias, kh, kw, sh, sw, psh, psw, relu, out, argmax):
    """A convolution followed by a 2 x 2 max pooling (and, with ``relu``, a ReLU), without
    the convolution's output: each pooling window's four convolution outputs are computed in
    registers, a vector of output channels at a time, and only their maximum is stored.

    out and argmax are max_pool2d's (same rule: a running max in offset order, ties to the
    first, NaN propagates; with ``relu`` argmax -1 where the output is not positive).
    x (N, H, W, C_in): the convolution's input, padded so that window (yo, xo) reads rows
    sh * psh * yo onwards, columns sw * psw * xo onwards, all inside. w (kH * kW * C_in, C_out),
    rows in (i, j, c) order; bias (C_out,); out, argmax (N, H_p, W_p, C_out).
    """
    c_in, c_out = x.shape[3], out.shape[3]
    kernel = _conv_max_pool_2x2(kh, kw, c_in, sh, sw, c_out)
    patch = np.empty((x.shape[0], (sh + kh) * (sw + kw) * c_in), x.dtype)
    parallel_for(kernel, x.shape[0], x, w, bias, psh, psw, bool(relu), patch, out, argmax,
                 work=4 * out.size * w.shape[0])  # fmt: skip
    return out, argmax


@kernel_factory
def _conv_max_pool_2x2(kh: int, kw: int, c_in: int, sh: int, sw: int, c_out: int):
    """The kernel for one geometry and channel count, all constants: LLVM then unrolls the
    taps and runs the loop over output channels in whole vectors (with C_out read at run
    time it chose a vector body longer than 32 channels and ran them all in its scalar
    remainder: 5x slower). The input under a window goes into ``patch`` first, so that the
    channel loop reads it at constant offsets (reading x there cost 4x: index arithmetic)."""
    kh, kw, c_in, sh, sw, c_out = map(int, (kh, kw, c_in, sh, sw, c_out))
    rows, cols = sh + kh, sw + kw  # the input under a 2 x 2 window of convolution outputs

    @njit(nogil=True, cache=True, fastmath={"contract"})
    @variant(kh, kw, c_in, sh, sw, c_out)
    def kernel(x, w, bias, psh, psw, relu, patch, out, argmax, first, last):
        """:func:`conv_max_pool_2x2` for images first..last-1."""
        h_p, w_p = out.shape[1], out.shape[2]
        for b in range(first, last):
            for yo in range(h_p):
                for xo in range(w_p):
                    r0, c0 = sh * psh * yo, sw * psw * xo
                    for i in range(rows):
                        for j in range(cols):
                            for ci in range(c_in):
                                patch[b, (i * cols + j) * c_in + ci] = x[b, r0 + i, c0 + j, ci]
                    for c in range(c_out):
                        best = bias[c]
                        arg = 0
                        for offset in range(4):  # the window's pixels, in max_pool2d's order
                            pi, pj = offset // 2, offset % 2
                            v = bias[c]
                            for i in range(kh):
                                for j in range(kw):
                                    for ci in range(c_in):
                                        t = ((sh * pi + i) * cols + sw * pj + j) * c_in + ci
                                        v += patch[b, t] * w[(i * kw + j) * c_in + ci, c]
                            if offset == 0:
                                best = v
                            else:
                                if v > best:
                                    arg = offset
                                if v > best or v != v:
                                    best = v
                        out[b, yo, xo, c] = best
                        argmax[b, yo, xo, c] = arg
                    if relu:  # as _max_pool2d's, on the channel vector still in cache
                        for c in range(c_out):
                            v = out[b, yo, xo, c]
                            if not v > 0:
                                argmax[b, yo, xo, c] = -1
                            if v <= 0:
                                out[b, yo, xo, c] = 0
        return out

    return kernel


# What a training step runs after the forward kernel (see glassnet.kernels.first_run). (After
# a first convolution it is the fused weight gradient instead, which the convolution asks
# for: expect_conv_weight_grad_2x2.)
follows(
    _max_pool2d,
    lambda x, kh, kw, sh, sw, top, left, relu, out, argmax: (
        _max_pool2d_backward,
        (out, argmax, kh, kw, sh, sw, top, left, x),
    ),
)
