"""ONNX export: ``export(model, "model.onnx", input_shape=(1, 28, 28))``.

Shapes: N batch (dynamic in the file: dim_param "N"), C channels, H x W spatial. The graph
computes the model in eval mode (Dropout is the identity, BatchNorm uses its running
statistics) on a float32 input (N, *input_shape); weights are float32 initializers named by
their state-dict keys ("0.weight", "bn1.running_mean"). Needs the optional ``onnx`` package:
``pip install 'glassnet[onnx]'``.

Each module is turned into ONNX nodes by the exporter for its class (``EXPORTERS``: Linear ->
Gemm, Conv2d -> Conv, ...). A Module subclass of your own becomes exportable by defining
``export_onnx(self, builder, x_name) -> out_name``: ``builder.add(child, name)`` exports a
child module, ``builder.op(op_type, inputs, **attributes)`` adds one ONNX node, and
``builder.initializer(name, array)`` a constant; each returns the name of the value it made.
A residual block, ``x + conv2(relu(conv1(x)))``:

>>> from glassnet.nn import Conv2d, Module, ReLU
>>> class Residual(Module):
...     def __init__(self, channels):
...         super().__init__()
...         self.conv1 = Conv2d(channels, channels, 3, padding=1)
...         self.relu = ReLU()
...         self.conv2 = Conv2d(channels, channels, 3, padding=1)
...     def forward(self, x):
...         return x + self.conv2(self.relu(self.conv1(x)))
...     def export_onnx(self, builder, x_name):
...         h = builder.add(self.conv1, x_name)
...         h = builder.add(self.conv2, builder.add(self.relu, h))
...         return builder.op("Add", [x_name, h])

after which ``export(Residual(8), "block.onnx", (8, 16, 16))`` works.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from glassnet.checkpoint import atomic_write
from glassnet.functional.conv import as_pair, conv_padding
from glassnet.nn.module import Module, Parameter, no_grad

#: the oldest opset whose operators (Softmax over one axis, optional Gemm bias) we rely on
MIN_OPSET = 13
#: the probe pass's batch: 2, not 1, so that BatchNorm without running statistics (which needs
#: more than one value per channel) reaches its clear export error instead of failing the probe
PROBE_BATCH = 2
_INSTALL_HINT = "ONNX export needs the onnx package: pip install 'glassnet[onnx]'"


class ExportError(ValueError):
    """A model, or a layer's settings, that the ONNX export cannot express."""


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return onnx


def _describe(path: str, module: Module) -> str:
    where = f"module {path!r}" if path else "the model"
    return f"{where} ({type(module).__name__})"


