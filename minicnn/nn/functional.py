"""Stateless array math: convolution and pooling, forward and backward.

Everything here is a plain function of NumPy arrays, testable on its own; the layers in
:mod:`minicnn.layers` hold parameters and call these functions.

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

import numpy as np


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


def pad2d(x: np.ndarray, padding: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of ``x`` (N, C, H, W); returns ``x`` itself when there is no padding."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


def _window(xp: np.ndarray, i: int, j: int, out_hw: tuple[int, int], stride, dilation) -> np.ndarray:
    """View of ``xp`` that kernel offset (i, j) sees at every output position: (N, C, Ho, Wo)."""
    ho, wo = out_hw
    top, left = i * dilation[0], j * dilation[1]
    return xp[:, :, top:top + stride[0] * (ho - 1) + 1:stride[0], left:left + stride[1] * (wo - 1) + 1:stride[1]]


def im2col(xp: np.ndarray, kernel_size, stride, dilation, out_hw, out: np.ndarray | None = None) -> np.ndarray:
    """Expand a padded input into receptive-field columns.

    Parameters
    ----------
    xp : ndarray of shape (N, C, Hp, Wp)
        The already padded input.
    kernel_size, stride, dilation : pairs of int
    out_hw : (Ho, Wo)
    out : optional ndarray of shape (N, C*kh*kw, Ho*Wo) to fill in place.

    Returns
    -------
    cols : ndarray of shape (N, C*kh*kw, Ho*Wo)
        ``cols[n, (c*kh + i)*kw + j, ho*Wo + wo] == xp[n, c, ho*sh + i*dh, wo*sw + j*dw]``.
        Row order (c, i, j) matches a weight reshaped from OIHW to (O, C*kh*kw).

    One strided copy per kernel offset (kh*kw of them); no loop over samples, channels or pixels.
    """
    n, c = xp.shape[:2]
    kh, kw = kernel_size
    ho, wo = out_hw
    if out is None:
        out = np.empty((n, c * kh * kw, ho * wo), dtype=xp.dtype)
    view = out.reshape(n, c, kh, kw, ho, wo)
    for i in range(kh):
        for j in range(kw):
            view[:, :, i, j] = _window(xp, i, j, out_hw, stride, dilation)
    return out


def col2im(cols: np.ndarray, padded_shape, kernel_size, stride, dilation, out_hw) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add columns back onto a padded input.

    Parameters
    ----------
    cols : ndarray of shape (N, C*kh*kw, Ho*Wo)
    padded_shape : (N, C, Hp, Wp)

    Returns
    -------
    dxp : ndarray of shape (N, C, Hp, Wp)
        Each input pixel receives the sum over every receptive field that contains it. Summed with
        one slice-add per kernel offset, so no ``np.add.at`` is needed.
    """
    n, c = padded_shape[:2]
    kh, kw = kernel_size
    ho, wo = out_hw
    dxp = np.zeros(padded_shape, dtype=cols.dtype)
    view = cols.reshape(n, c, kh, kw, ho, wo)
    for i in range(kh):
        for j in range(kw):
            _window(dxp, i, j, out_hw, stride, dilation)[...] += view[:, :, i, j]
    return dxp


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

def _pool_geometry(x_shape, kernel_size, stride, padding):
    h, w = x_shape[2:]
    ho = conv_output_size(h, kernel_size[0], stride[0], 2 * padding[0])
    wo = conv_output_size(w, kernel_size[1], stride[1], 2 * padding[1])
    pad = ((padding[0], padding[0]), (padding[1], padding[1]))
    return (ho, wo), pad


def max_pool2d(x: np.ndarray, kernel_size, stride, padding=(0, 0)):
    """Max pooling.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    kernel_size, stride, padding : pairs of int (padding is filled with -inf, as PyTorch does)

    Returns
    -------
    out : ndarray of shape (N, C, Ho, Wo)
    argmax : ndarray of shape (N, C, Ho, Wo), uint8 (uint16 for windows of more than 256 pixels)
        Which kernel offset ``i*kw + j`` held the maximum (the first one on ties).

    One comparison and two ``np.maximum`` passes per kernel offset, no masked writes: the offsets
    are visited in increasing order, so ``argmax = max(argmax, k * (window > out))`` records the
    first maximum (masked ``copyto``/boolean indexing took 16 ms on mnist-1's output, this 1.1 ms).
    A NaN in a window propagates to the output, as in PyTorch.
    """
    out_hw, pad = _pool_geometry(x.shape, kernel_size, stride, padding)
    xp = pad2d(x, pad, value=-np.inf)
    kh, kw = kernel_size
    index_type = np.uint8 if kh * kw <= 256 else np.uint16
    out = _window(xp, 0, 0, out_hw, stride, (1, 1)).copy()
    argmax = np.zeros(out.shape, dtype=index_type)
    for i in range(kh):
        for j in range(kw):
            if i == j == 0:
                continue
            window = _window(xp, i, j, out_hw, stride, (1, 1))
            better = window > out
            np.maximum(out, window, out=out)
            np.maximum(argmax, better * index_type(i * kw + j), out=argmax)
    return out, argmax


