"""The three pages in a real browser: headless Chromium lays out their MathML and draws them.

A test copy of each page gets a small script (never in the pages themselves) that writes the
boxes of its MathML fractions into the DOM; ``--dump-dom`` then shows whether the browser
laid each numerator above its denominator. A screenshot checks the page is not blank.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from glassnet import fit
from glassnet.data import ImageFolder
from glassnet.explain import worked_example
from glassnet.html import explain_model, explain_page, run_report
from tests.test_html_support import image_folder, tiny_convnet

CHROMIUM = next(
    (p for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser"),
                 shutil.which("google-chrome")) if p and os.path.exists(p)),
    None,
)  # fmt: skip
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)"
)

MEASURE = """<script>
const boxes = Array.from(document.querySelectorAll("mfrac")).map(f => {
  const [top, bottom] = Array.from(f.children).map(c => c.getBoundingClientRect());
  return [top.bottom, bottom.top, f.getBoundingClientRect().height];
});
const maths = Array.from(document.querySelectorAll("math")).map(m => {
  const r = m.getBoundingClientRect(); return [r.width, r.height];
});
document.body.setAttribute("data-layout", JSON.stringify({boxes, maths}));
</script>"""


def chromium(tmp_path, *arguments: str) -> str:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2000", *arguments,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def pages(tmp_path) -> dict[str, str]:
    data = tmp_path / "data"
    image_folder(data, ["a", "b", "c"])
    x = np.random.default_rng(0).random((1, 8, 8), dtype=np.float32)
    out = tmp_path / "run"
    train_set = ImageFolder(data / "train", image_size=(8, 8), channels=1)
    fit(tiny_convnet(), train_set, epochs=2, out_dir=out, config={"data": str(data)}, verbose=0)
    return {
        "explain": explain_page(worked_example()),
        "model": explain_model(tiny_convnet(), x, ["a", "b", "c"]).html(),
        "report": run_report(out).html(),
    }


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("browser")
    found = {}
    for name, source in pages(tmp_path).items():
        page = tmp_path / f"{name}.html"
        page.write_text(source, encoding="utf-8")
        measured = tmp_path / f"{name}.measured.html"
        measured.write_text(source.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
        dom = chromium(tmp_path, "--dump-dom", measured.as_uri())
        layout = json.loads(re.search(r'data-layout="([^"]*)"', dom)[1].replace("&quot;", '"'))
        shot = tmp_path / f"{name}.png"
        chromium(tmp_path, f"--screenshot={shot}", "--window-size=900,1400", page.as_uri())
        found[name] = (layout, np.asarray(Image.open(shot).convert("RGB")))
    return found


@pytest.mark.parametrize("name", ["explain", "model", "report"])
def test_the_page_is_drawn_not_blank(rendered, name):
    _, pixels = rendered[name]
    assert pixels.shape[:2] == (1400, 900)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 20 and pixels.std() > 10  # text, pictures and colours, not one flat fill


def test_the_browser_lays_out_the_mathml(rendered):
    layout, _ = rendered["explain"]
    assert len(layout["maths"]) > 25 and len(layout["boxes"]) > 10
    assert all(width > 0 and height > 0 for width, height in layout["maths"])
    for numerator_bottom, denominator_top, height in layout["boxes"]:
        assert numerator_bottom <= denominator_top + 0.5  # stacked, not inline text
        assert height > 20  # two lines high
