"""The portable path on array-api-strict: the stateless math (minicnn.nn.functional), the losses, the
optimizers and Parameter give what the NumPy path gives, within float64 rounding, on a library that
refuses every call the Array API standard does not define. Plus the devices: moving arrays, and the
one clear line for "cuda" without CuPy."""

import sys
import types

import array_api_strict as xps
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.nn import SGD, Adam, AdamW, MSELoss, Parameter, SoftmaxCrossEntropy
from minicnn.nn import functional as F
from minicnn.nn._backend import (
    GPU_INSTALL,
    DeviceUnavailable,
    asarray_like,
    namespace,
    to_device,
    to_host,
)
from minicnn.nn.optim import clip_grad_norm

ROUNDING = {"rtol": 1e-12, "atol": 1e-12}

# array-api-strict's second device: NumPy refuses its arrays (as it would a GPU's), and arrays created
# without device=... land on the default device, which arrays of this one refuse to meet
DEVICE = xps.Device("device1")


def strict(array):
    return to_device(np.asarray(array), (xps, DEVICE))


def assert_matches(portable, reference, exact=False, device=DEVICE):
    """``portable`` is an array-api-strict array on ``device`` holding ``reference``'s values (within
    rounding, or exactly)."""
    assert namespace(portable) is xps, type(portable)
    assert portable.device == device
    host = to_host(portable)
    assert host.shape == reference.shape and host.dtype == reference.dtype
    if exact:
        np.testing.assert_array_equal(host, reference)
    else:
        np.testing.assert_allclose(host, reference, **ROUNDING)


@pytest.fixture
def rng():
    return np.random.default_rng(26)


CONV_CASES = [  # kernel, stride, padding, dilation
    (3, 1, 1, 1),
    (3, 2, 0, 1),
    ((2, 3), (2, 1), "same", 1),
    (3, 1, ((0, 1), (2, 0)), 2),
    (1, 1, "valid", 1),
]


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), CONV_CASES)
def test_im2col_and_col2im_match_numpy(rng, kernel, stride, padding, dilation):
    if padding == "same" and stride != 1:
        stride = 1
    x = rng.standard_normal((2, 3, 9, 8))
    cols = F.im2col(x, kernel, stride, padding, dilation)
    assert_matches(F.im2col(strict(x), kernel, stride, padding, dilation), cols, exact=True)
    summed = F.col2im(cols, x.shape, kernel, stride, padding, dilation)
    assert_matches(F.col2im(strict(cols), x.shape, kernel, stride, padding, dilation), summed)


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), CONV_CASES)
def test_conv2d_and_its_backward_match_numpy(rng, kernel, stride, padding, dilation):
    if padding == "same" and stride != 1:
        stride = 1
    kh, kw = F.pair(kernel, "kernel")
    x, weight = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, kh, kw))
    bias = rng.standard_normal(4)
    out = F.conv2d(x, weight, bias, stride, padding, dilation)
    assert_matches(F.conv2d(strict(x), strict(weight), strict(bias), stride, padding, dilation), out)
    grad_out = rng.standard_normal(out.shape)
    expected = F.conv2d_backward(grad_out, x, weight, stride, padding, dilation)
    got = F.conv2d_backward(strict(grad_out), strict(x), strict(weight), stride, padding, dilation)
    for portable, reference in zip(got, expected):
        assert_matches(portable, reference)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    pad=st.integers(0, 2),
    dilation=st.integers(1, 2),
)
def test_conv2d_matches_numpy_for_any_geometry_that_fits(h, w, kernel, stride, pad, dilation):
    reach = dilation * (kernel - 1) + 1
    if min(h, w) + 2 * pad < reach:
        with pytest.raises(ValueError, match="smaller than the kernel's reach"):
            x, weight = strict(np.zeros((1, 2, h, w))), strict(np.zeros((3, 2, kernel, kernel)))
            F.conv2d(x, weight, None, stride, pad, dilation)
        return
    rng = np.random.default_rng(h * 100 + w)
    x, weight = rng.standard_normal((2, 2, h, w)), rng.standard_normal((3, 2, kernel, kernel))
    out = F.conv2d(x, weight, None, stride, pad, dilation)
    assert_matches(F.conv2d(strict(x), strict(weight), None, stride, pad, dilation), out)


