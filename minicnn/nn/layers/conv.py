"""Conv2D: the 2-D convolution layer (cross-correlation, as in every CNN library)."""

from __future__ import annotations

import numpy as np

from .. import _lowering
from .. import functional as F
from .._backend import namespace
from ..parameter import Parameter
from ..utils import as_generator, check_bool, check_dtype, positive_int, positive_pair
from .base import BUILTIN_JAVASCRIPT, Layer, Window, init_weight

#: Conv2D's algorithms: the fast private lowering (default), or the readable im2col functions.
ALGORITHMS = ("fast", "im2col")


def _conv_padding_argument(padding, stride: tuple[int, int], name: str):
    """Conv2D's padding as given, checked: "valid", "same" (stride 1 only), (ph, pw) or
    ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(
                f"{name}: padding must be an int, a pair, 'valid', 'same' or "
                f"((top, bottom), (left, right)), got {padding!r}"
            )
        if padding == "same" and stride != (1, 1):
            raise ValueError(f"{name}: padding='same' needs stride 1, got stride={stride}")
        return padding
    if F.is_per_side_padding(padding):
        return (
            positive_pair(padding[0], "padding (top, bottom)", name, minimum=0),
            positive_pair(padding[1], "padding (left, right)", name, minimum=0),
        )
    return positive_pair(padding, "padding", name, minimum=0)


def _as_lists(value):
    """Tuples (nested or not) as lists, for JSON."""
    return [_as_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in every CNN library; see :mod:`minicnn.functional`).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), "valid", "same" or ((top, bottom), (left, right))
        "same" keeps H and W at stride 1; for even kernels the extra pixel goes after, as in PyTorch.
    bias : bool
    dtype : float32 (default) or float64
    rng : int seed, numpy.random.Generator or None
    init : "he" (default), "he_uniform", "glorot" or "glorot_normal"
    algorithm : "fast" (default) or "im2col"
        Which code computes the same products: "im2col" runs the readable
        :func:`minicnn.nn.functional.conv2d` / :func:`~minicnn.nn.functional.conv2d_backward`
        (step through them to see the math); "fast" the private lowering in
        :mod:`minicnn.nn._lowering`, laid out for speed and bounded memory, on NumPy arrays
        (arrays of other libraries, e.g. CuPy's on a GPU, always run the readable functions).

    Attributes
    ----------
    weight : Parameter of shape (out_channels, in_channels, kh, kw)
    bias : Parameter of shape (out_channels,) or None

    Shapes: input (N, in_channels, H, W) -> output (N, out_channels, H_out, W_out) with
    ``H_out = floor((H + 2p - d(k-1) - 1) / s) + 1``.
    """

    input_size_argument = "in_channels"
    input_ndim = 4
    is_convolution = True
    javascript = BUILTIN_JAVASCRIPT
    cache_names = ("_x", "_cols")

    #: Scratch-memory bound in bytes of one forward + backward pass; larger batches are processed
    #: in chunks of samples. None: :func:`minicnn.nn._lowering.get_workspace_limit` (64 MiB by default).
    workspace_bytes: int | None = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        bias: bool = True,
        dtype=np.float32,
        rng=None,
        init: str = "he",
        algorithm: str = "fast",
    ):
        name = f"Conv2D(in_channels={in_channels}, out_channels={out_channels})"
        if algorithm not in ALGORITHMS:
            raise ValueError(f"{name}: algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        self.algorithm = algorithm
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.out_channels = positive_int(out_channels, "out_channels", name)
        self.kernel_size = positive_pair(kernel_size, "kernel_size", name)
        self.stride = positive_pair(stride, "stride", name)
        self.dilation = positive_pair(dilation, "dilation", name)
        self.padding = _conv_padding_argument(padding, self.stride, name)
        self.dtype = check_dtype(dtype)
        self.init = init
        kh, kw = self.kernel_size
        fan_in, fan_out = in_channels * kh * kw, out_channels * kh * kw
        rng = as_generator(rng)
        bias = check_bool(bias, "bias", name)
        self.weight = Parameter(
            init_weight(
                (out_channels, in_channels, kh, kw), fan_in, fan_out, init, self.dtype, rng, owner=name
            )
        )
        self.bias = Parameter(np.zeros(out_channels, dtype=self.dtype)) if bias else None
        # _cols: the expanded input kept for backward (None once backward has reused its memory),
        # a view of _workspace, the scratch buffer this layer reuses from call to call
        self._x: np.ndarray | None = None
        self._cols: np.ndarray | tuple | None = None  # a tuple: one per thread's chunk (see _lowering.conv2d)
        self._workspace = _lowering.Workspace()

    @property
    def pad_amounts(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Padding as ((top, bottom), (left, right))."""
        return F.conv_padding(self.padding, self.kernel_size, self.dilation)

    def output_shape(self, input_shape) -> tuple[int, ...]:
        """(N, C_out, H_out, W_out) for an input of shape (N, C_in, H, W)."""
        (top, bottom), (left, right) = self.pad_amounts
        n, _, h, w = input_shape
        return (
            n,
            self.out_channels,
            F.conv_output_size(h, self.kernel_size[0], self.stride[0], top + bottom, self.dilation[0]),
            F.conv_output_size(w, self.kernel_size[1], self.stride[1], left + right, self.dilation[1]),
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x : (N, in_channels, H, W) -> (N, out_channels, H_out, W_out)."""
        out_shape = self.output_shape(x.shape)
        if min(out_shape[2:]) < 1:
            (top, bottom), (left, right) = self.pad_amounts
            padded = (x.shape[2] + top + bottom, x.shape[3] + left + right)
            reach = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True)]
            raise ValueError(
                f"{self!r}: input {x.shape} with padding ((top, bottom), (left, right))="
                f"{self.pad_amounts} is {padded[0]}x{padded[1]}, smaller "
                f"than the kernel's reach {reach[0]}x{reach[1]}"
            )
        bias = None if self.bias is None else self.bias.data
        self._x = x
        if self._readable(x):
            return F.conv2d(x, self.weight.data, bias, self.stride, self.pad_amounts, self.dilation)
        out, self._cols = _lowering.conv2d(
            x,
            self.weight.data,
            bias,
            self.stride,
            self.pad_amounts,
            self.dilation,
            workspace_bytes=self.workspace_bytes,
            keep_cols=True,
            workspace=self._workspace,
        )
        return out

    def backward(self, grad_out: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """grad_out : (N, out_channels, H_out, W_out) -> d loss / d x : (N, in_channels, H, W).

        Returns None when ``need_input_grad`` is False (the first layer of a model needs no input
        gradient; :meth:`Sequential.backward` says so).
        """
        x = self._cached(self._x)
        grad_out = self._check_grad(grad_out, self.output_shape(x.shape))
        need_w = self.weight.requires_grad
        if self._readable(x):
            dx, dweight, dbias = F.conv2d_backward(
                grad_out, x, self.weight.data, self.stride, self.pad_amounts, self.dilation
            )
        else:
            dx, dweight, dbias = _lowering.conv2d_backward(
                grad_out,
                x,
                self.weight.data,
                self.stride,
                self.pad_amounts,
                self.dilation,
                cols=self._cols,
                need_input_grad=need_input_grad,
                need_weight_grad=need_w,
                workspace_bytes=self.workspace_bytes,
                overwrite_cols=True,
                workspace=self._workspace,
            )
            self._cols = None  # its memory now holds the input gradient's columns; backward again rebuilds
        if need_w:
            self.weight.grad += dweight
        if self.bias is not None and self.bias.requires_grad:
            self.bias.grad += dbias
        return dx if need_input_grad else None

    def _readable(self, x) -> bool:
        """Whether the readable functions run: asked for, or arrays that are not NumPy's (the fast
        lowering is NumPy's own)."""
        return self.algorithm == "im2col" or namespace(x, self.weight.data) is not np

    def window(self) -> Window:
        (top, _), (left, _) = self.pad_amounts
        return Window(self.kernel_size, self.stride, (top, left), self.dilation)

    def scratch_bytes(self, input_shape, batch_size: int, itemsize: int = 4) -> int:
        """The expanded input (N, H_out, W_out, C_in * kh * kw) the matrix product reads."""
        _, _, h_out, w_out = self.output_shape((batch_size, *input_shape[1:]))
        kh, kw = self.kernel_size
        return batch_size * h_out * w_out * self.in_channels * kh * kw * itemsize

    def to_onnx(self, graph, name: str) -> None:
        """Conv (strides, dilations, pads ``[top, left, bottom, right]``; "same" written out)."""
        (top, bottom), (left, right) = self.pad_amounts
        weight = graph.constant(f"{name}.weight", self.weight.data)
        bias = None if self.bias is None else graph.constant(f"{name}.bias", self.bias.data)
        graph.add(
            "Conv",
            name,
            [weight, bias],
            kernel_shape=list(self.kernel_size),
            strides=list(self.stride),
            dilations=list(self.dilation),
            pads=[top, left, bottom, right],
        )

    def get_config(self) -> dict:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else _as_lists(self.padding),
            "dilation": list(self.dilation),
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
            "algorithm": self.algorithm,
        }

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1):
            text += f", stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        if self.algorithm != "fast":
            text += f", algorithm={self.algorithm!r}"
        return text
