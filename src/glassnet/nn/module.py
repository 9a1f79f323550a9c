"""Parameters, the Module base class and Sequential.

A Module's ``forward(x)`` caches what its backward pass needs; ``backward(grad_out)`` returns
``grad_x`` and *adds* into each parameter's ``.grad`` until ``zero_grad()``, as in PyTorch.
Parameter names follow PyTorch's (``"0.weight"``, ``"0.bias"``, ...), so state dicts move
between glassnet and ``torch.nn.Sequential`` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class Parameter:
    """A trainable array ``data`` and its accumulated gradient ``grad`` (same shape and dtype)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: bookkeeping for parameters, children, modes and state dicts."""

    training: bool = True

    def __init__(self) -> None:
        self._parameters: dict[str, Parameter] = {}
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dL/dx for the last forward call; parameter gradients are added to ``.grad``."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def children(self) -> list[tuple[str, Module]]:
        return []

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, param in self._parameters.items():
            yield prefix + name, param
        for child_name, child in self.children():
            yield from child.named_parameters(f"{prefix}{child_name}.")

    def parameters(self) -> list[Parameter]:
        return [param for _, param in self.named_parameters()]

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad[...] = 0

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, dtype: np.dtype | type) -> Module:
        """Cast every parameter (and its gradient) to ``dtype``, e.g. float64 for gradcheck."""
        for param in self.parameters():
            param.data = param.data.astype(dtype)
            param.grad = param.grad.astype(dtype)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter, keyed as in PyTorch ("0.weight", ...)."""
        return {name: param.data.copy() for name, param in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters; keys and shapes must match exactly."""
        params = dict(self.named_parameters())
        missing, unexpected = params.keys() - state.keys(), state.keys() - params.keys()
        if missing or unexpected:
            raise KeyError(
                f"state dict does not fit this model: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        for name, param in params.items():
            value = np.asarray(state[name])
            if value.shape != param.shape:
                raise ValueError(
                    f"state dict entry {name!r} has shape {value.shape}, "
                    f"the model's parameter {param.shape}"
                )
            param.data[...] = value

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    >>> from glassnet.nn import Linear, ReLU
    >>> model = Sequential(Linear(4, 8), ReLU(), Linear(8, 3))
    >>> [name for name, _ in model.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {i} must be a glassnet Module, got {type(layer).__name__}")
        self.layers = list(layers)

    def children(self) -> list[tuple[str, Module]]:
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        for i in range(len(self.layers) - 1, -1, -1):
            grad_out = self.layers[i].backward(grad_out, need_input_grad=i > 0 or need_input_grad)
        return grad_out

    def summary(self, input_shape: tuple[int, ...]) -> str:
        """A Keras-like table of layers, output shapes and parameter counts (see nn.inspect)."""
        from glassnet.nn.inspect import summary  # inspect builds on this module

        return summary(self, input_shape)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