class GraphBuilder:
    """The nodes and initializers of one export, handed to every exporter and ``export_onnx``.

    ``add``, ``op``, ``initializer``, ``state`` and ``constant`` each return the name of the
    value they create, so calls chain: ``builder.op("Relu", [builder.add(conv, x_name)])``.
    ``opset`` is the target opset; ``input_shape(module)`` and ``output_shape(module)`` are the
    shapes, batch PROBE_BATCH, the module saw in the probe forward pass that ``export`` runs first.
    """

    def __init__(
        self, onnx: Any, model: Module, opset: int, shapes: dict[int, tuple[tuple, tuple]]
    ) -> None:
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: dict[str, np.ndarray] = {}
        self._onnx = onnx
        self._model = model
        self._paths = {id(module): path for path, module in model.named_modules()}
        self._shapes = shapes
        self._names: set[str] = set()
        self._scope = [""]

    def path(self, module: Module) -> str:
        """The module's dotted path in the model ("" for the model itself)."""
        path = self._paths.get(id(module))
        return self.scoped(type(module).__name__) if path is None else path

    def scoped(self, name: str) -> str:
        """``name`` prefixed by the path of the module being exported: "conv1/Conv"."""
        return f"{self._scope[-1]}/{name}" if self._scope[-1] else name

    def reserve(self, name: str) -> None:
        """Claim a value name for the graph (its input); names are unique in ONNX."""
        if name in self._names:
            raise ExportError(f"the name {name!r} is used twice in the ONNX graph")
        self._names.add(name)

    def input_shape(self, module: Module) -> tuple[int, ...]:
        """The shape of ``module``'s input in the probe pass: (PROBE_BATCH, ...)."""
        return self._probed(module)[0]

    def output_shape(self, module: Module) -> tuple[int, ...]:
        """The shape of ``module``'s output in the probe pass: (PROBE_BATCH, ...)."""
        return self._probed(module)[1]

    def _probed(self, module: Module) -> tuple[tuple, tuple]:
        if id(module) not in self._shapes:
            raise ExportError(f"{_describe(self.path(module), module)} did not run in the probe")
        return self._shapes[id(module)]

    def add(self, module: Module, x_name: str) -> str:
        """Export ``module`` applied to the value ``x_name``; returns its output's name.

        ``module.export_onnx(builder, x_name)`` if the module defines it, else the exporter
        for its (glassnet) class in ``EXPORTERS``; anything else raises ExportError.
        """
        path = self.path(module)
        method = getattr(module, "export_onnx", None)
        exporter = _exporter_for(module)
        if method is None and exporter is None:
            raise ExportError(
                f"cannot export {_describe(path, module)} to ONNX: glassnet has no exporter for "
                f"{type(module).__name__}; define export_onnx(self, builder, x_name) on the "
                "class (see the glassnet.onnx docs)"
            )
        self._scope.append(path)
        try:
            out = method(self, x_name) if method is not None else exporter(self, module, x_name)
        finally:
            self._scope.pop()
        if not isinstance(out, str):
            raise TypeError(
                f"exporting {_describe(path, module)} returned {out!r}: expected the name of "
                "its output value (a str)"
            )
        return out

    def op(self, op_type: str, inputs: Iterable[str], **attributes: Any) -> str:
        """Add one node ``op_type(*inputs)`` with ONNX ``attributes``; returns its output name."""
        out = self.scoped(op_type)
        count = 1
        while out in self._names:
            out, count = f"{self.scoped(op_type)}_{count}", count + 1
        self.reserve(out)
        node = self._onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attributes)
        self.nodes.append(node)
        return out

    def initializer(self, name: str, array: np.ndarray) -> str:
        """A constant ``array`` named ``name`` (floats are stored as float32); returns ``name``.

        Adding the same name with equal values again (a module used twice) is a no-op.
        """
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = np.ascontiguousarray(array, dtype=np.float32)
        if name in self.initializers and np.array_equal(self.initializers[name], array):
            return name
        self.reserve(name)
        self.initializers[name] = array
        return name

    def state(self, module: Module, name: str) -> str:
        """The parameter or buffer ``name`` of ``module`` as an initializer named by its
        state-dict key (``"conv1.weight"``); returns that key."""
        value = getattr(module, name)
        array = value.data if isinstance(value, Parameter) else value
        path = self.path(module)
        return self.initializer(f"{path}.{name}" if path else name, array)

    def constant(self, name: str, value: float | np.ndarray) -> str:
        """A float32 constant named ``name`` under the current module's path ("act/half")."""
        return self.initializer(self.scoped(name), np.asarray(value, dtype=np.float32))

    def model_proto(self, input_name: str, out: str, output_name: str) -> Any:
        """The ModelProto once the model is added: input ``input_name`` (N, ...) float32, and
        the value ``out`` as output ``output_name`` (N, ...); N is the dynamic batch."""
        helper, float32 = self._onnx.helper, self._onnx.TensorProto.FLOAT
        self._name_output(out, output_name)
        root_in, root_out = self._shapes[id(self._model)]
        inputs = [helper.make_tensor_value_info(input_name, float32, ["N", *root_in[1:]])]
        outputs = [helper.make_tensor_value_info(output_name, float32, ["N", *root_out[1:]])]
        arrays = [self._onnx.numpy_helper.from_array(a, n) for n, a in self.initializers.items()]
        graph = helper.make_graph(self.nodes, "glassnet", inputs, outputs, arrays)
        opsets = [helper.make_opsetid("", self.opset)]
        proto = helper.make_model(graph, opset_imports=opsets, producer_name="glassnet")
        # the oldest IR version the opset allows: the file loads in the most runtimes
        proto.ir_version = helper.find_min_ir_version_for(opsets)
        return proto

    def _name_output(self, out: str, output_name: str) -> None:
        """Make the value ``out`` the graph's ``output_name``: rename it, or add an Identity."""
        last = self.nodes[-1] if self.nodes else None
        consumed = any(out in node.input for node in self.nodes)
        self.reserve(output_name)
        if last is not None and last.output[0] == out and not consumed:
            last.output[0] = output_name
        else:
            node = self._onnx.helper.make_node("Identity", [out], [output_name], name=output_name)
            self.nodes.append(node)


