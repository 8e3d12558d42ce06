"""Winograd's F(2x2, 3x3) path of the fast convolution (minicnn.nn._winograd through _lowering).

Forward against the plain im2col path (float64) and against a float64 reference when run in
float32; backward against the plain path and the numerical gradient check; chunked batches; the
shapes it declines. No timing here: benchmarks/bench_conv.py measures speed.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_performance_paths import plain_conv, plain_conv_backward

from minicnn.nn import _lowering, _winograd
from minicnn.nn.gradcheck import check_layer
from minicnn.nn.layers import Conv2D


def arrays(rng, n, c_in, c_out, h, w, dtype=np.float64):
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    weight = rng.standard_normal((c_out, c_in, 3, 3)).astype(dtype)
    return x, weight, rng.standard_normal(c_out).astype(dtype)


def relative(got, expected):
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))


pads = st.integers(0, 2)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 9),
    st.integers(1, 9),
    pads,
    pads,
    pads,
    pads,
    st.integers(0, 2**31),
)
def test_float32_winograd_is_within_1e_4_of_the_float64_reference(
    n, c_in, c_out, h, w, top, bottom, left, right, seed
):
    padding = ((top, bottom), (left, right))
    if h + top + bottom < 3 or w + left + right < 3:
        return  # no output pixel: Conv2D rejects such input before the lowering
    x, weight, bias = arrays(np.random.default_rng(seed), n, c_in, c_out, h, w)
    args = ((1, 1), padding, (1, 1))
    expected = plain_conv(x, weight, bias, *args)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, weight, bias))
    out, saved = _lowering.conv2d(x32, w32, b32, *args, keep_cols=True, winograd=True)
    assert out.dtype == np.float32 and isinstance(saved, _winograd.Saved)
    assert relative(out, expected) < 1e-4
    grad = np.random.default_rng(seed + 1).standard_normal(expected.shape)
    got = _lowering.conv2d_backward(grad.astype(np.float32), x32, w32, *args, cols=saved, winograd=True)
    for ours, theirs in zip(got, plain_conv_backward(grad, x, weight, *args)):
        assert relative(ours, theirs) < 1e-4


@pytest.mark.parametrize("padding", [((1, 1), (1, 1)), ((0, 0), (0, 0)), ((2, 0), (1, 2)), ((2, 2), (2, 2))])
@pytest.mark.parametrize("size", [(4, 4), (5, 7), (8, 3)])
def test_float64_winograd_matches_the_plain_path_forward_and_backward(padding, size):
    x, weight, bias = arrays(np.random.default_rng(0), 3, 2, 4, *size)
    args = ((1, 1), padding, (1, 1))
    out, saved = _lowering.conv2d(x, weight, bias, *args, keep_cols=True, winograd=True)
    np.testing.assert_allclose(out, plain_conv(x, weight, bias, *args), rtol=1e-10, atol=1e-10)
    grad = np.random.default_rng(1).standard_normal(out.shape)
    expected = plain_conv_backward(grad, x, weight, *args)
    for cols in (saved, None):  # the forward's transformed input, and one rebuilt by backward
        got = _lowering.conv2d_backward(grad, x, weight, *args, cols=cols, winograd=True)
        for ours, theirs in zip(got, expected):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


def test_chunked_winograd_batches_give_the_unchunked_results():
    x, weight, bias = arrays(np.random.default_rng(0), 7, 3, 4, 6, 5)
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1))
    whole, saved = _lowering.conv2d(x, weight, bias, *args, keep_cols=True, winograd=True)
    chunked, none = _lowering.conv2d(x, weight, bias, *args, keep_cols=True, winograd=True, workspace_bytes=1)
    assert isinstance(saved, _winograd.Saved) and none is None
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    grad = np.random.default_rng(1).standard_normal(whole.shape)
    expected = _lowering.conv2d_backward(grad, x, weight, *args, cols=saved, winograd=True)
    got = _lowering.conv2d_backward(grad, x, weight, *args, winograd=True, workspace_bytes=1)
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_need_flags_skip_the_input_or_the_weight_gradient():
    x, weight, _ = arrays(np.random.default_rng(0), 2, 2, 3, 5, 5)
    args = ((1, 1), ((1, 1), (1, 1)), (1, 1))
    grad = np.ones((2, 3, 5, 5))
    dx, dweight, dbias = _lowering.conv2d_backward(
        grad, x, weight, *args, need_input_grad=False, winograd=True
    )
    assert dx is None and dweight.shape == weight.shape
    np.testing.assert_allclose(dbias, np.full(3, 50.0))
    dx, dweight, _ = _lowering.conv2d_backward(grad, x, weight, *args, need_weight_grad=False, winograd=True)
    assert dweight is None and dx.shape == x.shape


@pytest.mark.parametrize("kwargs", [{"padding": 1}, {"padding": 0}, {"padding": "same", "bias": False}])
def test_conv_layer_on_winograd_passes_the_numerical_gradient_check(kwargs, monkeypatch):
    monkeypatch.setattr(_lowering, "_winograd_default", True)
    layer = Conv2D(2, 3, 3, dtype=np.float64, rng=0, **kwargs)
    layer.bias is None or layer.bias.data.__setitem__(slice(None), [0.1, -0.2, 0.3])
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 6))
    layer.forward(x)
    assert isinstance(layer._cols, _winograd.Saved)  # the Winograd path ran
    assert check_layer(layer, x).worst < 1e-7


@pytest.mark.parametrize(
    "kernel, stride, dilation, padding",
    [
        ((3, 3), (2, 2), (1, 1), ((1, 1), (1, 1))),
        ((5, 5), (1, 1), (1, 1), ((0, 0), (0, 0))),
        ((3, 3), (1, 1), (2, 2), ((1, 1), (1, 1))),
        ((3, 3), (1, 1), (1, 1), ((3, 3), (0, 0))),
    ],
)
def test_winograd_declines_what_it_cannot_compute_and_im2col_answers(kernel, stride, dilation, padding):
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((2, 2, 9, 9)), rng.standard_normal((3, 2) + kernel)
    assert not _lowering.use_winograd(x.shape, weight.shape, stride, padding, dilation, winograd=True)
    out, cols = _lowering.conv2d(x, weight, None, stride, padding, dilation, keep_cols=True, winograd=True)
    assert isinstance(cols, np.ndarray)
    np.testing.assert_allclose(
        out, plain_conv(x, weight, None, stride, padding, dilation), rtol=1e-10, atol=1e-10
    )


def test_set_winograd_takes_only_a_bool(monkeypatch):
    monkeypatch.setattr(_lowering, "_winograd_default", False)
    _lowering.set_winograd(True)
    assert _lowering.use_winograd((1, 2, 5, 5), (3, 2, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    _lowering.set_winograd(False)
    assert not _lowering.use_winograd((1, 2, 5, 5), (3, 2, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    with pytest.raises(TypeError, match="expected True or False, got .yes."):
        _lowering.set_winograd("yes")
