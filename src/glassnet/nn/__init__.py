"""Layers that hold parameters and the caches their backward passes need."""

from glassnet.nn.inspect import format_trace, summary, trace
from glassnet.nn.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Softmax
from glassnet.nn.loss import CrossEntropyLoss, LinearCrossEntropy
from glassnet.nn.models import convnet
from glassnet.nn.module import Module, Parameter, Sequential

__all__ = [
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "Linear",
    "LinearCrossEntropy",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Softmax",
    "convnet",
    "format_trace",
    "summary",
    "trace",
]
