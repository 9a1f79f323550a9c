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

from numba import njit

from glassnet.kernels.threads import parallel_for

# Partial-sum blocks: enough to balance the threads, few enough to add up cheaply. A fixed
# number, so that the sums (and the results) do not depend on the thread count.
BLOCKS = 64


def channel_moments(x, shift, partial):
    """partial[b] = (sum(x - shift), sum((x - shift)^2)) per channel over block b's rows.

    x (R, C); shift (C,) float64; partial (BLOCKS, 2, C) float64, overwritten.
    """
    parallel_for(_channel_moments, partial.shape[0], x, shift, partial, work=x.size)
    return partial


@njit(nogil=True, cache=True)
def _channel_moments(x, shift, partial, first, last):
    rows, channels = x.shape
    blocks = partial.shape[0]
    for b in range(first, last):
        start, stop = rows * b // blocks, rows * (b + 1) // blocks
        s, q = partial[b, 0], partial[b, 1]  # no arrays allocated here: they cost compile time
        for c in range(channels):
            s[c] = 0.0
            q[c] = 0.0
        for r in range(start, stop):
            for c in range(channels):
                d = x[r, c] - shift[c]
                s[c] += d
                q[c] += d * d
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


def gradient_sums(g, x_hat, partial):
    """partial[b] = (sum(g), sum(g * x_hat)) per channel over block b's rows: the bias's and
    the weight's gradients once added up. g, x_hat (R, C); partial (BLOCKS, 2, C) float64."""
    parallel_for(_gradient_sums, partial.shape[0], g, x_hat, partial, work=g.size)
    return partial


@njit(nogil=True, cache=True)
def _gradient_sums(g, x_hat, partial, first, last):
    rows, channels = g.shape
    blocks = partial.shape[0]
    for b in range(first, last):
        start, stop = rows * b // blocks, rows * (b + 1) // blocks
        s, p = partial[b, 0], partial[b, 1]
        for c in range(channels):
            s[c] = 0.0
            p[c] = 0.0
        for r in range(start, stop):
            for c in range(channels):
                s[c] += g[r, c]
                p[c] += g[r, c] * x_hat[r, c]
    return partial


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
