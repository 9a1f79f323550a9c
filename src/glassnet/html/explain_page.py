"""The worked example (:func:`glassnet.explain.worked_example`) as one HTML page.

Each step is a section: its formula in MathML with the symbols, then the same formula with
the example's numbers put in, then a picture where one helps. Numbers are the
:class:`~glassnet.explain.Explanation`'s own values, printed as the terminal prints them
(inputs exactly, everything else to 4 decimals), so the page, ``--json`` and the terminal
always agree. Blue marks the softmax path (p and its Jacobian), orange the cross-entropy
gradient path (p - y, dW, the update).
Shapes: x (D,), W (D, C), z, p, y (C,), J (C, C).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from glassnet.explain import Explanation, Step, format_number
from glassnet.html.page import (
    GRADIENT_COLOR,
    SOFTMAX_COLOR,
    TARGET_COLOR,
    bar_chart,
    document,
    equation,
    frac,
    heat_map,
    matrix,
    mi,
    mn,
    mo,
    mrow,
    sub,
    sup,
    table,
    tag,
    text,
    vector,
)

SOFTMAX_PATH = {
    "Shift by the max",
    "Exponentials",
    "Their sum",
    "Softmax",
    "Jacobian route, step 1",
    "Jacobian route, step 2",
    "Jacobian route, result",
}
GRADIENT_PATH = {"Fused gradient", "Weight gradient", "SGD update", "After the step"}
EXPANDED_PRODUCT_LIMIT = 12  # write out x . W term by term up to D * C entries


def explain_page(ex: Explanation, title: str = "glassnet explain") -> str:
    """The whole page for ``ex``: inputs, every step with formula and numbers, the summary."""
    return document(title, explain_body(ex, title))


def explain_body(ex: Explanation, title: str = "glassnet explain") -> str:
    """The page's content without the document around it (what a notebook shows)."""
    parts = [tag("h1", text(title)), _legend(), tag("h2", "Inputs"), _inputs(ex)]
    values = {step.title: step.value for step in ex.steps}
    values |= {f"input {item.title}": item.value for item in ex.inputs}
    for number, step in enumerate(ex.steps, start=1):
        parts.append(_section(number, step, values))
    parts.append(tag("h2", "Summary"))
    parts.append(table(("Step", "Result"), ex.summary))
    return "\n".join(parts)


def _legend() -> str:
    return tag(
        "p",
        '<span class="softmax-text">\u25a0 softmax path</span> (p, its Jacobian) \u00a0 '
        '<span class="gradient-text">\u25a0 cross-entropy gradient path</span> '
        "(p \u2212 y, dW, the update)",
        class_="note",
    )


def num(value: float) -> str:
    """A computed value as MathML, to 4 decimals like the terminal."""
    return mn(format_number(value))


def exact(value: float) -> str:
    """An input as MathML, in its shortest exact form."""
    return mn(format_number(value, None))


def _array(value: np.ndarray | float, entry: Callable[[float], str] = num) -> str:
    if np.ndim(value) == 0:
        return entry(float(value))
    if np.ndim(value) == 1:
        return vector([entry(v) for v in value])
    return matrix([[entry(v) for v in row] for row in value])


def _inputs(ex: Explanation) -> str:
    rows = []
    for item in ex.inputs:
        formula = equation(_symbol(item.title), mo("="), _array(item.value, exact))
        rows.append(tag("div", formula + tag("p", text(item.formula), class_="note")))
    return "\n".join(rows)


def _symbol(name: str) -> str:
    color = {"p": SOFTMAX_COLOR, "y": TARGET_COLOR}.get(name)
    return mi(name, color)


def _section(number: int, step: Step, values: dict) -> str:
    path = (
        "softmax"
        if step.title in SOFTMAX_PATH
        else "gradient"
        if step.title in GRADIENT_PATH
        else ""
    )
    builder = STEPS.get(step.title)
    formulas, figure = builder(values) if builder else (_generic(step), "")
    heading = tag("h2", text(f"{number}. {step.title}"))
    note = tag("p", text(step.note), class_="note") if step.note else ""
    return tag("section", heading + formulas + note + figure, class_=f"step {path}".strip())


def _generic(step: Step) -> str:
    return tag("p", tag("code", text(step.formula))) + equation(_array(step.value))


# --- one builder per step: (formulas, picture) ------------------------------------------------

D_L = frac(mrow(mi("\u2202"), mi("L")), mrow(mi("\u2202"), mi("z")))  # dL/dz
P, Y = mi("p", SOFTMAX_COLOR), mi("y", TARGET_COLOR)


