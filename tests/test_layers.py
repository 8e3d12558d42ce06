"""Layers: numerical gradient checks, shape rules, modes, initialization and input errors."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.nn.gradcheck import check_layer
from minicnn.nn.layers import (
    LAYERS,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Residual,
    Sequential,
    Sigmoid,
    Tanh,
)

TOL = 1e-6
seeds = st.integers(0, 2**31)


def away_from_kinks(x, width=1e-3):
    """Move values off 0 so ReLU-like kinks are not within the finite-difference step."""
    return np.where(np.abs(x) < width, np.sign(x) * width + x, x) + (x == 0) * width


# --- gradient checks --------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(1, 2),
    st.integers(0, 3),
    seeds,
)
def test_conv2d_gradients(n, c_in, c_out, kh, kw, stride, pad, dilation, extra, seed):
    rng = np.random.default_rng(seed)
    size = dilation * (kh - 1) + 1 + extra, dilation * (kw - 1) + 1 + extra
    layer = Conv2D(
        c_in, c_out, (kh, kw), stride=stride, padding=pad, dilation=dilation, dtype=np.float64, rng=seed
    )
    layer.bias.data[:] = rng.standard_normal(c_out)
    report = check_layer(layer, rng.standard_normal((n, c_in) + size), seed=seed)
    assert report.worst < TOL, report


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 2), st.integers(0, 3), seeds)
def test_conv2d_same_padding_gradients(kh, kw, dilation, extra, seed):
    rng = np.random.default_rng(seed)
    layer = Conv2D(2, 2, (kh, kw), padding="same", dilation=dilation, dtype=np.float64, rng=seed)
    x = rng.standard_normal((2, 2, 2 + extra, 3 + extra))
    assert layer.forward(x).shape == x.shape
    report = check_layer(layer, x, seed=seed)
    assert report.worst < TOL, report


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 3, "padding": 1},
        {"kernel_size": (2, 3), "stride": (2, 1)},
        {"kernel_size": 2, "padding": ((0, 1), (2, 0)), "dilation": 2},
    ],
)
def test_conv2d_im2col_algorithm_gradients(kwargs):
    layer = Conv2D(2, 3, dtype=np.float64, rng=0, algorithm="im2col", **kwargs)
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 7))
    report = check_layer(layer, x)
    assert report.worst < TOL, report


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), seeds)
def test_dense_gradients(n, fan_in, fan_out, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(fan_in, fan_out, dtype=np.float64, rng=seed)
    layer.bias.data[:] = rng.standard_normal(fan_out)
    report = check_layer(layer, rng.standard_normal((n, fan_in)), seed=seed)
    assert report.worst < TOL, report


@pytest.mark.parametrize(
    "make",
    [ReLU, lambda: LeakyReLU(0.1), Tanh, Sigmoid, Flatten, GlobalAvgPool2D],
    ids=["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Flatten", "GlobalAvgPool2D"],
)
@settings(max_examples=8, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), seeds)
def test_parameterless_layer_gradients(make, n, c, h, w, seed):
    x = away_from_kinks(np.random.default_rng(seed).standard_normal((n, c, h, w)) * 3)
    report = check_layer(make(), x, seed=seed)
    assert report.worst < TOL, report


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
@settings(max_examples=15, deadline=None)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.integers(0, 3), seeds)
def test_pool_gradients(pool, n, kernel, stride, pad, extra, seed):
    pad = min(pad, kernel // 2)
    x = np.random.default_rng(seed).standard_normal((n, 2, kernel + extra, kernel + extra + 1))
    report = check_layer(pool(kernel, stride, pad), x, seed=seed)
    assert report.worst < TOL, report


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@settings(max_examples=10, deadline=None)
@given(st.integers(2, 3), st.integers(1, 3), st.integers(1, 3), seeds)
def test_batchnorm_gradients(training, n, c, size, seed):
    rng = np.random.default_rng(seed)
    layer = BatchNorm2D(c, dtype=np.float64)
    layer.weight.data[:] = rng.uniform(0.5, 2, c)
    layer.bias.data[:] = rng.standard_normal(c)
    layer.running_mean[:] = rng.standard_normal(c)
    layer.running_var[:] = rng.uniform(0.5, 2, c)
    layer.train(training)
    report = check_layer(layer, rng.standard_normal((n, c, size, size + 1)) * 2 + 1, seed=seed)
    assert report.worst < TOL, report


class _RepeatableDropout(Dropout):
    """Dropout whose mask is the same at every forward call, so finite differences are meaningful."""

    def forward(self, x):
        self.rng = np.random.default_rng(123)
        return super().forward(x)


def test_dropout_gradients_in_training_mode():
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    layer = _RepeatableDropout(0.4)
    report = check_layer(layer, x)
    assert report.worst < TOL, report


def test_gradcheck_catches_a_wrong_gradient():
    class Broken(ReLU):
        def backward(self, grad_out):
            return super().backward(grad_out) * 1.001

    x = away_from_kinks(np.random.default_rng(0).standard_normal((2, 5)))
    assert check_layer(Broken(), x).worst > 1e-4


# --- shapes (property-based) --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(1, 2),
)
def test_conv2d_output_shape_follows_the_formula(n, h, w, kh, kw, sh, sw, pad, dilation):
    layer = Conv2D(2, 3, (kh, kw), stride=(sh, sw), padding=pad, dilation=dilation, rng=0)
    ho = (h + 2 * pad - dilation * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pad - dilation * (kw - 1) - 1) // sw + 1
    x = np.zeros((n, 2, h, w), dtype=np.float32)
    if ho < 1 or wo < 1:
        with pytest.raises(ValueError, match="Conv2D"):
            layer.forward(x)
    else:
        out = layer.forward(x)
        assert out.shape == (n, 3, ho, wo)
        assert layer.backward(np.ones_like(out)).shape == x.shape


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 10), st.integers(1, 10), st.integers(1, 4), st.integers(1, 4))
def test_pool_output_shape_defaults_stride_to_kernel(n, h, w, k, c):
    x = np.zeros((n, c, h, w))
    layer = MaxPool2D(k)
    if k > min(h, w):
        with pytest.raises(ValueError, match="MaxPool2D"):
            layer.forward(x)
    else:
        assert layer.forward(x).shape == (n, c, h // k, w // k)


# --- dtypes ---------------------------------------------------------------------------------------------


def test_float32_forward_matches_float64():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 9, 9))
    layers64 = [
        Conv2D(3, 8, 3, padding=1, dtype=np.float64, rng=1),
        BatchNorm2D(8, dtype=np.float64),
        ReLU(),
        MaxPool2D(2),
        Conv2D(8, 4, 2, stride=2, dtype=np.float64, rng=2),
        Tanh(),
        Flatten(),
        Dense(16, 5, dtype=np.float64, rng=3),
        Sigmoid(),
    ]
    layers32 = [
        Conv2D(3, 8, 3, padding=1, rng=1),
        BatchNorm2D(8),
        ReLU(),
        MaxPool2D(2),
        Conv2D(8, 4, 2, stride=2, rng=2),
        Tanh(),
        Flatten(),
        Dense(16, 5, rng=3),
        Sigmoid(),
    ]
    a, b = x, x.astype(np.float32)
    for l64, l32 in zip(layers64, layers32, strict=True):
        a, b = l64.forward(a), l32.forward(b)
        assert b.dtype == np.float32, l32
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=repr(l32))


def test_float32_layer_casts_float64_input_and_returns_float32():
    layer = Conv2D(1, 2, 3, rng=0)
    out = layer.forward(np.ones((1, 1, 5, 5)))
    assert out.dtype == np.float32
    assert layer.backward(np.ones_like(out)).dtype == np.float32


# --- initialization and randomness ----------------------------------------------------------------------


def test_same_seed_gives_bit_identical_weights_and_different_seeds_differ():
    a, b, c = Conv2D(3, 8, 3, rng=42), Conv2D(3, 8, 3, rng=42), Conv2D(3, 8, 3, rng=43)
    assert np.array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)
    g = np.random.default_rng(9)
    same_seed = Dense(5, 4, rng=np.random.default_rng(9))
    assert np.array_equal(same_seed.weight.data, Dense(5, 4, rng=g).weight.data)


def test_layers_never_touch_numpy_global_random_state():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    Conv2D(3, 8, 3, rng=1)
    Dense(10, 3)
    Dropout(0.5, rng=2).forward(np.ones((4, 4)))
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("init, fan", [("he", "in"), ("glorot", "both")])
def test_initialization_variance(init, fan):
    layer = Conv2D(64, 128, 3, init=init, dtype=np.float64, rng=0)
    fan_in, fan_out = 64 * 9, 128 * 9
    expected = 2 / fan_in if fan == "in" else 2 / (fan_in + fan_out)
    assert layer.weight.data.var() == pytest.approx(expected, rel=0.02)
    assert np.all(layer.bias.data == 0)


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="init"):
        Dense(3, 3, init="zeros")


# --- modes -------------------------------------------------------------------------------------------------


def test_dropout_is_inverted_in_training_and_identity_in_eval():
    x = np.ones((200, 500), dtype=np.float32)
    layer = Dropout(0.3, rng=0)
    out = layer.forward(x)
    kept = out != 0
    assert kept.mean() == pytest.approx(0.7, abs=0.01)
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    assert out.mean() == pytest.approx(1.0, abs=0.01)
    layer.eval()
    assert np.array_equal(layer.forward(x), x)
    assert np.array_equal(Dropout(0.3, rng=5).forward(x), Dropout(0.3, rng=5).forward(x))


def test_batchnorm_running_statistics_follow_pytorch_update():
    rng = np.random.default_rng(0)
    layer = BatchNorm2D(3, momentum=0.1, dtype=np.float64)
    batches = [rng.standard_normal((4, 3, 5, 5)) * 2 + 3 for _ in range(3)]
    mean, var = np.zeros(3), np.ones(3)
    for x in batches:
        out = layer.forward(x)
        mean = 0.9 * mean + 0.1 * x.mean(axis=(0, 2, 3))
        var = 0.9 * var + 0.1 * x.var(axis=(0, 2, 3), ddof=1)  # unbiased in the running estimate
        # the batch itself is normalized with the biased variance
        np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
        np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1 / (1 + 1e-5 / x.var(axis=(0, 2, 3))), rtol=1e-9)
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, var, rtol=1e-12)
    layer.eval()
    x = batches[0]
    expected = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10)
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-12)  # eval does not update


def test_frozen_layer_accumulates_no_gradient():
    layer = Conv2D(1, 2, 3, rng=0).freeze()
    out = layer.forward(np.ones((1, 1, 4, 4), dtype=np.float32))
    layer.backward(np.ones_like(out))
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_backward_accumulates_into_grad():
    layer = Dense(3, 2, rng=0)
    x = np.ones((2, 3), dtype=np.float32)
    layer.backward(np.ones_like(layer.forward(x)))
    once = layer.weight.grad.copy()
    layer.backward(np.ones_like(layer.forward(x)))
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert not layer.weight.grad.any()


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, x, error, pattern",
    [
        (
            Conv2D(3, 4, 3),
            np.zeros((2, 1, 8, 8), np.float32),
            ValueError,
            r"Conv2D\(3, 4.*expected input \(N, 3, H, W\), got \(2, 1, 8, 8\)",
        ),
        (
            Conv2D(1, 4, 3),
            np.zeros((8, 8), np.float32),
            ValueError,
            r"Conv2D.*expected input \(N, 1, H, W\), got \(8, 8\)",
        ),
        (
            Conv2D(1, 4, 5),
            np.zeros((2, 1, 3, 3), np.float32),
            ValueError,
            r"Conv2D.*\(2, 1, 3, 3\).*smaller than the kernel",
        ),
        (Conv2D(1, 4, 3, dilation=3), np.zeros((1, 1, 6, 6)), ValueError, r"Conv2D.*reach 7x7"),
        (Conv2D(1, 4, 3), [[[[0.0] * 5] * 5]], TypeError, r"Conv2D.*expected a numpy.ndarray.*got list"),
        (Conv2D(1, 4, 3), np.array([["a"]]), TypeError, r"Conv2D.*dtype <U1"),
        (
            Dense(10, 3),
            np.zeros((2, 12)),
            ValueError,
            r"Dense\(in_features=10.*expected input \(N, 10\), got \(2, 12\)",
        ),
        (Dense(16, 3), np.zeros((2, 1, 4, 4)), ValueError, r"Dense.*got \(2, 1, 4, 4\).*Flatten"),
        (
            MaxPool2D(2),
            np.zeros((2, 3, 4)),
            ValueError,
            r"MaxPool2D.*expected input \(N, C, H, W\), got \(2, 3, 4\)",
        ),
        (
            MaxPool2D(3),
            np.zeros((1, 1, 2, 2)),
            ValueError,
            r"MaxPool2D.*\(1, 1, 2, 2\).*smaller than the pooling window",
        ),
        (AvgPool2D(2), "image", TypeError, r"AvgPool2D.*got str"),
        (
            BatchNorm2D(4),
            np.zeros((2, 3, 4, 4)),
            ValueError,
            r"BatchNorm2D.*expected input \(N, 4, H, W\), got \(2, 3, 4, 4\)",
        ),
        (GlobalAvgPool2D(), np.zeros((2, 3)), ValueError, r"GlobalAvgPool2D.*got \(2, 3\)"),
        (Flatten(), np.zeros(3), ValueError, r"Flatten.*got \(3,\)"),
        (ReLU(), None, TypeError, r"ReLU.*got NoneType"),
    ],
)
def test_bad_input_names_the_layer_and_the_shapes(layer, x, error, pattern):
    with pytest.raises(error, match=pattern):
        layer.forward(x)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: Conv2D(0, 4, 3), r"Conv2D.*in_channels must be a positive int"),
        (lambda: Conv2D(1, 4, 0), r"Conv2D.*kernel_size must be >= 1"),
        (lambda: Conv2D(1, 4, 3, stride=2, padding="same"), r"Conv2D.*'same' needs stride 1"),
        (lambda: Conv2D(1, 4, 3, padding="full"), r"Conv2D.*padding must be"),
        (lambda: Conv2D(1, 4, (3, 3, 3)), r"Conv2D.*kernel_size must be an int or a pair"),
        (lambda: Dense(4, -1), r"Dense.*out_features must be a positive int"),
        (lambda: MaxPool2D(2, padding=2), r"MaxPool2D.*padding must be at most half"),
        (lambda: Dropout(1.0), r"Dropout: p must be a finite number in \[0, 1\), got 1.0"),
        (lambda: Dropout("0.5"), r"Dropout: p must be a number, got '0.5'"),
        (lambda: Conv2D(1, 1, 3, bias="no"), r"Conv2D.*bias must be True or False, got 'no'"),
        (lambda: Dense(2, 2, bias=1), r"Dense.*bias must be True or False, got 1"),
        (lambda: LeakyReLU(float("nan")), r"LeakyReLU: negative_slope must be a finite number"),
        (lambda: LeakyReLU(float("inf")), r"LeakyReLU: negative_slope must be a finite number"),
        (lambda: BatchNorm2D(4, eps=0.0), r"BatchNorm2D: eps must be a finite number in \(0, inf\), got 0.0"),
        (lambda: BatchNorm2D(4, eps=-1e-5), r"BatchNorm2D: eps must be a finite number in \(0, inf\)"),
        (lambda: BatchNorm2D(4, momentum=1.5), r"BatchNorm2D: momentum must be a finite number in \[0, 1\]"),
        (lambda: BatchNorm2D(4, momentum=float("nan")), r"BatchNorm2D: momentum must be a finite number"),
        (lambda: Conv2D(1, 3, 3, init="kaiming"), r"Conv2D.*init must be one of"),
        (lambda: Conv2D(1, 1, 3, dtype=np.int32), r"dtype must be float32 or float64"),
        (
            lambda: Conv2D(1, 1, 3, algorithm="slow"),
            r"Conv2D.*algorithm must be one of \('fast', 'im2col'\), got 'slow'",
        ),
        (lambda: Conv2D(1, 1, 3, padding=((1, 1), (1, -1))), r"Conv2D.*padding \(left, right\) must be >= 0"),
    ],
)
def test_bad_constructor_arguments_are_explained(make, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        make()


# every layer type, with an input it accepts: (N, C, H, W) images, or (N, features) for Dense
WRONG_GRAD_CASES = {
    "Conv2D": (lambda: Conv2D(1, 4, kernel_size=(3, 3)), (4, 1, 8, 8)),
    "Dense": (lambda: Dense(6, 3), (5, 6)),
    "ReLU": (ReLU, (2, 3, 4, 4)),
    "LeakyReLU": (LeakyReLU, (2, 3, 4, 4)),
    "Tanh": (Tanh, (2, 3)),
    "Sigmoid": (Sigmoid, (2, 3)),
    "MaxPool2D": (lambda: MaxPool2D(2), (2, 3, 4, 4)),
    "AvgPool2D": (lambda: AvgPool2D(2), (2, 3, 4, 4)),
    "GlobalAvgPool2D": (GlobalAvgPool2D, (2, 3, 4, 4)),
    "Flatten": (Flatten, (2, 3, 4, 4)),
    "Dropout": (lambda: Dropout(0.5, rng=0), (2, 3, 4, 4)),
    "BatchNorm2D": (lambda: BatchNorm2D(3), (2, 3, 4, 4)),
    "Sequential": (lambda: Sequential(Conv2D(3, 2, 3, padding=1), ReLU()), (2, 3, 4, 4)),
    "Residual": (lambda: Residual([Conv2D(3, 3, 3, padding=1)], shortcut=None), (2, 3, 4, 4)),
}


def test_the_wrong_gradient_cases_cover_every_layer_type():
    assert set(WRONG_GRAD_CASES) == set(LAYERS)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(WRONG_GRAD_CASES))
def test_backward_with_a_wrong_gradient_shape_names_the_layer_and_both_shapes(name, training):
    make, x_shape = WRONG_GRAD_CASES[name]
    layer = make().train(training)
    out = layer.forward(np.random.default_rng(0).standard_normal(x_shape).astype(np.float32))
    wrong = out.shape[:-1] + (out.shape[-1] + 2,)
    label = layer._label()  # the one-line repr; a container's short form
    message = f"{label}.backward: expected grad_out of shape {out.shape}, got {wrong}"
    with pytest.raises(ValueError, match=re.escape(message)):
        layer.backward(np.zeros(wrong, dtype=np.float32))
    with pytest.raises(ValueError, match=re.escape(f"got {out.shape[1:]}")):
        layer.backward(np.zeros(out.shape[1:], dtype=np.float32))  # the batch axis forgotten
    not_an_array = f"{label}.backward: expected grad_out as a numpy.ndarray"
    with pytest.raises(TypeError, match=re.escape(not_an_array)):
        layer.backward(out.tolist())
    assert layer.backward(np.ones_like(out)).shape == x_shape  # the right shape still works


def test_conv2d_wrong_gradient_message_reads_as_documented():
    layer = Conv2D(1, 4, kernel_size=(3, 3))
    layer.forward(np.zeros((4, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError) as info:
        layer.backward(np.zeros((4, 8, 2, 8), dtype=np.float32))
    assert str(info.value) == (
        "Conv2D(1, 4, kernel_size=(3, 3)).backward: expected grad_out of shape (4, 4, 6, 6), got (4, 8, 2, 8)"
    )


def test_backward_before_forward_is_explained():
    with pytest.raises(RuntimeError, match=r"Conv2D.*backward\(\) called before forward\(\)"):
        Conv2D(1, 1, 3).backward(np.zeros((1, 1, 1, 1)))


def test_pickled_layer_drops_cached_activations_but_keeps_weights():
    import pickle

    layer = Conv2D(3, 8, 3, padding=1, rng=0)
    x = np.ones((64, 3, 16, 16), dtype=np.float32)
    out = layer.forward(x)
    clone = pickle.loads(pickle.dumps(layer))
    assert len(pickle.dumps(layer)) < 20_000  # weights only: no input, no expanded matrix
    assert np.array_equal(clone.weight.data, layer.weight.data)
    assert np.array_equal(clone.forward(x), out)
    with pytest.raises(RuntimeError, match="before forward"):
        pickle.loads(pickle.dumps(layer)).backward(np.ones_like(out))
