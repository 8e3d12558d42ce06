"""Pooling: max and average over sliding windows, and the global average over each feature map."""

from __future__ import annotations

import numpy as np

from .. import _threads
from .. import functional as F
from .._backend import namespace
from ..utils import positive_pair
from .base import BUILTIN_JAVASCRIPT, Layer, Window


class _Pool2D(Layer):
    """What max and average pooling share: the window, its shapes, its checks, its config."""

    input_ndim = 4
    javascript = BUILTIN_JAVASCRIPT
    #: The ONNX operator, and its attributes besides the window's.
    onnx_op = ""
    onnx_attributes: dict = {}

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        name = f"{type(self).__name__}(kernel_size={kernel_size!r})"
        self.kernel_size = positive_pair(kernel_size, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else positive_pair(stride, "stride", name)
        self.padding = positive_pair(padding, "padding", name, minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(f"{name}: padding must be at most half the kernel size, got padding={padding!r}")
        self._x_shape: tuple[int, ...] | None = None

    def output_shape(self, input_shape):
        n, c, h, w = input_shape
        return (
            n,
            c,
            F.conv_output_size(h, self.kernel_size[0], self.stride[0], 2 * self.padding[0]),
            F.conv_output_size(w, self.kernel_size[1], self.stride[1], 2 * self.padding[1]),
        )

    def _checked(self, x):
        if min(self.output_shape(x.shape)[2:]) < 1:
            raise ValueError(
                f"{self!r}: input {x.shape} with padding {self.padding} is smaller than the "
                f"pooling window {self.kernel_size}"
            )
        self._x_shape = x.shape
        return x

    def window(self) -> Window:
        return Window(self.kernel_size, self.stride, self.padding)

    def to_onnx(self, graph, name: str) -> None:
        ph, pw = self.padding
        graph.add(
            self.onnx_op,
            name,
            kernel_shape=list(self.kernel_size),
            strides=list(self.stride),
            pads=[ph, pw, ph, pw],
            **self.onnx_attributes,
        )

    def get_config(self):
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}"
        if self.stride != self.kernel_size:
            text += f", stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        return text


class MaxPool2D(_Pool2D):
    """Max pooling over ``kernel_size`` windows; stride defaults to kernel_size.

    Shapes: (N, C, H, W) -> (N, C, H_out, W_out), sizes as for Conv2D. Backward sends each output's
    gradient to the input that held the window's maximum. ONNX: MaxPool (the padding never wins the
    max, as minicnn pads with -inf).
    """

    onnx_op = "MaxPool"
    cache_names = ("_argmax",)

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__(kernel_size, stride, padding)
        self._argmax: np.ndarray | None = None

    def forward(self, x):
        x = self._checked(x)
        if namespace(x) is not np:  # another library: the readable function, on the whole batch
            out, self._argmax = F.max_pool2d(x, self.kernel_size, self.stride, self.padding)
            return out
        shape = self.output_shape(x.shape)
        out = np.empty(shape, dtype=x.dtype)
        self._argmax = argmax = np.empty(shape, dtype=F.pool_index_dtype(self.kernel_size))

        def part(a, b):  # a slice of the batch, on its own thread when the batch is large
            F.max_pool2d(x[a:b], self.kernel_size, self.stride, self.padding, out=(out[a:b], argmax[a:b]))

        _threads.over_batch(part, len(x), x.nbytes)
        return out

    def backward(self, grad_out, need_input_grad=True):
        argmax = self._cached(self._argmax)
        grad_out = self._check_grad(grad_out, argmax.shape)
        x_shape = self._x_shape
        if namespace(grad_out, argmax) is not np:
            return F.max_pool2d_backward(
                grad_out, argmax, x_shape, self.kernel_size, self.stride, self.padding
            )
        dx = np.empty(x_shape, dtype=grad_out.dtype)

        def part(a, b):
            shape = (b - a, *x_shape[1:])
            args = (self.kernel_size, self.stride, self.padding)
            F.max_pool2d_backward(grad_out[a:b], argmax[a:b], shape, *args, out=dx[a:b])

        _threads.over_batch(part, len(dx), dx.nbytes)
        return dx


class AvgPool2D(_Pool2D):
    """Average pooling over ``kernel_size`` windows; stride defaults to kernel_size; padded zeros
    count in the average (PyTorch's default). Shapes as for MaxPool2D. ONNX: AveragePool with
    ``count_include_pad=1``."""

    onnx_op = "AveragePool"
    onnx_attributes = {"count_include_pad": 1}

    def forward(self, x):
        return F.avg_pool2d(self._checked(x), self.kernel_size, self.stride, self.padding)

    def backward(self, grad_out, need_input_grad=True):
        x_shape = self._cached(self._x_shape)
        grad_out = self._check_grad(grad_out, self.output_shape(x_shape))
        return F.avg_pool2d_backward(grad_out, x_shape, self.kernel_size, self.stride, self.padding)


class GlobalAvgPool2D(Layer):
    """Mean over the spatial axes: (N, C, H, W) -> (N, C)."""

    input_ndim = 4
    javascript = BUILTIN_JAVASCRIPT

    def __init__(self) -> None:
        self._x_shape: tuple[int, ...] | None = None

    def output_shape(self, input_shape):
        return tuple(input_shape[:2])

    def forward(self, x):
        self._x_shape = x.shape
        return namespace(x).mean(x, axis=(2, 3))

    def backward(self, grad_out, need_input_grad=True):
        n, c, h, w = self._cached(self._x_shape)
        grad_out = self._check_grad(grad_out, (n, c))
        xp = namespace(grad_out)
        return xp.asarray(xp.broadcast_to((grad_out / (h * w))[:, :, None, None], (n, c, h, w)), copy=True)

    def to_onnx(self, graph, name: str) -> None:
        """GlobalAveragePool, then Flatten: this layer returns (N, C), not (N, C, 1, 1)."""
        graph.add("GlobalAveragePool", name)
        graph.add("Flatten", f"{name}.flatten", axis=1)
