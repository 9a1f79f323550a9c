"""Activation layers: Sigmoid, Tanh, GELU, LeakyReLU and Identity (ReLU lives in layers.py).

Shapes: any (N, ...) in, the same shape out. Each layer keeps what its backward needs (the
output for Sigmoid and Tanh, the input for GELU and LeakyReLU) only when gradients are
enabled; the maths lives in :mod:`glassnet.functional.elementwise`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from glassnet.functional.elementwise import (
    GeluApproximation,
    check_approximate,
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from glassnet.nn.module import Module, is_grad_enabled, require_cache


class _FromOutput(Module):
    """An elementwise activation ``y = f(x)`` whose derivative is a function of y, kept."""

    samplewise = True

    _function: Callable[[np.ndarray], np.ndarray]  # x -> y
    _backward: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (grad_out, y) -> grad_x

    def __init__(self) -> None:
        super().__init__()
        self._out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = self._function(x)
        self._out = out if is_grad_enabled() else None
        return out

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._out)
        return self._backward(grad_out, self._out) if need_input_grad else None


class Sigmoid(_FromOutput):
    """``1 / (1 + exp(-x))`` elementwise, overflow-free; as ``torch.nn.Sigmoid``.

    Backward: ``grad_out * y * (1 - y)``.
    """

    _function = staticmethod(sigmoid)
    _backward = staticmethod(sigmoid_backward)


class Tanh(_FromOutput):
    """``tanh(x)`` elementwise; as ``torch.nn.Tanh``. Backward: ``grad_out * (1 - y^2)``."""

    _function = staticmethod(tanh)
    _backward = staticmethod(tanh_backward)


class GELU(Module):
    """``x * Phi(x)`` elementwise, Phi the standard normal CDF; as ``torch.nn.GELU``.

    ``approximate="tanh"`` uses ``Phi(x) ~ (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) / 2``
    (GPT-2's form); "none" (the default) is exact, through erf.
    """

    samplewise = True

    def __init__(self, approximate: GeluApproximation = "none") -> None:
        super().__init__()
        check_approximate(approximate)
        self.approximate = approximate
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x if is_grad_enabled() else None
        return gelu(x, self.approximate)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._x)
        return gelu_backward(grad_out, self._x, self.approximate) if need_input_grad else None

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class LeakyReLU(Module):
    """``x`` where x > 0, else ``negative_slope * x``; as ``torch.nn.LeakyReLU``.

    ``inplace=True`` overwrites the input with the output; backward then reads the signs from
    the output, which (as in PyTorch) needs ``negative_slope >= 0``.
    """

    samplewise = True

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        if not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool):
            raise TypeError(f"negative_slope must be a real number, got {negative_slope!r}")
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)
        self._saved: np.ndarray | None = None  # the input, or the output when in place

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = leaky_relu(x, self.negative_slope, out=x if self.inplace else None)
        self._saved = (out if self.inplace else x) if is_grad_enabled() else None
        return out

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._saved)
        if self.inplace and self.negative_slope < 0:
            raise RuntimeError(
                f"LeakyReLU(negative_slope={self.negative_slope}, inplace=True) cannot run "
                "backward: the output no longer tells which inputs were negative (as in "
                "PyTorch); use inplace=False"
            )
        if not need_input_grad:
            return None
        return leaky_relu_backward(grad_out, self._saved, self.negative_slope)

    def extra_repr(self) -> str:
        inplace = ", inplace=True" if self.inplace else ""
        return f"negative_slope={self.negative_slope}{inplace}"


class Identity(Module):
    """Returns its input unchanged; any constructor arguments are ignored, as ``torch.nn.Identity``.

    A placeholder, e.g. where a normalization layer is switched off.
    """

    samplewise = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad_out if need_input_grad else None
