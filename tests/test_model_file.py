"""Model files: architecture + weights, rebuilt without the user's code, safely."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import glassnet
from glassnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from glassnet.cli import main
from glassnet.data import read_idx
from glassnet.model_file import architecture, build, read_model_file
from glassnet.nn import Conv2d, Linear, Module, ReLU, Sequential, convnet, register

REPO = Path(__file__).resolve().parents[1]

# A user's model, written as in the README: registered by name so files can rebuild it.
USER_MODEL = """
import numpy as np
import glassnet
from glassnet.nn import Conv2d, Flatten, Linear, Module, ReLU


@glassnet.nn.register
class TinyResNet(Module):
    def __init__(self, channels=4, num_classes=3):
        super().__init__()
        self.stem = Conv2d(1, channels, 3, padding=1)
        self.relu = ReLU()
        self.conv = Conv2d(channels, channels, 3, padding=1)
        self.flatten = Flatten()
        self.head = Linear(channels * 8 * 8, num_classes)

    def forward(self, x):
        self._h = self.relu(self.stem(x))
        return self.head(self.flatten(self._h + self.conv(self._h)))

    def backward(self, grad_out):
        grad = self.flatten.backward(self.head.backward(grad_out))
        grad = grad + self.conv.backward(grad)  # the skip adds its gradient
        return self.stem.backward(self.relu.backward(grad))
"""
namespace: dict = {}
exec(USER_MODEL, namespace)
TinyResNet = namespace["TinyResNet"]


def _images(n=5, shape=(1, 8, 8), seed=1):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def test_the_convnet_round_trips_in_a_new_process(tmp_path):
    model = convnet(rng=np.random.default_rng(0)).eval()
    path = tmp_path / "convnet.safetensors"
    glassnet.save_model(model, path, input_shape=(1, 28, 28), classes=list("abcdefghij"))
    x = _images(4, (1, 28, 28))
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, glassnet; m = glassnet.load_model(sys.argv[1]); "
        "np.save(sys.argv[2], m(np.load(sys.argv[3])))"
    )
    out = tmp_path / "logits.npy"
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(out), str(tmp_path / "x.npy")], check=True
    )
    np.testing.assert_array_equal(np.load(out), model(x))
    opened = read_model_file(path)
    assert opened.input_shape == (1, 28, 28) and opened.classes == list("abcdefghij")


def test_a_registered_user_model_round_trips_and_float64_stays_float64(tmp_path):
    model = TinyResNet(channels=2, num_classes=5).to(np.float64)
    path = tmp_path / "user.safetensors"
    glassnet.save_model(model, path, input_shape=(1, 8, 8))
    loaded = glassnet.load_model(path)
    assert isinstance(loaded, TinyResNet) and not loaded.training
    assert loaded.head.weight.data.dtype == np.float64
    x = _images().astype(np.float64)
    np.testing.assert_array_equal(loaded(x), model(x))


def test_an_unregistered_class_is_named_when_loading(tmp_path):
    class Unlisted(Module):
        def __init__(self):
            super().__init__()
            self.fc = Linear(2, 2)

    path = tmp_path / "m.safetensors"
    glassnet.save_model(Sequential(Unlisted(), ReLU()), path)
    with pytest.raises(CheckpointError, match=r"unknown module class 'Unlisted'.*register"):
        glassnet.load_model(path)


def test_an_unregistered_class_never_rebuilds_as_a_same_named_glassnet_class(tmp_path):
    class Linear(Module):  # shadows glassnet.nn.Linear on purpose
        pass

    spec = architecture(Linear())
    assert spec["class"].endswith("Linear") and spec["class"] != "Linear"


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):

        @register(name="Conv2d")
        class Mine(Module):
            pass


def test_arguments_that_cannot_be_stored_are_named_at_save(tmp_path):
    class Holder(Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

    with pytest.raises(ValueError, match=r"argument 0: a function cannot be stored"):
        glassnet.save_model(Holder(lambda x: x), tmp_path / "m.safetensors")


def _rewrite(path: Path, edit) -> None:
    """Edit a file's metadata and re-sign it, as someone who knows the format could."""
    arrays, metadata = load_checkpoint(path)
    edit(metadata)
    save_checkpoint(path, arrays, metadata)


