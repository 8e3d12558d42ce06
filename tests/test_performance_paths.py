"""The fast lowering (minicnn.nn._lowering) against the readable im2col path and naive loops.

Every lowering the convolution picks (stride 1 "shifted rows", other strides "phases"), the
batch chunking under a small workspace, the reusable workspace, and the pooling / ReLU fast paths
give the results of the plain versions, in float32 and float64, forward and backward. No timing
here: speed is measured by benchmarks/, never asserted by tests.
"""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.nn import _lowering, _threads
from minicnn.nn import functional as F
from minicnn.nn.gradcheck import check_layer
from minicnn.nn.layers import Conv2D, MaxPool2D, ReLU

# --- the plain path: the readable im2col functions of minicnn.nn.functional ----------------------


def plain_conv(x, weight, bias, stride, padding, dilation):
    return F.conv2d(x, weight, bias, stride, padding, dilation)


def plain_conv_backward(grad, x, weight, stride, padding, dilation):
    return F.conv2d_backward(grad, x, weight, stride, padding, dilation)


def naive_conv(x, weight, bias, stride, padding, dilation):
    """Direct loops over every output pixel: the definition of cross-correlation."""
    xp = F.pad2d(x, padding)
    n, c_out = len(x), weight.shape[0]
    kh, kw = weight.shape[2:]
    ho = F.conv_output_size(xp.shape[2], kh, stride[0], 0, dilation[0])
    wo = F.conv_output_size(xp.shape[3], kw, stride[1], 0, dilation[1])
    out = np.zeros((n, c_out, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[
                :,
                :,
                i * stride[0] : i * stride[0] + dilation[0] * (kh - 1) + 1 : dilation[0],
                j * stride[1] : j * stride[1] + dilation[1] * (kw - 1) + 1 : dilation[1],
            ]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, weight)
    return out if bias is None else out + bias[:, None, None]


TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}