def test_conv2d_refuses_arrays_of_two_libraries_in_one_line(rng):
    x, weight = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(TypeError, match="expected arrays of one array library") as info:
        F.conv2d(strict(x), weight)
    assert "\n" not in str(info.value)


POOL_CASES = [  # kernel, stride, padding: disjoint, overlapping, padded, gaps between windows
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (1, 1), (0, 0)),
    ((3, 3), (2, 2), (1, 1)),
    ((2, 2), (3, 3), (0, 0)),
    ((3, 2), (2, 1), (1, 0)),
]


@pytest.mark.parametrize(("kernel", "stride", "padding"), POOL_CASES)
def test_max_pool2d_and_its_backward_match_numpy(rng, kernel, stride, padding):
    x = rng.standard_normal((2, 3, 8, 9))
    x[0, 0, :3, :3] = 1.0  # ties: the first maximum wins on both paths
    out, argmax = F.max_pool2d(x, kernel, stride, padding)
    got_out, got_argmax = F.max_pool2d(strict(x), kernel, stride, padding)
    assert_matches(got_out, out, exact=True)
    assert_matches(got_argmax, argmax, exact=True)
    grad_out = rng.standard_normal(out.shape)
    dx = F.max_pool2d_backward(grad_out, argmax, x.shape, kernel, stride, padding)
    assert_matches(F.max_pool2d_backward(strict(grad_out), got_argmax, x.shape, kernel, stride, padding), dx)


def test_max_pool2d_writes_into_the_given_arrays(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    out, argmax = F.max_pool2d(x, (2, 2), (2, 2))
    buffers = (strict(np.zeros_like(out)), strict(np.zeros_like(argmax)))
    returned = F.max_pool2d(strict(x), (2, 2), (2, 2), out=buffers)
    assert returned[0] is buffers[0] and returned[1] is buffers[1]
    assert_matches(buffers[0], out, exact=True)
    assert_matches(buffers[1], argmax, exact=True)
    grad_out = rng.standard_normal(out.shape)
    dx = strict(np.full(x.shape, np.nan))
    returned_dx = F.max_pool2d_backward(strict(grad_out), buffers[1], x.shape, (2, 2), (2, 2), out=dx)
    assert returned_dx is dx
    assert_matches(dx, F.max_pool2d_backward(grad_out, argmax, x.shape, (2, 2), (2, 2)))


@pytest.mark.parametrize(("kernel", "stride", "padding"), POOL_CASES)
def test_avg_pool2d_and_its_backward_match_numpy(rng, kernel, stride, padding):
    x = rng.standard_normal((2, 3, 8, 9))
    out = F.avg_pool2d(x, kernel, stride, padding)
    assert_matches(F.avg_pool2d(strict(x), kernel, stride, padding), out)
    grad_out = rng.standard_normal(out.shape)
    dx = F.avg_pool2d_backward(grad_out, x.shape, kernel, stride, padding)
    assert_matches(F.avg_pool2d_backward(strict(grad_out), x.shape, kernel, stride, padding), dx)


@pytest.mark.parametrize(
    "logits",
    [
        np.random.default_rng(1).standard_normal((5, 10)) * 20,
        np.array([[1e300, -1e300, 0.0, 1e300], [3.0, 3.0, 1.0, -2.0]]),  # a gap past float64's range; ties
        np.array([[40.0, 0.0, 0.0]]),  # a confident prediction: log1p keeps the tiny loss
    ],
)
def test_log_softmax_and_softmax_match_numpy(logits):
    assert_matches(F.log_softmax(strict(logits)), F.log_softmax(logits))
    assert_matches(F.softmax(strict(logits)), F.softmax(logits))
    float32 = strict(np.array([[1.0, -2.0, 0.5]], dtype=np.float32))
    assert F.log_softmax(float32).dtype == xps.float32
    assert F.log_softmax(float32, dtype=xps.float64).dtype == xps.float64


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_matches_numpy(rng, label_smoothing):
    logits, labels = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    reference, portable = SoftmaxCrossEntropy(label_smoothing), SoftmaxCrossEntropy(label_smoothing)
    expected = reference(logits, labels)
    assert portable(strict(logits), strict(labels)) == pytest.approx(expected, rel=1e-12)
    assert_matches(portable.backward(), reference.backward())
    # labels that arrive as NumPy arrays (a batch not yet moved) are moved to the logits' library
    assert portable(strict(logits), labels) == pytest.approx(expected, rel=1e-12)


def test_softmax_cross_entropy_names_bad_labels_on_any_library(rng):
    loss, logits = SoftmaxCrossEntropy(), strict(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\), got values from 0 to 4"):
        loss(logits, strict(np.array([0, 4, 1])))
    with pytest.raises(ValueError, match=r"expected integer labels of shape \(3,\)"):
        loss(logits, strict(np.array([0.0, 1.0, 2.0])))


def test_mse_loss_matches_numpy(rng):
    outputs, targets = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    reference, portable = MSELoss(), MSELoss()
    assert portable(strict(outputs), strict(targets)) == pytest.approx(reference(outputs, targets), rel=1e-12)
    assert_matches(portable.backward(), reference.backward())


OPTIMIZERS = [
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (Adam, {"lr": 0.01, "weight_decay": 0.01}),
    (AdamW, {"lr": 0.01}),
]


def _parameters(rng):
    return [rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)]


