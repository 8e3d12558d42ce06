"""Stateless array math: convolution and pooling, forward and backward.

Everything here is a plain function of arrays, testable on its own; the layers in
:mod:`minicnn.nn.layers` hold parameters and call these functions. The functions ask their arrays
for their library (``xp = namespace(x)``, :mod:`minicnn.nn._backend`) and use only what the Python
Array API standard defines, so they run on NumPy, on CuPy (a GPU) and on any other library that
follows the standard; NumPy arrays get NumPy itself, with a few operations done in place.

Layouts follow PyTorch: activations are NCHW, ``(N, C, H, W)``; convolution weights are OIHW,
``(out_channels, in_channels, kh, kw)``.

A note on the name "convolution": mathematical convolution flips the kernel,
``(x * k)[i, j] = sum_{u,v} x[i - u, j - v] k[u, v]``. CNN layers (ours, PyTorch's, everyone's)
compute *cross-correlation*, ``sum_{u,v} x[i + u, j + v] k[u, v]``, with no flip. Since the kernel
is learned, the flip makes no difference to what a network can represent; it matters only when you
compare with a textbook filter or with ``scipy.signal.convolve2d``.

The convolution follows the im2col derivation (J. Wu, *Introduction to Convolutional Neural
Networks*): the input is expanded into a matrix whose columns are the receptive fields, so the
forward pass is one matrix product with the filters, and the backward pass is two products with
the transposes of the same expansion.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, TypeGuard

import numpy as np

from ._backend import contiguous, device, is_array, masked, maximum_into, namespace, set_masked
from .utils import pair, positive_pair


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """Output length along one axis: ``floor((size + pad_total - dilation*(kernel-1) - 1) / stride) + 1``.

    ``pad_total`` is the padding on both sides together (``2p`` for symmetric padding ``p``).
    The result is below 1 when the kernel's reach does not fit in the padded input.
    """
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """Padding ``(before, after)`` that keeps the size at stride 1, split as PyTorch splits it
    (the odd pixel of an even kernel goes after)."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def pad2d(x, padding: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0):
    """Pad the two spatial axes of ``x`` (N, C, H, W); returns ``x`` itself when there is no padding."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    xp = namespace(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype, device=device(x))
    out[:, :, top : top + h, left : left + w] = x
    return out


Window = tuple[slice, slice, slice, slice]


def _window(
    i: int,
    j: int,
    out_hw: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> Window:
    """Index of what kernel offset (i, j) sees at every output position: ``padded[key]`` is (N, C, Ho, Wo).

    An index rather than a view, because the standard leaves writing through a view undefined:
    ``padded[key] += g`` adds into the padded array on every library (it ends in ``__setitem__``).
    """
    ho, wo = out_hw
    top, left = i * dilation[0], j * dilation[1]
    rows = slice(top, top + stride[0] * (ho - 1) + 1, stride[0])
    cols = slice(left, left + stride[1] * (wo - 1) + 1, stride[1])
    return slice(None), slice(None), rows, cols


# ----------------------------------------------------------------------------------------------
# Convolution, the readable way: im2col, one matrix product, and its two transposes
# ----------------------------------------------------------------------------------------------

Padding = int | tuple[int, int] | str | tuple[tuple[int, int], tuple[int, int]]


class ConvGeometry(NamedTuple):
    """A convolution's arguments as pairs, and its output size.

    ``padding`` is ((top, bottom), (left, right)); ``out_hw`` is (Ho, Wo).
    """

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    out_hw: tuple[int, int]


def conv_padding(padding: Padding, kernel_size, dilation=1) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding as ((top, bottom), (left, right)) from any of the forms a convolution accepts.

    ``p`` pads every side by p; ``(ph, pw)`` pads top and bottom by ph, left and right by pw;
    ``"valid"`` is no padding; ``"same"`` keeps the size at stride 1 (:func:`same_padding`);
    ``((top, bottom), (left, right))`` is taken as it is.
    """
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(
                "padding must be an int, a pair, 'valid', 'same' or "
                f"((top, bottom), (left, right)), got {padding!r}"
            )
        if padding == "valid":
            return (0, 0), (0, 0)
        kh, kw = positive_pair(kernel_size, "kernel_size", "padding='same'")
        dh, dw = pair(dilation, "dilation")
        return same_padding(kh, dh), same_padding(kw, dw)
    if is_per_side_padding(padding):
        top_bottom = positive_pair(padding[0], "padding (top, bottom)", "conv_padding", minimum=0)
        left_right = positive_pair(padding[1], "padding (left, right)", "conv_padding", minimum=0)
        return top_bottom, left_right
    ph, pw = positive_pair(padding, "padding", "conv_padding", minimum=0)
    return (ph, ph), (pw, pw)


