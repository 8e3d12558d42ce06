"""Layers on feature vectors: Dense (fully connected), and Flatten, which makes images into vectors."""

from __future__ import annotations

import numpy as np

from .._backend import namespace
from ..parameter import Parameter
from ..utils import as_generator, check_bool, check_dtype, positive_int
from .base import BUILTIN_JAVASCRIPT, Layer, init_weight


class Dense(Layer):
    """Fully connected layer: ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    dtype : float32 (default) or float64
    rng : int seed, numpy.random.Generator or None
    init : "he" (default), "he_uniform", "glorot" or "glorot_normal"

    Attributes
    ----------
    weight : Parameter of shape (out_features, in_features)
    bias : Parameter of shape (out_features,) or None

    Shapes: (N, in_features) -> (N, out_features).
    """

    input_size_argument = "in_features"
    input_ndim = 2
    javascript = BUILTIN_JAVASCRIPT
    cache_names = ("_x",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype=np.float32,
        rng=None,
        init: str = "he",
    ):
        name = f"Dense(in_features={in_features}, out_features={out_features})"
        self.in_features = positive_int(in_features, "in_features", name)
        self.out_features = positive_int(out_features, "out_features", name)
        self.dtype = check_dtype(dtype)
        self.init = init
        rng = as_generator(rng)
        bias = check_bool(bias, "bias", name)
        self.weight = Parameter(
            init_weight(
                (out_features, in_features), in_features, out_features, init, self.dtype, rng, owner=name
            )
        )
        self.bias = Parameter(np.zeros(out_features, dtype=self.dtype)) if bias else None
        self._x: np.ndarray | None = None

    def output_shape(self, input_shape):
        """(N, out_features) for an input of shape (N, in_features)."""
        return (input_shape[0], self.out_features)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x : (N, in_features) -> (N, out_features)."""
        self._x = x
        out = x @ self.weight.data.T
        if self.bias is not None:
            out += self.bias.data
        return out

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """grad_out : (N, out_features) -> d loss / d x : (N, in_features)."""
        x = self._cached(self._x)
        grad_out = self._check_grad(grad_out, self.output_shape(x.shape))
        if self.weight.requires_grad:
            self.weight.grad += grad_out.T @ x
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += namespace(grad_out).sum(grad_out, axis=0)
        return grad_out @ self.weight.data if need_input_grad else None

    def to_onnx(self, graph, name: str) -> None:
        """Gemm (``transB=1``: the weight stays (out_features, in_features))."""
        weight = graph.constant(f"{name}.weight", self.weight.data)
        bias = None if self.bias is None else graph.constant(f"{name}.bias", self.bias.data)
        graph.add("Gemm", name, [weight, bias], transB=1)

    def get_config(self) -> dict:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), in C order (PyTorch's ``nn.Flatten``)."""

    input_min_ndim = 2
    javascript = BUILTIN_JAVASCRIPT

    def __init__(self) -> None:
        self._x_shape: tuple[int, ...] | None = None

    def output_shape(self, input_shape):
        size = 1
        for d in input_shape[1:]:
            size *= int(d)
        return (input_shape[0], size)

    def forward(self, x):
        self._x_shape = x.shape
        return namespace(x).reshape(x, (x.shape[0], -1))

    def to_onnx(self, graph, name: str) -> None:
        graph.add("Flatten", name, axis=1)

    def backward(self, grad_out, need_input_grad=True):
        x_shape = self._cached(self._x_shape)
        grad_out = self._check_grad(grad_out, self.output_shape(x_shape))
        return namespace(grad_out).reshape(grad_out, x_shape)
