"""ONNX export: every exporter's file, run in onnxruntime, against glassnet's eval-mode output.

Each model is exported (its probe pass has batch 2) and run on a batch of BATCH, so the dynamic
batch axis is exercised everywhere. Layers that have not landed in glassnet.nn yet are skipped.
"""

import sys

import numpy as np
import pytest

import glassnet.nn as gnn
from glassnet.nn import Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential, convnet
from glassnet.nn.module import no_grad
from glassnet.onnx import ExportError, export

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

BATCH = 3
TOLERANCE = 1e-5


def layer(name: str) -> type:
    """glassnet.nn.<name>, or skip the test until that class lands."""
    cls = getattr(gnn, name, None)
    if cls is None:
        pytest.skip(f"glassnet.nn.{name} is not in glassnet.nn yet")
    return cls


def onnx_diff(model: Module, input_shape: tuple, tmp_path, *, opset: int = 17, scale=1.0):
    """Export, run BATCH random samples in onnxruntime; max |onnx - glassnet eval| (float32)."""
    path = tmp_path / "model.onnx"
    export(model, path, input_shape, opset=opset)
    x = scale * np.random.default_rng(7).standard_normal((BATCH, *input_shape))
    x = x.astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"input": x})
    model.eval()
    with no_grad():
        want = model(x.copy())  # in-place layers may overwrite their input
    assert got.shape == want.shape
    return float(np.abs(got - want.astype(np.float32)).max())


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def train_batch_norm(model: Module, input_shape: tuple, steps: int = 4) -> None:
    """Random affine parameters and a few train-mode forwards: non-trivial running statistics."""
    generator = rng(3)
    for module in model.modules():
        if getattr(module, "weight", None) is not None and "BatchNorm" in type(module).__name__:
            module.weight.data[...] = generator.uniform(0.5, 1.5, module.weight.shape)
            module.bias.data[...] = generator.uniform(-0.5, 0.5, module.bias.shape)
    model.train()
    for _ in range(steps):
        x = 2 + 3 * generator.standard_normal((8, *input_shape))
        model(x.astype(np.float32))


# --- the seeds' convnet and the basic layers ------------------------------------------------


@pytest.mark.parametrize("opset", [17, 18, 20])
def test_convnet_matches_onnxruntime(tmp_path, opset):
    model = convnet(rng=rng(0))  # left in training mode: the export must use eval semantics
    assert onnx_diff(model, (1, 28, 28), tmp_path, opset=opset) <= TOLERANCE


def test_convnet_file_layout(tmp_path):
    model = convnet(rng=rng(0))
    export(model, tmp_path / "model.onnx", (1, 28, 28))
    proto = onnx.load(str(tmp_path / "model.onnx"))
    graph = proto.graph
    assert {init.name for init in graph.initializer} == set(model.state_dict())
    assert {init.data_type for init in graph.initializer} == {onnx.TensorProto.FLOAT}
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["N", "", "", ""]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [0, 1, 28, 28]
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert proto.opset_import[0].version == 17
    assert "Dropout" not in [node.op_type for node in graph.node]


def test_float64_model_exports_float32(tmp_path):
    model = Sequential(Linear(5, 4, rng=rng(), dtype=np.float64), ReLU(), Linear(4, 2, rng=rng()))
    assert onnx_diff(model, (5,), tmp_path) <= TOLERANCE


def test_linear_without_bias_and_softmax(tmp_path):
    model = Sequential(Linear(6, 4, bias=False, rng=rng()), gnn.Softmax(dim=1))
    assert onnx_diff(model, (6,), tmp_path, scale=3.0) <= TOLERANCE


def test_shared_module_is_one_initializer(tmp_path):
    shared = Linear(4, 4, rng=rng())
    model = Sequential(shared, ReLU(), shared)
    assert onnx_diff(model, (4,), tmp_path) <= TOLERANCE
    names = [init.name for init in onnx.load(str(tmp_path / "model.onnx")).graph.initializer]
    assert names == ["0.weight", "0.bias"]


@pytest.mark.parametrize("name", ["Dropout", "Identity"])
def test_passthrough_model_gets_an_identity_output(tmp_path, name):
    assert onnx_diff(Sequential(layer(name)()), (3, 2), tmp_path) == 0.0