def is_per_side_padding(padding: object) -> TypeGuard[tuple[tuple[int, int], tuple[int, int]]]:
    """Whether ``padding`` is given per side, as ((top, bottom), (left, right))."""
    return (
        isinstance(padding, (tuple, list))
        and len(padding) == 2
        and all(isinstance(p, (tuple, list)) for p in padding)
    )


def conv_geometry(x_shape, kernel_size, stride=1, padding: Padding = 0, dilation=1) -> ConvGeometry:
    """Check a convolution's arguments against an input of ``x_shape`` (N, C, H, W) and size its output.

    Raises ValueError when the padded input is smaller than the kernel's reach ``d*(k-1) + 1``, or
    for ``padding="same"`` with a stride other than 1.
    """
    kernel = positive_pair(kernel_size, "kernel_size", "conv")
    strides = positive_pair(stride, "stride", "conv")
    dilations = positive_pair(dilation, "dilation", "conv")
    if padding == "same" and strides != (1, 1):
        raise ValueError(f"conv: padding='same' needs stride 1, got stride={strides}")
    pads = conv_padding(padding, kernel, dilations)
    h, w = x_shape[2:]
    out_hw = (
        conv_output_size(h, kernel[0], strides[0], sum(pads[0]), dilations[0]),
        conv_output_size(w, kernel[1], strides[1], sum(pads[1]), dilations[1]),
    )
    if min(out_hw) < 1:
        reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilations, strict=True)]
        raise ValueError(
            f"conv: input {tuple(x_shape)} padded by {pads} is smaller than the kernel's reach "
            f"{reach[0]}x{reach[1]}"
        )
    return ConvGeometry(kernel, strides, pads, dilations, out_hw)


def im2col(x, kernel_size, stride=1, padding: Padding = 0, dilation=1):
    """Expand an input into a matrix whose columns are its receptive fields.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (int, int), "valid", "same" or ((top, bottom), (left, right))
        Zeros added around ``x`` first (see :func:`conv_padding`).

    Returns
    -------
    cols : ndarray of shape (N, C*kh*kw, Ho*Wo)
        ``cols[n, (c*kh + i)*kw + j, ho*Wo + wo] == xp[n, c, ho*sh + i*dh, wo*sw + j*dw]``, with
        ``xp`` the padded input and Ho, Wo from :func:`conv_output_size`. Row order (c, i, j)
        matches a weight reshaped from OIHW to (C_out, C*kh*kw), so the convolution is one
        matrix product (J. Wu's im2row, transposed: one column per output pixel).

    One strided copy per kernel offset (kh*kw of them); no loop over samples, channels or pixels.
    """
    xp = namespace(x)
    geometry = conv_geometry(x.shape, kernel_size, stride, padding, dilation)
    (kh, kw), (ho, wo) = geometry.kernel_size, geometry.out_hw
    padded = pad2d(x, geometry.padding)
    n, c = x.shape[:2]
    cols = xp.empty((n, c, kh, kw, ho, wo), dtype=x.dtype, device=device(x))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j, :, :] = padded[_window(i, j, (ho, wo), geometry.stride, geometry.dilation)]
    return xp.reshape(cols, (n, c * kh * kw, ho * wo))


def col2im(cols, x_shape, kernel_size, stride=1, padding: Padding = 0, dilation=1):
    """Adjoint (transpose) of :func:`im2col`: sum columns back onto the input they were copied from.

    Parameters
    ----------
    cols : ndarray of shape (N, C*kh*kw, Ho*Wo)
    x_shape : (N, C, H, W), the shape of :func:`im2col`'s input
    kernel_size, stride, padding, dilation : as for :func:`im2col`

    Returns
    -------
    x_sum : ndarray of shape (N, C, H, W)
        Each input pixel receives the sum of every column entry that :func:`im2col` copied from it
        (entries that came from the padding are dropped). Summed with one slice-add per kernel
        offset: no scatter-add (``np.add.at``, which the Array API standard lacks) is needed.
    """
    xp = namespace(cols)
    geometry = conv_geometry(x_shape, kernel_size, stride, padding, dilation)
    (kh, kw), (ho, wo) = geometry.kernel_size, geometry.out_hw
    (top, bottom), (left, right) = geometry.padding
    n, c, h, w = x_shape
    if cols.shape != (n, c * kh * kw, ho * wo):
        raise ValueError(f"col2im: expected cols of shape {(n, c * kh * kw, ho * wo)}, got {cols.shape}")
    padded = xp.zeros((n, c, h + top + bottom, w + left + right), dtype=cols.dtype, device=device(cols))
    view = xp.reshape(cols, (n, c, kh, kw, ho, wo))
    for i in range(kh):
        for j in range(kw):
            padded[_window(i, j, (ho, wo), geometry.stride, geometry.dilation)] += view[:, :, i, j, :, :]
    return contiguous(xp, padded[:, :, top : top + h, left : left + w])


