"""Normalization and regularization: BatchNorm2D and Dropout."""

from __future__ import annotations

import numpy as np

from ...io import check_budget
from .._backend import asarray_like, device, dtype_in, host_dtype, namespace, size
from ..parameter import Parameter
from ..utils import as_generator, check_dtype, check_real, positive_int
from .base import BUILTIN_JAVASCRIPT, Layer

#: Index that turns a per-channel vector (C,) into (1, C, 1, 1), to broadcast over (N, C, H, W).
_CHANNELS = (None, slice(None), None, None)


def _channel_sum(a):
    """Sum over (N, H, W) for each channel of ``a`` (N, C, H, W): shape (C,).

    A product with a vector of ones over the contiguous (H*W) axis, then a sum over N: several times
    faster than ``a.sum(axis=(0, 2, 3))`` on small maps, and as accurate. (NumPy arrays take its
    methods, which skip the functions' dispatch: a few microseconds a call.)
    """
    n, c = a.shape[:2]
    if isinstance(a, np.ndarray):
        rows = a.reshape(n, c, -1)
        return (rows @ np.ones(rows.shape[2], dtype=a.dtype)).sum(axis=0)
    xp = namespace(a)
    rows = xp.reshape(a, (n, c, -1))
    return xp.sum(rows @ xp.ones(rows.shape[2], dtype=a.dtype, device=device(a)), axis=0)


def _channel_dot(a, b):
    """Sum over (N, H, W) of ``a * b`` for each channel: shape (C,). NumPy's ``einsum`` makes no
    product array; other libraries take the standard's ``vecdot`` over each map, then sum over N."""
    n, c = a.shape[:2]
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return np.einsum("ncp,ncp->c", a.reshape(n, c, -1), b.reshape(n, c, -1))
    xp = namespace(a, b)
    rows_a, rows_b = xp.reshape(a, (n, c, -1)), xp.reshape(b, (n, c, -1))
    return xp.sum(xp.vecdot(rows_a, rows_b, axis=-1), axis=0)


