"""examples/: each JSON architecture builds, trains, exports; bench_bn.py runs a quick round."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import glassnet
from glassnet.model_file import architecture, build
from glassnet.nn.module import no_grad

REPO = Path(__file__).resolve().parents[1]
BN_CONVNET = REPO / "examples" / "bn_convnet.json"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def bn_convnet():
    return build(json.loads(BN_CONVNET.read_text()))


def random_batch(n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, size=n)


def fit_one_step(model, x, y):
    return glassnet.fit(model, (x, y), epochs=1, batch_size=len(x), verbose=0)


def test_the_file_is_exactly_what_architecture_writes():
    text = BN_CONVNET.read_text()
    assert text == json.dumps(architecture(build(json.loads(text))), indent=2) + "\n"


def test_the_readmes_snippet_writes_the_file(tmp_path, monkeypatch):
    readme = (REPO / "examples" / "README.md").read_text()
    snippet = readme.split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    exec(snippet, {})
    assert (tmp_path / "examples" / "bn_convnet.json").read_text() == BN_CONVNET.read_text()


def test_bn_convnet_maps_28x28_images_to_10_logits():
    model = bn_convnet()
    table = glassnet.summary(model, (1, 28, 28)).splitlines()
    last_layer = table[-3]  # then a rule and "Total params"
    assert "Linear" in last_layer and "(N, 10)" in last_layer
    assert table[-1] == "Total params: 87,274"
    with no_grad():
        assert model(np.zeros((3, 1, 28, 28), dtype=np.float32)).shape == (3, 10)


def test_bn_convnet_trains_a_step_with_fit():
    model = bn_convnet()
    x, y = random_batch(64)
    before = {key: value.copy() for key, value in model.state_dict().items()}

    history = fit_one_step(model, x, y)

    assert len(history.history) == 1 and np.isfinite(history["train_loss"][0])
    after = model.state_dict()
    assert not np.array_equal(after["0.weight"], before["0.weight"])
    assert int(after["1.num_batches_tracked"]) == 1  # BatchNorm saw one training batch


def test_bn_convnet_exports_to_onnx_with_the_same_outputs(tmp_path):
    pytest.importorskip("onnx")
    from glassnet.onnx import export

    model = bn_convnet()
    fit_one_step(model, *random_batch(32))  # running statistics away from their defaults
    path = tmp_path / "bn_convnet.onnx"
    export(model, path, (1, 28, 28))
    assert path.stat().st_size > 4 * 87_274  # the float32 weights are in the file

    ort = pytest.importorskip("onnxruntime")
    x, _ = random_batch(5)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"input": x})
    model.eval()
    with no_grad():
        np.testing.assert_allclose(got, model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST is not installed")
def test_bench_bn_quick_run_prints_both_frameworks_accuracy():
    pytest.importorskip("torch")
    command = ["benchmarks/bench_bn.py", "--epochs", "1", "--limit", "512", "--seeds", "0"]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    final = re.search(r"final test accuracy .*: glassnet (\S+), pytorch (\S+),", result.stdout)
    assert final is not None, result.stdout
    assert all(0 <= float(accuracy) <= 1 for accuracy in final.groups())
    assert "images/s glassnet/pytorch" in result.stdout