def _check_conv_arrays(x, weight, caller: str) -> None:
    if not is_array(x) or x.ndim != 4:
        got = x.shape if is_array(x) else type(x).__name__
        raise ValueError(f"{caller}: expected x of shape (N, C_in, H, W), got {got}")
    if not is_array(weight) or weight.ndim != 4 or weight.shape[1] != x.shape[1]:
        got = weight.shape if is_array(weight) else type(weight).__name__
        raise ValueError(
            f"{caller}: expected weight of shape (C_out, {x.shape[1]}, kh, kw) for x of shape "
            f"{x.shape}, got {got}"
        )


def conv2d(x, weight, bias=None, stride=1, padding: Padding = 0, dilation=1):
    """2-D convolution (cross-correlation) as one matrix product: ``Y = W @ im2col(x) + b``.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in, kh, kw)
    bias : ndarray of shape (C_out,) or None
    stride, dilation : int or (int, int)
    padding : int, (int, int), "valid", "same" or ((top, bottom), (left, right))

    Returns
    -------
    out : ndarray of shape (N, C_out, Ho, Wo)

    The readable version, for stepping through; ``Conv2D(..., algorithm="im2col")`` runs it. The
    default layer computes the same products faster (:mod:`minicnn.nn._lowering`).
    """
    _check_conv_arrays(x, weight, "conv2d")
    xp = namespace(x, weight, bias)
    c_out, _, kh, kw = weight.shape
    ho, wo = conv_geometry(x.shape, (kh, kw), stride, padding, dilation).out_hw
    cols = im2col(x, (kh, kw), stride, padding, dilation)  # (N, C_in*kh*kw, Ho*Wo)
    kernels = xp.reshape(weight, (c_out, -1))  # (C_out, C_in*kh*kw): one filter per row
    out = kernels @ cols  # (N, C_out, Ho*Wo): each filter at each position
    if bias is not None:
        out += bias[:, None]
    return xp.reshape(out, (x.shape[0], c_out, ho, wo))


def conv2d_backward(grad_out, x, weight, stride=1, padding: Padding = 0, dilation=1) -> tuple[Any, Any, Any]:
    """Gradients of :func:`conv2d` as two matrix products with the same expansion (J. Wu, sec. 6).

    With ``cols = im2col(x)`` (K, P) per sample, ``W`` the weight as a (C_out, K) matrix and ``G``
    the output gradient as a (C_out, P) matrix (K = C_in*kh*kw, P = Ho*Wo), the forward pass is
    ``Y = W @ cols``, so

    - ``dW = sum over samples of G @ cols.T``: each filter's gradient is the output gradient
      correlated with the inputs it saw;
    - ``dcols = W.T @ G``, and ``dx = col2im(dcols)``: each input pixel collects the gradient of
      every column it was copied into;
    - ``dbias = G`` summed over samples and positions.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C_out, Ho, Wo)
    x : ndarray of shape (N, C_in, H, W), the forward pass's input
    weight : ndarray of shape (C_out, C_in, kh, kw)
    stride, padding, dilation : as for :func:`conv2d`

    Returns
    -------
    dx : ndarray of shape (N, C_in, H, W)
    dweight : ndarray of shape (C_out, C_in, kh, kw)
    dbias : ndarray of shape (C_out,)
    """
    _check_conv_arrays(x, weight, "conv2d_backward")
    n, (c_out, _, kh, kw) = x.shape[0], weight.shape
    ho, wo = conv_geometry(x.shape, (kh, kw), stride, padding, dilation).out_hw
    if not is_array(grad_out) or grad_out.shape != (n, c_out, ho, wo):
        got = grad_out.shape if is_array(grad_out) else type(grad_out).__name__
        raise ValueError(f"conv2d_backward: expected grad_out of shape {(n, c_out, ho, wo)}, got {got}")
    xp = namespace(grad_out, x, weight)
    cols = im2col(x, (kh, kw), stride, padding, dilation)  # (N, K, P), as in the forward pass
    grad = xp.reshape(grad_out, (n, c_out, ho * wo))  # G: (N, C_out, P)
    kernels = xp.reshape(weight, (c_out, -1))  # W: (C_out, K)
    dweight = xp.sum(grad @ xp.permute_dims(cols, (0, 2, 1)), axis=0)  # sum_n G @ cols.T: (C_out, K)
    dcols = kernels.T @ grad  # W.T @ G: (N, K, P)
    dx = col2im(dcols, x.shape, (kh, kw), stride, padding, dilation)
    return dx, xp.reshape(dweight, weight.shape), xp.sum(grad_out, axis=(0, 2, 3))


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------


