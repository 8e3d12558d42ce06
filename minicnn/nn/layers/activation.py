"""Activations: elementwise functions, any input shape, no parameters.

Tanh and Sigmoid come from one template (:class:`_Elementwise`, as JAX's stax builds its
activations from ``elementwise(fun)``): a function of the input and its derivative written from
the output. ReLU and LeakyReLU keep a mask instead.
"""

from __future__ import annotations

import numpy as np

from .. import _threads
from .._backend import device, masked, namespace
from ..utils import check_real
from .base import BUILTIN_JAVASCRIPT, Layer


class _Elementwise(Layer):
    """``f(x)`` elementwise, with ``f'`` written from the output ``y = f(x)`` (all this family needs)."""

    javascript = BUILTIN_JAVASCRIPT
    #: The ONNX operator that computes f.
    onnx_op = ""

    cache_names = ("_out",)

    def __init__(self) -> None:
        self._out: np.ndarray | None = None

    @staticmethod
    def function(x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def derivative(out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x):
        self._out = self.function(x)
        return self._out

    def backward(self, grad_out, need_input_grad=True):
        out = self._cached(self._out)
        return self._check_grad(grad_out, out.shape) * self.derivative(out)

    def to_onnx(self, graph, name: str) -> None:
        graph.add(self.onnx_op, name)


class ReLU(Layer):
    """``max(x, 0)``, elementwise (NaN stays NaN, as in PyTorch). Any shape.

    ``np.maximum`` and a multiply by the boolean mask, not ``np.where``: 0.6 ms instead of 6.5 ms
    forward and 0.3 ms instead of 6.1 ms backward on a (64, 32, 28, 28) float32 array. NumPy arrays
    are split over threads; other libraries' arrays get the same two operations, whole.
    """

    javascript = BUILTIN_JAVASCRIPT
    cache_names = ("_mask",)

    def __init__(self) -> None:
        self._mask: np.ndarray | None = None

    def forward(self, x):
        xp = namespace(x)
        if xp is not np:
            self._mask = x > 0
            return xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device(x)))
        flat, zero = np.ascontiguousarray(x).reshape(-1), x.dtype.type(0)
        out, mask = np.empty_like(flat), np.empty(flat.shape, dtype=bool)

        def part(a, b):  # a slice of the elements, on its own thread when the array is large
            np.greater(flat[a:b], zero, out=mask[a:b])
            np.maximum(flat[a:b], zero, out=out[a:b])

        _threads.over_batch(part, flat.size, flat.nbytes)
        self._mask = mask.reshape(x.shape)
        return out.reshape(x.shape)

    def backward(self, grad_out, need_input_grad=True):
        mask = self._cached(self._mask)
        grad_out = self._check_grad(grad_out, mask.shape)
        xp = namespace(grad_out, mask)
        if xp is not np:
            return masked(xp, grad_out, mask)
        grad = np.ascontiguousarray(grad_out).reshape(-1)
        flat_mask = mask.reshape(-1)
        dx = np.empty(grad.shape, dtype=np.result_type(grad, flat_mask))

        def part(a, b):
            np.multiply(grad[a:b], flat_mask[a:b], out=dx[a:b])

        _threads.over_batch(part, grad.size, grad.nbytes)
        return dx.reshape(mask.shape)

    def to_onnx(self, graph, name: str) -> None:
        graph.add("Relu", name)


class LeakyReLU(Layer):
    """``x`` where positive, ``negative_slope * x`` elsewhere. Any shape."""

    javascript = BUILTIN_JAVASCRIPT
    cache_names = ("_mask",)

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = check_real(negative_slope, "negative_slope", "LeakyReLU")
        self._mask: np.ndarray | None = None

    def forward(self, x):
        self._mask = x > 0
        # a Python float takes the array's dtype (float32 stays float32)
        return namespace(x).where(self._mask, x, x * self.negative_slope)

    def backward(self, grad_out, need_input_grad=True):
        mask = self._cached(self._mask)
        grad_out = self._check_grad(grad_out, mask.shape)
        return namespace(grad_out, mask).where(mask, grad_out, grad_out * self.negative_slope)

    def to_onnx(self, graph, name: str) -> None:
        graph.add("LeakyRelu", name, alpha=self.negative_slope)

    def get_config(self):
        return {"negative_slope": self.negative_slope}


class Tanh(_Elementwise):
    """``tanh(x)``; derivative ``1 - tanh(x)**2``. Any shape."""

    onnx_op = "Tanh"

    @staticmethod
    def function(x):
        return namespace(x).tanh(x)

    @staticmethod
    def derivative(out):
        return 1 - out * out


class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` (no overflow); derivative ``s(1 - s)``."""

    onnx_op = "Sigmoid"

    @staticmethod
    def function(x):
        return 0.5 * (1 + namespace(x).tanh(0.5 * x))

    @staticmethod
    def derivative(out):
        return out * (1 - out)
