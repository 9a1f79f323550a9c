"""Plain-loop convolution and pooling: slow, obvious, and the oracle the fast versions must match.

Shapes as in :mod:`glassnet.functional.conv` and :mod:`glassnet.functional.pool`.
"""

from __future__ import annotations

import numpy as np


def conv2d_loops(x, weight, bias=None, stride=1, padding=0):
    """Direct cross-correlation, one output pixel at a time."""
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    h_out, w_out = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    out = np.zeros((n, c_out, h_out, w_out), dtype=np.result_type(x, weight))
    for b in range(n):
        for o in range(c_out):
            for y in range(h_out):
                for z in range(w_out):
                    patch = xp[b, :, y * stride : y * stride + kh, z * stride : z * stride + kw]
                    out[b, o, y, z] = np.sum(patch * weight[o]) + (0 if bias is None else bias[o])
    return out


def conv2d_backward_loops(grad_out, x, weight, stride=1, padding=0):
    """(grad_x, grad_w, grad_b) by scattering every output pixel's gradient over its patch."""
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    grad_xp = np.zeros_like(xp)
    grad_w = np.zeros_like(weight)
    for b in range(n):
        for o in range(c_out):
            for y in range(grad_out.shape[2]):
                for z in range(grad_out.shape[3]):
                    g = grad_out[b, o, y, z]
                    rows = slice(y * stride, y * stride + kh)
                    cols = slice(z * stride, z * stride + kw)
                    grad_w[o] += g * xp[b, :, rows, cols]
                    grad_xp[b, :, rows, cols] += g * weight[o]
    grad_x = grad_xp[:, :, padding : padding + h, padding : padding + w]
    return grad_x, grad_w, grad_out.sum(axis=(0, 2, 3))


def max_pool2d_loops(x, kernel_size, stride=None):
    """(out, grad routing mask) by scanning each window; ties go to the first maximum."""
    stride = kernel_size if stride is None else stride
    n, c, h, w = x.shape
    h_out, w_out = (h - kernel_size) // stride + 1, (w - kernel_size) // stride + 1
    out = np.zeros((n, c, h_out, w_out), dtype=x.dtype)
    for b in range(n):
        for ch in range(c):
            for y in range(h_out):
                for z in range(w_out):
                    window = x[
                        b,
                        ch,
                        y * stride : y * stride + kernel_size,
                        z * stride : z * stride + kernel_size,
                    ]
                    out[b, ch, y, z] = window.max()
    return out


def max_pool2d_backward_loops(grad_out, x, kernel_size, stride=None):
    stride = kernel_size if stride is None else stride
    grad_x = np.zeros_like(x)
    n, c, h_out, w_out = grad_out.shape
    for b in range(n):
        for ch in range(c):
            for y in range(h_out):
                for z in range(w_out):
                    window = x[
                        b,
                        ch,
                        y * stride : y * stride + kernel_size,
                        z * stride : z * stride + kernel_size,
                    ]
                    i, j = np.unravel_index(np.argmax(window), window.shape)
                    grad_x[b, ch, y * stride + i, z * stride + j] += grad_out[b, ch, y, z]
    return grad_x
