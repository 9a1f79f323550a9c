"""The seeds' worked example, one step at a time: logits -> softmax -> loss -> gradient -> update.

``worked_example`` computes every intermediate with :mod:`glassnet.functional` and returns plain
data; ``render`` lays it out for a terminal. ``glassnet explain`` joins the two.
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
    steps: list[Step] = field(default_factory=list)
    summary: list[tuple[str, str]] = field(default_factory=list)

    def add(self, title: str, formula: str, value, note: str = "") -> np.ndarray | float:
        self.steps.append(Step(title, formula, value, note))
        return value

    def to_json(self) -> dict:
        def plain(v):
            return v.tolist() if isinstance(v, np.ndarray) else float(v)

        return {
            "steps": [
                {"title": s.title, "formula": s.formula, "value": plain(s.value), "note": s.note}
                for s in self.steps
            ],
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
    return target.astype(np.float64)


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
        An :class:`Explanation`: the steps in order and a summary table.
    """
    ex = Explanation()
    if logits is None:
        x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
        if x.ndim != 1 or w.ndim != 2 or w.shape[0] != x.shape[0]:
            raise ValueError(
                f"x of shape {x.shape} and w of shape {w.shape} do not multiply: "
                "expected x (D,) and w (D, C)"
            )
        z = ex.add(
            "Logits", "z = x . W", x @ w, f"x = {x.tolist()}, W is {w.shape[0]}x{w.shape[1]}"
        )
    else:
        z = ex.add("Logits", "z (given)", np.asarray(logits, dtype=np.float64))
        if z.ndim != 1 or z.size < 2:
            raise ValueError(f"logits must be a vector of at least 2 classes, got shape {z.shape}")
    y = parse_target(target, z.size)

    shifted = ex.add("Shift by the max", "z - max(z)", z - z.max(), f"max(z) = {z.max():.4f}")
    exps = ex.add("Exponentials", "exp(z - max z)", np.exp(shifted), "largest is exp(0) = 1")
    ex.add("Their sum", "S = sum exp(z - max z)", float(exps.sum()))
    p = ex.add("Softmax", "p = exp(z - max z) / S", softmax(z), "sums to 1")
    loss = float(cross_entropy(z[None], y[None]))
    ex.add("Cross-entropy loss", "L = -sum y log p", loss, f"y = {y.tolist()}")

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
        ("Loss", f"L = {loss:.4f}"),
        ("Gradient (p - y)", f"dL/dz = {fmt(grad)}"),
    ]
    if logits is None:
        grad_w = ex.add("Weight gradient", "dW = x^T (p - y)", np.outer(x, grad))
        update = ex.add("SGD update", f"-lr dW  (lr = {lr:g})", -lr * grad_w)
        new_w = w + update
        new_loss = float(cross_entropy((x @ new_w)[None], y[None]))
        ex.add("After the step", "L(W - lr dW)", new_loss, f"loss {loss:.4f} -> {new_loss:.4f}")
        ex.summary += [
            ("Weight gradient", f"dW = x^T (p - y) = {_format_matrix(grad_w)}"),
            ("Update", f"W <- W - {lr:g} dW; loss {loss:.4f} -> {new_loss:.4f}"),
        ]
    return ex


def _format_vector(v: np.ndarray, digits: int = 4) -> str:
    return "[" + ", ".join(f"{e:.{digits}f}" for e in np.ravel(v)) + "]"


def _format_matrix(m: np.ndarray, digits: int = 4) -> str:
    return "[" + ", ".join(_format_vector(row, digits) for row in m) + "]"


def _format_value(value: np.ndarray | float, digits: int = 4) -> list[str]:
    if np.ndim(value) == 0:
        return [f"{float(value):.{digits}f}"]
    value = np.atleast_2d(value)
    width = max(len(f"{e:.{digits}f}") for e in value.ravel())
    return ["[" + "  ".join(f"{e:>{width}.{digits}f}" for e in row) + "]" for row in value]


def render(ex: Explanation, color: bool = False) -> str:
    """The explanation as aligned text; ``color`` adds ANSI bold/colour to headings and results."""

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color else text

    lines = []
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
