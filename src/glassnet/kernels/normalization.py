"""Kernels (Numba) for batch normalization on (R, C) arrays: R rows, C channels contiguous.

A channels-last (N, H, W, C) activation, the layout :mod:`glassnet.functional.conv` produces,
is such an array with R = N * H * W; so is BatchNorm1d's (N, C) input. The NumPy code in
:mod:`glassnet.functional.normalization` is the reference; the tests hold these to it.

Why kernels: the NumPy forward pass makes seven passes over the activation (mean, centre,
square, mean, scale, weight, bias) and reduces over axes (0, 2, 3) of a channels-last array,
which NumPy does with strided loops. Here the statistics take one pass (per-thread partial sums
in float64 around a per-channel shift, so float32 inputs lose nothing to cancellation), and
the normalisation one more, writing x_hat and y together. The backward pass is the same
shape: one pass for the two channel sums, one for dL/dx.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from glassnet.kernels.first_run import follows
from glassnet.kernels.threads import parallel_for

# Partial-sum blocks: enough to balance the threads, few enough to add up cheaply. A fixed
# number, so that the sums (and the results) do not depend on the thread count.
BLOCKS = 64


def channel_sums(a, b, shift):
    """Per channel, (sum(a - shift), sum((a - shift) * (b - shift))), summed in float64.

    a, b (R, C) (b may be a); shift (C,) float64. The moments of x are (x, x, a sample of x)
    (a shift near the mean keeps float32 free of cancellation); the gradient sums of the
    backward pass are (g, x_hat, 0). Each of BLOCKS blocks of rows is summed on its own, so
    the result does not depend on the thread count.
    """
    partial = np.empty((BLOCKS, 2, a.shape[1]))
    parallel_for(_channel_sums, BLOCKS, a, b, shift, partial, work=a.size)
    return partial.sum(axis=0)


@njit(nogil=True, cache=True)
def _channel_sums(a, b, shift, partial, first, last):
    rows, channels = a.shape
    blocks = partial.shape[0]
    for k in range(first, last):
        start, stop = rows * k // blocks, rows * (k + 1) // blocks
        s, p = partial[k, 0], partial[k, 1]  # no arrays allocated here: they cost compile time
        for c in range(channels):
            s[c] = 0.0
            p[c] = 0.0
        for r in range(start, stop):
            for c in range(channels):
                d = a[r, c] - shift[c]
                s[c] += d
                p[c] += d * (b[r, c] - shift[c])
    return partial


def normalize(x, mean, inv_std, weight, bias, x_hat, y):
    """x_hat = (x - mean) * inv_std and y = x_hat * weight + bias, per channel, in one pass.

    x, x_hat, y (R, C); mean, inv_std, weight, bias (C,) in x's dtype (ones and zeros for no
    affine transform). x_hat may be y (no affine transform) or x (in place).
    """
    parallel_for(_normalize, x.shape[0], x, mean, inv_std, weight, bias, x_hat, y, work=x.size)
    return y


@njit(nogil=True, cache=True)
def _normalize(x, mean, inv_std, weight, bias, x_hat, y, first, last):
    channels = x.shape[1]
    for r in range(first, last):
        for c in range(channels):
            h = (x[r, c] - mean[c]) * inv_std[c]
            x_hat[r, c] = h
            y[r, c] = h * weight[c] + bias[c]
    return y


def input_gradient(g, x_hat, mean_g, mean_gx, scale, grad_x):
    """grad_x = (g - mean_g - x_hat * mean_gx) * scale per channel (batch statistics).

    g, x_hat, grad_x (R, C) (grad_x may be g); mean_g, mean_gx, scale (C,) in g's dtype.
    """
    parallel_for(_input_gradient, g.shape[0], g, x_hat, mean_g, mean_gx, scale, grad_x, work=g.size)
    return grad_x


@njit(nogil=True, cache=True)
def _input_gradient(g, x_hat, mean_g, mean_gx, scale, grad_x, first, last):
    channels = g.shape[1]
    for r in range(first, last):
        for c in range(channels):
            grad_x[r, c] = (g[r, c] - mean_g[c] - x_hat[r, c] * mean_gx[c]) * scale[c]
    return grad_x


# What a training step runs after the forward kernel (see glassnet.kernels.first_run).
follows(
    _normalize,
    lambda x, mean, inv_std, weight, bias, x_hat, y: (
        _input_gradient,
        (y, x_hat, mean, mean, inv_std, x_hat),
    ),
)
