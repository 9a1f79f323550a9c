"""Look inside a Sequential model: a Keras-like summary, and a trace of one training step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glassnet.nn.loss import CrossEntropyLoss
from glassnet.nn.module import Sequential


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["N", *map(str, shape[1:])]) + ")"


def summary(model: Sequential, input_shape: tuple[int, ...]) -> str:
    """A table of layers, output shapes and parameter counts for inputs of ``input_shape``.

    ``input_shape`` excludes the batch, e.g. (1, 28, 28); a zero batch of one is run through
    the model in eval mode to find the shapes.
    """
    was_training = model.training
    model.eval()
    x = np.zeros((1, *input_shape), dtype=np.float32)
    rows = [("Input", _shape(x.shape), "")]
    total = 0
    for i, layer in enumerate(model.layers):
        x = layer.forward(x)
        count = sum(param.data.size for param in layer.parameters())
        total += count
        rows.append((f"{i} {type(layer).__name__}", _shape(x.shape), f"{count:,}"))
    model.train(was_training)
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
    layer: str  # e.g. "8 Linear"
    output_shape: tuple[int, ...]  # forward output
    grad_shape: tuple[int, ...] | None  # backward output dL/d(input); None if not needed
    param_grads: dict[str, tuple[int, ...]]  # e.g. {"weight": (10, 1600), "bias": (10,)}


def trace(
    model: Sequential, input_shape: tuple[int, ...], rng: np.random.Generator | None = None
) -> list[TraceStep]:
    """Run one sample forward, the loss's ``p - y`` backward, and record every layer's shapes.

    Parameter gradients are left zeroed afterwards; the model's mode is restored.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x = rng.random((1, *input_shape), dtype=np.float32)
    outputs = []
    for layer in model.layers:
        x = layer.forward(x)
        outputs.append(x.shape)
    loss_fn = CrossEntropyLoss()
    loss_fn(x, np.zeros(1, dtype=np.int64))
    grad = loss_fn.backward()
    model.zero_grad()
    steps = []
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        grad = layer.backward(grad, need_input_grad=i > 0)
        params = {name: param.grad.shape for name, param in layer.named_parameters()}
        steps.append(
            TraceStep(
                f"{i} {type(layer).__name__}",
                outputs[i],
                None if grad is None else grad.shape,
                params,
            )
        )
    model.zero_grad()
    return steps[::-1]


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
        name = f"{step.layer.split()[1].lower()}_backward ({step.layer.split()[0]})"
        grad = "input gradient not needed" if step.grad_shape is None else shape(step.grad_shape)
        params = "".join(
            f", d{'W' if n == 'weight' else 'b'} {s}" for n, s in step.param_grads.items()
        )
        lines.append(f"  -> {name:<{width}} -> {grad}{params}")
    return "\n".join(lines)
