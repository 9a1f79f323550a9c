"""Kernels (Numba) for convolution: im2col and its adjoint col2im on channels-last arrays.

The readable NumPy versions are in :mod:`glassnet.functional.conv`, and the tests hold these
kernels to them. Why channels last: the innermost loop of every kernel below runs over C
contiguous channels, so it is one vector load or add per 16 float32s, and the loops around it
only index whole pixels. In NCHW the same loops would stride through memory a row of an image
at a time.

All kernels are threaded over the images of the batch (serial loops on ranges of images, run
by :func:`glassnet.kernels.threads.parallel_for`) and write into an output array the caller
allocates, so the functional layer decides shapes, dtypes and layouts.
Padding is implicit: a tap that falls outside the image reads 0 (im2col) or is skipped
(col2im: its gradient goes nowhere), so no padded copy of the input is ever made. The kernels
only need the top/left pads: the output size (the arrays' shapes) fixes the rest, so
asymmetric padding ("same" with an even kernel) costs nothing extra.

How they are written, measured on the seeds' convnet: scalar indexing only (an array view
made inside a loop costs a reference count update per view), bounds tests instead of
``//`` and ``%`` in the loops (col2im scatters from each patch rather than gathering into each
pixel, which would need them): together 12x on col2im (4.5 ms -> 0.37 ms per batch of 128).
"""

from __future__ import annotations

from numba import njit

from glassnet.kernels.first_run import follows
from glassnet.kernels.threads import parallel_for


def im2col(x, kh, kw, sh, sw, top, left, h_out, w_out, cols):
    """cols[(n, y, x), (i, j, c)] = x[n, sh * y + i - top, sw * x + j - left, c], 0 outside x;
    a last column beyond the kH * kW * C of a patch, if cols has one, is set to 1.

    x (N, H, W, C); cols (N * H_out * W_out, kH * kW * C [+ 1]), C-contiguous.
    """
    parallel_for(_im2col, x.shape[0], x, kh, kw, sh, sw, top, left, h_out, w_out, cols,
                 work=cols.size)  # fmt: skip
    return cols


@njit(nogil=True, cache=True)
def _im2col(x, kh, kw, sh, sw, top, left, h_out, w_out, cols, first, last):
    """:func:`im2col` for images first..last-1."""
    h, w, c = x.shape[1:]
    k = kh * kw * c
    for b in range(first, last):
        for y in range(h_out):
            for xo in range(w_out):
                r = (b * h_out + y) * w_out + xo
                for i in range(kh):
                    row = sh * y + i - top
                    for j in range(kw):
                        col = sw * xo + j - left
                        base = (i * kw + j) * c
                        if 0 <= row < h and 0 <= col < w:
                            for ch in range(c):
                                cols[r, base + ch] = x[b, row, col, ch]
                        else:
                            for ch in range(c):
                                cols[r, base + ch] = 0
                if cols.shape[1] > k:
                    cols[r, k] = 1
    return cols


def col2im(grad_cols, sh, sw, top, left, grad_x):
    """The adjoint of :func:`im2col`: every patch's gradient is added onto the pixels it read.

    grad_cols (N, H_out, W_out, kH, kW, C); grad_x (N, H, W, C), overwritten.
    """
    parallel_for(_col2im, grad_x.shape[0], grad_cols, sh, sw, top, left, grad_x,
                 work=grad_cols.size)  # fmt: skip
    return grad_x


@njit(nogil=True, cache=True)
def _col2im(grad_cols, sh, sw, top, left, grad_x, first, last):
    """:func:`col2im` for images first..last-1."""
    h, w, c = grad_x.shape[1:]
    h_out, w_out, kh, kw = grad_cols.shape[1:5]
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
                        for ch in range(c):
                            grad_x[b, row, col, ch] += grad_cols[b, y, xo, i, j, ch]
    return grad_x


# What a training step runs after the forward kernel (see glassnet.kernels.first_run).
# (col2im takes the patches' gradient as (N, H_out, W_out, kH, kW, C): an array of that type)
follows(
    _im2col,
    lambda x, kh, kw, sh, sw, top, left, h_out, w_out, cols: (
        _col2im,
        (x.reshape(*x.shape, 1, 1), sh, sw, top, left, x),
    ),
)