# (N, C_in, C_out, H, W, kernel, stride, padding ((t, b), (l, r)), dilation): both lowerings,
# one input channel, 5x5, asymmetric padding, dilation, stride 2 and 3, 1x1 kernels
CASES = [
    (3, 2, 4, 6, 7, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (2, 1, 3, 8, 8, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (2, 1, 2, 9, 7, (5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (2, 3, 2, 7, 9, (2, 4), (1, 1), ((0, 1), (1, 2)), (1, 1)),
    (2, 2, 3, 9, 10, (3, 3), (1, 1), ((2, 2), (1, 1)), (2, 3)),
    (3, 2, 4, 9, 8, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    (2, 3, 2, 10, 11, (3, 2), (3, 2), ((0, 0), (2, 2)), (1, 2)),
    (2, 4, 3, 5, 5, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (2, 2, 3, 4, 5, (3, 3), (1, 1), ((1, 0), (2, 1)), (1, 1)),  # samples share padding columns
    (2, 2, 3, 4, 3, (1, 1), (1, 1), ((1, 1), (1, 1)), (1, 1)),  # padding wider than the kernel
]


def case_arrays(case, dtype, seed=0):
    n, c_in, c_out, h, w, kernel, *_ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    weight = rng.standard_normal((c_out, c_in) + kernel).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    return x, weight, bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_conv_forward_matches_the_plain_im2col_path_and_naive_loops(case, dtype):
    stride, padding, dilation = case[6:]
    x, weight, bias = case_arrays(case, dtype)
    out = _lowering.conv2d(x, weight, bias, stride, padding, dilation)
    assert out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, plain_conv(x, weight, bias, stride, padding, dilation), **TOL[dtype])
    np.testing.assert_allclose(
        out,
        naive_conv(x.astype(np.float64), weight.astype(np.float64), bias, stride, padding, dilation),
        **TOL[dtype],
    )
    np.testing.assert_allclose(
        _lowering.conv2d(x, weight, None, stride, padding, dilation),
        plain_conv(x, weight, None, stride, padding, dilation),
        **TOL[dtype],
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_conv_backward_matches_the_plain_im2col_path(case, dtype):
    stride, padding, dilation = case[6:]
    x, weight, bias = case_arrays(case, dtype)
    out, cols = _lowering.conv2d(x, weight, bias, stride, padding, dilation, keep_cols=True)
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    expected = plain_conv_backward(grad, x, weight, stride, padding, dilation)
    for given_cols in (cols, None):  # the kept expansion, and one rebuilt by the backward pass
        got = _lowering.conv2d_backward(grad, x, weight, stride, padding, dilation, cols=given_cols)
        for ours, theirs in zip(got, expected):
            assert ours.dtype == dtype
            np.testing.assert_allclose(ours, theirs, **TOL[dtype])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(1, 2),
    st.integers(0, 2),
    st.integers(1, 2),
    st.integers(0, 5),
    st.integers(0, 5),
    st.integers(1, 3),
    st.integers(0, 2**31),
)
def test_conv_matches_the_plain_path_for_random_shapes(
    n, c_in, c_out, kh, kw, sh, sw, pad, dil, eh, ew, workers, seed
):
    rng = np.random.default_rng(seed)
    h, w = dil * (kh - 1) + 1 + eh, dil * (kw - 1) + 1 + ew
    x = rng.standard_normal((n, c_in, h, w))
    weight = rng.standard_normal((c_out, c_in, kh, kw))
    bias = rng.standard_normal(c_out)
    args = ((sh, sw), ((pad, pad), (pad, pad)), (dil, dil))
    # workers: the batch split across 1 to 3 threads (more threads than samples included)
    out, cols = _lowering.conv2d(x, weight, bias, *args, keep_cols=True, workers=workers)
    np.testing.assert_allclose(out, plain_conv(x, weight, bias, *args), rtol=1e-10, atol=1e-10)
    grad = rng.standard_normal(out.shape)
    expected = plain_conv_backward(grad, x, weight, *args)
    for given_cols in (cols, None):
        got = _lowering.conv2d_backward(grad, x, weight, *args, cols=given_cols, workers=workers)
        for ours, theirs in zip(got, expected):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_a_batch_split_across_threads_keeps_each_part_s_expansion_for_backward(stride):
    x, weight, bias = case_arrays((8, 3, 4, 9, 8, (3, 3)), np.float64)
    args = (stride, ((1, 1), (1, 1)), (1, 1))
    out, cols = _lowering.conv2d(x, weight, bias, *args, keep_cols=True, workers=3)
    assert isinstance(cols, tuple) and len(cols) == 3
    assert (
        sum(c.shape[1] for c in cols)
        == _lowering.conv2d(x, weight, bias, *args, keep_cols=True, workers=1)[1].shape[1]
    )
    grad = np.random.default_rng(3).standard_normal(out.shape)
    expected = plain_conv_backward(grad, x, weight, *args)
    for given_cols, workers in ((cols, 3), (cols, 2), (cols, 1), (None, 3)):  # kept, or rebuilt
        got = _lowering.conv2d_backward(grad, x, weight, *args, cols=given_cols, workers=workers)
        for ours, theirs in zip(got, expected):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


def test_only_batches_worth_it_are_split_across_threads(monkeypatch):
    monkeypatch.setattr(_threads, "parts_available", lambda: 2)
    x, weight, bias = case_arrays((64, 16, 32, 4, 4, (3, 3)), np.float32)  # digits-2: 1.2 MB
    _, cols = _lowering.conv2d(x, weight, bias, keep_cols=True)
    assert isinstance(cols, np.ndarray)  # one part: threads would cost more than they save
    x, weight, bias = case_arrays((64, 32, 64, 14, 14, (3, 3)), np.float32)  # mnist-2: 23 MB
    _, cols = _lowering.conv2d(x, weight, bias, padding=((1, 1), (1, 1)), keep_cols=True)
    assert cols is None  # more chunks than threads: each thread's buffers held several in turn
    monkeypatch.setattr(_lowering, "CHUNK_BYTES", 64 * 2**20)
    _, cols = _lowering.conv2d(x, weight, bias, padding=((1, 1), (1, 1)), keep_cols=True)
    assert isinstance(cols, tuple) and len(cols) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(2, 3), padding="same", dilation=2),
        dict(kernel_size=3, stride=(1, 2), bias=False),
    ],
)
def test_conv_layer_passes_the_numerical_gradient_check_on_both_lowerings(kwargs):
    layer = Conv2D(2, 3, dtype=np.float64, rng=0, **kwargs)
    layer.bias is None or layer.bias.data.__setitem__(slice(None), [0.1, -0.2, 0.3])
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 6))
    assert check_layer(layer, x).worst < 1e-7


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_batches_give_the_unchunked_results(stride, dtype, workers):
    x, weight, bias = case_arrays((7, 3, 4, 9, 8, (3, 3)), dtype)
    args = (stride, ((1, 1), (1, 1)), (1, 1))
    whole, cols = _lowering.conv2d(x, weight, bias, *args, keep_cols=True)
    assert cols is not None
    tiny = 1  # below one sample's scratch: every sample is its own chunk
    # workers > 1: the threads take the chunks in turn, as each finishes one
    chunked, no_cols = _lowering.conv2d(
        x, weight, bias, *args, workspace_bytes=tiny, keep_cols=True, workers=workers
    )
    assert no_cols is None
    np.testing.assert_allclose(chunked, whole, **TOL[dtype])
    grad = np.random.default_rng(2).standard_normal(whole.shape).astype(dtype)
    expected = _lowering.conv2d_backward(grad, x, weight, *args, cols=cols)
    for workspace_bytes in (tiny, 3 * 2**10):  # 1 sample per chunk; a few samples per chunk
        got = _lowering.conv2d_backward(
            grad, x, weight, *args, workspace_bytes=workspace_bytes, workers=workers
        )
        for ours, theirs in zip(got, expected):
            np.testing.assert_allclose(ours, theirs, **TOL[dtype])


