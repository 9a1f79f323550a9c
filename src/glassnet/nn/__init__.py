"""Layers that hold parameters and the caches their backward passes need."""

from glassnet.nn.activation import GELU, Identity, LeakyReLU, Sigmoid, Tanh
from glassnet.nn.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Softmax
from glassnet.nn.loss import CrossEntropyLoss, LinearCrossEntropy, MSELoss, NLLLoss
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
from glassnet.nn.normalization import BatchNorm1d, BatchNorm2d
from glassnet.nn.pooling import AdaptiveAvgPool2d, AvgPool2d

__all__ = [
    "GELU",
    "REGISTRY",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "Identity",
    "IncompatibleKeys",
    "LeakyReLU",
    "Linear",
    "LinearCrossEntropy",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "StateDictError",
    "Tanh",
    "convnet",
    "is_grad_enabled",
    "no_grad",
    "register",
]
