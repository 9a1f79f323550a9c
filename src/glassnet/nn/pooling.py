"""Pooling layers: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d, as in ``torch.nn``.

Shapes: x (N, C, H, W) -> (N, C, H_out, W_out); the maths (window geometry, PyTorch's bins)
is in :mod:`glassnet.functional.pool`. Attributes keep the constructor's values, as PyTorch's
do (``kernel_size=2`` stays 2; ``stride`` defaults to ``kernel_size``).
"""

from __future__ import annotations

import numpy as np

from glassnet.functional.conv import as_pair
from glassnet.functional.pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_output_size,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    pool_geometry,
)
from glassnet.nn.module import Module, is_grad_enabled, require_cache

Size = int | tuple[int, int]


def _plain(value: object) -> object:
    """A list becomes a tuple (model files store plain values); anything else is kept."""
    return tuple(value) if isinstance(value, list) else value


class _Pool2d(Module):
    """Shared bookkeeping for the windowed pools: validated arguments and the input shape."""

    samplewise = True

    def __init__(self, kernel_size: Size, stride: Size | None, padding: Size) -> None:
        super().__init__()
        self.kernel_size = _plain(kernel_size)
        self.stride = self.kernel_size if stride is None else _plain(stride)
        self.padding = _plain(padding)
        # checked now as PyTorch checks them, on a stand-in input exactly one window big
        pool_geometry((1, 1, *as_pair(self.kernel_size, "kernel_size")), *self.window_arguments())
        self._x_shape: tuple[int, ...] | None = None

    def window_arguments(self) -> tuple[Size, Size, Size]:
        """(kernel_size, stride, padding), as the functional pooling takes them."""
        return self.kernel_size, self.stride, self.padding

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"{self!r} expects input (N, C, H, W), got shape {x.shape}")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max over kH x kW windows, padding with -inf: as ``torch.nn.MaxPool2d`` (no dilation or
    ceil mode). The gradient goes to each window's first maximum."""

    def __init__(self, kernel_size: Size, stride: Size | None = None, padding: Size = 0) -> None:
        super().__init__(kernel_size, stride, padding)
        self._argmax: np.ndarray | None = None
        self.relu_applied = False  # whether the last forward applied the ReLU after it too

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._pool(x, relu=False)

    def forward_with_relu(self, x: np.ndarray, relu: Module) -> np.ndarray:
        """``relu(self(x))`` in one pass over the output (``Sequential`` runs a ReLU after a
        max pooling so): the same numbers, and ``relu``'s backward need not run, since the
        positions it would zero send no gradient back through this layer's ``argmax``.
        ``relu`` keeps its output as its own forward would."""
        out = self._pool(x, relu=True)
        relu.applied(out)
        return out

    def _pool(self, x: np.ndarray, relu: bool) -> np.ndarray:
        self._check_input(x)
        out, argmax = max_pool2d(x, *self.window_arguments(), relu=relu)
        self.took(x.shape, argmax, relu)
        return out

    def took(self, x_shape: tuple[int, ...], argmax: np.ndarray, relu: bool) -> None:
        """Keep what backward needs from a forward pass over an input of ``x_shape`` that gave
        ``argmax`` (this layer's own, or the layer before's that pooled for it: see
        Conv2d.forward_pooled); ``relu``: whether the ReLU after it was applied too."""
        keep = is_grad_enabled()
        self._x_shape = tuple(x_shape) if keep else None
        self._argmax = argmax if keep else None
        self.relu_applied = relu

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._argmax)
        if not need_input_grad:
            return None
        return max_pool2d_backward(grad_out, self._argmax, self._x_shape, *self.window_arguments())

    def routing(self) -> tuple[np.ndarray, tuple[Size, Size, Size]]:
        """Where the last forward's gradient goes: (argmax, (kernel_size, stride, padding))."""
        require_cache(self, self._argmax)
        return self._argmax, self.window_arguments()


class AvgPool2d(_Pool2d):
    """Mean over kH x kW windows, padding with 0: as ``torch.nn.AvgPool2d`` (ceil_mode=False).

    ``count_include_pad=True`` divides by kH * kW everywhere; False by the taps inside x.
    """

    def __init__(
        self,
        kernel_size: Size,
        stride: Size | None = None,
        padding: Size = 0,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        self._x_shape = x.shape if is_grad_enabled() else None
        return avg_pool2d(x, *self.window_arguments(), self.count_include_pad)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._x_shape)
        if not need_input_grad:
            return None
        return avg_pool2d_backward(
            grad_out, self._x_shape, *self.window_arguments(), self.count_include_pad
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, count_include_pad={self.count_include_pad}"


class AdaptiveAvgPool2d(Module):
    """Mean over PyTorch's adaptive bins to a fixed ``output_size`` (int, or a pair whose None
    keeps that input size): as ``torch.nn.AdaptiveAvgPool2d``. ``output_size=1`` is global
    average pooling."""

    samplewise = True

    def __init__(self, output_size: Size | tuple[int | None, int | None]) -> None:
        super().__init__()
        self.output_size = _plain(output_size)
        adaptive_output_size(self.output_size, (1, 1, 1, 1))  # checked now, on a stand-in input
        self._x_shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"{self!r} expects input (N, C, H, W), got shape {x.shape}")
        self._x_shape = x.shape if is_grad_enabled() else None
        return adaptive_avg_pool2d(x, self.output_size)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._x_shape)
        if not need_input_grad:
            return None
        return adaptive_avg_pool2d_backward(grad_out, self._x_shape, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