@pytest.mark.parametrize(("optimizer", "settings"), OPTIMIZERS)
def test_optimizer_steps_match_numpy(rng, optimizer, settings):
    values = _parameters(rng)
    grads = [[rng.standard_normal(v.shape) for v in values] for _ in range(4)]
    reference = [Parameter(v.copy()) for v in values]
    portable = [Parameter(strict(v)) for v in values]
    opt_reference, opt_portable = optimizer(reference, **settings), optimizer(portable, **settings)
    for step_grads in grads:
        for p, q, g in zip(reference, portable, step_grads):
            p.grad[...], q.grad[...] = g, strict(g)
        opt_reference.step()
        opt_portable.step()
    for p, q in zip(reference, portable):
        assert_matches(q.data, p.data)
    state = opt_portable.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for key, value in opt_reference.state_dict().items():
        np.testing.assert_allclose(state[key], value, **ROUNDING)


def test_optimizer_state_moves_and_resumes_on_another_library(rng):
    """Train on NumPy, move model and state to array-api-strict, go on: the same as staying on NumPy."""
    values = _parameters(rng)
    grads = [[rng.standard_normal(v.shape) for v in values] for _ in range(4)]
    stay, move = [Parameter(v.copy()) for v in values], [Parameter(v.copy()) for v in values]
    opt_stay, opt_move = Adam(stay, lr=0.01), Adam(move, lr=0.01)
    for step, step_grads in enumerate(grads):
        if step == 2:
            for p in move:
                p.to((xps, DEVICE))
            opt_move.to((xps, DEVICE))
            assert all(a.device == DEVICE for arrays in opt_move.state.values() for a in arrays)
        for p, q, g in zip(stay, move, step_grads):
            p.grad[...], q.grad[...] = g, asarray_like(g, q.grad)  # on q's library and device
        opt_stay.step()
        opt_move.step()
    for p, q in zip(stay, move):
        assert_matches(q.data, p.data)
    # a checkpoint from one library loads into an optimizer on the other
    fresh = Adam([Parameter(strict(v)) for v in values], lr=0.01)
    fresh.load_state_dict(opt_stay.state_dict())
    assert fresh.steps == 4
    for name, arrays in fresh.state.items():
        for a, b in zip(arrays, opt_stay.state[name]):
            assert_matches(a, b, exact=True)


