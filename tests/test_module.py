"""Module: registration, state dicts (PyTorch keys, buffers, strict), no_grad, Sequential."""

import numpy as np
import pytest

import glassnet
from glassnet.nn import (
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    Module,
    Parameter,
    ReLU,
    Sequential,
    StateDictError,
    convnet,
    no_grad,
)
from glassnet.nn.module import backward_of


class Net(Module):
    """A PyTorch-style model: children assigned in __init__, forward and backward by hand."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = Conv2d(1, 4, 3)
        self.act = ReLU()
        self.flatten = Flatten()
        self.head = Sequential(Linear(4 * 4 * 4, 8), ReLU(), Linear(8, classes))
        self.register_buffer("seen", np.zeros((), dtype=np.int64))
        self.scale = Parameter(np.ones(1, dtype=np.float32))

    def forward(self, x):
        self.seen += 1
        self._h = self.head(self.flatten(self.act(self.conv1(x))))
        return self._h * self.scale.data

    def backward(self, grad_out):
        self.scale.grad += (grad_out * self._h).sum()  # dL/dscale = sum g h
        grad = self.head.backward(grad_out * self.scale.data)  # dL/dh = g scale
        grad = self.flatten.backward(grad)
        return self.conv1.backward(self.act.backward(grad))


def test_a_subclass_passes_gradcheck():
    net = Net().to(np.float64)
    x = np.random.default_rng(2).standard_normal((2, 1, 6, 6))
    assert glassnet.gradcheck_layer(net, x, rtol=1e-6)


def test_assignment_registers_parameters_buffers_and_children_in_order():
    net = Net()
    assert [name for name, _ in net.named_parameters()] == [
        "scale",
        "conv1.weight",
        "conv1.bias",
        "head.0.weight",
        "head.0.bias",
        "head.2.weight",
        "head.2.bias",
    ]
    assert [name for name, _ in net.named_children()] == ["conv1", "act", "flatten", "head"]
    assert [name for name, _ in net.named_modules()][:3] == ["", "conv1", "act"]
    assert list(net.state_dict())[:2] == ["scale", "seen"]
    assert "head.2.bias" in net.state_dict()
    assert len(net.parameters()) == 7 and [b.shape for b in net.buffers()] == [()]


def test_reassigning_and_deleting_update_the_registries():
    net = Net()
    net.head = Linear(64, 3)
    assert [n for n, _ in net.named_parameters() if n.startswith("head")] == [
        "head.weight",
        "head.bias",
    ]
    del net.act
    assert "act" not in dict(net.named_children())
    net.conv1.bias = None  # a layer without bias, as register_parameter("bias", None)
    assert "conv1.bias" not in net.state_dict()
    with pytest.raises(TypeError, match="parameter 'weight'"):
        net.conv1.weight = np.zeros(3)
    with pytest.raises(TypeError, match="buffer 'seen'"):
        net.seen = 3


def test_assigning_a_parameter_before_init_says_what_to_do():
    class Broken(Module):
        def __init__(self):
            self.w = Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Broken()


def test_train_eval_zero_grad_and_to_walk_the_tree():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    for param in net.parameters():
        param.grad += 1
    net.zero_grad()
    assert all(not param.grad.any() for param in net.parameters())
    net.to(np.float64)
    assert {param.data.dtype for param in net.parameters()} == {np.dtype(np.float64)}
    assert net.seen.dtype == np.int64  # integer buffers keep their dtype
    with pytest.raises(ValueError, match="floating"):
        net.to(np.int32)


def test_load_state_dict_strict_and_not():
    source, target = Net(), Net()
    state = source.state_dict()
    target.load_state_dict(state)
    assert all(np.array_equal(state[k], v) for k, v in target.state_dict().items())
    partial = {k: v for k, v in state.items() if not k.startswith("head.2")}
    partial["extra.weight"] = np.zeros(2)
    with pytest.raises(StateDictError, match=r"missing keys \['head.2.weight', 'head.2.bias'\]"):
        target.load_state_dict(partial)
    result = target.load_state_dict(partial, strict=False)
    assert result.missing_keys == ["head.2.weight", "head.2.bias"]
    assert result.unexpected_keys == ["extra.weight"]
    wrong = dict(state, **{"conv1.weight": np.zeros((4, 1, 5, 5))})
    before = target.state_dict()
    with pytest.raises(StateDictError, match=r"conv1\.weight.*\(4, 1, 5, 5\)"):
        target.load_state_dict(wrong)
    # nothing was changed by the failed load
    assert all(np.array_equal(before[k], v) for k, v in target.state_dict().items())


def test_a_user_module_without_backward_names_the_class_and_what_to_write():
    class NoBackward(Module):
        def forward(self, x):
            return x

    with pytest.raises(NotImplementedError, match=r"NoBackward has no backward\(\).*grad_out"):
        NoBackward().backward(np.zeros(2))


def test_a_user_backward_without_need_input_grad_works_inside_sequential():
    net = Sequential(Net())
    x = np.random.default_rng(0).random((2, 1, 6, 6), dtype=np.float32)
    logits = net(x)
    assert backward_of(net, np.ones_like(logits), need_input_grad=False) is None
    assert net[0].conv1.weight.grad.any()


def test_no_grad_keeps_no_caches_and_backward_says_so():
    model = convnet(rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    with no_grad():
        assert not glassnet.is_grad_enabled()
        model(x)
    assert glassnet.is_grad_enabled()
    assert model[0]._x is None and model[0]._cols is None and model[8]._x is None
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones((2, 10), dtype=np.float32))

    @no_grad()
    def infer(batch):
        return glassnet.is_grad_enabled()

    assert infer(x) is False and glassnet.is_grad_enabled()


def test_sequential_len_index_slice_append_iter():
    model = Sequential(Linear(4, 8), ReLU(), Linear(8, 3))
    assert len(model) == 3 and isinstance(model[-1], Linear) and model[1] is list(model)[1]
    head = model[1:]
    assert isinstance(head, Sequential) and len(head) == 2 and head[1] is model[2]
    model.append(Dropout(0.1))
    assert len(model) == 4 and list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]
    with pytest.raises(IndexError, match="out of range"):
        model[4]
    with pytest.raises(TypeError, match="must be a glassnet Module"):
        model.append(np.zeros(3))


def test_state_dict_moves_to_and_from_a_pytorch_model_unchanged():
    torch = pytest.importorskip("torch")

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 4, 3)
            self.act = torch.nn.ReLU()
            self.flatten = torch.nn.Flatten()
            self.head = torch.nn.Sequential(
                torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
            )
            self.register_buffer("seen", torch.zeros((), dtype=torch.int64))
            self.scale = torch.nn.Parameter(torch.ones(1))

    theirs, ours = TorchNet(), Net()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    back = TorchNet()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
