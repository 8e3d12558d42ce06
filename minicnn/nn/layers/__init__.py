"""Layers: objects that hold parameters and call the math in :mod:`minicnn.nn.functional`.

The package is laid out by kind: :mod:`.base` (the :class:`Layer` contract, the registry, layer
records), :mod:`.conv`, :mod:`.linear`, :mod:`.activation`, :mod:`.pooling`, :mod:`.norm` and
:mod:`.containers` (:class:`Sequential`, :class:`Residual`). Every name is importable from here:
``from minicnn.nn.layers import Conv2D``.

Activations are NCHW ``(N, C, H, W)`` for image layers and ``(N, features)`` after Flatten.
Parameter names and layouts are PyTorch's, so weights can be exchanged with it.
"""

from __future__ import annotations

from ..utils import as_generator
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .base import (
    BUILTIN_JAVASCRIPT,
    IMPORT_HELP,
    Layer,
    UnknownLayerError,
    Window,
    builtin_layers,
    check_saveable,
    grad_enabled,
    import_layer_modules,
    init_weight,
    known_layers,
    layer_class,
    layer_from_record,
    layer_record,
    long_name,
    no_grad,
)
from .containers import Residual, Sequential
from .conv import ALGORITHMS, Conv2D
from .linear import Dense, Flatten
from .norm import BatchNorm2D, Dropout
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

#: minicnn's own layer classes by name (from the registry, in definition order; containers included).
LAYERS = builtin_layers()

__all__ = [
    *LAYERS,
    "ALGORITHMS",
    "BUILTIN_JAVASCRIPT",
    "IMPORT_HELP",
    "LAYERS",
    "Layer",
    "UnknownLayerError",
    "Window",
    "as_generator",
    "builtin_layers",
    "check_saveable",
    "grad_enabled",
    "import_layer_modules",
    "init_weight",
    "known_layers",
    "layer_class",
    "layer_from_record",
    "layer_record",
    "long_name",
    "no_grad",
]