class BatchNorm2D(Layer):
    """Batch normalization over (N, H, W) for each channel (Ioffe & Szegedy 2015).

    Training mode normalizes with the batch's statistics and updates the running estimates as
    PyTorch does: ``running = (1 - momentum) * running + momentum * batch``, with the unbiased
    variance in ``running_var``. Eval mode normalizes with the running estimates.

    Attributes
    ----------
    weight : Parameter of shape (num_features,)   (gamma, starts at 1)
    bias : Parameter of shape (num_features,)     (beta, starts at 0)
    running_mean, running_var : ndarray of shape (num_features,)

    Shapes: (N, num_features, H, W) -> same.
    """

    input_size_argument = "num_features"
    input_ndim = 4
    buffer_names = ("running_mean", "running_var")
    javascript = BUILTIN_JAVASCRIPT
    cache_names = ("_x_hat", "_eval_input")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float32) -> None:
        self.num_features = positive_int(num_features, "num_features", "BatchNorm2D")
        self.eps = check_real(eps, "eps", "BatchNorm2D", low=0.0, low_open=True)
        self.momentum = check_real(momentum, "momentum", "BatchNorm2D", low=0.0, high=1.0)
        check_budget(4 * self.num_features * np.dtype(dtype).itemsize, f"BatchNorm2D({num_features})")
        self.dtype = check_dtype(dtype)
        self.weight = Parameter(np.ones(num_features, dtype=self.dtype))
        self.bias = Parameter(np.zeros(num_features, dtype=self.dtype))
        self.running_mean = np.zeros(num_features, dtype=self.dtype)
        self.running_var = np.ones(num_features, dtype=self.dtype)
        self._x_hat: np.ndarray | None = None
        self._inv_std: np.ndarray | None = None
        self._eval_input: tuple | None = None  # (x, running_mean) of an eval forward: x_hat on demand

    def forward(self, x):
        """x : (N, num_features, H, W) -> same shape."""
        xp = namespace(x)
        self._eval_input = None
        if not self.training:
            # the running statistics are constants: one scale and one shift per channel, two passes
            # over x instead of four (half the time of BatchNorm in inspect's occlusion maps)
            inv_std = xp.astype(1.0 / xp.sqrt(self.running_var + self.eps), dtype_in(xp, self.dtype))
            scale = self.weight.data * inv_std
            out = x * scale[_CHANNELS]
            out += (self.bias.data - self.running_mean * scale)[_CHANNELS]
            self._x_hat, self._inv_std = None, inv_std
            self._eval_input = (x, xp.asarray(self.running_mean, copy=True))
            return out
        count = x.shape[0] * x.shape[2] * x.shape[3]
        if count < 2:
            raise ValueError(
                f"{self!r}: training mode needs more than one value per channel, got input {x.shape}"
            )
        mean = _channel_sum(x) / count
        centered = x - mean[_CHANNELS]
        var = _channel_dot(centered, centered) / count
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += m * var * (count / (count - 1))
        inv_std = xp.astype(1.0 / xp.sqrt(var + self.eps), dtype_in(xp, self.dtype))
        centered *= inv_std[_CHANNELS]  # now x_hat; centered is a fresh array
        self._x_hat, self._inv_std = centered, inv_std
        out = centered * self.weight.data[_CHANNELS]
        out += self.bias.data[_CHANNELS]
        return out

    def backward(self, grad_out, need_input_grad=True):
        """grad_out : (N, num_features, H, W) -> d loss / d x, same shape."""
        x_hat = self._x_hat
        if self._eval_input is not None:  # eval forward: x_hat from its input, only now it is needed
            x, mean = self._eval_input
            x_hat = (x - mean[_CHANNELS]) * self._inv_std[_CHANNELS]
        x_hat = self._cached(x_hat)
        grad_out = self._check_grad(grad_out, x_hat.shape)

        grad_bias, grad_weight = _channel_sum(grad_out), _channel_dot(grad_out, x_hat)
        if self.bias.requires_grad:
            self.bias.grad += grad_bias
        if self.weight.requires_grad:
            self.weight.grad += grad_weight
        scale = self.weight.data * self._inv_std
        grad_in = grad_out * scale[_CHANNELS]
        if not self.training:
            return grad_in
        # batch statistics depend on x too: subtract the mean gradient and its projection on x_hat
        count = size(x_hat) // x_hat.shape[1]
        grad_in -= x_hat * (scale * grad_weight / count)[_CHANNELS]
        grad_in -= (scale * grad_bias / count)[_CHANNELS]
        return grad_in

    def to_onnx(self, graph, name: str) -> None:
        """BatchNormalization with the running statistics (eval mode)."""
        inputs = [
            graph.constant(f"{name}.{key}", value)
            for key, value in (
                ("weight", self.weight.data),
                ("bias", self.bias.data),
                ("running_mean", self.running_mean),
                ("running_var", self.running_var),
            )
        ]
        graph.add("BatchNormalization", name, inputs, epsilon=self.eps)

    def get_config(self):
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "dtype": self.dtype.name,
        }


class Dropout(Layer):
    """Inverted dropout: in training mode each element is zeroed with probability ``p`` and the rest
    scaled by ``1/(1-p)``, so eval mode is the identity. Random only through ``rng``. Any shape.
    """

    javascript = BUILTIN_JAVASCRIPT
    cache_names = ("_mask",)

    def __init__(self, p: float = 0.5, rng=None) -> None:
        self.p = check_real(p, "p", "Dropout", low=0.0, high=1.0, high_open=True)
        self.rng = as_generator(rng)
        self._mask: np.ndarray | None = None
        self._x_shape: tuple[int, ...] | None = None

    def forward(self, x):
        self._x_shape = x.shape
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        # drawn on the host (one seed gives the same masks on every device), then moved to x's
        dtype = host_dtype(x)
        keep = self.rng.random(x.shape, dtype=dtype if dtype == np.float64 else np.float32) >= self.p
        self._mask = asarray_like(keep.astype(dtype) * dtype.type(1.0 / (1.0 - self.p)), x)
        return x * self._mask

    def backward(self, grad_out, need_input_grad=True):
        grad_out = self._check_grad(grad_out, self._cached(self._x_shape))
        return grad_out if self._mask is None else grad_out * self._mask

    def to_onnx(self, graph, name: str) -> None:
        graph.add("Identity", name)  # dropout is the identity at inference

    def get_config(self):
        return {"p": self.p}