def test_the_workspace_limit_is_configurable_per_layer_and_globally():
    x = np.random.default_rng(0).standard_normal((6, 2, 8, 8)).astype(np.float32)
    layer = Conv2D(2, 4, 3, padding=1, rng=0)
    expected = layer.forward(x)
    assert layer._cols is not None  # fits: kept for backward
    layer.workspace_bytes = 1
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-6, atol=1e-6)
    assert layer._cols is None  # chunked: rebuilt by backward
    layer.workspace_bytes = None
    saved = _lowering.get_workspace_limit()
    try:
        _lowering.set_workspace_limit(1)
        layer.forward(x)
        assert layer._cols is None
    finally:
        _lowering.set_workspace_limit(saved)
    with pytest.raises(ValueError, match="positive number of bytes"):
        _lowering.set_workspace_limit(0)


def test_backward_twice_and_reused_workspaces_give_the_same_gradients():
    rng = np.random.default_rng(0)
    layer = Conv2D(3, 4, 3, padding=1, dtype=np.float64, rng=0)
    big, small = rng.standard_normal((5, 3, 6, 6)), rng.standard_normal((2, 3, 6, 6))
    out_big = layer.forward(big)
    kept = out_big.copy()
    out_small = layer.forward(small)  # reuses the workspace of the bigger batch
    np.testing.assert_array_equal(out_big, kept)  # outputs are never scratch
    grad = rng.standard_normal(out_small.shape)
    first = layer.backward(grad)  # consumes the kept expansion
    second = layer.backward(grad)  # rebuilds it
    expected = plain_conv_backward(grad, small, layer.weight.data, (1, 1), ((1, 1), (1, 1)), (1, 1))
    np.testing.assert_allclose(first, expected[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(second, expected[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, 2 * expected[1], rtol=1e-12, atol=1e-12)


def scratch_bytes(batch: int, workspace_bytes: int) -> int:
    """Peak bytes NumPy allocates (tracemalloc sees them) during a Conv2D forward + backward, less
    the output and the input gradient; the input and output gradient exist before."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 8, 16, 16)).astype(np.float32)
    layer = Conv2D(8, 16, 3, padding=1, rng=0)
    layer.workspace_bytes = workspace_bytes
    grad = rng.standard_normal(layer.output_shape(x.shape)).astype(np.float32)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = layer.forward(x)
        dx = layer.backward(grad)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak - out.nbytes - dx.nbytes


def test_scratch_memory_of_a_pass_stays_within_the_workspace_limit_whatever_the_batch():
    limit = 256 * 2**10  # a sample needs ~120 KiB of scratch: chunks of 2
    slack = 64 * 2**10  # NumPy's ufunc iterator buffers, a fixed size
    small, large = scratch_bytes(8, limit), scratch_bytes(64, limit)
    assert 0 < small <= limit + slack and 0 < large <= limit + slack, (small, large)
    assert abs(large - small) < slack
    unbounded = scratch_bytes(64, 2**40)  # the whole batch in one chunk
    assert unbounded > 20 * limit


# --- pooling and ReLU ------------------------------------------------------------------------------


def naive_max_pool(x, kernel, stride, padding):
    """Loops: the maximum of every window and the first offset that holds it."""
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * padding[0], w + 2 * padding[1]), -np.inf, dtype=x.dtype)
    xp[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w] = x
    ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    dx = np.zeros_like(xp)
    for a in range(n):
        for b in range(c):
            for i in range(ho):
                for j in range(wo):
                    r, s = i * stride[0], j * stride[1]
                    window = xp[a, b, r : r + kernel[0], s : s + kernel[1]]
                    first = np.unravel_index(np.argmax(window), window.shape)  # first maximum
                    out[a, b, i, j] = window[first]
                    dx[a, b, r + first[0], s + first[1]] += 1.0  # gradient of sum(out)
    return out, dx[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kernel, stride, padding, size",
    [
        ((2, 2), (2, 2), (0, 0), (8, 6)),  # disjoint windows covering the input: written, not added
        ((2, 2), (2, 2), (0, 0), (7, 9)),  # disjoint, with leftover rows and columns
        ((3, 3), (2, 2), (1, 1), (7, 8)),  # overlapping and padded: added
        ((2, 3), (3, 2), (0, 1), (8, 9)),  # gaps in one axis, overlap in the other
    ],
)
def test_max_pool_fast_paths_match_naive_loops_with_ties(kernel, stride, padding, size, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, size=(2, 3) + size).astype(dtype)  # few distinct values: many ties
    out, argmax = F.max_pool2d(x, kernel, stride, padding)
    expected_out, expected_dx = naive_max_pool(x, kernel, stride, padding)
    np.testing.assert_array_equal(out, expected_out)
    dx = F.max_pool2d_backward(np.ones_like(out), argmax, x.shape, kernel, stride, padding)
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(dx, expected_dx)


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (2, 3)])
def test_max_pool_layer_passes_the_numerical_gradient_check(kernel, stride):
    x = np.random.default_rng(1).permutation(2 * 2 * 7 * 8).reshape(2, 2, 7, 8) / 10.0  # no ties
    assert check_layer(MaxPool2D(kernel, stride), x).worst < 1e-7


def test_max_pool_propagates_nan_like_pytorch():
    x = np.zeros((1, 1, 2, 2), dtype=np.float32)
    x[0, 0, 1, 0] = np.nan
    out, _ = F.max_pool2d(x, (2, 2), (2, 2))
    assert np.isnan(out).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_matches_the_where_formulation(dtype):
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 5)).astype(dtype)
    x[0, 0, 0, :3] = 0.0
    relu = ReLU()
    out = relu.forward(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.where(x > 0, x, 0))
    grad = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    dx = relu.backward(grad)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, np.where(x > 0, grad, 0))
    away_from_the_kink = np.random.default_rng(2).standard_normal((2, 3, 4))
    away_from_the_kink += 0.1 * np.sign(away_from_the_kink)
    assert check_layer(ReLU(), away_from_the_kink).worst < 1e-7


def test_a_pickled_layer_works_from_read_only_arrays():
    # scikit-learn's estimator checks unpickle into read-only memory maps; scratch must not follow
    import pickle

    rng = np.random.default_rng(0)
    layer = Conv2D(2, 3, 3, padding=1, dtype=np.float64, rng=0)
    x = rng.standard_normal((2, 2, 5, 5))
    layer.forward(x)
    clone = pickle.loads(pickle.dumps(layer))
    assert clone._cols is None  # cached activations and scratch are not pickled
    clone.weight.data.flags.writeable = False  # as when unpickled from a read-only memory map
    grad = rng.standard_normal((2, 3, 5, 5))
    np.testing.assert_allclose(clone.forward(x), layer.forward(x), rtol=1e-12)
    np.testing.assert_allclose(clone.backward(grad), layer.backward(grad), rtol=1e-12)
    np.testing.assert_allclose(clone.forward(x), layer.forward(x), rtol=1e-12)
