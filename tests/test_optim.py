"""Optimizers and schedules against torch.optim, step by step."""

import numpy as np
import pytest

from glassnet.nn import Parameter
from glassnet.optim import SGD, Adam, AdamW, CosineAnnealingLR, StepLR

CONFIGS = [
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.05, "momentum": 0.9}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    (SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.001}),
    (Adam, {}),
    (Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05}),
    (AdamW, {}),
    (AdamW, {"lr": 0.02, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("cls,options", CONFIGS)
def test_matches_torch_optim(cls, options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ours = [Parameter(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = cls(ours, **options)
    torch_opt = getattr(torch.optim, cls.__name__)(theirs, **options)
    for _ in range(7):
        grads = [rng.standard_normal(a.shape) for a in arrays]
        for p, t, g in zip(ours, theirs, grads, strict=True):
            p.grad[...] = g
            t.grad = torch.tensor(g)
        opt.step()
        torch_opt.step()
    for p, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls,options", CONFIGS)
def test_state_dict_round_trip_continues_exactly(cls, options):
    rng = np.random.default_rng(1)
    start = rng.standard_normal(6)
    grads = [rng.standard_normal(6) for _ in range(6)]

    def run(split):
        p = Parameter(start.copy())
        opt = cls([p], **options)
        for i, g in enumerate(grads):
            if i == split:
                state = opt.state_dict()
                p = Parameter(p.data.copy())
                opt = cls([p], **options)
                opt.load_state_dict(state)
            p.grad[...] = g
            opt.step()
        return p.data

    np.testing.assert_array_equal(run(split=3), run(split=None))


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    for make, make_torch in [
        (
            lambda o: StepLR(o, step_size=3, gamma=0.5),
            lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5),
        ),
        (
            lambda o: CosineAnnealingLR(o, T_max=10, eta_min=1e-4),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, 1e-4),
        ),
    ]:
        opt = SGD([Parameter(np.zeros(1))], lr=0.1)
        torch_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched, torch_sched = make(opt), make_torch(torch_opt)
        for _ in range(10):
            torch_opt.step()
            sched.step()
            torch_sched.step()
            assert opt.lr == pytest.approx(torch_opt.param_groups[0]["lr"], rel=1e-12)
        resumed = make(SGD([Parameter(np.zeros(1))], lr=0.1))
        resumed.load_state_dict(sched.state_dict())
        assert resumed.optimizer.lr == opt.lr


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda p: SGD(p, lr=-1), "lr=-1"),
        (lambda p: SGD(p, nesterov=True), "nesterov"),
        (lambda p: Adam(p, betas=(1.0, 0.9)), "betas"),
        (lambda p: SGD([], lr=0.1), "empty"),
    ],
)
def test_bad_options(make, words):
    with pytest.raises(ValueError, match=words):
        make([Parameter(np.zeros(2))])
