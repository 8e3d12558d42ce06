"""The framework: parameters, the convolution math, layers, losses, the model, optimizers, gradient checks.

Imports only NumPy (and :mod:`minicnn.io` for files). ``minicnn.nn.functional`` is the readable,
stateless math; the layers hold parameters and call it (or, for NumPy arrays, the fast private
lowering). The math, the layers, the losses and the optimizers also run on other Array API libraries
(CuPy, ...): ``model.to(device)`` moves a model, ``to_device`` and ``to_host`` move arrays
(:mod:`minicnn.nn.devices`).
"""

from . import layers as _layers
from ._backend import DeviceUnavailable, to_device, to_host
from .layers import *  # noqa: F403  (every layer class, by the registry: minicnn.nn.layers.LAYERS)
from .layers import LAYERS, Layer, grad_enabled, layer_class, no_grad
from .losses import MSELoss, SoftmaxCrossEntropy
from .optim import SGD, Adam, AdamW
from .parameter import Parameter

__all__ = [
    *_layers.LAYERS,
    "LAYERS",
    "Layer",
    "layer_class",
    "no_grad",
    "grad_enabled",
    "MSELoss",
    "SoftmaxCrossEntropy",
    "SGD",
    "Adam",
    "AdamW",
    "Parameter",
    "DeviceUnavailable",
    "to_device",
    "to_host",
]