# --- exporters: (builder, module, x_name) -> out_name ---------------------------------------


def _sequential(builder: GraphBuilder, module: Module, x: str) -> str:
    for layer in module.children():
        x = builder.add(layer, x)
    return x


def _passthrough(builder: GraphBuilder, module: Module, x: str) -> str:
    """Dropout in eval mode, Identity: no node at all."""
    return x


def _unary(op_type: str) -> Callable[[GraphBuilder, Module, str], str]:
    def export(builder: GraphBuilder, module: Module, x: str) -> str:
        return builder.op(op_type, [x])

    return export


def _weight_and_bias(builder: GraphBuilder, module: Module) -> list[str]:
    names = [builder.state(module, "weight")]
    if getattr(module, "bias", None) is not None:
        names.append(builder.state(module, "bias"))
    return names


def _linear(builder: GraphBuilder, module: Module, x: str) -> str:
    # y = x W^T + b: Gemm with transB=1 reads the weight as stored, (D_out, D_in)
    return builder.op("Gemm", [x, *_weight_and_bias(builder, module)], transB=1)


def _window(kernel_size: Any, stride: Any, padding: Any) -> dict[str, list[int]]:
    """Conv/pool attributes; ONNX orders pads (top, left, bottom, right)."""
    kernel = as_pair(kernel_size, "kernel_size")
    strides = kernel if stride is None else as_pair(stride, "stride")
    top, bottom, left, right = conv_padding(padding, kernel, strides)
    return {
        "kernel_shape": list(kernel),
        "strides": list(strides),
        "pads": [top, left, bottom, right],
    }


def _conv2d(builder: GraphBuilder, module: Module, x: str) -> str:
    window = _window(module.kernel_size, module.stride, module.padding)
    return builder.op("Conv", [x, *_weight_and_bias(builder, module)], **window)


def _max_pool2d(builder: GraphBuilder, module: Module, x: str) -> str:
    window = _window(module.kernel_size, module.stride, module.padding)
    return builder.op("MaxPool", [x], **window)


def _avg_pool2d(builder: GraphBuilder, module: Module, x: str) -> str:
    window = _window(module.kernel_size, module.stride, module.padding)
    include_pad = int(module.count_include_pad)
    return builder.op("AveragePool", [x], count_include_pad=include_pad, **window)


