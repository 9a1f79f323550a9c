"""RMSprop against torch.optim.RMSprop for every option combination, and its state dict."""

import itertools

import numpy as np
import pytest

from glassnet.nn import Parameter
from glassnet.optim import OPTIMIZERS, RMSprop
from tests.test_optim import test_state_dict_round_trip_continues_exactly as round_trip

CONFIGS = [
    {"lr": 0.01, "centered": centered, "momentum": momentum, "weight_decay": weight_decay}
    for centered, momentum, weight_decay in itertools.product(
        [False, True], [0.0, 0.9], [0.0, 0.05]
    )
] + [{}, {"lr": 0.003, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True}]


@pytest.mark.parametrize("options", CONFIGS)
def test_five_steps_match_torch(options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ours = [Parameter(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = RMSprop(ours, **options)
    torch_opt = torch.optim.RMSprop(theirs, **options)
    for _ in range(5):
        grads = [rng.standard_normal(a.shape) for a in arrays]
        for p, t, g in zip(ours, theirs, grads, strict=True):
            p.grad[...] = g
            t.grad = torch.tensor(g)
        opt.step()
        torch_opt.step()
        for p, t in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)
    for state, torch_state in zip(opt.state, torch_opt.state.values(), strict=True):
        assert state.keys() == torch_state.keys() - {"step"}  # the same buffers, no more
        assert set(state) <= set(RMSprop.state_names)  # so state_dict saves them all
        for name, value in state.items():
            np.testing.assert_allclose(value, torch_state[name].numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("options", CONFIGS)
def test_state_dict_round_trip_continues_exactly(options):
    round_trip(RMSprop, options)


@pytest.mark.parametrize("name", ["lr", "alpha", "eps", "weight_decay", "momentum"])
def test_negative_hyperparameters_are_rejected(name):
    with pytest.raises(ValueError, match=name):
        RMSprop([Parameter(np.zeros(2))], **{name: -0.1})


def test_registered_for_the_trainer():
    assert OPTIMIZERS["rmsprop"] is RMSprop
