"""A trained model looked at through one image: its forward and backward trace as a page.

Forward: every layer's output shape, a conv layer's feature maps as small images, the softmax
bars. Backward, for the predicted (or a given) class: dL/dz = p - y at the top, the gradient's
norm at every layer, and the input gradient as a saliency map. Works for any glassnet Module
ending in logits (1, C); the numbers come from :func:`glassnet.inspect.record_pass`.
Shapes: image (C, H, W) or (D,), logits and probabilities (C,) over classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from glassnet.html.page import (
    GRADIENT_COLOR,
    SOFTMAX_COLOR,
    TARGET_COLOR,
    bar_chart,
    document,
    picture,
    table,
    tag,
    text,
    write_html,
)
from glassnet.inspect import PassRecord, record_pass, summary_rows
from glassnet.nn.module import Module

FEATURE_MAPS = 8  # channels shown per conv-like layer


@dataclass
class ModelExplanation:
    """One image's pass through a model, ready to show (``_repr_html_``) or save."""

    record: PassRecord
    classes: list[str]
    title: str

    def html(self) -> str:
        return document(self.title, self.body())

    def body(self) -> str:
        return model_body(self.record, self.classes, self.title)

    def _repr_html_(self) -> str:
        return self.body()

    def save(self, path) -> None:
        write_html(path, self.html())


def explain_model(
    model: Module,
    image: np.ndarray,
    classes: Sequence[str] | None = None,
    target: int | None = None,
    title: str = "glassnet explain: a model",
) -> ModelExplanation:
    """Trace ``image`` (one sample, e.g. (1, 28, 28)) through ``model`` for the page.

    ``classes`` names the outputs (default "0", "1", ...); ``target`` is the class whose loss
    is differentiated (default: the predicted class).
    """
    if not isinstance(model, Module):
        raise TypeError(f"model must be a glassnet Module, got {type(model).__name__}")
    record = record_pass(model, np.asarray(image)[None], target)
    count = len(record.probs)
    names = [str(i) for i in range(count)] if classes is None else [str(c) for c in classes]
    if len(names) != count:
        raise ValueError(f"classes names {len(names)} classes, but the model gives {count} scores")
    return ModelExplanation(record, names, title)


def model_body(record: PassRecord, classes: list[str], title: str) -> str:
    predicted = int(np.argmax(record.probs))
    lead = (
        f"Predicted <b>{text(classes[predicted])}</b> with probability "
        f"{record.probs[predicted]:.4f}; the backward pass differentiates the loss of class "
        f"<b>{text(classes[record.target])}</b>."
    )
    return "\n".join(
        [
            tag("h1", text(title)),
            tag("p", lead),
            picture(record.x[0], "input", size=112) if record.x.ndim == 4 else "",
            tag("h2", "Forward: what each layer outputs"),
            _forward_table(record),
            _feature_maps(record),
            tag("h2", "Softmax: p per class"),
            _probability_bars(record, classes),
            tag("h2", "Backward: dL/dz = p \u2212 y at the top"),
            _gradient_bars(record, classes),
            tag("h2", "Backward: the gradient's norm at every layer"),
            _gradient_norms(record),
            tag("h2", "Saliency: dL/dx, the input gradient"),
            _saliency(record),
        ]
    )


def _shape(array: np.ndarray) -> str:
    return "(" + ", ".join(map(str, array.shape[1:])) + ")"


def _forward_table(record: PassRecord) -> str:
    rows = [("input", _shape(record.x))]
    rows += [(layer.layer, _shape(layer.output)) for layer in record.layers]
    return table(("Layer", "Output shape (per sample)"), rows)


def _feature_maps(record: PassRecord) -> str:
    """The first channels of every conv layer's output, as images."""
    parts = []
    for layer in record.layers:
        if layer.output.ndim != 4 or "Conv" not in layer.layer:
            continue
        maps = layer.output[0, :FEATURE_MAPS]
        figures = "".join(picture(m, f"channel {c}", size=64) for c, m in enumerate(maps))
        shown = f"first {len(maps)} of {layer.output.shape[1]} channels"
        parts.append(tag("h3", text(f"{layer.layer}: {shown}")) + tag("div", figures))
    return "\n".join(parts)


def _probability_bars(record: PassRecord, classes: list[str]) -> str:
    labels = [[f"{p:.3f}" for p in record.probs]]
    return bar_chart(
        classes, [("p", record.probs, SOFTMAX_COLOR)], labels, "softmax probabilities", 30
    )


def _gradient_bars(record: PassRecord, classes: list[str]) -> str:
    y = np.eye(len(classes))[record.target]
    series = [
        ("p", record.probs, SOFTMAX_COLOR),
        ("y", y, TARGET_COLOR),
        ("p \u2212 y", record.grad_logits, GRADIENT_COLOR),
    ]
    return bar_chart(classes, series, title="p, y and p - y per class", bar_width=12)


def _gradient_norms(record: PassRecord) -> str:
    rows = []
    for layer in reversed(record.layers):
        grad = (
            "not needed" if layer.grad_input is None else f"{np.linalg.norm(layer.grad_input):.4g}"
        )
        params = ", ".join(f"{name} {norm:.4g}" for name, norm in layer.grad_norms.items())
        rows.append((layer.layer, grad, params or "none"))
    return table(("Layer (backward order)", "||dL/d input||", "||dL/d parameter||"), rows)


def _saliency(record: PassRecord) -> str:
    grad = record.grad_x[0]
    if grad.ndim != 3:
        return tag("p", "The input is not an image: no map.", class_="note")
    return tag(
        "div",
        picture(record.x[0], "input", size=112)
        + picture(np.abs(grad).max(axis=0), "|dL/dx| (brighter: matters more)", size=112)
        + picture(grad.sum(axis=0), "dL/dx (orange +, blue \u2212)", size=112, signed=True),
    )


def summary_table(model: Module, input_shape: tuple[int, ...] | None = None) -> str:
    """The model's summary as an HTML table (output shapes only with ``input_shape``)."""
    rows = summary_rows(model, input_shape)
    total = sum(param.data.size for param in model.parameters())
    header = (
        ("Layer (type)", "Output shape", "Params") if input_shape else ("Layer (type)", "Params")
    )
    shown = rows if input_shape else [(name, count) for name, _, count in rows[1:]]
    caption = tag("p", f"{text(type(model).__name__)}: {total:,} parameters", class_="note")
    return table(header, shown) + caption