def _pool_geometry(x_shape, kernel_size, stride, padding):
    h, w = x_shape[2:]
    ho = conv_output_size(h, kernel_size[0], stride[0], 2 * padding[0])
    wo = conv_output_size(w, kernel_size[1], stride[1], 2 * padding[1])
    pad = ((padding[0], padding[0]), (padding[1], padding[1]))
    return (ho, wo), pad


def pool_index_dtype(kernel_size, xp: Any = np) -> Any:
    """The dtype of :func:`max_pool2d`'s argmax in namespace ``xp``: uint8, or uint16 for windows of
    more than 256 pixels."""
    return xp.uint8 if kernel_size[0] * kernel_size[1] <= 256 else xp.uint16


def max_pool2d(x, kernel_size, stride, padding=(0, 0), out=None):
    """Max pooling.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    kernel_size, stride, padding : pairs of int (padding is filled with -inf, as PyTorch does)
    out : pair of ndarrays, optional
        Where to write the result and its argmax (shapes and dtypes as returned).

    Returns
    -------
    out : ndarray of shape (N, C, Ho, Wo)
    argmax : ndarray of shape (N, C, Ho, Wo), uint8 (uint16 for windows of more than 256 pixels)
        Which kernel offset ``i*kw + j`` held the maximum (the first one on ties).

    One comparison and two maximum passes per kernel offset, no masked writes: the offsets
    are visited in increasing order, so ``argmax = max(argmax, k * (window > out))`` records the
    first maximum (masked ``copyto``/boolean indexing took 16 ms on mnist-1's output, this 1.1 ms).
    A NaN in a window propagates to the output, as in PyTorch.
    """
    xp = namespace(x)
    out_hw, pad = _pool_geometry(x.shape, kernel_size, stride, padding)
    padded = pad2d(x, pad, value=-math.inf)
    kh, kw = kernel_size
    index_type = pool_index_dtype(kernel_size, xp)
    shape = (*x.shape[:2], *out_hw)
    given = out
    if out is None:
        out = (
            xp.empty(shape, dtype=x.dtype, device=device(x)),
            xp.empty(shape, dtype=index_type, device=device(x)),
        )
    result, argmax = out
    result[...] = padded[_window(0, 0, out_hw, stride, (1, 1))]
    argmax[...] = 0
    for i in range(kh):
        for j in range(kw):
            if i == j == 0:
                continue
            window = padded[_window(i, j, out_hw, stride, (1, 1))]
            better = window > result
            result = maximum_into(xp, result, window)
            argmax = maximum_into(xp, argmax, masked(xp, i * kw + j, better, index_type))
    if given is not None and given[0] is not result:  # a library without in-place maximum
        given[0][...], given[1][...] = result, argmax
        return given
    return result, argmax


def max_pool2d_backward(grad_out, argmax, x_shape, kernel_size, stride, padding=(0, 0), out=None):
    """Gradient of :func:`max_pool2d`: each output's gradient goes to the input that was its max.

    Returns
    -------
    dx : ndarray of shape ``x_shape`` (N, C, H, W)
        In ``out`` when given.

    When the windows do not overlap (stride >= kernel, no padding) each input pixel belongs to
    at most one window, so each offset's share is written, not added (5.4 ms -> 0.8 ms on
    mnist-1's output).
    """
    xp = namespace(grad_out, argmax)
    out_hw, pad = _pool_geometry(x_shape, kernel_size, stride, padding)
    n, c, h, w = x_shape
    (top, bottom), (left, right) = pad
    kh, kw = kernel_size
    disjoint = stride[0] >= kh and stride[1] >= kw and top == left == 0
    if disjoint and stride == tuple(kernel_size) and h == out_hw[0] * kh and w == out_hw[1] * kw:
        # every pixel is written below
        dxp = xp.empty((n, c, h, w), dtype=grad_out.dtype, device=device(grad_out)) if out is None else out
    else:
        shape = (n, c, h + top + bottom, w + left + right)
        dxp = xp.zeros(shape, dtype=grad_out.dtype, device=device(grad_out))
    for i in range(kh):
        for j in range(kw):
            key = _window(i, j, out_hw, stride, (1, 1))
            if disjoint:
                set_masked(xp, dxp, key, grad_out, argmax == i * kw + j)
            else:
                dxp[key] += masked(xp, grad_out, argmax == i * kw + j)
    if dxp is out:
        return out
    dx = dxp if dxp.shape == tuple(x_shape) else dxp[:, :, top : top + h, left : left + w]
    if out is None:
        return contiguous(xp, dx)
    out[...] = dx
    return out


