"""Forward passes against independent oracles: scipy's correlate2d / convolve2d and naive loops."""

import numpy as np
from hypothesis import given, settings, strategies as st
from scipy.signal import convolve2d, correlate2d

from minicnn.nn import functional as F
from minicnn.nn.layers import AvgPool2D, Conv2D, MaxPool2D


def scipy_conv_layer(x, weight, bias, stride, padding):
    """Oracle: correlate2d per (sample, out channel, in channel), summed, then stride by subsampling."""
    (top, bottom), (left, right) = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c_out = x.shape[0], weight.shape[0]
    full = np.array([[sum(correlate2d(xp[i, c], weight[o, c], mode="valid") for c in range(x.shape[1]))
                      for o in range(c_out)] for i in range(n)])
    full += bias[None, :, None, None]
    return full[:, :, ::stride[0], ::stride[1]]


def naive_pool(x, kernel, stride, padding, reduce, fill):
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * padding[0], w + 2 * padding[1]), fill, dtype=x.dtype)
    xp[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w] = x
    ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    for a in range(n):
        for b in range(c):
            for i in range(ho):
                for j in range(wo):
                    r, s = i * stride[0], j * stride[1]
                    out[a, b, i, j] = reduce(xp[a, b, r:r + kernel[0], s:s + kernel[1]])
    return out


conv_cases = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),     # N, C_in, C_out
    st.integers(1, 4), st.integers(1, 4),                        # kh, kw
    st.integers(1, 3), st.integers(1, 3),                        # stride
    st.integers(0, 2), st.integers(0, 2),                        # padding
    st.integers(0, 6), st.integers(0, 6), st.integers(0, 2**31)  # extra H, W, seed
)


@settings(max_examples=60, deadline=None)
@given(conv_cases)
def test_conv_forward_matches_scipy_correlate2d(case):
    n, c_in, c_out, kh, kw, sh, sw, ph, pw, eh, ew, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, kh + eh, kw + ew))
    layer = Conv2D(c_in, c_out, (kh, kw), stride=(sh, sw), padding=(ph, pw), dtype=np.float64, rng=seed)
    layer.bias.data[:] = rng.standard_normal(c_out)
    expected = scipy_conv_layer(x, layer.weight.data, layer.bias.data, (sh, sw), ((ph, ph), (pw, pw)))
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-10)


def test_conv_with_dilation_matches_a_dilated_kernel():
    # a dilated kernel is the same kernel with zeros inserted between its taps
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 9, 10))
    layer = Conv2D(2, 3, 3, dilation=(2, 3), padding=1, dtype=np.float64, rng=0)
    dilated = np.zeros((3, 2, 5, 7))
    dilated[:, :, ::2, ::3] = layer.weight.data
    expected = scipy_conv_layer(x, dilated, layer.bias.data, (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-10)


def test_same_padding_splits_like_pytorch():
    # odd total padding: the extra pixel goes after (bottom/right)
    assert F.same_padding(3) == (1, 1)
    assert F.same_padding(4) == (1, 2)
    assert F.same_padding(2) == (0, 1)
    assert F.same_padding(3, dilation=2) == (2, 2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 1, 6, 7))
    layer = Conv2D(1, 1, (2, 4), padding="same", dtype=np.float64, rng=0)
    out = layer.forward(x)
    assert out.shape == x.shape
    expected = scipy_conv_layer(x, layer.weight.data, layer.bias.data, (1, 1), ((0, 1), (1, 2)))
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_mathematical_convolution_is_correlation_with_the_flipped_kernel():
    rng = np.random.default_rng(7)
    image = rng.standard_normal((9, 11))
    kernel = rng.standard_normal((3, 4))
    layer = Conv2D(1, 1, (3, 4), bias=False, dtype=np.float64)
    layer.weight.data[0, 0] = kernel[::-1, ::-1]  # flip both axes
    ours = layer.forward(image[None, None])[0, 0]
    np.testing.assert_allclose(ours, convolve2d(image, kernel, mode="valid"), rtol=1e-12, atol=1e-12)
    # and without the flip the layer is not a convolution (for a kernel that is not symmetric)
    layer.weight.data[0, 0] = kernel
    assert not np.allclose(layer.forward(image[None, None])[0, 0], convolve2d(image, kernel, mode="valid"))


pool_cases = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
                       st.integers(0, 1), st.integers(0, 5), st.integers(0, 2**31))


@settings(max_examples=40, deadline=None)
@given(pool_cases)
def test_max_pool_matches_naive_loops(case):
    n, c, k, s, p, extra, seed = case
    p = min(p, k // 2)
    x = np.random.default_rng(seed).standard_normal((n, c, k + extra, k + extra + 1))
    out = MaxPool2D(k, s, p).forward(x)
    np.testing.assert_array_equal(out, naive_pool(x, (k, k), (s, s), (p, p), np.max, -np.inf))


@settings(max_examples=40, deadline=None)
@given(pool_cases)
def test_avg_pool_matches_naive_loops(case):
    n, c, k, s, p, extra, seed = case
    p = min(p, k // 2)
    x = np.random.default_rng(seed).standard_normal((n, c, k + extra, k + extra + 1))
    out = AvgPool2D(k, s, p).forward(x)
    np.testing.assert_allclose(out, naive_pool(x, (k, k), (s, s), (p, p), np.mean, 0.0), rtol=1e-12)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 7), st.integers(1, 4), st.integers(0, 3), st.integers(1, 3))
def test_output_size_formula_matches_the_number_of_positions(size, kernel, stride, pad, dilation):
    reach = dilation * (kernel - 1) + 1
    positions = len(range(0, size + 2 * pad - reach + 1, stride)) if size + 2 * pad >= reach else 0
    assert max(F.conv_output_size(size, kernel, stride, 2 * pad, dilation), 0) == positions


def test_im2col_and_col2im_are_adjoint():
    # <im2col(x), c> == <x, col2im(c)> for random x, c: col2im is exactly the transpose
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    args = dict(kernel_size=(3, 2), stride=(2, 1), dilation=(1, 2), out_hw=(3, 4))
    cols = F.im2col(x, **args)
    c = rng.standard_normal(cols.shape)
    back = F.col2im(c, x.shape, **args)
    assert np.isclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-12)


def test_log_softmax_is_finite_for_huge_logits():
    logits = np.array([[1e30, -1e30, 0.0], [-1e308, -1e308, -1e308], [5.0, 5.0, 5.0]])
    out = F.log_softmax(logits)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0)
    np.testing.assert_allclose(out[2], np.log(1 / 3))