def test_clip_grad_norm_matches_numpy(rng):
    grads = _parameters(rng)
    reference = [Parameter(np.zeros_like(g)) for g in grads]
    portable = [Parameter(strict(np.zeros_like(g))) for g in grads]
    for p, q, g in zip(reference, portable, grads):
        p.grad[...], q.grad[...] = g, strict(g)
    assert clip_grad_norm(portable, 1.0) == pytest.approx(clip_grad_norm(reference, 1.0), rel=1e-12)
    for p, q in zip(reference, portable):
        assert_matches(q.grad, p.grad)


def test_parameter_moves_there_and_back_bit_for_bit(rng):
    values = rng.standard_normal((4, 3)).astype(np.float32)
    p = Parameter(values.copy())
    p.grad[...] = 1.5
    p.to(xps)
    assert namespace(p.data) is xps and namespace(p.grad) is xps and p.size == 12
    p.zero_grad()
    p.to("cpu")
    assert isinstance(p.data, np.ndarray) and p.data.tobytes() == values.tobytes()
    assert isinstance(p.grad, np.ndarray) and not p.grad.any()


def test_to_host_copies_and_to_device_keeps_arrays_already_there(rng):
    values = rng.standard_normal(5)
    assert to_device(values, "cpu") is values
    moved = to_device(values, xps)
    assert moved.device == xps.Device("CPU_DEVICE")  # a module alone: its default device
    assert to_device(moved, xps) is moved
    on_device1 = to_device(moved, (xps, DEVICE))
    assert on_device1.device == DEVICE and to_device(on_device1, (xps, DEVICE)) is on_device1
    host = to_host(on_device1)
    host[0] = 99.0  # a host copy: the device array is not changed through it
    assert float(on_device1[0]) == values[0]
    assert to_host(to_device(on_device1, "cpu")).tobytes() == values.tobytes()
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda', an array namespace .*, got 'tpu'"):
        to_device(values, "tpu")


def test_cuda_without_cupy_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy now raises ImportError
    with pytest.raises(DeviceUnavailable) as info:
        to_device(np.zeros(3), "cuda")
    message = str(info.value)
    assert "\n" not in message and "CuPy" in message and GPU_INSTALL in message
    assert GPU_INSTALL == 'pip install -e ".[gpu]"'
    assert isinstance(info.value, ValueError)  # so commands report it in one line and exit 2
    with pytest.raises(DeviceUnavailable, match="needs CuPy"):
        Parameter(np.zeros(3)).to("cuda")


def test_cuda_with_cupy_but_no_gpu_is_one_clear_line(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake_cupy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    )
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    with pytest.raises(
        DeviceUnavailable, match=r"^device 'cuda': CuPy is installed but finds no GPU"
    ) as info:
        to_device(np.zeros(3), "cuda")
    assert "\n" not in str(info.value)


def test_namespace_without_array_api_compat_asks_the_arrays(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "array_api_compat", None)  # import array_api_compat now fails
    x = strict(rng.standard_normal((1, 1, 4, 4)))
    assert namespace(x, x) is xps and namespace(np.zeros(2), 1.0, None) is np
    assert_matches(F.avg_pool2d(x, (2, 2), (2, 2)), F.avg_pool2d(to_host(x), (2, 2), (2, 2)))
    with pytest.raises(
        TypeError, match="expected arrays of one array library, got .*Array and numpy.ndarray"
    ):
        namespace(x, np.zeros(2))
    with pytest.raises(TypeError, match="expected arrays, got list"):
        namespace(x, [1.0])