def max_pool2d_backward(grad_out: np.ndarray, argmax: np.ndarray, x_shape, kernel_size, stride,
                        padding=(0, 0)) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: each output's gradient goes to the input that was its max.

    Returns
    -------
    dx : ndarray of shape ``x_shape`` (N, C, H, W)

    When the windows do not overlap (stride >= kernel, no padding) each input pixel belongs to
    at most one window, so each offset's share is written, not added (5.4 ms -> 0.8 ms on
    mnist-1's output).
    """
    out_hw, pad = _pool_geometry(x_shape, kernel_size, stride, padding)
    n, c, h, w = x_shape
    (top, bottom), (left, right) = pad
    kh, kw = kernel_size
    disjoint = stride[0] >= kh and stride[1] >= kw and top == left == 0
    if disjoint and stride == tuple(kernel_size) and h == out_hw[0] * kh and w == out_hw[1] * kw:
        dxp = np.empty((n, c, h, w), dtype=grad_out.dtype)   # every pixel is written below
    else:
        dxp = np.zeros((n, c, h + top + bottom, w + left + right), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            window = _window(dxp, i, j, out_hw, stride, (1, 1))
            if disjoint:
                np.multiply(grad_out, argmax == i * kw + j, out=window)
            else:
                window += grad_out * (argmax == i * kw + j)
    return dxp if dxp.shape == tuple(x_shape) else np.ascontiguousarray(dxp[:, :, top:top + h, left:left + w])


def avg_pool2d(x: np.ndarray, kernel_size, stride, padding=(0, 0)) -> np.ndarray:
    """Average pooling; padded zeros count in the average (PyTorch's ``count_include_pad=True``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)

    Returns
    -------
    out : ndarray of shape (N, C, Ho, Wo)
    """
    out_hw, pad = _pool_geometry(x.shape, kernel_size, stride, padding)
    xp = pad2d(x, pad)
    kh, kw = kernel_size
    out = _window(xp, 0, 0, out_hw, stride, (1, 1)).copy()
    for i in range(kh):
        for j in range(kw):
            if i or j:
                out += _window(xp, i, j, out_hw, stride, (1, 1))
    out *= 1.0 / (kh * kw)
    return out


def avg_pool2d_backward(grad_out: np.ndarray, x_shape, kernel_size, stride, padding=(0, 0)) -> np.ndarray:
    """Gradient of :func:`avg_pool2d`: each output spreads its gradient evenly over its window.

    Returns
    -------
    dx : ndarray of shape ``x_shape`` (N, C, H, W)
    """
    out_hw, pad = _pool_geometry(x_shape, kernel_size, stride, padding)
    n, c, h, w = x_shape
    (top, bottom), (left, right) = pad
    kh, kw = kernel_size
    dxp = np.zeros((n, c, h + top + bottom, w + left + right), dtype=grad_out.dtype)
    share = grad_out * (1.0 / (kh * kw))
    for i in range(kh):
        for j in range(kw):
            _window(dxp, i, j, out_hw, stride, (1, 1))[...] += share
    return dxp if dxp.shape == tuple(x_shape) else np.ascontiguousarray(dxp[:, :, top:top + h, left:left + w])


# ----------------------------------------------------------------------------------------------
# Softmax
# ----------------------------------------------------------------------------------------------

def log_softmax(logits: np.ndarray, dtype=None) -> np.ndarray:
    """Numerically stable log-softmax over the last axis: finite for logits of any finite magnitude.

    Computed in float64 (the logits matrix is small) as ``shifted - log(sum(exp(shifted)))`` with
    ``shifted = logits - max``, so exp never overflows and the largest term is 1 (the sum's log is
    taken with log1p of the others); a gap beyond float64's range is clipped to
    its largest finite value.

    Parameters
    ----------
    logits : ndarray of shape (N, K)
    dtype : dtype of the result; the logits' dtype by default

    Returns
    -------
    ndarray of shape (N, K)
    """
    logits64 = logits.astype(np.float64, copy=False)
    with np.errstate(over="ignore"):
        shifted = logits64 - logits64.max(axis=-1, keepdims=True)
    np.maximum(shifted, -np.finfo(np.float64).max, out=shifted)
    # log(sum(exp(shifted))) = log1p(sum of the other terms): the largest term is exactly 1, and
    # log1p keeps full precision when the rest are tiny (a confident prediction's loss of 1e-6
    # computed as log(1 + 1e-6) would lose 10 of its 16 digits)
    others = np.exp(shifted)
    np.put_along_axis(others, shifted.argmax(axis=-1)[..., None], 0.0, axis=-1)
    out = shifted - np.log1p(others.sum(axis=-1, keepdims=True))
    return out.astype(dtype or logits.dtype, copy=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed as ``exp(log_softmax(logits))``."""
    return np.exp(log_softmax(logits))