# --- convolutions and pooling -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "stride": 2},
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": 3, "stride": 2, "padding": 2},
        {"kernel_size": 4, "padding": "same"},
        {"kernel_size": 3, "padding": "valid"},
        {"kernel_size": (2, 3)},
        {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 0)},
        {"kernel_size": 3, "bias": False},
    ],
)
def test_conv2d_variants(tmp_path, kwargs):
    model = Sequential(Conv2d(2, 3, rng=rng(), **kwargs), ReLU())
    assert onnx_diff(model, (2, 9, 8), tmp_path) <= TOLERANCE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 2},
        {"kernel_size": 3, "stride": 1},
        {"kernel_size": 3, "stride": 2, "padding": 1},
        {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1)},
    ],
)
def test_max_pool2d(tmp_path, kwargs):
    model = Sequential(Conv2d(2, 3, 3, padding=1, rng=rng()), MaxPool2d(**kwargs))
    assert onnx_diff(model, (2, 9, 8), tmp_path) <= TOLERANCE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 2},
        {"kernel_size": 3, "stride": 2, "padding": 1},
        {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
        {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 1), "count_include_pad": False},
    ],
)
def test_avg_pool2d(tmp_path, kwargs):
    model = Sequential(Conv2d(2, 3, 3, padding=1, rng=rng()), layer("AvgPool2d")(**kwargs))
    assert onnx_diff(model, (2, 9, 8), tmp_path) <= TOLERANCE


@pytest.mark.parametrize("output_size", [1, (1, 1), (3, 2), (None, 4), (6, 8)])
def test_adaptive_avg_pool2d(tmp_path, output_size):
    pool = layer("AdaptiveAvgPool2d")(output_size)
    model = Sequential(Conv2d(2, 3, 3, padding=1, rng=rng()), pool, Flatten())
    assert onnx_diff(model, (2, 6, 8), tmp_path) <= TOLERANCE


def test_adaptive_avg_pool2d_uneven_bins_is_an_error(tmp_path):
    model = Sequential(Conv2d(2, 3, 3, rng=rng()), layer("AdaptiveAvgPool2d")((4, 3)))
    with pytest.raises(ExportError, match=r"module '1' \(AdaptiveAvgPool2d\).*does not divide"):
        export(model, tmp_path / "model.onnx", (2, 7, 7))
    assert list(tmp_path.iterdir()) == []


