"""minicnn: a convolutional neural network framework written from scratch on NumPy.

The package is in parts, and imports flow one way (nn <- data <- train; see reads models and data):

- :mod:`minicnn.nn`: the framework (layers, losses, ``Sequential``, optimizers, gradient checks);
- :mod:`minicnn.data`: data sets, splits, standardization, augmentation;
- :mod:`minicnn.train`: configs, the training loop, the run directory;
- :mod:`minicnn.see`: figures, classic filters, the gallery, inspect, the explorer page;
- :mod:`minicnn.io`: safe ``.npz`` reading and atomic writes; :mod:`minicnn.sklearn`: the estimator;
- commands: :mod:`minicnn.cli` (``train.py``), :mod:`minicnn.inspect`, :mod:`minicnn.gallery`,
  :mod:`minicnn.explore`.

The common names are importable from here: ``from minicnn import Conv2D, Sequential, Adam``.
"""

__version__ = "0.2.0"

from .nn import (  # noqa: E402
    AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, LeakyReLU, MaxPool2D, MSELoss,
    Parameter, ReLU, Sequential, SGD, Adam, AdamW, Sigmoid, SoftmaxCrossEntropy, Tanh,
)
from .nn._threads import get_num_threads, set_num_threads  # noqa: E402

__all__ = ["Parameter", "Conv2D", "Dense", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "MaxPool2D", "AvgPool2D",
           "GlobalAvgPool2D", "Flatten", "Dropout", "BatchNorm2D", "SoftmaxCrossEntropy", "MSELoss",
           "Sequential", "SGD", "Adam", "AdamW", "set_num_threads", "get_num_threads", "__version__"]
