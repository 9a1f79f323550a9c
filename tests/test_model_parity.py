"""The issue's acceptance model: a residual subclass matches PyTorch exactly, train and eval."""

import numpy as np
import pytest

import glassnet
from glassnet.nn import (
    GELU,
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    CrossEntropyLoss,
    Flatten,
    Linear,
    Module,
    ReLU,
    register,
)
from glassnet.optim import SGD

torch = pytest.importorskip("torch")


@register(name="tests.ResidualNet")
class ResidualNet(Module):
    """conv (stride 2, pad 1) -> BN -> ReLU -> [conv "same" -> BN] + skip -> GELU -> GAP -> fc."""

    def __init__(self, channels=6, num_classes=5):
        super().__init__()
        self.conv1 = Conv2d(1, channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNorm2d(channels)
        self.relu = ReLU()
        self.conv2 = Conv2d(channels, channels, 3, padding="same")
        self.bn2 = BatchNorm2d(channels)
        self.gelu = GELU()
        self.pool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.fc = Linear(channels, num_classes)

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        out = self.gelu(self.bn2(self.conv2(h)) + h)  # the skip connection adds h back
        return self.fc(self.flatten(self.pool(out)))

    def backward(self, grad_out):
        grad = self.pool.backward(self.flatten.backward(self.fc.backward(grad_out)))
        grad = self.gelu.backward(grad)
        grad_h = grad + self.conv2.backward(self.bn2.backward(grad))  # both paths reach h
        return self.conv1.backward(self.bn1.backward(self.relu.backward(grad_h)))


class TorchResidualNet(torch.nn.Module):
    def __init__(self, channels=6, num_classes=5):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding="same")
        self.bn2 = nn.BatchNorm2d(channels)
        self.gelu = nn.GELU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        out = self.gelu(self.bn2(self.conv2(h)) + h)
        return self.fc(self.flatten(self.pool(out)))


def _pair(seed=0):
    torch.manual_seed(seed)
    theirs = TorchResidualNet().double()
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for bn in (theirs.bn1, theirs.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    ours = ResidualNet().to(np.float64)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_logits_loss_and_every_gradient_match_pytorch(mode):
    ours, theirs = _pair()
    ours.train(mode == "train")
    theirs.train(mode == "train")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 11, 11))
    target = rng.integers(0, 5, size=4)

    loss_fn = CrossEntropyLoss()
    logits = ours(x)
    loss = loss_fn(logits, target)
    ours.zero_grad()
    grad_x = ours.backward(loss_fn.backward())

    x_t = torch.tensor(x, requires_grad=True)
    logits_t = theirs(x_t)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(target))
    loss_t.backward()

    _close(logits, logits_t.detach().numpy(), "logits")
    _close(loss, loss_t.item(), "loss")
    _close(grad_x, x_t.grad.numpy(), "dL/dx")
    torch_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        _close(param.grad, torch_params[name].grad.numpy(), f"dL/d{name}")
    for name, buffer in theirs.named_buffers():  # train mode updated both the same way
        _close(dict(ours.named_buffers())[name], buffer.numpy(), name)


def test_after_training_steps_weights_and_running_statistics_equal_pytorchs():
    ours, theirs = _pair(seed=3)
    optimizer = SGD(ours.parameters(), lr=0.1, momentum=0.9)
    optimizer_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(4)
    loss_fn = CrossEntropyLoss()
    for _ in range(3):
        x = rng.standard_normal((6, 1, 9, 9))
        target = rng.integers(0, 5, size=6)
        ours.zero_grad()
        loss_fn(ours(x), target)
        ours.backward(loss_fn.backward())
        optimizer.step()
        optimizer_t.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(target)).backward()
        optimizer_t.step()
    for key, value in theirs.state_dict().items():
        _close(ours.state_dict()[key], value.numpy(), key)
    assert int(ours.bn1.num_batches_tracked) == 3


def test_the_residual_net_passes_gradcheck_and_round_trips_through_a_model_file(tmp_path):
    net = ResidualNet(channels=2, num_classes=3).to(np.float64)
    x = np.random.default_rng(5).standard_normal((3, 1, 7, 7))
    assert glassnet.gradcheck_layer(net, x, rtol=1e-5)
    net.eval()
    assert glassnet.gradcheck_layer(net, x, rtol=1e-5)
    glassnet.save_model(net, tmp_path / "res.safetensors", input_shape=(1, 7, 7))
    loaded = glassnet.load_model(tmp_path / "res.safetensors")
    np.testing.assert_array_equal(loaded(x), net(x))