def _adaptive_avg_pool2d(builder: GraphBuilder, module: Module, x: str) -> str:
    """Global average pooling, or a plain average pool where the output size divides the input."""
    (h, w), (h_out, w_out) = builder.input_shape(module)[2:], builder.output_shape(module)[2:]
    if (h_out, w_out) == (1, 1):
        return builder.op("GlobalAveragePool", [x])
    if h % h_out or w % w_out:
        raise ExportError(
            f"cannot export {_describe(builder.path(module), module)} with output_size="
            f"{module.output_size!r} on a {h}x{w} input: ONNX has no adaptive pooling, and "
            f"{h_out}x{w_out} does not divide {h}x{w} into equal windows"
        )
    kernel = [h // h_out, w // w_out]
    return builder.op("AveragePool", [x], kernel_shape=kernel, strides=kernel)


def _flatten(builder: GraphBuilder, module: Module, x: str) -> str:
    start, end = getattr(module, "start_dim", 1), getattr(module, "end_dim", -1)
    if (start, end) != (1, -1):
        raise ExportError(
            f"cannot export {_describe(builder.path(module), module)} with start_dim={start}, "
            f"end_dim={end}: only start_dim=1, end_dim=-1 maps to ONNX Flatten"
        )
    return builder.op("Flatten", [x], axis=1)


def _softmax(builder: GraphBuilder, module: Module, x: str) -> str:
    return builder.op("Softmax", [x], axis=int(module.dim))


def _leaky_relu(builder: GraphBuilder, module: Module, x: str) -> str:
    return builder.op("LeakyRelu", [x], alpha=float(module.negative_slope))


def _gelu(builder: GraphBuilder, module: Module, x: str) -> str:
    """Gelu from opset 20; before it 0.5 x (1 + erf(x / sqrt 2)) or its tanh approximation."""
    if builder.opset >= 20:
        return builder.op("Gelu", [x], approximate=module.approximate)
    if module.approximate == "tanh":
        # u = sqrt(2 / pi) * (x + 0.044715 x^3)
        cube = builder.op("Mul", [builder.op("Mul", [x, x]), x])
        scaled_cube = builder.op("Mul", [cube, builder.constant("kappa", 0.044715)])
        inner = builder.op("Add", [x, scaled_cube])
        u = builder.op("Mul", [inner, builder.constant("sqrt_2_over_pi", math.sqrt(2 / math.pi))])
        squashed = builder.op("Tanh", [u])
    else:
        scaled = builder.op("Mul", [x, builder.constant("sqrt_half", math.sqrt(0.5))])
        squashed = builder.op("Erf", [scaled])
    two_cdf = builder.op("Add", [squashed, builder.constant("one", 1.0)])
    return builder.op("Mul", [builder.op("Mul", [x, two_cdf]), builder.constant("half", 0.5)])


def _batch_norm(builder: GraphBuilder, module: Module, x: str) -> str:
    """BatchNormalization (inference) with the running statistics; ones/zeros if not affine."""
    if module.running_mean is None or module.running_var is None:
        raise ExportError(
            f"cannot export {_describe(builder.path(module), module)} with "
            "track_running_stats=False: it normalises each batch by its own statistics, and "
            "ONNX BatchNormalization needs running statistics"
        )
    if module.weight is None:
        scale = builder.constant("ones", np.ones(module.num_features))
        shift = builder.constant("zeros", np.zeros(module.num_features))
    else:
        scale, shift = builder.state(module, "weight"), builder.state(module, "bias")
    mean, var = builder.state(module, "running_mean"), builder.state(module, "running_var")
    return builder.op("BatchNormalization", [x, scale, shift, mean, var], epsilon=float(module.eps))


#: glassnet class name -> exporter; classes outside glassnet define ``export_onnx`` instead
EXPORTERS: dict[str, Callable[[GraphBuilder, Module, str], str]] = {
    "Sequential": _sequential,
    "Linear": _linear,
    "Conv2d": _conv2d,
    "ReLU": _unary("Relu"),
    "Sigmoid": _unary("Sigmoid"),
    "Tanh": _unary("Tanh"),
    "LeakyReLU": _leaky_relu,
    "GELU": _gelu,
    "Softmax": _softmax,
    "MaxPool2d": _max_pool2d,
    "AvgPool2d": _avg_pool2d,
    "AdaptiveAvgPool2d": _adaptive_avg_pool2d,
    "BatchNorm1d": _batch_norm,
    "BatchNorm2d": _batch_norm,
    "Flatten": _flatten,
    "Dropout": _passthrough,
    "Identity": _passthrough,
}


def _exporter_for(module: Module) -> Callable[[GraphBuilder, Module, str], str] | None:
    # the exact glassnet class: a subclass may compute something else in its forward
    cls = type(module)
    return EXPORTERS.get(cls.__name__) if cls.__module__.startswith("glassnet.") else None


# --- the probe pass and the file ------------------------------------------------------------


@contextmanager
def _recording_shapes(model: Module) -> Iterator[dict[int, tuple[tuple, tuple]]]:
    """Record each module's first (input shape, output shape) while the block runs."""
    shapes: dict[int, tuple[tuple, tuple]] = {}

    def recording(module: Module, forward: Callable) -> Callable:
        def forward_and_record(x, *args, **kwargs):
            in_shape = np.shape(x)  # before the call: an in-place layer may reuse x
            out = forward(x, *args, **kwargs)
            shapes.setdefault(id(module), (in_shape, np.shape(out)))
            return out

        return forward_and_record

    saved = [(module, module.__dict__.get("forward")) for module in model.modules()]
    # glassnet has no forward hooks: shadow each module's forward on the instance, then undo
    for module, _ in saved:
        object.__setattr__(module, "forward", recording(module, module.forward))
    try:
        yield shapes
    finally:
        for module, forward in saved:
            if forward is None:
                del module.__dict__["forward"]
            else:
                module.__dict__["forward"] = forward


def _probe(model: Module, input_shape: tuple[int, ...]) -> dict[int, tuple[tuple, tuple]]:
    """Run zeros (PROBE_BATCH, *input_shape) through the model in eval mode; every module's shapes.

    Each module's training flag is restored afterwards.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with no_grad(), _recording_shapes(model) as shapes:
            model(np.zeros((PROBE_BATCH, *input_shape), dtype=np.float32))
    except (ValueError, TypeError, IndexError) as err:
        raise ValueError(f"input_shape={input_shape} does not fit the model: {err}") from err
    finally:
        for module, mode in modes:
            module.training = mode
    return shapes


def _check_arguments(
    model: Module, input_shape: Any, opset: Any, names: tuple[str, str], onnx: Any
) -> tuple[int, ...]:
    if not isinstance(model, Module):
        raise TypeError(f"model must be a glassnet Module, got {type(model).__name__}")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape={input_shape!r} must be a non-empty tuple of positive ints, without "
            "the batch: e.g. (1, 28, 28)"
        )
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset={opset!r} must be an int from {MIN_OPSET} to {newest}")
    if not all(isinstance(name, str) and name for name in names) or names[0] == names[1]:
        raise ValueError(
            f"input_name, output_name = {names!r} must be two different non-empty strings"
        )
    return tuple(int(d) for d in shape)


def export(
    model: Module,
    path: str | os.PathLike,
    input_shape: tuple[int, ...],
    *,
    opset: int = 17,
    input_name: str = "input",
    output_name: str = "logits",
) -> None:
    """Write ``model`` as an ONNX file: input (N, *input_shape) float32 -> output (N, ...).

    Args:
        model: a glassnet Module; exported with eval-mode semantics, its modes left unchanged.
        path: the file to write (atomically: a temporary file beside it, then a rename).
        input_shape: one sample's shape, without the batch, e.g. (1, 28, 28).
        opset: the ONNX opset, 13 or newer (GELU becomes one Gelu node from 20).
        input_name, output_name: the graph's input and output names.

    A zero batch of two is run through the model first, in eval mode, for the shapes. Raises
    ImportError without onnx, ExportError for a layer ONNX export cannot express.
    """
    onnx = _import_onnx()
    input_shape = _check_arguments(model, input_shape, opset, (input_name, output_name), onnx)
    shapes = _probe(model, input_shape)
    builder = GraphBuilder(onnx, model, opset, shapes)
    builder.reserve(input_name)
    proto = builder.model_proto(input_name, builder.add(model, input_name), output_name)
    onnx.checker.check_model(proto, full_check=True)
    atomic_write(Path(path), proto.SerializeToString())
