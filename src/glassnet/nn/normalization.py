"""Batch normalization layers: BatchNorm1d and BatchNorm2d.

Shapes: N batch, C channels (num_features), L length, H x W spatial. BatchNorm1d takes (N, C)
or (N, C, L), BatchNorm2d (N, C, H, W); both normalise each channel over all other axes. The
maths lives in :mod:`glassnet.functional.normalization`.
"""

from __future__ import annotations

import numbers

import numpy as np

from glassnet.functional.normalization import (
    BatchNormCache,
    batch_norm_backward,
    batch_norm_forward,
)
from glassnet.nn.module import Module, Parameter, is_grad_enabled, positive_int, require_cache


class _BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share; they differ only in the input ranks they take.

    Args:
        num_features: C, the channel count.
        eps: added to the variance before its square root.
        momentum: the running statistics' update factor, or None for a cumulative average
            (factor 1 / num_batches_tracked).
        affine: learn a per-channel scale ``weight`` (ones) and shift ``bias`` (zeros).
        track_running_stats: keep running_mean (zeros), running_var (ones) and
            num_batches_tracked buffers, and normalise with them in eval mode; without them,
            batch statistics are used in both modes.
        dtype: of the parameters and floating buffers.
    """

    _input_ranks: tuple[int, ...] = ()
    _input_layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: type = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = positive_int(num_features, "num_features")
        if not isinstance(eps, numbers.Real) or not eps >= 0:
            raise ValueError(f"eps={eps!r} must be a number >= 0")
        if momentum is not None and (not isinstance(momentum, numbers.Real) or momentum < 0):
            raise ValueError(f"momentum={momentum!r} must be a number >= 0, or None")
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        channels = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(channels, dtype=dtype))
            self.bias = Parameter(np.zeros(channels, dtype=dtype))
        else:
            self.weight = self.bias = None
        stats = self.track_running_stats
        self.register_buffer("running_mean", np.zeros(channels, dtype) if stats else None)
        self.register_buffer("running_var", np.ones(channels, dtype) if stats else None)
        count = np.array(0, dtype=np.int64) if stats else None
        self.register_buffer("num_batches_tracked", count)
        self._cache: BatchNormCache | None = None

    @property
    def samplewise(self) -> bool:  # type: ignore[override]
        """In eval mode with running statistics, each sample is normalised on its own."""
        return self.running_mean is not None and self.running_var is not None

    def _check_input(self, x: np.ndarray) -> None:
        name = type(self).__name__
        if np.ndim(x) not in self._input_ranks:
            raise ValueError(
                f"{name} expects input {self._input_layout}, got shape {np.shape(x)} "
                f"({np.ndim(x)}D input)"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}({self.num_features}) expects {self.num_features} channels on axis 1, "
                f"got {x.shape[1]} (input shape {x.shape})"
            )

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        update = self.training and self.track_running_stats
        factor = self.momentum
        if update and self.momentum is None:  # cumulative average over the batches so far
            factor = 1.0 / (int(self.num_batches_tracked) + 1)
        y, cache = batch_norm_forward(
            x,
            self.running_mean,
            self.running_var,
            None if self.weight is None else self.weight.data,
            None if self.bias is None else self.bias.data,
            training=self.training or not self.track_running_stats,
            momentum=0.0 if factor is None else factor,
            eps=self.eps,
        )
        if update:
            self.num_batches_tracked += 1
        self._cache = cache if is_grad_enabled() else None
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._cache)
        weight = None if self.weight is None else self.weight.data
        grad_x, grad_weight, grad_bias = batch_norm_backward(grad_out, self._cache, weight)
        if self.weight is not None:
            self.weight.grad += grad_weight
            self.bias.grad += grad_bias
        return grad_x if need_input_grad else None

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Normalise each channel of (N, C) or (N, C, L) input: ``(x - mean) / sqrt(var + eps)``.

    Then ``* weight + bias`` per channel. In training, mean and (biased) var are the batch's,
    over N (and L), and the running statistics move towards them:
    ``running = (1 - momentum) * running + momentum * stat``, var unbiased; in eval mode the
    running statistics are used. Arguments as ``torch.nn.BatchNorm1d``, plus ``dtype``.

    >>> bn = BatchNorm1d(2)
    >>> bn(np.array([[1.0, 0.0], [3.0, 4.0]])).round(3)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> bn.running_mean.round(3), bn.running_var.round(3)  # var: 0.9 * 1 + 0.1 * (2 or 8)
    (array([0.2, 0.2], dtype=float32), array([1.1, 1.7], dtype=float32))
    """

    _input_ranks = (2, 3)
    _input_layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Normalise each channel of (N, C, H, W) input over N, H and W, as ``torch.nn.BatchNorm2d``.

    The same maths and arguments as :class:`BatchNorm1d` (``dtype`` added): batch statistics
    in training (running statistics updated with the unbiased variance), running ones in eval.

    >>> bn = BatchNorm2d(1)
    >>> bn(np.arange(4.0).reshape(1, 1, 2, 2)).round(3)
    array([[[[-1.342, -0.447],
             [ 0.447,  1.342]]]])
    """

    _input_ranks = (4,)
    _input_layout = "(N, C, H, W)"
