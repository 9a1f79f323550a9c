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


def _window(x, b, ch, y, z, kernel_size, stride):
    """The k x k window of image b, channel ch, whose output pixel is (y, z)."""
    top, left = y * stride, z * stride
    return x[b, ch, top : top + kernel_size, left : left + kernel_size]


def max_pool2d_loops(x, kernel_size, stride=None):
    """Max of every window, by scanning them one at a time."""
    stride = kernel_size if stride is None else stride
    n, c, h, w = x.shape
    h_out, w_out = (h - kernel_size) // stride + 1, (w - kernel_size) // stride + 1
    out = np.zeros((n, c, h_out, w_out), dtype=x.dtype)
    for b, ch, y, z in np.ndindex(out.shape):
        out[b, ch, y, z] = _window(x, b, ch, y, z, kernel_size, stride).max()
    return out


def max_pool2d_backward_loops(grad_out, x, kernel_size, stride=None):
    """Each window's gradient to its first maximum (PyTorch's tie rule)."""
    stride = kernel_size if stride is None else stride
    grad_x = np.zeros_like(x)
    for b, ch, y, z in np.ndindex(grad_out.shape):
        window = _window(x, b, ch, y, z, kernel_size, stride)
        i, j = np.unravel_index(np.argmax(window), window.shape)
        grad_x[b, ch, y * stride + i, z * stride + j] += grad_out[b, ch, y, z]
    return grad_x
