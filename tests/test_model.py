"""Sequential: composition, gradients end to end, prediction, summary, state and files, training."""

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from minicnn.nn.gradcheck import check_layer
from minicnn.nn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Tanh,
)
from minicnn.nn.losses import SoftmaxCrossEntropy
from minicnn.nn.model import Sequential
from minicnn.nn.optim import Adam


def small_cnn(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(1, 8, 3, padding=1, dtype=dtype, rng=rng),
        BatchNorm2D(8, dtype=dtype),
        ReLU(),
        MaxPool2D(2),
        Conv2D(8, 16, 3, padding="same", dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dropout(0.2, rng=rng),
        Dense(64, 10, dtype=dtype, rng=rng),
    )


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target


def test_whole_model_gradient_check():
    model = Sequential(
        Conv2D(2, 3, 3, stride=2, padding=1, dtype=np.float64, rng=0),
        Tanh(),
        Conv2D(3, 4, 2, dtype=np.float64, rng=1),
        LeakyReLU(0.1),
        GlobalAvgPool2D(),
        Dense(4, 3, dtype=np.float64, rng=2),
    )
    x = np.random.default_rng(0).standard_normal((2, 2, 7, 7))
    report = check_layer(model, x)
    assert report.worst < 1e-6, report
    assert len(report.errors) == 1 + 6


def test_backward_without_input_gradient_still_fills_parameter_gradients():
    model = small_cnn().eval()  # eval: dropout off, so both passes see the same function
    x = np.random.default_rng(1).random((4, 1, 8, 8), dtype=np.float32)
    model.zero_grad()
    model.backward(np.ones_like(model.forward(x)))
    full = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    assert model.backward(np.ones_like(model.forward(x)), need_input_grad=False) is None
    for a, p in zip(full, model.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, a, rtol=1e-6)


def test_sequential_is_a_layer_that_nests_and_infers_shapes():
    rng = np.random.default_rng(0)
    block = Sequential(Conv2D(1, 4, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2))
    model = Sequential(block, Flatten(), Dense(4 * 4 * 4, 10, rng=rng))
    x = rng.random((3, 1, 8, 8), dtype=np.float32)
    assert model.output_shape(x.shape) == model.forward(x).shape == (3, 10)
    assert [name for name, _ in model.named_parameters()] == ["0.0.weight", "0.0.bias", "2.weight", "2.bias"]
    assert [name for name, _ in model.find_layers(Conv2D)] == ["0.0"]
    rebuilt = Sequential.from_architecture(model.architecture())
    rebuilt.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(rebuilt.forward(x), model.forward(x))
    with model.evaluating():
        assert not block.layers[0].training
    assert model.training and block.layers[0].training


def test_every_layer_output_shape_matches_forward():
    rng = np.random.default_rng(0)
    model = small_cnn()
    x = rng.random((2, 1, 8, 8), dtype=np.float32)
    shape = x.shape
    for layer in model.layers:
        expected = layer.output_shape(shape)
        x = layer.forward(x)
        assert x.shape == expected, layer
        shape = x.shape


def test_predict_on_an_empty_batch_returns_empty_results():
    model = small_cnn()
    empty = np.zeros((0, 1, 8, 8), np.float32)
    assert model.predict(empty).shape == (0,)
    assert model.predict_proba(empty).shape == (0, 10)


def test_constructor_accepts_a_list_and_rejects_non_layers():
    assert len(Sequential([ReLU(), Flatten()])) == 2
    with pytest.raises(TypeError, match="item 1 is a int"):
        Sequential(ReLU(), 3)


def test_named_parameters_use_pytorch_keys():
    names = [name for name, _ in small_cnn().named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias", "9.weight", "9.bias"]
    assert small_cnn().layers[0].weight.data.shape == (8, 1, 3, 3)


def test_predict_is_batched_in_eval_mode_and_restores_the_mode(digits):
    X, _ = digits
    model = small_cnn()
    model.train()
    proba = model.predict_proba(X[:50], batch_size=7)
    assert proba.shape == (50, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    model.eval()
    np.testing.assert_allclose(proba, model.predict_proba(X[:50], batch_size=50), rtol=1e-5, atol=1e-7)
    assert np.array_equal(model.predict(X[:50], batch_size=3), proba.argmax(axis=1))
    model.train()
    model.predict(X[:5])
    assert model.training and all(layer.training for layer in model.layers)


def test_summary_lists_shapes_and_parameter_counts():
    model = small_cnn()
    model.layers[0].freeze()
    text = model.summary((1, 8, 8))
    assert "(N, 8, 8, 8)" in text and "(N, 16, 4, 4)" in text and "(N, 10)" in text
    total = 8 * 9 + 8 + 16 + 16 * 8 * 9 + 16 + 64 * 10 + 10
    assert f"Total params: {total:,}" in text
    assert f"Non-trainable params: {80:,}" in text
    assert model.training  # summary runs in eval mode and restores the mode


def test_save_load_round_trip_is_exact(tmp_path, digits):
    X, _ = digits
    model = small_cnn()
    model.layers[1].running_mean[:] = np.arange(8)
    model.layers[9].freeze()
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = Sequential.load(path)
    assert [type(a) for a in loaded.layers] == [type(b) for b in model.layers]
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value), key
    assert not loaded.layers[9].weight.requires_grad and loaded.layers[0].weight.requires_grad
    assert np.array_equal(loaded.predict_proba(X[:20]), model.predict_proba(X[:20]))
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary file was renamed away


@pytest.mark.parametrize(
    "name, written", [("model", "model.npz"), ("model.npz", "model.npz"), ("run.best", "run.best.npz")]
)
def test_save_adds_npz_like_numpy_and_returns_the_path_written(tmp_path, name, written):
    model = small_cnn()
    path = model.save(tmp_path / name)
    assert path == tmp_path / written and isinstance(path, Path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [written]
    assert np.array_equal(Sequential.load(path).state_dict()["0.weight"], model.state_dict()["0.weight"])
    assert model.save(str(tmp_path / name)) == path  # a str path too


def test_load_on_an_instance_raises_and_says_what_to_use(tmp_path):
    model, other = small_cnn(seed=0), small_cnn(seed=1)
    path = other.save(tmp_path / "other")
    before = model.state_dict()["0.weight"].copy()
    with pytest.raises(
        TypeError,
        match=r"Sequential.load\(\) builds a new model.*"
        r"model = Sequential.load\(path\).*model.load_state_dict",
    ):
        model.load(path)
    assert np.array_equal(model.state_dict()["0.weight"], before)  # unchanged, and not silently
    model.load_state_dict(Sequential.load(path).state_dict())  # the in-place way the message names
    assert np.array_equal(model.state_dict()["0.weight"], other.state_dict()["0.weight"])
    assert "Rebuild a model saved by" in Sequential.load.__doc__


def test_saved_model_keeps_each_convolution_algorithm(tmp_path, digits):
    model = Sequential(
        Conv2D(1, 4, 3, padding=((0, 1), (1, 0)), rng=0, algorithm="im2col"),
        ReLU(),
        Conv2D(4, 2, 3, rng=1),
        Flatten(),
        Dense(2 * 5 * 5, 10, rng=2),
    )
    loaded = Sequential.load(model.save(tmp_path / "model"))
    assert [conv.algorithm for _, conv in loaded.find_layers(Conv2D)] == ["im2col", "fast"]
    assert loaded.layers[0].padding == ((0, 1), (1, 0))
    assert np.array_equal(loaded.predict_logits(digits[0][:5]), model.predict_logits(digits[0][:5]))


def test_load_on_a_subclass_builds_that_subclass(tmp_path):
    class Net(Sequential):
        pass

    path = small_cnn().save(tmp_path / "net")
    assert type(Net.load(path)) is Net


@pytest.mark.parametrize("nested", [False, True])
def test_backward_with_a_wrong_gradient_shape_names_the_model_and_both_shapes(digits, nested):
    model = small_cnn()
    if nested:
        model = Sequential(Sequential(*model.layers[:4]), Sequential(*model.layers[4:]))
    model.forward(digits[0][:3])
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"Sequential(<{len(model)} layers>).backward: expected grad_out of shape (3, 10), got (3, 9)"
        ),
    ):
        model.backward(np.zeros((3, 9), dtype=np.float32))
    assert model.backward(np.ones((3, 10), dtype=np.float32)).shape == (3, 1, 8, 8)


def test_loading_a_truncated_file_raises_a_clear_error(tmp_path):
    path = tmp_path / "model.npz"
    small_cnn().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Sequential.load(path)


def test_loading_a_pickle_raises_a_clear_error_and_never_unpickles(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="pickled"):
        Sequential.load(path)
    obj_path = tmp_path / "objects.npz"
    np.savez(obj_path, __architecture__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled"):
        Sequential.load(obj_path)


def test_loading_a_foreign_npz_raises_a_clear_error(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.zeros(3))
    with pytest.raises(ValueError, match="not a minicnn model file"):
        Sequential.load(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        Sequential.load(tmp_path / "missing.npz")


def test_load_state_dict_reports_missing_and_mismatched_keys():
    model = small_cnn()
    state = model.state_dict()
    del state["0.bias"]
    with pytest.raises(KeyError, match=r"missing keys \['0.bias'\]"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["9.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"9.weight expected shape \(10, 64\), got \(3, 3\)"):
        model.load_state_dict(state)


def test_a_small_cnn_fits_a_fixed_batch_of_digits(digits):
    X, y = digits
    model = Sequential(
        Conv2D(1, 16, 3, padding=1, rng=0),
        ReLU(),
        MaxPool2D(2),
        Conv2D(16, 32, 3, padding=1, rng=1),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(128, 10, rng=2),
    )
    opt, loss_fn = Adam(model.parameters(), lr=3e-3), SoftmaxCrossEntropy()
    losses = []
    for _ in range(300):
        losses.append(loss_fn.forward(model.forward(X[:64]), y[:64]))
        opt.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step()
    assert losses[0] > 1.0
    assert min(losses[-10:]) < 0.05, losses[-10:]


def test_same_seed_trains_to_bit_identical_weights(digits):
    X, y = digits

    def train(seed):
        model = small_cnn(seed=seed)
        opt, loss_fn = Adam(model.parameters()), SoftmaxCrossEntropy()
        for i in range(0, 256, 32):
            loss_fn.forward(model.forward(X[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
        return model.state_dict()

    a, b, c = train(3), train(3), train(4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def _resave_with(tmp_path, mutate):
    """Save small_cnn, let ``mutate(meta, arrays)`` corrupt it, and write it back."""
    import json

    from minicnn.io import load_npz, save_npz_atomic

    path = tmp_path / "m.npz"
    small_cnn().save(path)
    arrays = load_npz(path)
    meta = json.loads(str(arrays["__architecture__"]))
    record = mutate(meta, arrays)
    arrays["__architecture__"] = np.array(record if isinstance(record, str) else json.dumps(meta))
    save_npz_atomic(path, arrays)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda meta, arrays: "[1, 2, 3]", "JSON list, expected an object"),
        (lambda meta, arrays: meta.update(frozen=5), "'frozen' must be a list"),
        (lambda meta, arrays: meta.update(layers=[]), "non-empty list"),
        (lambda meta, arrays: meta.update(layers={"type": "Conv2D"}), "non-empty list"),
        (lambda meta, arrays: "[" * 200_000 + "]" * 200_000, "nested too deeply|JSON list"),
        (lambda meta, arrays: meta["layers"][0].update(out_channels=2**40), "memory budget|expected shape"),
        (lambda meta, arrays: meta["layers"][0].update(colour="red"), "unexpected keyword"),
        (
            lambda meta, arrays: arrays.update({"0.weight": arrays["0.weight"].astype(np.complex64)}),
            "complex64",
        ),
        (lambda meta, arrays: arrays["0.weight"].__setitem__((0, 0, 0, 0), np.nan), "NaN or infinite"),
        (lambda meta, arrays: arrays.pop("0.bias"), "missing keys \\['0.bias'\\]"),
        (lambda meta, arrays: arrays.update(extra=np.zeros(2, np.float32)), "unexpected keys \\['extra'\\]"),
    ],
)
def test_malformed_model_files_raise_one_error_type_naming_the_file(tmp_path, mutate, message):
    from minicnn.io import FileFormatError

    path = _resave_with(tmp_path, mutate)
    with pytest.raises(FileFormatError, match=message) as info:
        Sequential.load(path)
    assert str(path) in str(info.value)


def test_layers_above_the_memory_budget_are_refused_before_allocating():
    with pytest.raises(MemoryError, match=r"Conv2D\(in_channels=1, out_channels=2147483648\).*memory budget"):
        Conv2D(1, 2**31, kernel_size=1)


def _listed_order(model, x, grad):
    """Forward and backward through ``model.layers`` one by one, in the order listed."""
    for layer in model.layers:
        x = layer.forward(x)
    out = x
    for layer in reversed(model.layers):
        grad = layer.backward(grad)
    return out, grad, [p.grad.copy() for p in model.parameters()]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    levels=st.integers(2, 6),
    dtype=st.sampled_from([np.float32, np.float64]),
    kernel=st.sampled_from([2, 3]),
)
def test_relu_before_max_pooling_runs_after_it_with_the_same_results(seed, levels, dtype, kernel):
    """Sequential runs ReLU after a MaxPool2D that follows it (Sequential._order): the output, the
    input gradient and the parameter gradients equal the listed order's, also where pixels tie (few
    distinct values) and where a whole window is negative."""
    rng = np.random.default_rng(seed)
    model = Sequential(
        Conv2D(2, 3, 3, padding=1, dtype=dtype, rng=rng),
        ReLU(),
        MaxPool2D(kernel, stride=2, padding=1 if kernel == 3 else 0),
        Flatten(),
        Dense(3 * 4 * 4, 2, dtype=dtype, rng=rng),
    )
    x = rng.integers(-levels, levels, (3, 2, 8, 8)).astype(dtype)  # integer pixels: many ties
    grad = rng.standard_normal((3, 2)).astype(dtype)
    assert [type(layer) for layer in model._order()][1:3] == [MaxPool2D, ReLU]
    model.zero_grad()
    out, dx, grads = _listed_order(model, x, grad)
    model.zero_grad()
    assert np.array_equal(model.forward(x), out)
    np.testing.assert_array_equal(model.backward(grad), dx)
    for p, expected in zip(model.parameters(), grads, strict=True):
        np.testing.assert_array_equal(p.grad, expected)


def test_gradient_check_through_relu_then_max_pooling():
    model = Sequential(
        Conv2D(1, 2, 3, padding=1, dtype=np.float64, rng=0),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(2 * 3 * 3, 2, dtype=np.float64, rng=1),
    )
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    report = check_layer(model, x)
    assert report.worst < 1e-6, report
