"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules, with PyTorch's update rules.

Each optimizer updates ``param.data`` in place from ``param.grad``. ``state_dict()`` returns
flat arrays and numbers (what a checkpoint stores); ``load_state_dict`` restores them, so a
resumed run takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from glassnet.nn.module import Parameter


class Optimizer:
    """Base class: holds the parameters, the learning rate and per-parameter state arrays."""

    #: names of the per-parameter state arrays, in a fixed order (for state_dict keys)
    state_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if not lr >= 0:
            raise ValueError(f"learning rate lr={lr!r} must be >= 0")
        self.lr = float(lr)
        self.step_count = 0
        self.state: list[dict[str, np.ndarray]] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad[...] = 0

    def step(self) -> None:
        self.step_count += 1
        for param, state in zip(self.params, self.state, strict=True):
            self._update(param, state)

    def _update(self, param: Parameter, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray | float | int]:
        """``{"lr": .., "step": .., "<i>.<name>": array}`` for parameter i's state arrays."""
        flat: dict[str, np.ndarray | float | int] = {"lr": self.lr, "step": self.step_count}
        for i, state in enumerate(self.state):
            for name, value in state.items():
                flat[f"{i}.{name}"] = value.copy()
        return flat

    def load_state_dict(self, flat: dict[str, np.ndarray | float | int]) -> None:
        self.lr = float(flat["lr"])
        self.step_count = int(flat["step"])
        for i, (param, state) in enumerate(zip(self.params, self.state, strict=True)):
            state.clear()
            for name in self.state_names:
                key = f"{i}.{name}"
                if key in flat:
                    value = np.asarray(flat[key], dtype=param.data.dtype)
                    if value.shape != param.shape:
                        raise ValueError(
                            f"optimizer state {key!r} has shape {value.shape}, "
                            f"its parameter {param.shape}"
                        )
                    state[name] = value.copy()


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    ``g = grad + wd * p;  b = mu * b + (1 - dampening) * g;  p -= lr * (g + mu * b if nesterov
    else b)``, the first step taking ``b = g``. Matches ``torch.optim.SGD``.
    """

    state_names = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"{momentum=} and {weight_decay=} must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening = momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov

    def _update(self, param: Parameter, state: dict[str, np.ndarray]) -> None:
        grad = param.grad
        if self.weight_decay:
            grad = grad + self.weight_decay * param.data
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param.data -= self.lr * grad


class Adam(Optimizer):
    """Adam: bias-corrected running means of the gradient and its square.

    ``m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``. ``weight_decay`` adds
    ``wd * p`` to the gradient (L2), as ``torch.optim.Adam``; see AdamW for decoupled decay.
    """

    state_names = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas={betas!r} must both be in [0, 1)")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"{eps=} and {weight_decay=} must be >= 0")
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def _update(self, param: Parameter, state: dict[str, np.ndarray]) -> None:
        beta1, beta2 = self.betas
        grad = param.grad
        if self.weight_decay and self.decoupled:
            param.data *= 1 - self.lr * self.weight_decay
        elif self.weight_decay:
            grad = grad + self.weight_decay * param.data
        if not state:
            state["exp_avg"] = np.zeros_like(param.data)
            state["exp_avg_sq"] = np.zeros_like(param.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        t = self.step_count
        step_size = self.lr / (1 - beta1**t)
        denom = np.sqrt(v) / math.sqrt(1 - beta2**t) + self.eps
        param.data -= step_size * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * wd`` before the Adam step.

    Matches ``torch.optim.AdamW`` (default weight_decay=0.01).
    """

    decoupled = True

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root mean square of its recent values.

    ``g = grad + wd * p;  v = alpha v + (1 - alpha) g^2;  d = sqrt(v) + eps``, or when
    ``centered`` ``a = alpha a + (1 - alpha) g;  d = sqrt(v - a^2) + eps``; then
    ``p -= lr * g / d``, or with momentum ``b = mu b + g / d;  p -= lr * b``. All state
    starts at zero. Matches ``torch.optim.RMSprop``.
    """

    state_names = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(params, lr)
        for name, value in [("alpha", alpha), ("eps", eps), ("weight_decay", weight_decay),
                            ("momentum", momentum)]:  # fmt: skip
            if not value >= 0:
                raise ValueError(f"{name}={value!r} must be >= 0")
        self.alpha, self.eps, self.weight_decay = alpha, eps, weight_decay
        self.momentum, self.centered = momentum, centered

    def _update(self, param: Parameter, state: dict[str, np.ndarray]) -> None:
        grad = param.grad
        if self.weight_decay:
            grad = grad + self.weight_decay * param.data
        if not state:
            state["square_avg"] = np.zeros_like(param.data)
            if self.centered:
                state["grad_avg"] = np.zeros_like(param.data)
            if self.momentum > 0:
                state["momentum_buffer"] = np.zeros_like(param.data)
        square_avg = state["square_avg"]
        square_avg *= self.alpha
        square_avg += (1 - self.alpha) * grad * grad
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - self.alpha) * (grad - grad_avg)
            # The variance estimate E[g^2] - E[g]^2 instead of the raw second moment.
            avg = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = np.sqrt(square_avg)
        avg += self.eps
        if self.momentum > 0:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += grad / avg
            param.data -= self.lr * buf
        else:
            param.data -= self.lr * (grad / avg)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


class LRScheduler:
    """Sets ``optimizer.lr`` from the epoch count; call ``step()`` once per epoch."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def state_dict(self) -> dict[str, float | int]:
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``, as ``torch.optim.lr_scheduler.StepLR``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        if step_size < 1:
            raise ValueError(f"step_size={step_size!r} must be a positive integer")
        self.step_size, self.gamma = step_size, gamma

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    The closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR`` for epoch <= T_max.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        if T_max < 1:
            raise ValueError(f"T_max={T_max!r} must be a positive integer")
        self.T_max, self.eta_min = T_max, eta_min

    def lr_at(self, epoch: int) -> float:
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine
