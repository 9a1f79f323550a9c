"""What every HTML page test checks, and small runs and models to make pages from.

The page is read with the standard library's HTML parser: tags must nest and close, the
page must fetch nothing and hold no script.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
from PIL import Image

from glassnet.model_file import save_model
from glassnet.nn import Conv2d, Flatten, Linear, ReLU, Sequential

VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base"}
SVG_EMPTY = {"rect", "line", "circle", "polyline", "path"}  # may close as <rect .../> too
HOSTILE = "<img src=x onerror=alert(1)>"  # a class name a user's folder may carry
NUMBER = re.compile(r"[-\u2212]?\d+(?:\.\d+)?(?:e[-+]\d+)?")


class Page(HTMLParser):
    """A parsed page: its text chunks, tags, attributes and any nesting error."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.chunks: list[tuple[tuple[str, ...], str]] = []  # (open tags, text)
        self.feed(source)
        self.close()
        if self.stack:
            self.errors.append(f"never closed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        if data.strip():
            self.chunks.append((tuple(self.stack), data))

    def text(self, *, skip: tuple[str, ...] = ("style", "title")) -> str:
        return " ".join(t for stack, t in self.chunks if not set(stack) & set(skip))

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)


def check_page(source: str) -> Page:
    """Parse ``source`` and assert the rules every page keeps; the parsed page."""
    page = Page(source)
    assert page.errors == []
    assert source.startswith("<!DOCTYPE html>")
    outside_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", source)
    assert "http" not in outside_images and "//" not in outside_images  # nothing is fetched
    assert page.count("script") == 0 and page.count("link") == 0 and page.count("iframe") == 0
    for name, attrs in page.tags:
        assert not any(key.startswith("on") for key in attrs), (name, attrs)
        if name == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    return page


def numbers(text: str) -> list[str]:
    return [n.replace("\u2212", "-") for n in NUMBER.findall(text)]


def tiny_convnet(classes: int = 3, rng_seed: int = 0) -> Sequential:
    rng = np.random.default_rng(rng_seed)
    return Sequential(
        Conv2d(1, 4, 3, rng=rng), ReLU(), Flatten(), Linear(4 * 6 * 6, classes, rng=rng)
    )


def model_file(tmp_path, classes: list[str]):
    """A saved tiny convnet for 8x8 grey images and a PNG image to explain with it."""
    path = tmp_path / "model.safetensors"
    save_model(tiny_convnet(len(classes)), path, input_shape=(1, 8, 8), classes=classes)
    image = tmp_path / "image.png"
    pixels = (np.random.default_rng(1).random((8, 8)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(image)
    return path, image


def image_folder(root, classes: list[str], per_class: int = 4) -> None:
    """train/ and test/ folders of 8x8 PNGs, a folder per class, each class its own mean."""
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                level = 40 + 80 * c
                pixels = np.clip(level + rng.normal(0, 30, (8, 8)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
