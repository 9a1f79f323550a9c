"""Batch normalization and its backward pass.

Shapes: x (N, C) or (N, C, *spatial), e.g. (N, C, L) or (N, C, H, W); per-channel vectors
(running_mean, running_var, weight, bias) are (C,). Statistics are taken per channel over the
other axes: m = N * prod(spatial) values each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glassnet.functional._checks import as_float_array, compute_dtype


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
    reduce_axes, channel_shape = _channel_axes(x)
    xc = x.astype(compute_dtype(x.dtype), copy=False)
    if training or running_mean is None or running_var is None:
        count = x.size // channels if channels else 0
        if training and count <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.shape}"
            )
        mean = xc.mean(axis=reduce_axes)
        centered = xc - mean.reshape(channel_shape)
        var = np.mean(centered * centered, axis=reduce_axes)  # biased, for normalising
        if training and running_mean is not None and running_var is not None:
            # The running variance is the unbiased estimate, as in PyTorch.
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * (count / (count - 1))
        batch_stats = True
    else:
        centered = xc - running_mean.reshape(channel_shape)
        var, batch_stats = running_var, False
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
    reduce_axes, channel_shape = _channel_axes(cache.x_hat)
    g = grad_out.astype(cache.x_hat.dtype, copy=False)
    # dL/dbias = sum(g), dL/dweight = sum(g * x_hat), per channel
    grad_bias = g.sum(axis=reduce_axes)
    grad_weight = np.sum(g * cache.x_hat, axis=reduce_axes)
    scale = cache.inv_std if weight is None else cache.inv_std * weight
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
