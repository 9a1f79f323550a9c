"""Layers that hold parameters and the caches their backward passes need."""

from glassnet.nn.inspect import format_trace, summary, trace
from glassnet.nn.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Softmax
from glassnet.nn.loss import CrossEntropyLoss, LinearCrossEntropy
from glassnet.nn.models import convnet
from glassnet.nn.module import (
    REGISTRY,
    IncompatibleKeys,
    Module,
    Parameter,
    Sequential,
    StateDictError,
    is_grad_enabled,
    no_grad,
    register,
)

__all__ = [
    "REGISTRY",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "IncompatibleKeys",
    "Linear",
    "LinearCrossEntropy",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Softmax",
    "StateDictError",
    "convnet",
    "format_trace",
    "is_grad_enabled",
    "no_grad",
    "register",
    "summary",
    "trace",
]
