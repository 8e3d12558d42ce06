"""The framework: parameters, the convolution math, layers, losses, the model, optimizers, gradient checks.

Imports only NumPy (and :mod:`minicnn.io` for files). ``minicnn.nn.functional`` is the readable,
stateless math; the layers hold parameters and call it (or the fast private lowering). The math, the
losses and the optimizers also run on other Array API libraries (CuPy, ...): ``to_device`` and
``to_host`` move arrays (:mod:`minicnn.nn._backend`).
"""

from ._backend import DeviceUnavailable, to_device, to_host
from .layers import (
    LAYERS,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import MSELoss, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, AdamW
from .parameter import Parameter

__all__ = [
    "LAYERS",
    "SGD",
    "Adam",
    "AdamW",
    "AvgPool2D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "DeviceUnavailable",
    "Dropout",
    "Flatten",
    "GlobalAvgPool2D",
    "Layer",
    "LeakyReLU",
    "MSELoss",
    "MaxPool2D",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "Tanh",
    "to_device",
    "to_host",
]
