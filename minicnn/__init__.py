"""minicnn: a convolutional neural network framework written from scratch on NumPy.

The package is in parts, and imports flow one way (nn <- data <- train; see reads models and data):

- :mod:`minicnn.nn`: the framework (layers, losses, ``Sequential``, optimizers, gradient checks);
- :mod:`minicnn.data`: data sets, splits, standardization, augmentation;
- :mod:`minicnn.train`: configs, the training loop, the run directory;
- :mod:`minicnn.see`: figures, classic filters, the gallery, inspect, the explorer page;
- :mod:`minicnn.io`: safe ``.npz`` and safetensors files, atomic writes; :mod:`minicnn.sklearn`: the
  estimator; :mod:`minicnn.export`: ONNX export;
- commands: :mod:`minicnn.cli` (``train.py``), :mod:`minicnn.inspect`, :mod:`minicnn.gallery`,
  :mod:`minicnn.explore`, :mod:`minicnn.export`.

The common names are importable from here: ``from minicnn import Conv2D, Sequential, Adam``.
"""

__version__ = "0.2.0"

# the framework's public names (nn.__all__: Conv2D, Sequential, Adam, ...), listed once, in minicnn.nn
from .nn import *  # noqa: E402, F403
from .nn import __all__ as _framework_names  # noqa: E402
from .nn.threads import get_num_threads, set_num_threads  # noqa: E402

__all__ = [*_framework_names, "set_num_threads", "get_num_threads", "__version__"]
