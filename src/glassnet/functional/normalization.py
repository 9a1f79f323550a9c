"""Batch normalization and its backward pass.

Shapes: x (N, C) or (N, C, *spatial), e.g. (N, C, L) or (N, C, H, W); per-channel vectors
(running_mean, running_var, weight, bias) are (C,). Statistics are taken per channel over the
other axes: m = N * prod(spatial) values each.

The NumPy code here is the reference. When :func:`glassnet.kernels.enabled` says so, float32
and float64 inputs take the Numba kernels of :mod:`glassnet.kernels.normalization` instead
(two passes each way over channels-last memory); their outputs are channels-last in memory,
as :mod:`glassnet.functional.conv`'s are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glassnet import kernels
from glassnet.functional._checks import as_float_array, compute_dtype

try:  # Numba versions of the two passes each way; they run when kernels.enabled()
    from glassnet.kernels import normalization as bn_kernels
except ImportError:  # no Numba: kernels.enabled() is False, the NumPy code below runs
    bn_kernels = None


@dataclass
class BatchNormCache:
    """What :func:`batch_norm_backward` needs from the forward pass."""

    x_hat: np.ndarray  # (x - mean) * inv_std, the input's shape, compute dtype
    inv_std: np.ndarray  # (C,) 1 / sqrt(var + eps)
    batch_stats: bool  # True: mean and var came from the batch, so they depend on x
    x_dtype: np.dtype


def _channel_axes(x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axes statistics reduce over, and the shape that broadcasts a (C,) vector onto x."""
    reduce_axes = (0, *range(2, x.ndim))
    return reduce_axes, (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _check_channels(name: str, vector: np.ndarray | None, channels: int) -> None:
    if vector is not None and np.shape(vector) != (channels,):
        raise ValueError(
            f"{name} must have shape (C,) = ({channels},), one entry per channel of the input, "
            f"got shape {np.shape(vector)}"
        )


def _update_running(running_mean, running_var, mean, var, momentum: float, count: int) -> None:
    """``running = (1 - momentum) * running + momentum * stat`` in place, with the unbiased
    variance ``var * m / (m - 1)`` as in PyTorch; nothing if there are no running statistics."""
    if running_mean is None or running_var is None:
        return
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * var * (count / (count - 1))


def _use_kernels(x: np.ndarray) -> bool:
    return kernels.enabled() and x.dtype in (np.float32, np.float64)


def _channel_rows(x: np.ndarray) -> np.ndarray:
    """x (N, C, *spatial) as an (R, C) array with channels contiguous: a view if x is
    channels-last in memory (conv outputs, (N, C) inputs), else a copy."""
    moved = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    return moved.reshape(-1, x.shape[1])


def _like_input(rows: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """(R, C) rows as an array of shape x_shape (N, C, *spatial), channels-last in memory."""
    moved_shape = (x_shape[0], *x_shape[2:], x_shape[1])
    return np.moveaxis(rows.reshape(moved_shape), -1, 1)


def _forward_with_kernels(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """:func:`batch_norm_forward` in two passes: channel moments, then x_hat and y."""
    rows = _channel_rows(x)
    count, channels = rows.shape
    dtype = x.dtype
    if training or running_mean is None or running_var is None:
        shift = rows[0].astype(np.float64)  # moments around a sample: no cancellation
        sums, squares = bn_kernels.channel_sums(rows, rows, shift)
        mean = shift + sums / count
        var = np.maximum(squares / count - (sums / count) ** 2, 0)  # biased, for normalising
        if training:
            _update_running(running_mean, running_var, mean, var, momentum, count)
        batch_stats = True
    else:
        mean, var, batch_stats = running_mean, running_var, False
    inv_std = (1 / np.sqrt(np.asarray(var, np.float64) + eps)).astype(dtype)
    ones, zeros = np.ones(channels, dtype), np.zeros(channels, dtype)
    scale = ones if weight is None else np.asarray(weight, dtype)
    shift_out = zeros if bias is None else np.asarray(bias, dtype)
    x_hat = np.empty_like(rows)
    y = x_hat if weight is None and bias is None else np.empty_like(rows)
    mean = np.asarray(mean, dtype)
    bn_kernels.normalize(rows, mean, inv_std, scale, shift_out, x_hat, y)
    cache = BatchNormCache(_like_input(x_hat, x.shape), inv_std, batch_stats, dtype)
    return _like_input(y, x.shape), cache


def _backward_with_kernels(grad_out, cache, scale):
    """:func:`batch_norm_backward` with batch statistics, in two passes."""
    x_hat = _channel_rows(cache.x_hat)
    g = _channel_rows(grad_out.astype(x_hat.dtype, copy=False))
    count, channels = g.shape
    grad_bias, grad_weight = bn_kernels.channel_sums(g, x_hat, np.zeros(channels))
    dtype = x_hat.dtype
    mean_g, mean_gx = (grad_bias / count).astype(dtype), (grad_weight / count).astype(dtype)
    grad_x = bn_kernels.input_gradient(
        g, x_hat, mean_g, mean_gx, scale.astype(dtype), np.empty_like(g)
    )
    shape = cache.x_hat.shape
    return _like_input(grad_x, shape), grad_weight.astype(dtype), grad_bias.astype(dtype)


def batch_norm_forward(
    x: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, BatchNormCache]:
    """:func:`batch_norm`, plus the cache for :func:`batch_norm_backward`."""
    x = as_float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, C) or (N, C, *spatial), got shape {x.shape}")
    channels = x.shape[1]
    for name, vector in [("running_mean", running_mean), ("running_var", running_var),
                         ("weight", weight), ("bias", bias)]:  # fmt: skip
        _check_channels(name, vector, channels)
    batch_stats = training or running_mean is None or running_var is None
    count = x.size // channels if channels else 0
    if training and count <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.shape}"
        )
    if _use_kernels(x) and count > 0:
        return _forward_with_kernels(
            x, running_mean, running_var, weight, bias, training, momentum, eps
        )
    reduce_axes, channel_shape = _channel_axes(x)
    xc = x.astype(compute_dtype(x.dtype), copy=False)
    if batch_stats:
        mean = xc.mean(axis=reduce_axes)
        centered = xc - mean.reshape(channel_shape)
        var = np.mean(centered * centered, axis=reduce_axes)  # biased, for normalising
        if training:
            _update_running(running_mean, running_var, mean, var, momentum, count)
    else:
        centered = xc - running_mean.reshape(channel_shape)
        var = running_var
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = centered * inv_std.reshape(channel_shape)
    y = x_hat if weight is None else x_hat * weight.reshape(channel_shape)
    if bias is not None:
        y = y + bias.reshape(channel_shape)
    cache = BatchNormCache(x_hat, inv_std, batch_stats, x.dtype)
    return y.astype(x.dtype, copy=False), cache


