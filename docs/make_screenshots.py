"""Regenerate docs/images/{explain,model,report}.png: the three HTML pages in headless Chromium.

    python docs/make_screenshots.py [--chromium /usr/bin/chromium] [--keep DIR]

Trains a small Fashion-MNIST run (2 epochs on 6,000 images; about a minute) for the model
page and the report, then screenshots each page and shrinks it to a small PNG.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from glassnet.data import load
from glassnet.explain import worked_example
from glassnet.html import explain_model, explain_page, write_html, write_report
from glassnet.model_file import read_model_file
from glassnet.train import TrainConfig, train

IMAGES = Path(__file__).resolve().parent / "images"


def make_pages(work: Path) -> dict[str, Path]:
    """The seed's explain page, a Fashion-MNIST model page and its run report, in ``work``."""
    x, y = load("fashion-mnist", "train")
    x_test, y_test = load("fashion-mnist", "test")
    run = work / "run"
    config = TrainConfig(dataset="fashion-mnist", epochs=2)
    train(config, run, data=(x[:6000], y[:6000], x_test, y_test), overwrite=True, quiet=True)
    opened = read_model_file(run / "checkpoint.safetensors")
    title = "glassnet explain: a Fashion-MNIST convnet on test image 0"
    pages = {"explain": work / "explain.html", "model": work / "model.html"}
    write_html(pages["explain"], explain_page(worked_example()))
    explain_model(opened.model, x_test[0], opened.classes, title=title).save(pages["model"])
    pages["report"] = write_report(run)
    return pages


def screenshot(chromium: str, page: Path, out: Path, height: int, width: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--screenshot={out}", f"--window-size={width},{height}",
             page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    image = Image.open(out).convert("RGB")
    image = image.resize((width * 7 // 10, height * 7 // 10), Image.LANCZOS)
    image.quantize(colors=64).save(out, optimize=True)  # a few tens of KB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--keep", type=Path, help="keep the pages and the run in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        pages = make_pages(work)
        IMAGES.mkdir(exist_ok=True)
        for name, height in (("explain", 1300), ("model", 2200), ("report", 1900)):
            out = IMAGES / f"{name}.png"
            screenshot(args.chromium, pages[name], out, height)
            size = pages[name].stat().st_size / 1024
            print(f"{out}: page {size:.0f} KB, screenshot {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
