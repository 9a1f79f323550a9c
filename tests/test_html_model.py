"""A model's page (glassnet explain CHECKPOINT IMAGE --html), record_pass, _repr_html_."""

from __future__ import annotations

import numpy as np
import pytest

from glassnet.cli import main
from glassnet.html import explain_model, summary_table
from glassnet.inspect import record_pass
from glassnet.nn import Flatten, Linear, ReLU, Sequential
from tests.test_html_support import HOSTILE, check_page, model_file, tiny_convnet


def test_model_page_has_feature_maps_softmax_bars_and_a_saliency_map(tmp_path, capsys):
    path, image = model_file(tmp_path, ["cat", HOSTILE, "dog"])
    out = tmp_path / "model.html"
    assert main(["explain", str(path), str(image), "--html", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    source = out.read_text(encoding="utf-8")
    page = check_page(source)
    assert "&lt;img src=x onerror=alert(1)&gt;" in source and HOSTILE not in source
    assert "Conv2d: first 4 of 4 channels" in page.text()
    assert page.count("img") == 1 + 4 + 3  # the input, 4 feature maps, the saliency row
    assert page.count("svg") == 2  # softmax bars; p, y and p - y
    for shape in ("(1, 8, 8)", "(4, 6, 6)", "(144)", "(3)"):
        assert shape in page.text()
    assert len(source.encode()) < 300_000


def test_the_class_option_chooses_the_differentiated_class(tmp_path, capsys):
    path, image = model_file(tmp_path, ["a", "b", "c"])
    out = tmp_path / "model.html"
    assert main(["explain", str(path), str(image), "--class", "2", "--html", str(out)]) == 0
    assert "differentiates the loss of class <b>c</b>" in out.read_text()
    with pytest.raises(SystemExit) as info:
        main(["explain", str(path), str(image), "--class", "3", "--html", str(out)])
    assert info.value.code == 2 and "target=3" in capsys.readouterr().err


def test_record_pass_input_gradient_matches_central_differences():
    model = tiny_convnet().to(np.float64)
    x = np.random.default_rng(3).random((1, 1, 8, 8))
    record = record_pass(model, x, target=1)
    np.testing.assert_allclose(record.grad_logits, record.probs - np.eye(3)[1], atol=1e-12)

    def loss(x):
        logits = model(x)[0]
        return -(logits[1] - logits.max() - np.log(np.exp(logits - logits.max()).sum()))

    for index in [(0, 0, 0, 0), (0, 0, 3, 4), (0, 0, 7, 7)]:
        step = np.zeros_like(x)
        step[index] = 1e-6
        numeric = (loss(x + step) - loss(x - step)) / 2e-6
        assert record.grad_x[index] == pytest.approx(numeric, abs=1e-7)
    assert [layer.layer for layer in record.layers] == [
        "0 Conv2d",
        "1 ReLU",
        "2 Flatten",
        "3 Linear",
    ]
    assert record.layers[0].grad_norms["weight"] > 0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # left zeroed


def test_a_model_of_feature_vectors_gets_a_page_without_images():
    rng = np.random.default_rng(0)
    model = Sequential(Linear(5, 4, rng=rng), ReLU(), Linear(4, 2, rng=rng))
    explained = explain_model(model, np.ones(5, dtype=np.float32), ["no", "yes"])
    page = check_page(explained.html())
    assert "not an image" in page.text() and page.count("img") == 0
    assert explained._repr_html_().startswith("<h1>")


def test_bad_arguments_name_themselves():
    with pytest.raises(TypeError, match="model must be a glassnet Module"):
        explain_model("not a model", np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="classes names 2 classes"):
        explain_model(tiny_convnet(), np.zeros((1, 8, 8), np.float32), ["a", "b"])
    with pytest.raises(ValueError, match="must be one sample"):
        record_pass(tiny_convnet(), np.zeros((8, 8)))


def test_models_show_their_summary_table_in_notebooks():
    model = Sequential(Flatten(), Linear(64, 3))
    body = model._repr_html_()
    assert body.startswith("<table>") and "1 Linear" in body and "195 parameters" in body
    with_shapes = summary_table(model, (1, 8, 8))
    assert "(N, 64)" in with_shapes and "(N, 3)" in with_shapes