def _logits(values: dict) -> tuple[str, str]:
    z = values["Logits"]
    if "input x" not in values:
        return equation(mi("z"), mo("="), _array(z), label="z given"), ""
    x, w = values["input x"], values["input W"]
    first = equation(
        sub(mi("z"), mi("j")), mo("="), mo("\u2211"), sub(mi("x"), mi("i")),
        sub(mi("W"), mi("ij")), label="z_j = sum_i x_i W_ij",
    )  # fmt: skip
    if w.size > EXPANDED_PRODUCT_LIMIT:
        return first + equation(mi("z"), mo("="), _array(z)), ""
    terms = [
        mrow(*_join([mrow(exact(x[i]), mo("\u00d7"), exact(w[i, j])) for i in range(len(x))], "+"))
        for j in range(w.shape[1])
    ]
    return first + equation(mi("z"), mo("="), vector(terms), mo("="), _array(z)), ""


def _join(parts: list[str], operator: str) -> list[str]:
    joined = []
    for part in parts:
        joined += [mo(operator), part] if joined else [part]
    return joined


def _shift(values: dict) -> tuple[str, str]:
    z = values["Logits"]
    symbols = equation(mi("z"), mo("\u2212"), mi("max"), mi("z"))
    numbers = equation(
        _array(z), mo("\u2212"), num(z.max()), mo("="), _array(values["Shift by the max"])
    )
    return symbols + numbers, ""


def _exponentials(values: dict) -> tuple[str, str]:
    shifted, exps = values["Shift by the max"], values["Exponentials"]
    powers = vector([sup(mi("e"), num(s)) for s in shifted])
    symbols = equation(sup(mi("e"), mrow(mi("z"), mo("\u2212"), mi("max"), mi("z"))))
    return symbols + equation(powers, mo("\u2248"), _array(exps)), ""


def _sum(values: dict) -> tuple[str, str]:
    exps, total = values["Exponentials"], values["Their sum"]
    symbols = equation(
        mi("S"), mo("="), mo("\u2211"), sub(mi("e"), mi("j")), label="S = sum of the exponentials"
    )
    return symbols + equation(
        mi("S"), mo("="), *_join([num(e) for e in exps], "+"), mo("="), num(total)
    ), ""


def _softmax(values: dict) -> tuple[str, str]:
    exps, total, p = values["Exponentials"], values["Their sum"], values["Softmax"]
    symbols = equation(
        P, mo("="), frac(sup(mi("e"), mrow(mi("z"), mo("\u2212"), mi("max"), mi("z"))), mi("S"))
    )
    fractions = vector([frac(num(e), num(total)) for e in exps])
    numbers = equation(P, mo("="), fractions, mo("="), _array(p))
    chart = _bars(values, [("p", p, SOFTMAX_COLOR)], "softmax probabilities p per class")
    return symbols + numbers, chart


def _loss(values: dict) -> tuple[str, str]:
    p, y, loss = values["Softmax"], values["input y"], values["Cross-entropy loss"]
    symbols = equation(
        mi("L"), mo("="), mo("\u2212"), mo("\u2211"), sub(Y, mi("j")), mi("log"), sub(P, mi("j"))
    )
    terms = [
        mrow(
            *([] if y[j] == 1 else [num(y[j]), mo("\u00d7")]),
            mi("log"),
            mrow(mo("("), num(p[j]), mo(")")),
        )
        for j in np.flatnonzero(y)
    ]
    inner = terms[0] if len(terms) == 1 else mrow(mo("("), *_join(terms, "+"), mo(")"))
    numbers = equation(mi("L"), mo("="), mo("\u2212"), inner, mo("="), num(loss))
    return symbols + numbers, ""


def _fused(values: dict) -> tuple[str, str]:
    p, y, grad = values["Softmax"], values["input y"], values["Fused gradient"]
    symbols = equation(D_L, mo("="), P, mo("\u2212"), Y, label="dL/dz = p - y")
    numbers = equation(D_L, mo("="), _array(p), mo("\u2212"), _array(y), mo("="), _array(grad))
    series = [("p", p, SOFTMAX_COLOR), ("y", y, TARGET_COLOR), ("p \u2212 y", grad, GRADIENT_COLOR)]
    return symbols + numbers, _bars(values, series, "p, y and p - y per class")


def _jacobian_1(values: dict) -> tuple[str, str]:
    p, y, dl_dp = values["Softmax"], values["input y"], values["Jacobian route, step 1"]
    dl = frac(mrow(mi("\u2202"), mi("L")), mrow(mi("\u2202"), P))
    symbols = equation(dl, mo("="), mo("\u2212"), frac(Y, P))
    ratios = vector([frac(_negated(y[j]), num(p[j])) for j in range(len(p))])
    return symbols + equation(dl, mo("="), ratios, mo("="), _array(dl_dp)), ""