def avg_pool2d(x, kernel_size, stride, padding=(0, 0)):
    """Average pooling; padded zeros count in the average (PyTorch's ``count_include_pad=True``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)

    Returns
    -------
    out : ndarray of shape (N, C, Ho, Wo)
    """
    xp = namespace(x)
    out_hw, pad = _pool_geometry(x.shape, kernel_size, stride, padding)
    padded = pad2d(x, pad)
    kh, kw = kernel_size
    out = xp.asarray(padded[_window(0, 0, out_hw, stride, (1, 1))], copy=True)
    for i in range(kh):
        for j in range(kw):
            if i or j:
                out += padded[_window(i, j, out_hw, stride, (1, 1))]
    out *= 1.0 / (kh * kw)
    return out


def avg_pool2d_backward(grad_out, x_shape, kernel_size, stride, padding=(0, 0)):
    """Gradient of :func:`avg_pool2d`: each output spreads its gradient evenly over its window.

    Returns
    -------
    dx : ndarray of shape ``x_shape`` (N, C, H, W)
    """
    xp = namespace(grad_out)
    out_hw, pad = _pool_geometry(x_shape, kernel_size, stride, padding)
    n, c, h, w = x_shape
    (top, bottom), (left, right) = pad
    kh, kw = kernel_size
    shape = (n, c, h + top + bottom, w + left + right)
    dxp = xp.zeros(shape, dtype=grad_out.dtype, device=device(grad_out))
    share = grad_out * (1.0 / (kh * kw))
    for i in range(kh):
        for j in range(kw):
            dxp[_window(i, j, out_hw, stride, (1, 1))] += share
    return dxp if dxp.shape == tuple(x_shape) else contiguous(xp, dxp[:, :, top : top + h, left : left + w])


# ----------------------------------------------------------------------------------------------
# Softmax
# ----------------------------------------------------------------------------------------------


def log_softmax(logits, dtype=None):
    """Numerically stable log-softmax over the last axis: finite for logits of any finite magnitude.

    Computed in float64 (the logits matrix is small) as ``shifted - log(sum(exp(shifted)))`` with
    ``shifted = logits - max``, so exp never overflows and the largest term is 1 (the sum's log is
    taken with log1p of the others); a gap beyond float64's range is clipped to
    its largest finite value.

    Parameters
    ----------
    logits : ndarray of shape (N, K)
    dtype : dtype of the result, of the logits' library; the logits' dtype by default

    Returns
    -------
    ndarray of shape (N, K)
    """
    xp = namespace(logits)
    logits64 = xp.astype(logits, xp.float64, copy=False)
    with np.errstate(over="ignore"):  # NumPy warns on inf - inf; the clip below handles it
        shifted = logits64 - xp.max(logits64, axis=-1, keepdims=True)
    shifted = maximum_into(xp, shifted, -float(xp.finfo(xp.float64).max))
    # log(sum(exp(shifted))) = log1p(sum of the other terms): the largest term is exactly 1, and
    # log1p keeps full precision when the rest are tiny (a confident prediction's loss of 1e-6
    # computed as log(1 + 1e-6) would lose 10 of its 16 digits)
    largest = xp.argmax(shifted, axis=-1, keepdims=True)  # the first maximum: the term left out
    is_other = xp.arange(shifted.shape[-1], device=device(logits)) != largest
    others = masked(xp, xp.exp(shifted), is_other)
    out = shifted - xp.log1p(xp.sum(others, axis=-1, keepdims=True))
    return xp.astype(out, logits.dtype if dtype is None else dtype, copy=False)


def softmax(logits):
    """Softmax over the last axis, computed as ``exp(log_softmax(logits))``."""
    return namespace(logits).exp(log_softmax(logits))
