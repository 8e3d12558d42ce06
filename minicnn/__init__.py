"""minicnn: a convolutional neural network framework written from scratch on NumPy.

Layers live in :mod:`minicnn.layers`, losses in :mod:`minicnn.losses`, the model in
:mod:`minicnn.model`, optimizers in :mod:`minicnn.optim`, and the numerical gradient checker in
:mod:`minicnn.gradcheck`. The stateless math they share is in :mod:`minicnn.functional`.
"""

__version__ = "0.1.0"

from .parameter import Parameter  # noqa: E402
from .layers import (  # noqa: E402
    AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, LeakyReLU, MaxPool2D, ReLU,
    Sigmoid, Tanh,
)
from .losses import MSELoss, SoftmaxCrossEntropy  # noqa: E402
from .model import Sequential  # noqa: E402
from .optim import SGD, Adam, AdamW  # noqa: E402

__all__ = ["Parameter", "Conv2D", "Dense", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "MaxPool2D", "AvgPool2D",
           "GlobalAvgPool2D", "Flatten", "Dropout", "BatchNorm2D", "SoftmaxCrossEntropy", "MSELoss",
           "Sequential", "SGD", "Adam", "AdamW", "__version__"]
