"""Look inside any model: a Keras-like summary, and a trace of one training step.

Both watch the model's *leaf* modules (those without children, plus any module holding its
own parameters) by wrapping their ``forward`` and ``backward`` for the duration of one call,
so they work for a Sequential and for a user's Module subclass (a residual block) alike.
This module sits above ``glassnet.nn`` (it runs models and a loss); nn never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from glassnet.functional import softmax
from glassnet.nn.loss import CrossEntropyLoss
from glassnet.nn.module import Module, backward_of, call_backward, no_grad


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["N", *map(str, shape[1:])]) + ")"


def _watched(model: Module) -> list[tuple[str, Module]]:
    """The modules a summary or trace lists: leaves, and any module with its own parameters."""
    watched = []
    for path, module in model.named_modules():
        own = any(param is not None for param in module._parameters.values())
        if own or not any(True for _ in module.children()):
            watched.append((path or type(module).__name__.lower(), module))
    return watched


@contextmanager
def _watching(
    modules: list[tuple[str, Module]],
    on_forward: Callable[[str, Module, np.ndarray], None],
    on_backward: Callable[[str, Module, np.ndarray | None], None] | None = None,
) -> Iterator[None]:
    """Temporarily report every forward (and backward) call of ``modules``."""

    def forward_of(path, module, original):
        def forward(*args, **kwargs):
            out = original(*args, **kwargs)
            on_forward(path, module, out)
            return out

        return forward

    def backward_of_(path, module, original):
        def backward(grad_out, need_input_grad=True):
            grad = call_backward(original, grad_out, need_input_grad)
            on_backward(path, module, grad)
            return grad

        return backward

    try:
        for path, module in modules:
            object.__setattr__(module, "forward", forward_of(path, module, module.forward))
            if on_backward is not None:
                object.__setattr__(module, "backward", backward_of_(path, module, module.backward))
        yield
    finally:
        for _, module in modules:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("backward", None)


def summary_rows(model: Module, input_shape: tuple[int, ...] | None) -> list[tuple[str, str, str]]:
    """(layer, output shape, parameter count) per watched layer, after an "Input" row.

    With ``input_shape`` None nothing is run and the shapes are left empty.
    """
    rows: list[tuple[str, str, str]] = []

    def record(path, module, out):
        own = sum(p.data.size for p in module._parameters.values() if p is not None)
        shape = "" if out is None else _shape(np.shape(out))
        rows.append((f"{path} {type(module).__name__}", shape, f"{own:,}"))

    if input_shape is None:
        for path, module in _watched(model):
            record(path, module, None)
        return [("Input", "", ""), *rows]
    was_training = model.training
    x = np.zeros((1, *input_shape), dtype=np.float32)
    model.eval()
    try:
        with no_grad(), _watching(_watched(model), record):
            model(x)
    finally:
        model.train(was_training)
    return [("Input", _shape(x.shape), ""), *rows]


def summary(model: Module, input_shape: tuple[int, ...]) -> str:
    """A table of layers, output shapes and parameter counts for inputs of ``input_shape``.

    ``input_shape`` excludes the batch, e.g. (1, 28, 28); a zero batch of one is run through
    the model in eval mode (under ``no_grad``) to find the shapes.
    """
    rows = summary_rows(model, input_shape)
    total = sum(param.data.size for param in model.parameters())
    header = ("Layer (type)", "Output shape", "Params")
    widths = [max(len(str(row[c])) for row in [header, *rows]) + 2 for c in range(3)]
    line = "-" * sum(widths)

    def fmt(row):
        return f"{row[0]:<{widths[0]}}{row[1]:<{widths[1]}}{row[2]:>{widths[2]}}"

    lines = [line, fmt(header), "=" * sum(widths), *map(fmt, rows), line]
    lines.append(f"Total params: {total:,}")
    return "\n".join(lines)


@dataclass
class TraceStep:
    layer: str  # e.g. "8 Linear" (the module's dotted path, then its class)
    output_shape: tuple[int, ...]  # forward output
    grad_shape: tuple[int, ...] | None  # backward output dL/d(input); None if not needed
    param_grads: dict[str, tuple[int, ...]]  # e.g. {"weight": (10, 1600), "bias": (10,)}


def trace(
    model: Module, input_shape: tuple[int, ...], rng: np.random.Generator | None = None
) -> list[TraceStep]:
    """Run one sample forward, the loss's ``p - y`` backward, and record every layer's shapes.

    Steps are in forward order; a module called twice appears twice. The model must end in
    logits (N, C). Parameter gradients are left zeroed afterwards; the mode is restored.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x = rng.random((1, *input_shape), dtype=np.float32)
    steps: list[TraceStep] = []
    pending: dict[int, list[TraceStep]] = {}  # a module's steps whose backward is still due

    def on_forward(path, module, out):
        params = {n: p.shape for n, p in module._parameters.items() if p is not None}
        steps.append(TraceStep(f"{path} {type(module).__name__}", np.shape(out), None, params))
        pending.setdefault(id(module), []).append(steps[-1])

    def on_backward(path, module, grad):
        step = pending[id(module)].pop()  # backward visits a module's calls in reverse
        step.grad_shape = None if grad is None else np.shape(grad)

    was_training = model.training
    model.zero_grad()
    try:
        with _watching(_watched(model), on_forward, on_backward):
            logits = model(x)
            loss_fn = CrossEntropyLoss()
            loss_fn(logits, np.zeros(1, dtype=np.int64))
            backward_of(model, loss_fn.backward(), need_input_grad=False)
    finally:
        model.zero_grad()
        model.train(was_training)
    return steps