def test_edited_json_fails_the_integrity_check(tmp_path):
    path = tmp_path / "m.safetensors"
    glassnet.save_model(convnet(), path)
    payload = path.read_bytes()
    edited = payload.replace(b"Dropout", b"Flatten", 1)  # same length: the header still parses
    assert edited != payload
    path.write_bytes(edited)
    with pytest.raises(CheckpointError, match="integrity check"):
        glassnet.load_model(path)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m["architecture"].update({"class": "os.system"}), "unknown module class"),
        (lambda m: m["architecture"].update({"args": "rm -rf"}), "'args' a list"),
        (lambda m: m["architecture"].update({"code": "x"}), "must be an object with keys"),
        (lambda m: m["architecture"]["args"][0].update({"pickle": 1}), "unreadable argument"),
        (lambda m: m.update({"format_version": 99}), "format version 99"),
        (lambda m: m.update({"input_shape": "big"}), "input_shape"),
    ],
)
def test_hostile_or_wrong_metadata_is_a_clear_error(tmp_path, edit, words):
    path = tmp_path / "m.safetensors"
    glassnet.save_model(convnet(), path, input_shape=(1, 28, 28))
    _rewrite(path, edit)
    with pytest.raises(CheckpointError, match=words):
        glassnet.load_model(path)


def test_weights_that_do_not_fit_the_architecture_are_a_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    glassnet.save_model(convnet(), path)
    _rewrite(path, lambda m: m.update(architecture=architecture(convnet(num_classes=7))))
    with pytest.raises(CheckpointError, match=r"do not fit its architecture.*8\.weight"):
        glassnet.load_model(path)


def test_constructor_errors_while_rebuilding_are_wrapped():
    spec = architecture(Conv2d(1, 2, 3))
    spec["args"][0] = -1
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        build(spec)


def test_the_spec_is_plain_json():
    spec = architecture(Sequential(Conv2d(1, 2, (3, 1)), ReLU(), Linear(2, 2, bias=False)))
    assert build(json.loads(json.dumps(spec))).state_dict().keys() == {
        "0.weight",
        "0.bias",
        "2.weight",
    }


def test_the_cli_opens_any_model_file(tmp_path, tiny_dataset, capsys):
    model = TinyResNet(channels=2, num_classes=10)
    path = tmp_path / "user.safetensors"
    glassnet.save_model(model, path, input_shape=(1, 8, 8))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "stem Conv2d" in out
        and f"Total params: {sum(p.data.size for p in model.parameters()):,}" in out
    )
    assert main(["trace", str(path)]) == 0
    out = capsys.readouterr().out
    assert "conv2d_backward (conv)" in out and "flatten_backward (flatten)" in out
    # evaluate needs 28 x 28 images for MNIST; this model takes 8 x 8: a clear error
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(path), "--dataset", "mnist", "--data-dir", str(tiny_dataset)])
    assert info.value.code == 2
    assert "(1, 28, 28), but" in capsys.readouterr().err


def test_evaluate_and_predict_give_identical_logits_from_a_model_file(
    tmp_path, tiny_dataset, capsys
):
    model = convnet(rng=np.random.default_rng(3))
    path = tmp_path / "m.safetensors"
    glassnet.save_model(model, path, input_shape=(1, 28, 28))
    images = tiny_dataset / "t10k-images-idx3-ubyte.gz"
    assert main(["predict", str(path), str(images), "--limit", "3", "--top", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()[:3]
    x = read_idx(images, 2051)[:3, None].astype(np.float32) / 255.0
    probs = glassnet.functional.softmax(model.eval()(x), axis=1)
    for line, row in zip(printed, probs, strict=True):
        assert line.endswith(f"({row.argmax()} {row.max():.3f})")
    assert main(["evaluate", str(path), "--data-dir", str(tiny_dataset), "--dataset", "mnist"]) == 0
    assert "accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", str(path), "--data-dir", str(tiny_dataset)])
    assert "pass --dataset" in capsys.readouterr().err


def test_build_with_a_generator_is_reproducible():
    spec = architecture(convnet())
    first = build(spec, rng=np.random.default_rng(4)).state_dict()
    again = build(spec, rng=np.random.default_rng(4)).state_dict()
    other = build(spec, rng=np.random.default_rng(5)).state_dict()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["0.weight"], other["0.weight"])
