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

import numpy as np

#: Largest im2col workspace (bytes) a convolution builds at once. Above it the batch is processed
#: in chunks of samples, so memory stays bounded whatever the batch size.
DEFAULT_WORKSPACE_BYTES = 64 * 2**20


def _pair(value, name: str) -> tuple[int, int]:
    """Return ``(a, b)`` from an int or a pair of ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


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


def _chunk_size(n: int, bytes_per_sample: int, workspace_bytes: int) -> int:
    return max(1, min(n, workspace_bytes // max(bytes_per_sample, 1)))


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride=(1, 1),
           padding=((0, 0), (0, 0)), dilation=(1, 1), workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
           keep_cols: bool = False):
    """2-D cross-correlation (what CNN layers call convolution; see the module docstring).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W)
    weight : ndarray of shape (C_out, C_in, kh, kw)
    bias : ndarray of shape (C_out,) or None
    stride, dilation : pairs of int
    padding : ((top, bottom), (left, right))
    workspace_bytes : int
        Largest im2col matrix built at once; larger batches are processed in chunks of samples.
    keep_cols : bool
        Also return the im2col matrix for the backward pass when it fits in ``workspace_bytes``.

    Returns
    -------
    out : ndarray of shape (N, C_out, Ho, Wo)
    cols : ndarray of shape (N, C_in*kh*kw, Ho*Wo) or None
        Only when ``keep_cols``; None when the batch was processed in chunks.
    """
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    xp = pad2d(x, padding)
    ho = conv_output_size(xp.shape[2], kh, stride[0], 0, dilation[0])
    wo = conv_output_size(xp.shape[3], kw, stride[1], 0, dilation[1])
    w2d = weight.reshape(c_out, c * kh * kw)
    out = np.empty((n, c_out, ho * wo), dtype=np.result_type(x, weight))
    chunk = _chunk_size(n, c * kh * kw * ho * wo * xp.itemsize, workspace_bytes)
    cols_kept = None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cols = im2col(xp[start:stop], (kh, kw), stride, dilation, (ho, wo))
        # (C_out, K) @ (n, K, P) -> (n, C_out, P): NCHW comes out directly, no transpose copy.
        np.matmul(w2d, cols, out=out[start:stop])
        if keep_cols and chunk == n:
            cols_kept = cols
    if bias is not None:
        out += bias[:, None]
    out = out.reshape(n, c_out, ho, wo)
    return (out, cols_kept) if keep_cols else out


def conv2d_backward(grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, stride=(1, 1),
                    padding=((0, 0), (0, 0)), dilation=(1, 1), cols: np.ndarray | None = None,
                    need_input_grad: bool = True, need_weight_grad: bool = True,
                    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES):
    """Gradients of :func:`conv2d`.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C_out, Ho, Wo)
    x : ndarray of shape (N, C_in, H, W)
        The forward input (unpadded).
    weight : ndarray of shape (C_out, C_in, kh, kw)
    cols : ndarray of shape (N, C_in*kh*kw, Ho*Wo), optional
        The forward pass's im2col matrix; rebuilt chunk by chunk when not given.

    Returns
    -------
    dx : ndarray of shape (N, C_in, H, W) or None
    dweight : ndarray of shape (C_out, C_in, kh, kw) or None
    dbias : ndarray of shape (C_out,)

    With ``cols`` the expanded input and ``W`` the weight as a (C_out, K) matrix:
    ``dW = sum_n grad[n] @ cols[n].T`` and ``dcols = W.T @ grad``, then :func:`col2im`.
    """
    n, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = grad_out.shape[2:]
    k = c * kh * kw
    g = grad_out.reshape(n, c_out, ho * wo)
    w2d = weight.reshape(c_out, k)
    (top, bottom), (left, right) = padding
    padded_shape = (n, c, h + top + bottom, w + left + right)
    dbias = grad_out.sum(axis=(0, 2, 3))
    dweight = np.zeros((c_out, k), dtype=weight.dtype) if need_weight_grad else None
    dxp = np.empty(padded_shape, dtype=x.dtype) if need_input_grad else None
    xp = None
    chunk = n if cols is not None else _chunk_size(n, k * ho * wo * x.itemsize, workspace_bytes)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        if cols is not None:
            chunk_cols = cols
        elif need_weight_grad:
            if xp is None:
                xp = pad2d(x, padding)
            chunk_cols = im2col(xp[start:stop], (kh, kw), stride, dilation, (ho, wo))
        g_chunk = g[start:stop]
        if need_weight_grad:
            # sum over samples of (C_out, P) @ (P, K)
            dweight += np.matmul(g_chunk, chunk_cols.transpose(0, 2, 1)).sum(axis=0)
        if need_input_grad:
            dcols = np.matmul(w2d.T, g_chunk)  # (K, C_out) @ (n, C_out, P) -> (n, K, P)
            dxp[start:stop] = col2im(dcols, (stop - start,) + padded_shape[1:], (kh, kw), stride,
                                     dilation, (ho, wo))
    dx = None
    if need_input_grad:
        dx = dxp if dxp.shape == x.shape else np.ascontiguousarray(dxp[:, :, top:top + h, left:left + w])
    if dweight is not None:
        dweight = dweight.reshape(weight.shape)
    return dx, dweight, dbias


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
    argmax : ndarray of shape (N, C, Ho, Wo), uint16
        Which kernel offset ``i*kw + j`` held the maximum (the first one on ties).
    """
    out_hw, pad = _pool_geometry(x.shape, kernel_size, stride, padding)
    xp = pad2d(x, pad, value=-np.inf)
    kh, kw = kernel_size
    out = _window(xp, 0, 0, out_hw, stride, (1, 1)).copy()
    argmax = np.zeros(out.shape, dtype=np.uint16)
    for i in range(kh):
        for j in range(kw):
            if i == j == 0:
                continue
            window = _window(xp, i, j, out_hw, stride, (1, 1))
            better = window > out
            np.copyto(out, window, where=better)
            argmax[better] = i * kw + j
    return out, argmax


def max_pool2d_backward(grad_out: np.ndarray, argmax: np.ndarray, x_shape, kernel_size, stride,
                        padding=(0, 0)) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: each output's gradient goes to the input that was its max.

    Returns
    -------
    dx : ndarray of shape ``x_shape`` (N, C, H, W)
    """
    out_hw, pad = _pool_geometry(x_shape, kernel_size, stride, padding)
    n, c, h, w = x_shape
    (top, bottom), (left, right) = pad
    dxp = np.zeros((n, c, h + top + bottom, w + left + right), dtype=grad_out.dtype)
    kh, kw = kernel_size
    zero = np.zeros((), dtype=grad_out.dtype)
    for i in range(kh):
        for j in range(kw):
            _window(dxp, i, j, out_hw, stride, (1, 1))[...] += np.where(argmax == i * kw + j, grad_out, zero)
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
    ``shifted = logits - max``, so exp never overflows; a gap beyond float64's range is clipped to
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
    out = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out.astype(dtype or logits.dtype, copy=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed as ``exp(log_softmax(logits))``."""
    return np.exp(log_softmax(logits))