def format_trace(steps: list[TraceStep], input_shape: tuple[int, ...]) -> str:
    """The trace as two lists: shapes going forward, then gradients coming back."""

    def shape(s):
        return str(tuple(s[1:]))  # per sample, as seed 002 writes them

    width = max(len(step.layer) for step in steps) + 12
    lines = ["forward", f"  {'input':<{width}} {shape((1, *input_shape))}"]
    lines += [f"  {step.layer:<{width}} -> {shape(step.output_shape)}" for step in steps]
    lines += [
        "",
        f"backward (the loss hands back dL/dlogits = p - y, {shape(steps[-1].output_shape)})",
    ]
    for step in reversed(steps):
        path, kind = step.layer.rsplit(" ", 1)
        name = f"{kind.lower()}_backward ({path})"
        grad = "input gradient not needed" if step.grad_shape is None else shape(step.grad_shape)
        params = "".join(
            f", d{'W' if n == 'weight' else 'b' if n == 'bias' else n} {s}"
            for n, s in step.param_grads.items()
        )
        lines.append(f"  -> {name:<{width}} -> {grad}{params}")
    return "\n".join(lines)


@dataclass
class LayerRecord:
    """One layer's part of :func:`record_pass`, for one sample."""

    layer: str  # e.g. "0 Conv2d" (the module's dotted path, then its class)
    output: np.ndarray  # forward output, batch of 1
    grad_input: np.ndarray | None  # dL/d(input) from backward; None if not needed
    grad_norms: dict[str, float]  # parameter name -> ||dL/dparam||


@dataclass
class PassRecord:
    """Everything one forward and backward pass of one sample computed (:func:`record_pass`)."""

    x: np.ndarray  # the input, (1, C, H, W) or (1, D)
    probs: np.ndarray  # softmax of the logits, (C,)
    target: int  # the class the loss was taken against
    grad_logits: np.ndarray  # dL/dz = p - y, (C,)
    grad_x: np.ndarray  # dL/dx, shape of x: the saliency map's source
    layers: list[LayerRecord]


def record_pass(model: Module, x: np.ndarray, target: int | None = None) -> PassRecord:
    """Run one sample ``x`` (1, ...) forward and cross-entropy's ``p - y`` backward, in eval mode.

    ``target`` is the class of the loss (default: the predicted one). Every watched layer's
    output, input gradient and parameter-gradient norms are kept. Parameter gradients are
    left zeroed afterwards; the mode is restored.
    """
    if np.ndim(x) < 2 or np.shape(x)[0] != 1:
        raise ValueError(f"x of shape {np.shape(x)} must be one sample: (1, ...)")
    layers: list[LayerRecord] = []
    pending: dict[int, list[LayerRecord]] = {}

    def on_forward(path, module, out):
        layers.append(LayerRecord(f"{path} {type(module).__name__}", np.array(out), None, {}))
        pending.setdefault(id(module), []).append(layers[-1])

    def on_backward(path, module, grad):
        record = pending[id(module)].pop()
        record.grad_input = None if grad is None else np.array(grad)
        record.grad_norms = {
            name: float(np.linalg.norm(param.grad))
            for name, param in module._parameters.items()
            if param is not None and param.grad is not None
        }

    was_training = model.training
    model.eval()
    model.zero_grad()
    try:
        with _watching(_watched(model), on_forward, on_backward):
            logits = model(np.asarray(x))
            if np.ndim(logits) != 2:
                raise ValueError(
                    f"the model must end in logits (1, C), it gives {np.shape(logits)}"
                )
            target = int(np.argmax(logits[0])) if target is None else target
            if not 0 <= target < logits.shape[1]:
                raise ValueError(f"target={target} must be a class index in [0, {logits.shape[1]})")
            loss_fn = CrossEntropyLoss()
            loss_fn(logits, np.array([target]))
            grad_logits = loss_fn.backward()
            grad_x = backward_of(model, grad_logits.copy(), need_input_grad=True)
    finally:
        model.zero_grad()
        model.train(was_training)
    probs = softmax(np.asarray(logits[0], dtype=np.float64))
    return PassRecord(np.asarray(x), probs, target, np.array(grad_logits[0]), grad_x, layers)
