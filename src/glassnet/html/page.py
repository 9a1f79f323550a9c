"""Small builders for self-contained HTML pages: escaping, MathML, inline SVG, PNG data URIs.

Every builder returns a string of markup. Text that may come from a user's files (class
names, paths, config values) goes through :func:`text`, which escapes it; numbers are
formatted by the caller. Pages hold no script and fetch nothing: pictures are inline SVG or
``data:image/png;base64`` URIs, formulas are MathML, which browsers lay out natively.
Shapes: a matrix is (R, K) rows by columns; an image is (H, W) or (C, H, W).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glassnet.checkpoint import atomic_write

# The two paths of the worked example, and every other picture's series, keep these colours.
SOFTMAX_COLOR = "#2563eb"  # the softmax path: p, its Jacobian
GRADIENT_COLOR = "#ea580c"  # the cross-entropy gradient path: p - y, dW, the update
TARGET_COLOR = "#16a34a"  # y, the true class
GREY = "#6b7280"

CSS = f"""
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto;
  padding: 0 1rem; color: #111827; line-height: 1.4; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.2rem; margin-top: 1.6rem; }}
section.step {{ border-left: 4px solid {GREY}; padding: 0.2rem 0 0.2rem 1rem; margin: 1rem 0; }}
section.softmax {{ border-left-color: {SOFTMAX_COLOR}; }}
section.gradient {{ border-left-color: {GRADIENT_COLOR}; }}
.softmax-text {{ color: {SOFTMAX_COLOR}; }} .gradient-text {{ color: {GRADIENT_COLOR}; }}
.note {{ color: #4b5563; font-size: 0.92rem; }}
math {{ font-size: 1.1rem; }} div.eq {{ margin: 0.5rem 0; overflow-x: auto; }}
table {{ border-collapse: collapse; margin: 0.5rem 0; }}
td, th {{ border: 1px solid #d1d5db; padding: 0.15rem 0.5rem; text-align: right; }}
th {{ background: #f3f4f6; }} td.name, th.name {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.3rem 0.6rem 0.3rem 0; vertical-align: top; }}
figcaption {{ font-size: 0.8rem; color: #4b5563; text-align: center; max-width: 12rem; }}
img.pixels {{ image-rendering: pixelated; border: 1px solid #d1d5db; }}
svg text {{ font-family: system-ui, sans-serif; }}
"""


def text(value: object) -> str:
    """``value`` as HTML text: ``<``, ``>``, ``&`` and quotes escaped."""
    return html.escape(str(value), quote=True)


def document(title: str, body: str) -> str:
    """A whole page: UTF-8, the shared style sheet, no script, nothing fetched."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{text(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def tag(name: str, content: str = "", **attributes: object) -> str:
    """``<name attributes>content</name>``; attribute values are escaped, ``class_`` is class."""
    attrs = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{text(value)}"'
        for key, value in attributes.items()
        if value is not None
    )
    return f"<{name}{attrs}>{content}</{name}>"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], names: int = 1) -> str:
    """A table; the first ``names`` columns are left-aligned text, every cell is escaped."""

    def cells(row, kind):
        return "".join(
            tag(kind, text(cell), class_="name" if i < names else None)
            for i, cell in enumerate(row)
        )

    head = tag("tr", cells(header, "th"))
    return tag("table", head + "".join(tag("tr", cells(row, "td")) for row in rows))


def write_html(path: str | os.PathLike, page: str) -> Path:
    """Write ``page`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    path = Path(path)
    atomic_write(path, page.encode("utf-8"))
    return path


# --- MathML -------------------------------------------------------------------------------


def mi(name: str, color: str | None = None) -> str:
    return tag("mi", text(name), style=None if color is None else f"color:{color}")


def mn(number: str) -> str:
    """A number; its minus sign is the typographic one and stays with it, as printed."""
    return f"<mn>{text(number.replace('-', chr(0x2212), 1))}</mn>"


def mo(operator: str) -> str:
    return f"<mo>{text(operator)}</mo>"


def mrow(*parts: str) -> str:
    return "<mrow>" + "".join(parts) + "</mrow>"


def frac(numerator: str, denominator: str) -> str:
    return f"<mfrac>{numerator}{denominator}</mfrac>"


def sup(base: str, exponent: str) -> str:
    return f"<msup>{base}{exponent}</msup>"


def sub(base: str, index: str) -> str:
    return f"<msub>{base}{index}</msub>"


def fenced(content: str) -> str:
    return mrow(mo("["), content, mo("]"))


def vector(entries: Sequence[str]) -> str:
    """A row vector ``[a, b, c]`` of MathML entries."""
    return fenced(mo(",").join(entries))


def matrix(rows: Sequence[Sequence[str]]) -> str:
    """A bracketed matrix of MathML entries."""
    body = "".join(tag("mtr", "".join(tag("mtd", e) for e in row)) for row in rows)
    return fenced(tag("mtable", body))


def equation(*parts: str, label: str | None = None) -> str:
    """A displayed formula; ``label`` is its plain-text reading for screen readers."""
    return tag("div", tag("math", "".join(parts), display="block", alttext=label), class_="eq")


# --- SVG ----------------------------------------------------------------------------------


def _svg(width: float, height: float, body: str, label: str) -> str:
    return (
        f'<svg width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{text(label)}">'
        f"<title>{text(label)}</title>{body}</svg>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "") -> str:
    tip = f"<title>{text(title)}</title>" if title else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" '
        f'fill="{fill}">{tip}</rect>'
    )


def _label(x: float, y: float, content: str, anchor: str = "middle", size: int = 11) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}">'
        f"{text(content)}</text>"
    )


def bar_chart(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    labels: Sequence[Sequence[str]] | None = None,
    title: str = "bar chart",
    bar_width: int = 18,
) -> str:
    """Grouped bars: one group per category, one bar per series ``(name, values, colour)``.

    Values may be negative (bars hang below the zero line). ``labels[s][c]`` is printed on
    series ``s``'s bar of category ``c``; by default nothing is.
    """
    values = np.array([list(v) for _, v, _ in series], dtype=np.float64)
    top, bottom = max(values.max(initial=0.0), 0.0), min(values.min(initial=0.0), 0.0)
    span = (top - bottom) or 1.0
    plot_h, pad, legend_h = 120.0, 16.0, 18.0
    longest = max((len(str(c)) for c in categories), default=1)
    group_w = max(bar_width * len(series) + 14, 7 * longest + 6)  # room for the names
    width = max(group_w * len(categories) + 2 * pad, 60 + 90 * len(series))
    height = legend_h + plot_h + 2 * pad + 16
    zero = legend_h + pad + plot_h * top / span
    parts = []
    for s, (name, _, color) in enumerate(series):
        parts.append(_rect(pad + 90 * s, 4, 10, 10, color))
        parts.append(_label(pad + 90 * s + 14, 13, name, anchor="start"))
    for c, category in enumerate(categories):
        x0 = pad + group_w * c + (group_w - bar_width * len(series)) / 2
        for s, (name, _, color) in enumerate(series):
            value = values[s, c]
            h = plot_h * abs(value) / span
            y = zero - h if value >= 0 else zero
            parts.append(_rect(x0 + bar_width * s, y, bar_width - 2, h, color, name))
            if labels is not None:
                label_y = y - 3 if value >= 0 else y + h + 11
                parts.append(_label(x0 + bar_width * (s + 0.5), label_y, labels[s][c], size=9))
        parts.append(_label(pad + group_w * (c + 0.5), height - 4, category))
    parts.append(
        f'<line x1="{pad}" y1="{zero:.1f}" x2="{width - pad:.1f}" y2="{zero:.1f}" stroke="{GREY}"/>'
    )
    return _svg(width, height, "".join(parts), title)


def heat_color(value: float, limit: float) -> str:
    """Blue for negative, white for zero, orange for positive, scaled by ``limit``."""
    t = 0.0 if limit == 0 else max(-1.0, min(1.0, value / limit))
    end = (37, 99, 235) if t < 0 else (234, 88, 12)
    r, g, b = (round(255 + (e - 255) * abs(t)) for e in end)
    return f"#{r:02x}{g:02x}{b:02x}"


def heat_map(
    cells: np.ndarray,
    labels: Sequence[Sequence[str]],
    row_names: Sequence[str],
    column_names: Sequence[str],
    title: str = "heat map",
    cell: int = 54,
) -> str:
    """A matrix (R, K) as coloured cells, each printed with ``labels[r][k]``."""
    cells = np.asarray(cells, dtype=np.float64)
    limit = float(np.abs(cells).max(initial=0.0))
    left, top = 34.0, 20.0
    rows, columns = cells.shape
    parts = [_label(left + cell * (k + 0.5), 14, name) for k, name in enumerate(column_names)]
    for r in range(rows):
        y = top + cell * r
        parts.append(_label(left - 4, y + cell / 2 + 4, row_names[r], anchor="end"))
        for k in range(columns):
            x = left + cell * k
            parts.append(_rect(x, y, cell - 2, cell - 2, heat_color(cells[r, k], limit)))
            parts.append(_label(x + cell / 2 - 1, y + cell / 2 + 3, labels[r][k], size=10))
    return _svg(left + cell * columns + 4, top + cell * rows + 4, "".join(parts), title)


def line_chart(
    xs: Sequence[float],
    series: Sequence[tuple[str, Sequence[float | None], str]],
    title: str,
    width: int = 360,
    height: int = 200,
) -> str:
    """Lines through ``(xs[i], values[i])`` per series; None values leave gaps."""
    finite = [v for _, values, _ in series for v in values if v is not None and np.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    high = high if high > low else low + 1.0
    left, right, top, bottom = 44.0, 10.0, 24.0, 26.0
    x_low, x_high = min(xs, default=0), max(xs, default=1)
    x_span = (x_high - x_low) or 1

    def point(x, v):
        px = left + (width - left - right) * (x - x_low) / x_span
        py = top + (height - top - bottom) * (high - v) / (high - low)
        return f"{px:.1f},{py:.1f}"

    parts = [
        _label(left - 4, top + 4, f"{high:.3g}", anchor="end", size=10),
        _label(left - 4, height - bottom + 4, f"{low:.3g}", anchor="end", size=10),
        _label(width / 2, height - 6, "epoch", size=10),
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" fill="none" stroke="#d1d5db"/>',
    ]
    for s, (name, values, color) in enumerate(series):
        parts.append(_rect(left + 100 * s, 6, 10, 10, color))
        parts.append(_label(left + 100 * s + 14, 15, name, anchor="start"))
        points = [point(x, v) for x, v in zip(xs, values, strict=True) if _drawable(v)]
        if points:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" '
                'stroke-width="2"/>'
            )
            parts += [_circle(p, color) for p in points]
    return _svg(width, height, "".join(parts), title)


def _drawable(value: float | None) -> bool:
    return value is not None and bool(np.isfinite(value))


def _circle(point: str, color: str) -> str:
    x, y = point.split(",")
    return f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>'


# --- images -------------------------------------------------------------------------------


def png_uri(image: np.ndarray, signed: bool = False) -> str:
    """A grayscale (H, W) or colour (3, H, W) array as a ``data:image/png`` URI.

    The image is scaled to its own min..max (``signed``: blue below zero, orange above).
    """
    from PIL import Image

    image = np.asarray(image, dtype=np.float64)
    image = np.where(np.isfinite(image), image, 0.0)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if signed:
        # the 99th percentile, not the max: one extreme pixel would wash out the rest
        limit = float(np.percentile(np.abs(image), 99)) if image.size else 0.0
        limit = limit or float(np.abs(image).max(initial=0.0)) or 1.0
        t = np.clip(image / limit, -1.0, 1.0)[..., None]
        blue, orange = np.array([37, 99, 235]), np.array([234, 88, 12])
        rgb = 255 + (np.where(t < 0, blue, orange) - 255) * np.abs(t)
        picture = Image.fromarray(rgb.round().astype(np.uint8), "RGB")
    else:
        if image.ndim == 3:
            image = np.moveaxis(image, 0, -1)
        low, high = float(image.min(initial=0.0)), float(image.max(initial=0.0))
        scaled = (image - low) / ((high - low) or 1.0) * 255
        picture = Image.fromarray(scaled.round().astype(np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def picture(
    image: np.ndarray, caption: str | Sequence[str], size: int = 84, signed: bool = False
) -> str:
    """A captioned image shown ``size`` pixels wide, its pixels kept sharp.

    ``caption`` is a line of text or a list of lines; the first is also the image's alt text.
    """
    lines = [caption] if isinstance(caption, str) else list(caption)
    height = np.shape(image)[-2] if np.ndim(image) >= 2 else 1
    width = np.shape(image)[-1]
    shown = round(size * height / max(width, 1))
    img = (
        f'<img src="{png_uri(image, signed)}" alt="{text(lines[0])}" width="{size}" '
        f'height="{shown}" class="pixels">'
    )
    return tag("figure", img + tag("figcaption", "<br>".join(text(line) for line in lines)))