def batch_norm(
    x: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> np.ndarray:
    """Normalise each channel to mean 0, variance 1, then scale and shift it.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, mean and var per channel (C,).
    With ``training`` (or no running statistics), mean and var are the batch's (var biased)
    and running_mean / running_var, when given, are updated in place:
    ``running = (1 - momentum) * running + momentum * stat``, with the unbiased variance
    ``var * m / (m - 1)``. Otherwise the running statistics are used.
    Args: x (N, C, *spatial); running_mean, running_var, weight, bias (C,) or None.
    Returns: y with x's shape and dtype. Matches ``torch.nn.functional.batch_norm``.

    >>> batch_norm(np.array([[1.0], [3.0]]), training=True).round(4)
    array([[-1.],
           [ 1.]])
    """
    y, _ = batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return y


def batch_norm_backward(
    grad_out: np.ndarray, cache: BatchNormCache, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batch_norm` for ``grad_out`` (x's shape), from its forward cache.

    Args:
        grad_out: dL/dy, x's shape. cache: from :func:`batch_norm_forward`.
        weight: the forward's weight (C,), or None for none.
    Returns:
        (grad_x, grad_weight, grad_bias): x's shape and (C,) twice (the latter two are the
        gradients a weight and bias would get, computed even when there are none).

    With batch statistics, with ``g_hat = grad_out * weight`` and m values per channel,
    ``grad_x = inv_std / m * (m * g_hat - sum(g_hat) - x_hat * sum(g_hat * x_hat))``;
    with running statistics ``grad_x = g_hat * inv_std``. Matches PyTorch's autograd.
    """
    scale = cache.inv_std if weight is None else cache.inv_std * weight
    if cache.batch_stats and _use_kernels(cache.x_hat) and cache.x_hat.size:
        grad_x, grad_weight, grad_bias = _backward_with_kernels(grad_out, cache, scale)
        return grad_x.astype(cache.x_dtype, copy=False), grad_weight, grad_bias
    reduce_axes, channel_shape = _channel_axes(cache.x_hat)
    g = grad_out.astype(cache.x_hat.dtype, copy=False)
    # dL/dbias = sum(g), dL/dweight = sum(g * x_hat), per channel
    grad_bias = g.sum(axis=reduce_axes)
    grad_weight = np.sum(g * cache.x_hat, axis=reduce_axes)
    if not cache.batch_stats:
        # dL/dx = g * weight * inv_std: the statistics are constants
        grad_x = g * scale.reshape(channel_shape)
    else:
        count = cache.x_hat.size // cache.x_hat.shape[1]
        # dL/dx = inv_std / m * (m * g_hat - sum(g_hat) - x_hat * sum(g_hat * x_hat)), with
        # g_hat = g * weight; the weight factor is pulled out of the sums.
        mean_g = (grad_bias / count).reshape(channel_shape)
        mean_gx = (grad_weight / count).reshape(channel_shape)
        grad_x = (g - mean_g - cache.x_hat * mean_gx) * scale.reshape(channel_shape)
    dtype = cache.x_dtype
    return grad_x.astype(dtype, copy=False), grad_weight, grad_bias
