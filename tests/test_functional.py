"""Forward passes against independent oracles: scipy's correlate2d / convolve2d and naive loops."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import convolve2d, correlate2d

from minicnn.nn import functional as F
from minicnn.nn.layers import AvgPool2D, Conv2D, MaxPool2D


def scipy_conv_layer(x, weight, bias, stride, padding):
    """Oracle: correlate2d per (sample, out channel, in channel), summed, then stride by subsampling."""
    (top, bottom), (left, right) = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c_out = x.shape[0], weight.shape[0]
    full = np.array(
        [
            [
                sum(correlate2d(xp[i, c], weight[o, c], mode="valid") for c in range(x.shape[1]))
                for o in range(c_out)
            ]
            for i in range(n)
        ]
    )
    full += bias[None, :, None, None]
    return full[:, :, :: stride[0], :: stride[1]]


def naive_pool(x, kernel, stride, padding, reduce, fill):
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * padding[0], w + 2 * padding[1]), fill, dtype=x.dtype)
    xp[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w] = x
    ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    for a in range(n):
        for b in range(c):
            for i in range(ho):
                for j in range(wo):
                    r, s = i * stride[0], j * stride[1]
                    out[a, b, i, j] = reduce(xp[a, b, r : r + kernel[0], s : s + kernel[1]])
    return out


conv_cases = st.tuples(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 4),  # N, C_in, C_out
    st.integers(1, 4),
    st.integers(1, 4),  # kh, kw
    st.integers(1, 3),
    st.integers(1, 3),  # stride
    st.integers(0, 2),
    st.integers(0, 2),  # padding
    st.integers(0, 6),
    st.integers(0, 6),
    st.integers(0, 2**31),  # extra H, W, seed
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


pool_cases = st.tuples(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 1),
    st.integers(0, 5),
    st.integers(0, 2**31),
)


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


# --- the readable convolution: im2col, conv2d, conv2d_backward ------------------------------------


def dilate(weight, dilation):
    """The kernel with dilation-1 zeros between its taps: a dilated convolution is a plain one with it."""
    o, c, kh, kw = weight.shape
    out = np.zeros((o, c, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1))
    out[:, :, :: dilation[0], :: dilation[1]] = weight
    return out


def scipy_conv_backward(grad, x, weight, stride, padding, dilation):
    """Oracle for the gradients, with scipy only: the output gradient spread back to full resolution
    (zeros between strided positions), then dW = x correlated with it, dx = it convolved with W."""
    (top, bottom), (left, right) = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    kernel = dilate(weight, dilation)
    n, c_out, ho, wo = grad.shape
    spread = np.zeros((n, c_out, (ho - 1) * stride[0] + 1, (wo - 1) * stride[1] + 1))
    spread[:, :, :: stride[0], :: stride[1]] = grad
    rows, cols = spread.shape[2] + kernel.shape[2] - 1, spread.shape[3] + kernel.shape[3] - 1
    dkernel = np.array(
        [
            [
                sum(correlate2d(xp[i, c, :rows, :cols], spread[i, o], mode="valid") for i in range(n))
                for c in range(x.shape[1])
            ]
            for o in range(c_out)
        ]
    )
    dxp = np.zeros(xp.shape)
    dxp[:, :, :rows, :cols] = [
        [sum(convolve2d(spread[i, o], kernel[o, c]) for o in range(c_out)) for c in range(x.shape[1])]
        for i in range(n)
    ]
    dx = dxp[:, :, top : top + x.shape[2], left : left + x.shape[3]]
    return dx, dkernel[:, :, :: dilation[0], :: dilation[1]], grad.sum(axis=(0, 2, 3))


readable_cases = st.tuples(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),  # N, C_in, C_out
    st.integers(1, 3),
    st.integers(1, 3),  # kh, kw
    st.integers(1, 3),
    st.integers(1, 3),  # stride
    st.integers(1, 2),
    st.integers(1, 2),  # dilation
    st.tuples(*[st.integers(0, 2)] * 4),  # padding top, bottom, left, right
    st.integers(0, 5),
    st.integers(0, 5),
    st.integers(0, 2**31),  # extra H, W, seed
)


def readable_case_arrays(case):
    n, c_in, c_out, kh, kw, sh, sw, dh, dw, (top, bottom, left, right), eh, ew, seed = case
    rng = np.random.default_rng(seed)
    h, w = max(1, dh * (kh - 1) + 1 + eh - top - bottom), max(1, dw * (kw - 1) + 1 + ew - left - right)
    x = rng.standard_normal((n, c_in, h, w))
    weight, bias = rng.standard_normal((c_out, c_in, kh, kw)), rng.standard_normal(c_out)
    args = {"stride": (sh, sw), "padding": ((top, bottom), (left, right)), "dilation": (dh, dw)}
    return x, weight, bias, args, rng


@settings(max_examples=60, deadline=None)
@given(readable_cases)
def test_readable_conv2d_and_its_gradients_match_scipy(case):
    x, weight, bias, args, rng = readable_case_arrays(case)
    out = F.conv2d(x, weight, bias, **args)
    expected = scipy_conv_layer(x, dilate(weight, args["dilation"]), bias, args["stride"], args["padding"])
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    grad = rng.standard_normal(out.shape)
    got = F.conv2d_backward(grad, x, weight, **args)
    expected = scipy_conv_backward(grad, x, weight, **args)
    for name, ours, theirs in zip(("dx", "dweight", "dbias"), got, expected, strict=True):
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(readable_cases, st.booleans(), st.booleans())
def test_both_conv2d_algorithms_give_the_same_outputs_and_gradients(case, use_bias, same):
    x, _, _, args, rng = readable_case_arrays(case)
    if same:  # "same" padding is defined at stride 1 only
        args = dict(args, stride=(1, 1), padding="same")
    c_in, c_out, kernel = x.shape[1], case[2], case[3:5]
    seed = int(rng.integers(2**31))
    fast, readable = (
        Conv2D(c_in, c_out, kernel, bias=use_bias, dtype=np.float64, rng=seed, algorithm=algorithm, **args)
        for algorithm in ("fast", "im2col")
    )
    out = fast.forward(x)
    np.testing.assert_allclose(readable.forward(x), out, rtol=1e-12, atol=1e-12)
    grad = rng.standard_normal(out.shape)
    np.testing.assert_allclose(readable.backward(grad), fast.backward(grad), rtol=1e-12, atol=1e-12)
    for p, q in zip(readable.parameters(), fast.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-12)
    assert readable.backward(grad, need_input_grad=False) is None


def test_im2col_is_called_as_a_convolution_is_and_sizes_its_output():
    x = np.arange(2 * 3 * 5 * 6, dtype=np.float64).reshape(2, 3, 5, 6)
    cols = F.im2col(x, (3, 3), stride=1, padding=1)
    assert cols.shape == (2, 3 * 3 * 3, 5 * 6)
    assert F.im2col(x, 3).shape == (2, 27, 3 * 4)
    assert F.im2col(x, (2, 3), stride=2, dilation=(2, 1)).shape == (2, 18, 2 * 2)


@settings(max_examples=40, deadline=None)
@given(readable_cases)
def test_im2col_entries_follow_the_documented_index_formula(case):
    x, weight, _, args, rng = readable_case_arrays(case)
    kh, kw = weight.shape[2:]
    cols = F.im2col(x, (kh, kw), **args)
    (top, bottom), (left, right) = args["padding"]
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (sh, sw), (dh, dw) = args["stride"], args["dilation"]
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    for _ in range(10):
        n, c, i, j = (int(rng.integers(d)) for d in (x.shape[0], x.shape[1], kh, kw))
        ho_, wo_ = divmod(int(rng.integers(cols.shape[2])), wo)
        row, column = (c * kh + i) * kw + j, ho_ * wo + wo_
        assert cols[n, row, column] == xp[n, c, ho_ * sh + i * dh, wo_ * sw + j * dw]


@pytest.mark.parametrize(
    "padding, explicit",
    [
        (1, ((1, 1), (1, 1))),
        ((1, 2), ((1, 1), (2, 2))),
        ("valid", ((0, 0), (0, 0))),
        ("same", ((1, 2), (0, 1))),
        (((0, 2), (1, 0)), ((0, 2), (1, 0))),
        ([[0, 2], [1, 0]], ((0, 2), (1, 0))),
    ],
)
def test_every_padding_form_means_its_explicit_amounts(padding, explicit):
    assert F.conv_padding(padding, (4, 2)) == explicit
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6))
    np.testing.assert_array_equal(F.im2col(x, (4, 2), padding=padding), F.im2col(x, (4, 2), padding=explicit))


@pytest.mark.parametrize("padding", [0, 2, ((1, 0), (2, 1))])
def test_im2col_and_col2im_are_adjoint(padding):
    # <im2col(x), c> == <x, col2im(c)> for random x, c: col2im is exactly the transpose
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6))
    args = {"kernel_size": (3, 2), "stride": (2, 1), "padding": padding, "dilation": (1, 2)}
    cols = F.im2col(x, **args)
    c = rng.standard_normal(cols.shape)
    back = F.col2im(c, x.shape, **args)
    assert back.shape == x.shape
    assert np.isclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-12)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda x, w: F.im2col(x, 3, padding="full"), ValueError, r"padding must be .*'same'.*got 'full'"),
        (
            lambda x, w: F.im2col(x, 7),
            ValueError,
            r"input \(2, 3, 5, 6\) .* smaller than the kernel's reach 7x7",
        ),
        (lambda x, w: F.im2col(x, 3, stride=2, padding="same"), ValueError, r"'same' needs stride 1"),
        (lambda x, w: F.im2col(x, 3, stride=0), ValueError, r"stride must be >= 1"),
        (
            lambda x, w: F.conv2d(x, w[:, :2]),
            ValueError,
            r"conv2d: expected weight of shape \(C_out, 3, kh, kw\)",
        ),
        (
            lambda x, w: F.conv2d(x[0], w),
            ValueError,
            r"conv2d: expected x of shape \(N, C_in, H, W\), got \(3, 5, 6\)",
        ),
        (
            lambda x, w: F.conv2d_backward(np.zeros((2, 4, 3, 3)), x, w),
            ValueError,
            r"conv2d_backward: expected grad_out of shape \(2, 4, 3, 4\), got \(2, 4, 3, 3\)",
        ),
        (
            lambda x, w: F.col2im(np.zeros((2, 27, 5)), x.shape, 3),
            ValueError,
            r"col2im: expected cols of shape \(2, 27, 12\), got \(2, 27, 5\)",
        ),
    ],
)
def test_readable_conv_functions_explain_bad_arguments(call, error, pattern):
    x, w = np.zeros((2, 3, 5, 6)), np.zeros((4, 3, 3, 3))
    with pytest.raises(error, match=pattern):
        call(x, w)


def test_log_softmax_is_finite_for_huge_logits():
    logits = np.array([[1e30, -1e30, 0.0], [-1e308, -1e308, -1e308], [5.0, 5.0, 5.0]])
    out = F.log_softmax(logits)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0)
    np.testing.assert_allclose(out[2], np.log(1 / 3))