def _negated(value: float) -> str:
    """-value written as minus and the value itself, the number the JSON holds."""
    return num(0.0) if value == 0 else mrow(mo("\u2212"), num(value))


def _jacobian_2(values: dict) -> tuple[str, str]:
    jac = values["Jacobian route, step 2"]
    symbols = equation(
        mi("J"), mo("="), mi("diag"), mrow(mo("("), P, mo(")")), mo("\u2212"), P, sup(P, mi("T")),
        mo(","), sub(mi("J"), mi("ij")), mo("="), sub(P, mi("i")),
        mrow(mo("("), sub(mi("\u03b4"), mi("ij")), mo("\u2212"), sub(P, mi("j")), mo(")")),
    )  # fmt: skip
    row_sums = jac.sum(axis=1)
    numbers = equation(mi("J"), mo("="), _array(jac))
    sums = equation(
        sub(mo("\u2211"), mi("j")), sub(mi("J"), mi("ij")), mo("="), _array(row_sums),
        label="every row of J sums to zero",
    )  # fmt: skip
    labels = [[format_number(v) for v in row] for row in jac]
    names = [f"class {i}" for i in range(len(jac))]
    with_sums = np.column_stack([jac, row_sums])
    picture = heat_map(
        with_sums,
        [[*row, format_number(s)] for row, s in zip(labels, row_sums, strict=True)],
        [str(i) for i in range(len(jac))],
        [*map(str, range(len(jac))), "row sum"],
        title="softmax Jacobian J; the last column, each row's sum, is zero",
        cell=58,
    )
    caption = tag(
        "p",
        "rows and columns: " + text(", ".join(names)) + "; last column: row sums",
        class_="note",
    )
    return symbols + numbers + sums, picture + caption


def _jacobian_result(values: dict) -> tuple[str, str]:
    dl_dp = frac(mrow(mi("\u2202"), mi("L")), mrow(mi("\u2202"), P))
    symbols = equation(D_L, mo("="), sup(mi("J"), mi("T")), dl_dp)
    return symbols + equation(D_L, mo("="), _array(values["Jacobian route, result"])), ""


def _weight_gradient(values: dict) -> tuple[str, str]:
    x, grad, grad_w = values["input x"], values["Fused gradient"], values["Weight gradient"]
    d_w = frac(mrow(mi("\u2202"), mi("L")), mrow(mi("\u2202"), mi("W")))
    symbols = equation(
        d_w, mo("="), sup(mi("x"), mi("T")), mrow(mo("("), P, mo("\u2212"), Y, mo(")"))
    )
    column = matrix([[exact(v)] for v in x])
    numbers = equation(d_w, mo("="), column, _array(grad), mo("="), _array(grad_w))
    return symbols + numbers, ""


def _update(values: dict) -> tuple[str, str]:
    lr, grad_w, update = values["input lr"], values["Weight gradient"], values["SGD update"]
    d_w = frac(mrow(mi("\u2202"), mi("L")), mrow(mi("\u2202"), mi("W")))
    symbols = equation(mi("\u0394W"), mo("="), mo("\u2212"), mi("lr"), d_w)
    numbers = equation(
        mi("\u0394W"),
        mo("="),
        mo("\u2212"),
        exact(lr),
        mo("\u00d7"),
        _array(grad_w),
        mo("="),
        _array(update),
    )
    return symbols + numbers, ""


def _after(values: dict) -> tuple[str, str]:
    before, after = values["Cross-entropy loss"], values["After the step"]
    symbols = equation(
        mi("L"), mrow(mo("("), mi("W"), mo("+"), mi("\u0394W"), mo(")")), mo("="), num(after)
    )
    chart = bar_chart(
        ["before", "after"],
        [("loss L", [before, after], GRADIENT_COLOR)],
        [[format_number(before), format_number(after)]],
        title="the loss before and after the step",
        bar_width=60,
    )
    return symbols, chart


def _bars(values: dict, series: list, title: str) -> str:
    classes = [f"class {j}" for j in range(len(values["Softmax"]))]
    labels = [[format_number(v) for v in s[1]] for s in series]
    return bar_chart(classes, series, labels, title=title, bar_width=44)


STEPS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "Logits": _logits,
    "Shift by the max": _shift,
    "Exponentials": _exponentials,
    "Their sum": _sum,
    "Softmax": _softmax,
    "Cross-entropy loss": _loss,
    "Fused gradient": _fused,
    "Jacobian route, step 1": _jacobian_1,
    "Jacobian route, step 2": _jacobian_2,
    "Jacobian route, result": _jacobian_result,
    "Weight gradient": _weight_gradient,
    "SGD update": _update,
    "After the step": _after,
}
