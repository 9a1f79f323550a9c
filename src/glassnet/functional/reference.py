"""Plain-loop convolution and pooling: slow, obvious, and the oracle the fast versions must match.

Shapes and arguments as in :mod:`glassnet.functional.conv` and :mod:`glassnet.functional.pool`
(``stride`` and ``padding`` ints or pairs; convolution padding also "same" or "valid"). Pooling
windows are clipped to the input rather than padded: padding never wins a max, and adds 0 to a
sum.
"""

from __future__ import annotations

import math

import numpy as np

from glassnet.functional.conv import as_pair, conv_padding


def _padded_input(x, kernel_size, stride, padding):
    """x with PyTorch's zero padding for a convolution, the stride pair and the output size."""
    (kh, kw), (sh, sw) = kernel_size, as_pair(stride, "stride")
    top, bottom, left, right = conv_padding(padding, kernel_size, (sh, sw))
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_size = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    return xp, (sh, sw), (top, left), out_size


def conv2d_loops(x, weight, bias=None, stride=1, padding=0):
    """Direct cross-correlation, one output pixel at a time."""
    n = x.shape[0]
    c_out, _, kh, kw = weight.shape
    xp, (sh, sw), _, (h_out, w_out) = _padded_input(x, (kh, kw), stride, padding)
    out = np.zeros((n, c_out, h_out, w_out), dtype=np.result_type(x, weight))
    for b in range(n):
        for o in range(c_out):
            for y in range(h_out):
                for z in range(w_out):
                    patch = xp[b, :, y * sh : y * sh + kh, z * sw : z * sw + kw]
                    out[b, o, y, z] = np.sum(patch * weight[o]) + (0 if bias is None else bias[o])
    return out


def conv2d_backward_loops(grad_out, x, weight, stride=1, padding=0):
    """(grad_x, grad_w, grad_b) by scattering every output pixel's gradient over its patch."""
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    xp, (sh, sw), (top, left), _ = _padded_input(x, (kh, kw), stride, padding)
    grad_xp = np.zeros_like(xp)
    grad_w = np.zeros_like(weight)
    for b in range(n):
        for o in range(c_out):
            for y in range(grad_out.shape[2]):
                for z in range(grad_out.shape[3]):
                    g = grad_out[b, o, y, z]
                    rows = slice(y * sh, y * sh + kh)
                    cols = slice(z * sw, z * sw + kw)
                    grad_w[o] += g * xp[b, :, rows, cols]
                    grad_xp[b, :, rows, cols] += g * weight[o]
    grad_x = grad_xp[:, :, top : top + h, left : left + w]
    return grad_x, grad_w, grad_out.sum(axis=(0, 2, 3))


def _pool_windows(x_shape, kernel_size, stride, padding):
    """Yield (y, z, rows, cols): each output pixel and its window clipped to the input."""
    (kh, kw), (ph, pw) = as_pair(kernel_size, "kernel_size"), as_pair(padding, "padding", 0)
    sh, sw = (kh, kw) if stride is None else as_pair(stride, "stride")
    h, w = x_shape[2:]
    for y in range((h + 2 * ph - kh) // sh + 1):
        for z in range((w + 2 * pw - kw) // sw + 1):
            top, left = y * sh - ph, z * sw - pw
            rows = slice(max(top, 0), min(top + kh, h))
            cols = slice(max(left, 0), min(left + kw, w))
            yield y, z, rows, cols


def _pool_loops(x, kernel_size, stride, padding, reduce):
    windows = list(_pool_windows(x.shape, kernel_size, stride, padding))
    h_out, w_out = windows[-1][0] + 1, windows[-1][1] + 1
    out = np.zeros((*x.shape[:2], h_out, w_out), dtype=x.dtype)
    for b, ch in np.ndindex(x.shape[:2]):
        for y, z, rows, cols in windows:
            out[b, ch, y, z] = reduce(x[b, ch, rows, cols])
    return out


def max_pool2d_loops(x, kernel_size, stride=None, padding=0):
    """Max of every window, by scanning them one at a time."""
    return _pool_loops(x, kernel_size, stride, padding, np.max)


def max_pool2d_backward_loops(grad_out, x, kernel_size, stride=None, padding=0):
    """Each window's gradient to its first maximum (PyTorch's tie rule)."""
    grad_x = np.zeros_like(x)
    for b, ch in np.ndindex(x.shape[:2]):
        for y, z, rows, cols in _pool_windows(x.shape, kernel_size, stride, padding):
            window = x[b, ch, rows, cols]
            i, j = np.unravel_index(np.argmax(window), window.shape)
            grad_x[b, ch, rows.start + i, cols.start + j] += grad_out[b, ch, y, z]
    return grad_x


def avg_pool2d_loops(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Sum of every window over kH * kW, or over the taps inside x."""
    kh, kw = as_pair(kernel_size, "kernel_size")

    def average(window):
        return window.sum() / (kh * kw if count_include_pad else window.size)

    return _pool_loops(x, kernel_size, stride, padding, average)


def avg_pool2d_backward_loops(
    grad_out, x, kernel_size, stride=None, padding=0, count_include_pad=True
):
    """Every window spreads its gradient evenly over its taps (padding's share is dropped)."""
    kh, kw = as_pair(kernel_size, "kernel_size")
    grad_x = np.zeros_like(x)
    for b, ch in np.ndindex(x.shape[:2]):
        for y, z, rows, cols in _pool_windows(x.shape, kernel_size, stride, padding):
            size = (rows.stop - rows.start) * (cols.stop - cols.start)
            divisor = kh * kw if count_include_pad else size
            grad_x[b, ch, rows, cols] += grad_out[b, ch, y, z] / divisor
    return grad_x


def _adaptive_bins(size, n_out):
    """PyTorch's bins: [floor(i size / n_out), ceil((i + 1) size / n_out)) for each i."""
    return [
        slice(math.floor(i * size / n_out), math.ceil((i + 1) * size / n_out)) for i in range(n_out)
    ]


def adaptive_avg_pool2d_loops(x, output_size):
    """The mean of every bin, one at a time (output_size a pair of ints)."""
    h_out, w_out = output_size
    out = np.zeros((*x.shape[:2], h_out, w_out), dtype=x.dtype)
    for y, rows in enumerate(_adaptive_bins(x.shape[2], h_out)):
        for z, cols in enumerate(_adaptive_bins(x.shape[3], w_out)):
            out[:, :, y, z] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out


def adaptive_avg_pool2d_backward_loops(grad_out, x_shape, output_size):
    """Every bin spreads its gradient evenly over its pixels."""
    h_out, w_out = output_size
    grad_x = np.zeros(x_shape, dtype=grad_out.dtype)
    for y, rows in enumerate(_adaptive_bins(x_shape[2], h_out)):
        for z, cols in enumerate(_adaptive_bins(x_shape[3], w_out)):
            size = (rows.stop - rows.start) * (cols.stop - cols.start)
            grad_x[:, :, rows, cols] += grad_out[:, :, y, z, None, None] / size
    return grad_x
