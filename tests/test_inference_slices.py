"""Inference in slices (Sequential): a big eval-mode batch without gradients runs a slice at a
time through samplewise layers; the numbers are those of the whole batch (up to the rounding
of matrix products of other sizes), and nothing else is ever sliced."""

import json
from pathlib import Path

import numpy as np
import pytest

from glassnet import nn, no_grad
from glassnet.model_file import build
from glassnet.nn import module as module_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Sizes(nn.Module):
    """Records the batch sizes it sees; samplewise (the identity)."""

    samplewise = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(len(x))
        return x

    def backward(self, grad_out):
        return grad_out


class CenterBatch(nn.Module):
    """Subtracts the batch mean: each output depends on the whole batch."""

    def forward(self, x):
        return x - x.mean(axis=0)

    def backward(self, grad_out):
        return grad_out - grad_out.mean(axis=0)


def _models():
    rng = np.random.default_rng(0)
    bn = build(json.loads((EXAMPLES / "bn_convnet.json").read_text()), rng=rng)
    return {"convnet": nn.convnet(rng=rng), "bn_convnet": bn}


@pytest.mark.parametrize("name", ["convnet", "bn_convnet"])
def test_sliced_inference_gives_the_whole_batch_numbers(name):
    model = _models()[name].eval()
    x = np.random.default_rng(1).random((700, 1, 28, 28), dtype=np.float32)
    whole = model(x)  # gradients on: never sliced
    probe = Sizes()
    model.append(probe)
    with no_grad():
        sliced = model(x)
    assert len(probe.seen) > 2, "a batch of 700 should run in slices"
    assert sum(probe.seen) == 700
    assert sliced.shape == whole.shape and sliced.dtype == whole.dtype
    np.testing.assert_allclose(sliced, whole, rtol=1e-5, atol=1e-6)


def test_slices_are_sized_from_the_probe_activation(monkeypatch):
    monkeypatch.setattr(module_file, "SLICE_BYTES", 64 * 10 * 4)  # 64 samples of 10 floats
    probe = Sizes()
    model = nn.Sequential(nn.Linear(5, 10), nn.ReLU(), probe).eval()
    with no_grad():
        model(np.ones((300, 5), np.float32))
    assert probe.seen == [16, 64, 64, 64, 64, 28]


@pytest.mark.parametrize("mode", ["training", "grad_enabled", "small_batch", "not_samplewise"])
def test_nothing_else_is_sliced(mode):
    probe = Sizes()
    layers = [nn.Linear(3, 4), probe]
    if mode == "not_samplewise":
        layers.insert(1, CenterBatch())
    model = nn.Sequential(*layers)
    model.train(mode == "training")
    x = np.random.default_rng(0).random((16 if mode == "small_batch" else 500, 3))
    if mode == "grad_enabled":
        out = model(x)
    else:
        with no_grad():
            out = model(x)
    assert probe.seen == [len(x)]
    if mode == "not_samplewise":  # the batch mean is the whole batch's
        np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)


def test_which_layers_are_samplewise():
    assert nn.convnet().samplewise
    assert nn.BatchNorm2d(3).samplewise
    assert not nn.BatchNorm2d(3, track_running_stats=False).samplewise  # batch statistics
    assert not nn.Sequential(nn.Linear(2, 2), CenterBatch()).samplewise
    assert not nn.Softmax(dim=0).samplewise
