"""BatchNorm whose training statistics are those of the whole global batch, across ranks.

As ``torch.nn.SyncBatchNorm``: in training, the per-channel mean and (biased) variance are
taken over every rank's slice, so P ranks normalise as one process with the whole batch would.
Forward: one allreduce of (sum x, count), then one of sum (x - mean)^2 (two passes, as the
single-process code). Backward: one allreduce of (sum g, sum g * x_hat). In eval mode, or in a
single process, it is plain BatchNorm. fit converts a model's BatchNorm layers for the run
(``DataParallel(sync_batchnorm=True)``) and back afterwards, so model files name BatchNorm.

Shapes: x (N, C, *spatial); statistics (C,) over the m = N_global * prod(spatial) values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glassnet.functional._checks import compute_dtype
from glassnet.functional.normalization import BatchNormCache
from glassnet.nn import Module
from glassnet.nn.module import is_grad_enabled, require_cache
from glassnet.nn.normalization import BatchNorm1d, BatchNorm2d, _BatchNorm


class _SyncBatchNorm(_BatchNorm):
    """What SyncBatchNorm1d and SyncBatchNorm2d add to their plain classes."""

    plain_class: type[_BatchNorm] | None = None

    def _world(self) -> Any:
        from glassnet.distributed.comm import world

        comm = self.__dict__.get("comm")
        return world() if comm is None else comm

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training and self.track_running_stats:
            return super().forward(x)  # running statistics: nothing to share
        self._check_input(x)
        comm = self._world()
        axes = (0, *range(2, x.ndim))
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        xc = x.astype(compute_dtype(x.dtype), copy=False)
        sums = np.append(xc.sum(axis=axes), x.size // x.shape[1]).astype(np.float64)
        comm.allreduce(sums, "sum", "SyncBatchNorm's mean")
        count = int(sums[-1])
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {count}")
        mean = (sums[:-1] / count).astype(xc.dtype)
        centered = xc - mean.reshape(shape)
        squares = np.sum(centered * centered, axis=axes, dtype=np.float64)
        var = (comm.allreduce(squares, "sum", "SyncBatchNorm's variance") / count).astype(xc.dtype)
        if self.track_running_stats:
            factor = self.momentum
            if factor is None:  # cumulative average over the batches so far
                factor = 1.0 / (int(self.num_batches_tracked) + 1)
            # running = (1 - f) * running + f * stat, the variance unbiased (as PyTorch)
            self.running_mean *= 1 - factor
            self.running_mean += factor * mean
            self.running_var *= 1 - factor
            self.running_var += factor * var * (count / (count - 1))
            self.num_batches_tracked += 1
        inv_std = 1 / np.sqrt(var + self.eps)
        x_hat = centered * inv_std.reshape(shape)
        y = x_hat if self.weight is None else x_hat * self.weight.data.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.data.reshape(shape)
        cache = BatchNormCache(x_hat, inv_std, True, x.dtype)
        self._cache = cache if is_grad_enabled() else None
        self._count = count
        return y.astype(x.dtype, copy=False)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        cache = self._cache
        require_cache(self, cache)
        if not cache.batch_stats:
            return super().backward(grad_out, need_input_grad)
        axes = (0, *range(2, grad_out.ndim))
        shape = (1, grad_out.shape[1]) + (1,) * (grad_out.ndim - 2)
        g = grad_out.astype(cache.x_hat.dtype, copy=False)
        # dL/dbias = sum(g), dL/dweight = sum(g * x_hat): this rank's part (DataParallel sums)
        grad_bias = g.sum(axis=axes)
        grad_weight = np.sum(g * cache.x_hat, axis=axes)
        if self.weight is not None:
            self.weight.grad += grad_weight
            self.bias.grad += grad_bias
        if not need_input_grad:
            return None
        sums = np.concatenate([grad_bias, grad_weight]).astype(np.float64)
        self._world().allreduce(sums, "sum", "SyncBatchNorm's backward")
        channels = grad_out.shape[1]
        mean_g = (sums[:channels] / self._count).astype(g.dtype).reshape(shape)
        mean_gx = (sums[channels:] / self._count).astype(g.dtype).reshape(shape)
        scale = cache.inv_std if self.weight is None else cache.inv_std * self.weight.data
        # dL/dx = inv_std * w * (g - mean(g) - x_hat * mean(g * x_hat)), means over all ranks
        grad_x = (g - mean_g - cache.x_hat * mean_gx) * scale.reshape(shape)
        return grad_x.astype(cache.x_dtype, copy=False)


class SyncBatchNorm1d(_SyncBatchNorm, BatchNorm1d):
    """:class:`glassnet.nn.BatchNorm1d` with statistics over all ranks' slices."""

    plain_class = BatchNorm1d


class SyncBatchNorm2d(_SyncBatchNorm, BatchNorm2d):
    """:class:`glassnet.nn.BatchNorm2d` with statistics over all ranks' slices."""

    plain_class = BatchNorm2d


_SYNC = {BatchNorm1d: SyncBatchNorm1d, BatchNorm2d: SyncBatchNorm2d}


def convert_sync_batchnorm(model: Module, comm: Any = None) -> list[tuple[Module, type]]:
    """Turn the model's BatchNorm1d/2d layers into their Sync versions, in place (same
    parameters and buffers); returns what :func:`revert_sync_batchnorm` undoes."""
    converted = []
    for module in model.modules():
        sync = _SYNC.get(type(module))
        if sync is not None:
            converted.append((module, type(module)))
            module.__class__ = sync
            if comm is not None:
                module.__dict__["comm"] = comm
    return converted


def revert_sync_batchnorm(converted: list[tuple[Module, type]]) -> None:
    """Give the converted layers back their plain classes."""
    for module, _ in converted:
        module.__class__ = type(module).plain_class or type(module)
        module.__dict__.pop("comm", None)