# --- activations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("ReLU", {}),
        ("Sigmoid", {}),
        ("Tanh", {}),
        ("LeakyReLU", {"negative_slope": 0.2}),
        ("Identity", {}),
        ("Softmax", {"dim": 1}),
        ("Softmax", {"dim": -1}),
    ],
)
def test_activations(tmp_path, name, kwargs):
    model = Sequential(Linear(6, 8, rng=rng()), layer(name)(**kwargs), Linear(8, 4, rng=rng(1)))
    assert onnx_diff(model, (6,), tmp_path, scale=3.0) <= TOLERANCE


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("opset", [17, 20])
def test_gelu(tmp_path, approximate, opset):
    gelu = layer("GELU")(approximate=approximate)
    model = Sequential(Linear(6, 8, rng=rng()), gelu, Linear(8, 4, rng=rng(1)))
    assert onnx_diff(model, (6,), tmp_path, opset=opset, scale=4.0) <= TOLERANCE
    ops = {node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert ("Gelu" in ops) == (opset >= 20)


# --- batch normalization ------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm2d(tmp_path, affine):
    bn = layer("BatchNorm2d")(3, affine=affine)
    model = Sequential(Conv2d(2, 3, 3, rng=rng()), bn, ReLU(), Flatten())
    train_batch_norm(model, (2, 6, 6))
    assert not np.allclose(bn.running_var, 1.0)
    assert onnx_diff(model, (2, 6, 6), tmp_path) <= TOLERANCE


@pytest.mark.parametrize("input_shape", [(5,), (5, 7)])
def test_batch_norm1d(tmp_path, input_shape):
    model = Sequential(layer("BatchNorm1d")(5, eps=1e-3), layer("Tanh")())
    train_batch_norm(model, input_shape)
    assert onnx_diff(model, input_shape, tmp_path) <= TOLERANCE


def test_batch_norm_without_running_stats_is_an_error(tmp_path):
    model = Sequential(layer("BatchNorm1d")(4, track_running_stats=False))
    with pytest.raises(ExportError, match="track_running_stats=False"):
        export(model, tmp_path / "model.onnx", (4,))


# --- user modules -------------------------------------------------------------------------


class Residual(Module):
    """x + conv2(relu(conv1(x))), exportable through its own export_onnx."""

    def __init__(self, channels: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.conv1 = Conv2d(channels, channels, 3, padding=1, rng=rng)
        self.relu = ReLU()
        self.conv2 = Conv2d(channels, channels, 3, padding=1, rng=rng)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x + self.conv2(self.relu(self.conv1(x)))

    def export_onnx(self, builder, x_name: str) -> str:
        h = builder.add(self.conv2, builder.add(self.relu, builder.add(self.conv1, x_name)))
        return builder.op("Add", [x_name, h])


class Scale(Module):
    """A module without an exporter."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return 2 * x


def test_custom_module_with_export_onnx(tmp_path):
    model = Sequential(Conv2d(1, 4, 3, rng=rng()), Residual(4, rng(1)), ReLU(), Flatten())
    assert onnx_diff(model, (1, 7, 6), tmp_path) <= TOLERANCE
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert "1.conv2.weight" in {init.name for init in graph.initializer}
    assert "Add" in {node.op_type for node in graph.node}


def test_module_without_exporter_is_a_clear_error(tmp_path):
    model = Sequential(Linear(3, 3, rng=rng()), Scale())
    with pytest.raises(ExportError, match=r"module '1' \(Scale\).*define export_onnx"):
        export(model, tmp_path / "model.onnx", (3,))


def test_subclass_of_a_glassnet_layer_needs_its_own_exporter(tmp_path):
    class Doubled(Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ExportError, match=r"the model \(Doubled\)"):
        export(Doubled(3, 2, rng=rng()), tmp_path / "model.onnx", (3,))


# --- arguments, modes and files -----------------------------------------------------------


def test_missing_onnx_is_an_import_error_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'glassnet\[onnx\]'"):
        export(convnet(rng=rng()), tmp_path / "model.onnx", (1, 28, 28))


@pytest.mark.parametrize("training", [True, False])
def test_export_leaves_every_mode_unchanged(tmp_path, training):
    model = convnet(rng=rng()).train(training)
    model[7].train(not training)  # a mixed tree stays mixed
    before = [module.training for module in model.modules()]
    export(model, tmp_path / "model.onnx", (1, 28, 28))
    assert [module.training for module in model.modules()] == before
    assert "forward" not in vars(model[0])  # the probe's shape recording is undone


def test_file_is_written_atomically(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"an older file")
    export(convnet(rng=rng()), path, (1, 28, 28))
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left
    onnx.checker.check_model(onnx.load(str(path)))


def test_failed_export_writes_nothing(tmp_path):
    with pytest.raises(ExportError):
        export(Sequential(Scale()), tmp_path / "model.onnx", (3,))
    assert list(tmp_path.iterdir()) == []


def test_custom_input_and_output_names(tmp_path):
    path = tmp_path / "model.onnx"
    export(Sequential(Linear(3, 2, rng=rng())), path, (3,), input_name="x", output_name="y")
    graph = onnx.load(str(path)).graph
    assert (graph.input[0].name, graph.output[0].name) == ("x", "y")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (1, 20, 20)}, r"input_shape=\(1, 20, 20\) does not fit the model"),
        ({"input_shape": (1, 0, 28)}, "input_shape=.*positive ints"),
        ({"input_shape": 28}, "input_shape=28 must be"),
        ({"opset": 12}, "opset=12 must be an int from 13"),
        ({"output_name": "input"}, "two different non-empty strings"),
    ],
)
def test_bad_arguments_are_value_errors(tmp_path, kwargs, match):
    arguments = {"input_shape": (1, 28, 28)} | kwargs
    with pytest.raises(ValueError, match=match):
        export(convnet(rng=rng()), tmp_path / "model.onnx", **arguments)


def test_model_must_be_a_module(tmp_path):
    with pytest.raises(TypeError, match="model must be a glassnet Module"):
        export(lambda x: x, tmp_path / "model.onnx", (3,))
