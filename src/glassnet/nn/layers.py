"""Layers: Linear, Conv2d, ReLU, Flatten, Dropout, Softmax (pooling: :mod:`glassnet.nn.pooling`).

Shapes: N batch, D features, C channels, H x W spatial; images are NCHW, as in PyTorch.
Each layer's forward caches what its backward needs; the maths lives in glassnet.functional.
"""

from __future__ import annotations

import math

import numpy as np

from glassnet.functional.activation import relu, relu_backward
from glassnet.functional.conv import (
    as_pair,
    conv2d,
    conv2d_backward,
    conv_padding,
    geometry,
    unfold,
)
from glassnet.functional.linear import add_matmul
from glassnet.functional.pool import (
    conv2d_max_pool2d,
    conv2d_weight_grad_through_max_pool,
    conv_max_pool_fuses,
    expect_weight_grad_through_max_pool,
)
from glassnet.functional.softmax import softmax
from glassnet.nn.module import Module, Parameter, is_grad_enabled, positive_int, require_cache
from glassnet.nn.pooling import MaxPool2d  # also importable from here, where it used to live

INITS = ("pytorch", "glorot")


def _init_weight_and_bias(
    shape: tuple[int, ...], fan_in: int, fan_out: int, bias: bool, init: str, rng, dtype
) -> tuple[Parameter, Parameter | None]:
    """PyTorch's default (uniform, bound 1/sqrt(fan_in), bias too) or Glorot/Keras (bias 0)."""
    if init not in INITS:
        raise ValueError(f"{init=} must be one of {INITS}")
    rng = np.random.default_rng() if rng is None else rng
    if init == "pytorch":
        # kaiming_uniform_(a=sqrt(5)) reduces to a bound of 1 / sqrt(fan_in)
        bound = 1 / math.sqrt(fan_in)
        weight = rng.uniform(-bound, bound, size=shape)
        b = rng.uniform(-bound, bound, size=shape[0]) if bias else None
    else:
        bound = math.sqrt(6 / (fan_in + fan_out))
        weight = rng.uniform(-bound, bound, size=shape)
        b = np.zeros(shape[0]) if bias else None
    return Parameter(weight.astype(dtype)), None if b is None else Parameter(b.astype(dtype))


class Linear(Module):
    """``y = x W^T + b``: x (N, D_in) -> y (N, D_out), weight (D_out, D_in); as torch.nn.Linear."""

    samplewise = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: str = "pytorch",
        rng: np.random.Generator | None = None,
        dtype: type = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        shape = (self.out_features, self.in_features)
        weight, b = _init_weight_and_bias(
            shape, self.in_features, self.out_features, bias, init, rng, dtype
        )
        self.weight = weight
        self.bias = b
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear expects input (N, {self.in_features}), got {x.shape}")
        self._x = x if is_grad_enabled() else None
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._x)
        # dL/dW = grad^T x, dL/db = sum over the batch, dL/dx = grad W
        add_matmul(self.weight.grad, grad_out.T, self._x)
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=0)
        return grad_out @ self.weight.data if need_input_grad else None

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, {bias=}"


