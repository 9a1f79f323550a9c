"""The seeds' worked example, one step at a time: logits -> softmax -> loss -> gradient -> update.

``worked_example`` computes every intermediate with :mod:`glassnet.functional` and returns plain
data; ``render`` lays it out for a terminal. ``glassnet explain`` joins the two.
Every input (x, W, the target as a vector, lr) is listed first, at full precision, so each
number after it can be redone by hand. Values are printed to 4 decimals, and one that rounds
to zero prints as 0.0000, never -0.0000 (the JSON holds 0.0, never -0.0, likewise).
Shapes: x (D,) one sample's features, w (D, C), logits z (C,).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glassnet.functional import (
    cross_entropy,
    cross_entropy_backward,
    softmax,
    softmax_jacobian,
)

SEED_X = np.array([1.0, 2.0])
SEED_W = np.array([[0.2, -0.3, 0.5], [-0.5, 0.7, -0.2]])
SEED_TARGET = 1
SEED_LR = 0.1


@dataclass
class Step:
    title: str
    formula: str
    value: np.ndarray | float
    note: str = ""


@dataclass
class Explanation:
    inputs: list[Step] = field(default_factory=list)  # title: the symbol; formula: its role
    steps: list[Step] = field(default_factory=list)
    summary: list[tuple[str, str]] = field(default_factory=list)

    def add(self, title: str, formula: str, value, note: str = "") -> np.ndarray | float:
        self.steps.append(Step(title, formula, value, note))
        return value

    def _repr_html_(self) -> str:
        from glassnet.html.explain_page import explain_body  # html sits above explain

        return explain_body(self)

    def to_json(self) -> dict:
        def plain(v):
            return (np.asarray(v, dtype=np.float64) + 0.0).tolist()  # + 0.0 turns -0.0 into 0.0

        def steps(items: list[Step]) -> list[dict]:
            return [
                {"title": s.title, "formula": s.formula, "value": plain(s.value), "note": s.note}
                for s in items
            ]

        return {
            "inputs": steps(self.inputs),
            "steps": steps(self.steps),
            "summary": [{"step": a, "result": b} for a, b in self.summary],
        }


def parse_target(target: np.ndarray | int, num_classes: int) -> np.ndarray:
    """A class index, or a one-hot / probability vector of length C, as a (C,) float target."""
    target = np.asarray(target)
    if target.ndim == 0:
        index = int(target)
        if not 0 <= index < num_classes:
            raise ValueError(f"target={index} must be a class index in [0, {num_classes})")
        return np.eye(num_classes)[index]
    if target.shape != (num_classes,):
        raise ValueError(
            f"target of length {target.size} must be a class index or a vector of "
            f"{num_classes} probabilities (one per class)"
        )
    if np.any(target < 0) or not np.isclose(target.sum(), 1.0):
        raise ValueError(f"target {target.tolist()} must be non-negative and sum to 1")
    return target.astype(np.float64) + 0.0


def worked_example(
    logits: np.ndarray | None = None,
    *,
    x: np.ndarray = SEED_X,
    w: np.ndarray = SEED_W,
    target: np.ndarray | int = SEED_TARGET,
    lr: float = SEED_LR,
) -> Explanation:
    """Every intermediate of one forward and backward pass of ``softmax(x @ w)`` + cross-entropy.

    Args:
        logits: start from these (C,) logits instead of ``x @ w`` (then no dW or update).
        x: one sample's features, shape (D,).
        w: weights, shape (D, C).
        target: a class index, or a one-hot / probability vector of shape (C,).
        lr: the learning rate of the SGD step ``w - lr * dW``.
    Returns:
        An :class:`Explanation`: the inputs it used (x, W, y, lr; or z, y), the steps in
        order and a summary table.
    """
    ex = Explanation()
    if logits is None:
        x, w = np.asarray(x, dtype=np.float64) + 0.0, np.asarray(w, dtype=np.float64) + 0.0
        if x.ndim != 1 or w.ndim != 2 or w.shape[0] != x.shape[0]:
            raise ValueError(
                f"x of shape {x.shape} and w of shape {w.shape} do not multiply: "
                "expected x (D,) and w (D, C)"
            )
        y = parse_target(target, w.shape[1])
        lr = float(lr) + 0.0
        ex.inputs += [
            Step("x", f"one sample's features, shape {x.shape}", x),
            Step("W", f"weights, shape {w.shape}", w),
            _target_input(target, y),
            Step("lr", "learning rate of the step W - lr dW", lr),
        ]
        z = ex.add(
            "Logits", "z = x . W", x @ w, f"x (D={x.size}) times W ({w.shape[0]}x{w.shape[1]})"
        )
    else:
        z = np.asarray(logits, dtype=np.float64) + 0.0
        if z.ndim != 1 or z.size < 2:
            raise ValueError(f"logits must be a vector of at least 2 classes, got shape {z.shape}")
        y = parse_target(target, z.size)
        ex.inputs += [Step("z", f"logits, shape {z.shape}", z), _target_input(target, y)]
        ex.add("Logits", "z (given)", z)

    shifted = ex.add(
        "Shift by the max", "z - max(z)", z - z.max(), f"max(z) = {format_number(z.max())}"
    )
    exps = ex.add("Exponentials", "exp(z - max z)", np.exp(shifted), "largest is exp(0) = 1")
    ex.add("Their sum", "S = sum exp(z - max z)", float(exps.sum()))
    p = ex.add("Softmax", "p = exp(z - max z) / S", softmax(z), "sums to 1")
    loss = float(cross_entropy(z[None], y[None]))
    ex.add("Cross-entropy loss", "L = -sum y log p", loss, f"y = {_format_vector(y)}")

    grad = ex.add("Fused gradient", "dL/dz = p - y", cross_entropy_backward(z[None], y[None])[0])
    dl_dp = np.where(y == 0, 0.0, -y / np.where(p == 0, 1, p))
    ex.add("Jacobian route, step 1", "dL/dp = -y / p", dl_dp)
    jac = ex.add("Jacobian route, step 2", "J = diag(p) - p p^T", softmax_jacobian(p))
    via_jacobian = jac.T @ dl_dp
    gap = float(np.max(np.abs(via_jacobian - grad)))
    ex.add(
        "Jacobian route, result", "dL/dz = J^T dL/dp", via_jacobian, f"max |difference| = {gap:.1e}"
    )

    fmt = _format_vector
    ex.summary += [
        ("Logits", f"z = {fmt(z)}"),
        ("Softmax", f"p = {fmt(p)}"),
        ("Loss", f"L = {format_number(loss)}"),
        ("Gradient (p - y)", f"dL/dz = {fmt(grad)}"),
    ]
    if logits is None:
        grad_w = ex.add("Weight gradient", "dW = x^T (p - y)", np.outer(x, grad))
        update = ex.add("SGD update", f"-lr dW  (lr = {lr!r})", -lr * grad_w)
        new_w = w + update
        new_loss = float(cross_entropy((x @ new_w)[None], y[None]))
        change = f"loss {format_number(loss)} -> {format_number(new_loss)}"
        ex.add("After the step", "L(W - lr dW)", new_loss, change)
        ex.summary += [
            ("Weight gradient", f"dW = x^T (p - y) = {_format_matrix(grad_w)}"),
            ("Update", f"W <- W - {lr!r} dW; {change}"),
        ]
    return ex


def _target_input(given: np.ndarray | int, y: np.ndarray) -> Step:
    if np.ndim(given) == 0:
        return Step("y", f"target: class {int(given)}, as a one-hot vector", y)
    return Step("y", "target: probabilities, one per class", y)


def format_number(value: float, digits: int | None = 4) -> str:
    """``value`` to ``digits`` decimals (None: the shortest exact form); never '-0.0000'."""
    text = repr(float(value)) if digits is None else f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _format_vector(v: np.ndarray, digits: int = 4) -> str:
    return "[" + ", ".join(format_number(e, digits) for e in np.ravel(v)) + "]"


def _format_matrix(m: np.ndarray, digits: int = 4) -> str:
    return "[" + ", ".join(_format_vector(row, digits) for row in m) + "]"


def _format_value(value: np.ndarray | float, digits: int | None = 4) -> list[str]:
    if np.ndim(value) == 0:
        return [format_number(value, digits)]
    texts = [[format_number(e, digits) for e in row] for row in np.atleast_2d(value)]
    widths = [max(len(text) for text in column) for column in zip(*texts, strict=True)]
    return [
        "[" + "  ".join(f"{text:>{w}}" for text, w in zip(row, widths, strict=True)) + "]"
        for row in texts
    ]


def render(ex: Explanation, color: bool = False) -> str:
    """The explanation as aligned text; ``color`` adds ANSI bold/colour to headings and results."""

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    lines = [paint("Inputs", "1;36")]
    name_width = max(len(item.title) for item in ex.inputs)
    for item in ex.inputs:
        lines.append(f"    {paint(f'{item.title:<{name_width}}', '1')}   {item.formula}")
        for row in _format_value(item.value, digits=None):  # exact: the numbers to start from
            lines.append(f"      {row}")
    lines.append("")
    title_width = max(len(step.title) for step in ex.steps)
    for number, step in enumerate(ex.steps, start=1):
        heading = f"{number:>2}. {step.title:<{title_width}}"
        lines.append(paint(heading, "1;36") + paint(f"   {step.formula}", "2"))
        for row in _format_value(step.value):
            lines.append(f"      {paint(row, '33')}")
        if step.note:
            lines.append(f"      {step.note}")
        lines.append("")
    lines.append(paint("Summary", "1;36"))
    width = max(len(name) for name, _ in ex.summary)
    rule = "-" * (width + 2) + "+" + "-" * (max(len(r) for _, r in ex.summary) + 2)
    lines.append(rule)
    for name, result in ex.summary:
        lines.append(f" {name:<{width}} | {paint(result, '32')}")
    lines.append(rule)
    return "\n".join(lines)