class Conv2d(Module):
    """2-D cross-correlation: x (N, C_in, H, W) -> (N, C_out, H_out, W_out), as ``torch.nn.Conv2d``.

    weight (C_out, C_in, kH, kW), bias (C_out,). ``kernel_size`` and ``stride`` are ints or
    pairs, stored as pairs; ``padding`` an int, a pair, "same" (stride 1 only) or "valid",
    stored as a pair or the string, as PyTorch stores them. H_out = (H + pad_top + pad_bottom
    - kH) // sH + 1 (see :mod:`glassnet.functional.conv`). The initialisation uses
    fan_in = C_in * kH * kW.
    """

    samplewise = True
    # As a Sequential's first layer (no dL/dx wanted), with a MaxPool2d running next, the
    # weight gradient is taken from the pooling's output gradient: see backward_through.
    backward_fuses_with = (MaxPool2d,)
    # With a MaxPool2d running next (and a ReLU after it), Sequential runs the three in one
    # pass where a kernel does that (few input channels, as a first layer has): see forward_pooled.
    forward_fuses_with = (MaxPool2d,)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        bias: bool = True,
        *,
        init: str = "pytorch",
        rng: np.random.Generator | None = None,
        dtype: type = np.float32,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.padding = padding if isinstance(padding, str) else as_pair(padding, "padding", 0)
        conv_padding(self.padding, self.kernel_size, self.stride)  # "same" needs stride 1
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels, kh, kw)
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        weight, b = _init_weight_and_bias(shape, fan_in, fan_out, bias, init, rng, dtype)
        self.weight = weight
        self.bias = b
        self._x: np.ndarray | None = None
        self._cols: np.ndarray | None = None

    def _check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            got = f"{x.shape[1]} channels, shape {x.shape}" if x.ndim == 4 else f"shape {x.shape}"
            raise ValueError(f"{self!r} expects input (N, {self.in_channels}, H, W), got {got}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        keep = is_grad_enabled()
        self._x = x if keep else None
        # In training the patches are kept for the weight gradient; in eval mode conv2d
        # builds them a batch slice at a time, and backward (if called) rebuilds them.
        training = keep and self.training
        self._cols = unfold(x, self.kernel_size, self.stride, self.padding) if training else None
        if training:
            expect_weight_grad_through_max_pool(x, self.weight.shape)  # a first run's compiling
        bias = None if self.bias is None else self.bias.data
        return conv2d(x, self.weight.data, bias, self.stride, self.padding, cols=self._cols)

    def forward_pooled(
        self, x: np.ndarray, pool: MaxPool2d, relu: ReLU | None = None
    ) -> np.ndarray:
        """``pool(self(x))``, or ``relu(pool(self(x)))``: what Sequential runs for this layer
        and the max pooling after it (``forward_fuses_with``). Where
        :func:`glassnet.functional.pool.conv_max_pool_fuses` holds (few input channels, 2 x 2
        windows), one kernel makes the pooled output without this layer's own, and each layer
        keeps what its backward needs as if it had run (this one its input: its backward
        rebuilds the patches where it needs them, i.e. unless it runs through the pooling as
        a first layer). Elsewhere the layers run one after the other."""
        self._check_input(x)
        bias = None if self.bias is None else self.bias.data
        args = (self.stride, self.padding, *pool.window_arguments())
        if not conv_max_pool_fuses(x, self.weight.data, bias, *args):
            out = self(x)
            return pool(out) if relu is None else pool.forward_with_relu(out, relu)
        keep = is_grad_enabled()
        self._x, self._cols = (x if keep else None), None
        if keep and self.training:
            expect_weight_grad_through_max_pool(x, self.weight.shape)  # a first run's compiling
        out, argmax = conv2d_max_pool2d(x, self.weight.data, bias, *args, relu=relu is not None)
        conv_out = geometry(x.shape, self.kernel_size, self.stride, self.padding).out
        conv_shape = (len(x), self.out_channels, *conv_out)
        pool.took(conv_shape, argmax, relu=relu is not None)
        if relu is not None:
            relu.applied(out)
        return out

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._x)
        grad_x, grad_w, grad_b = conv2d_backward(
            grad_out,
            self._x,
            self.weight.data,
            self._cols,
            self.stride,
            self.padding,
            need_grad_x=need_input_grad,
        )
        self._accumulate(grad_w, grad_b)
        return grad_x

    def backward_through(self, pool: MaxPool2d, grad_out: np.ndarray) -> None:
        """What ``pool.backward(grad_out)`` then ``backward(..., need_input_grad=False)`` do,
        for a ``pool`` that ran right after this layer, without the pooling's input gradient:
        see :func:`glassnet.functional.pool.conv2d_weight_grad_through_max_pool`."""
        require_cache(self, self._x)
        argmax, window = pool.routing()
        grad_w, grad_b = conv2d_weight_grad_through_max_pool(
            grad_out, argmax, self._x, self.weight.shape, self.stride, self.padding, *window
        )
        self._accumulate(grad_w, grad_b)

    def _accumulate(self, grad_w: np.ndarray, grad_b: np.ndarray) -> None:
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_b

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        return text if self.bias is not None else text + ", bias=False"


class ReLU(Module):
    """``max(x, 0)``; the gradient passes where the input was positive (not at 0, as PyTorch).

    ``inplace=True`` (as ``torch.nn.ReLU(inplace=True)``) overwrites the input with the output,
    and in backward the incoming gradient with the outgoing one: the same numbers without
    allocating (and first touching) two new activation-sized arrays per step. Use it where
    nothing else keeps the input, e.g. right after a Conv2d or Linear, as in ``convnet()``.
    """

    samplewise = True
    # Max pooling picks the same value, and sends the gradient to the same input, whether
    # ReLU runs before or after it: ReLU never reorders numbers, and a window whose maximum
    # is <= 0 gets a zero gradient either way. After the pool it sees a quarter of them.
    commutes_with = (MaxPool2d,)
    # After a MaxPool2d (so, usually, after the swap above), the pooling applies it in its own
    # pass over the output: see MaxPool2d.forward_with_relu.
    applied_by = (MaxPool2d,)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)
        self._out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = relu(x, out=x if self.inplace else None)
        self.applied(out)
        return out

    def applied(self, out: np.ndarray) -> None:
        """Keep ``out``, this layer's output, for backward (the layer before may compute it)."""
        self._out = out if is_grad_enabled() else None

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        require_cache(self, self._out)
        if not need_input_grad:
            return None
        writable = (
            self.inplace
            and grad_out.flags.writeable
            and grad_out.dtype == self._out.dtype
            and grad_out.strides == self._out.strides  # else a copy in y's layout is faster
        )
        return relu_backward(grad_out, self._out, out=grad_out if writable else None)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), as ``torch.nn.Flatten()``."""

    samplewise = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        return grad_out.reshape(self._x_shape) if need_input_grad else None


class Dropout(Module):
    """In training, zero each element with probability p and scale the rest by 1 / (1 - p).

    Inverted dropout, as ``torch.nn.Dropout``: in eval mode it is the identity. The mask comes
    from ``rng`` (share the trainer's Generator so that a run can be resumed exactly).
    """

    samplewise = True

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability p={p!r} must be in [0, 1]")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
        mask = keep * np.asarray(scale, dtype=x.dtype)
        self._mask = mask if is_grad_enabled() else None
        return x * mask

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        if not need_input_grad:
            return None
        return grad_out if self._mask is None else grad_out * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Softmax(Module):
    """Probabilities over ``dim`` for inference. Training takes logits: see CrossEntropyLoss."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: np.ndarray) -> np.ndarray:
        return softmax(x, axis=self.dim)

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        raise RuntimeError(
            "Softmax is for inference only: train on logits with CrossEntropyLoss, whose "
            "backward is the fused p - y (functional.softmax_backward exists if you need it)"
        )
