"""The layers, the model and the Trainer on array-api-strict's "device1" (a device NumPy refuses to
read, as it would a GPU's): every built-in layer's forward and backward equals the NumPy path's within
float64 rounding, a few training steps of the default digits model give the NumPy weights within 1e-6,
and whatever leaves the device (state dicts, checkpoints, saved models, predictions) is NumPy on the
host. Plus ``train.device = "cuda"`` without CuPy: one line, exit 2, nothing written."""

import dataclasses
import sys

import array_api_strict as xps
import numpy as np
import pytest
from test_layer_contract import rows

from minicnn.nn import layers as L
from minicnn.nn.devices import DeviceUnavailable, namespace, to_device, to_host
from minicnn.train import Trainer, build_model
from minicnn.train.config import load_config
from minicnn.train.rundir import RunDir

DEVICE = (xps, xps.Device("device1"))
ROUNDING = {"rtol": 1e-12, "atol": 1e-12}


def assert_on_device(array):
    assert namespace(array) is xps and array.device == DEVICE[1], type(array)


def assert_matches(portable, reference):
    """``portable`` lives on DEVICE and holds ``reference``'s values within float64 rounding."""
    assert_on_device(portable)
    host = to_host(portable)
    assert host.shape == reference.shape and host.dtype == reference.dtype
    np.testing.assert_allclose(host, reference, **ROUNDING)


def every_array(layer):
    """The layer's parameters, gradients and buffers, by name."""
    found = {name: p.data for name, p in layer.named_parameters()}
    found.update({f"{name}.grad": p.grad for name, p in layer.named_parameters()})
    found.update(layer.buffers())
    return found


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(L.LAYERS))  # the registry: a new layer without a row fails
def test_every_layer_matches_numpy_forward_and_backward(name, mode):
    (_, reference, shape), (_, portable, _) = rows()[name], rows()[name]  # two identical builds
    reference.train(mode == "train")
    portable.to(DEVICE).train(mode == "train")
    x = np.random.default_rng(1).standard_normal(shape)
    out = reference.forward(x)
    assert_matches(portable.forward(to_device(x, DEVICE)), out)
    grad_out = np.random.default_rng(2).standard_normal(out.shape)
    assert_matches(portable.backward(to_device(grad_out, DEVICE)), reference.backward(grad_out))
    expected = every_array(reference)
    for key, array in every_array(portable).items():  # gradients, and BatchNorm's running statistics
        assert_matches(array, expected[key])


def test_a_first_layer_skips_its_input_gradient_on_any_library():
    _, conv, shape = rows()["Conv2D"]
    conv.to(DEVICE).forward(to_device(np.ones(shape), DEVICE))
    assert conv.backward(to_device(np.ones(conv.output_shape(shape)), DEVICE), need_input_grad=False) is None
    assert_on_device(conv.weight.grad)


@pytest.mark.parametrize(
    ("make", "values"),
    [
        (lambda: L.Conv2D(3, 2, 3), np.zeros((1, 3, 4, 4), dtype=np.int64)),  # a layer's dtype: float32
        (L.ReLU, np.zeros((1, 3), dtype=np.uint8)),  # no dtype: as NumPy promotes with float32
        (L.ReLU, np.zeros((1, 3), dtype=np.int32)),
        (L.Tanh, np.zeros((1, 3), dtype=np.float64)),
    ],
)
def test_inputs_are_cast_as_on_numpy(make, values):
    cast = make().to(DEVICE).check_input(to_device(values, DEVICE))
    assert_on_device(cast)
    assert to_host(cast).dtype == make().check_input(values).dtype


@pytest.mark.parametrize(
    ("layer", "bad"),
    [
        (L.Conv2D(3, 2, 3), np.zeros((1, 3, 4, 4), dtype=np.complex128)),
        (L.Conv2D(3, 2, 3), np.zeros((1, 2, 4, 4))),
        (L.Dense(4, 2), np.zeros((1, 2, 2))),
        (L.Flatten(), np.zeros(3)),
    ],
)
def test_bad_inputs_get_numpys_messages(layer, bad):
    with pytest.raises((TypeError, ValueError)) as on_numpy:
        layer.forward(bad)
    with pytest.raises(type(on_numpy.value)) as on_device:
        layer.forward(to_device(bad, DEVICE))
    assert str(on_device.value) == str(on_numpy.value)
    assert "\n" not in str(on_device.value)


def small_model():
    rng = np.random.default_rng(3)
    block = L.Residual([L.Conv2D(2, 2, 3, padding=1, rng=rng), L.BatchNorm2D(2), L.ReLU()])
    return L.Sequential(L.Conv2D(1, 2, 3, padding=1, rng=rng), block, L.Flatten(), L.Dense(32, 3, rng=rng))


def test_an_input_elsewhere_than_the_model_is_one_line_naming_both():
    model = small_model().to(DEVICE)
    with pytest.raises(TypeError) as info:
        model.forward(np.zeros((1, 1, 4, 4), np.float32))
    message = str(info.value)
    assert message.startswith(
        "Conv2D(1, 2, kernel_size=(3, 3), padding=(1, 1)): the input is on NumPy (the host)"
    )
    assert "array_api_strict" in message and "device1" in message and "\n" not in message


def test_to_moves_every_parameter_gradient_and_buffer_and_drops_the_caches():
    model = small_model()
    x = np.random.default_rng(4).standard_normal((2, 1, 4, 4)).astype(np.float32)
    model.forward(x)
    assert model.to(DEVICE) is model
    arrays = every_array(model)
    assert "1.body.1.running_var" in arrays and "1.body.0.weight.grad" in arrays
    for array in arrays.values():
        assert_on_device(array)
        assert array.dtype == xps.float32
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        model.backward(to_device(np.ones((2, 3), np.float32), DEVICE))
    model.to("cpu")
    assert all(isinstance(a, np.ndarray) for a in every_array(model).values())


def test_to_a_device_that_is_not_there_moves_nothing(monkeypatch):
    model = small_model()
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy now raises ImportError
    with pytest.raises(DeviceUnavailable, match="needs CuPy") as info:
        model.to("cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda'"):
        L.ReLU().to("tpu")  # refused even where there is nothing to move
    assert all(isinstance(a, np.ndarray) for a in every_array(model).values())


def test_state_dicts_are_numpy_on_the_host_and_load_into_any_device():
    model, other = small_model(), small_model().to(DEVICE)
    for p in model.parameters():
        p.data[...] = np.random.default_rng(5).standard_normal(p.shape)
    state = model.state_dict()
    other.load_state_dict({k: v.astype(np.float64) for k, v in state.items()})  # cast as NumPy casts
    for key, array in every_array(other).items():
        if not key.endswith(".grad"):
            assert_on_device(array)
            assert array.dtype == xps.float32
    moved = other.state_dict()
    assert all(type(v) is np.ndarray for v in moved.values())
    assert all(moved[k].tobytes() == state[k].tobytes() for k in state)


def test_a_model_moved_there_and_back_saves_the_same_bytes(tmp_path):
    model = small_model()
    model.save(tmp_path / "before.npz")
    model.to(DEVICE).save(tmp_path / "on_device.npz")
    model.to("cpu").save(tmp_path / "after.npz")
    before = (tmp_path / "before.npz").read_bytes()
    assert (tmp_path / "on_device.npz").read_bytes() == before
    assert (tmp_path / "after.npz").read_bytes() == before


def test_predictions_come_back_to_the_host():
    X = np.random.default_rng(6).standard_normal((5, 1, 4, 4))
    reference, portable = small_model().astype(np.float64), small_model().astype(np.float64).to(DEVICE)
    logits = portable.predict_logits(X, batch_size=2)
    assert type(logits) is np.ndarray
    np.testing.assert_allclose(logits, reference.predict_logits(X, batch_size=2), **ROUNDING)
    np.testing.assert_array_equal(portable.predict(X), reference.predict(X))


# ----------------------------------------------------------------------------------------------
# Training the default digits model
# ----------------------------------------------------------------------------------------------
DIGITS = load_config("configs/digits.toml")


def digits_trainer(device):
    """configs/digits.toml's model and [train] settings, in float64, 2 epochs of 3 batches."""
    model = build_model(DIGITS.model.layers, (1, 8, 8), dtype="float64", rng=np.random.default_rng(7))
    config = dataclasses.replace(DIGITS.train, epochs=2, batch_size=16)
    return Trainer.from_config(model, config, np.random.default_rng(8), DIGITS.data.augment, device=device)


@pytest.fixture(scope="module")
def digits_runs():
    """The same training on NumPy and on array-api-strict's device1."""
    rng = np.random.default_rng(9)
    X, y = rng.standard_normal((48, 1, 8, 8)), rng.integers(0, 10, 48)
    X_val, y_val = rng.standard_normal((10, 1, 8, 8)), rng.integers(0, 10, 10)
    trainers = {"numpy": digits_trainer("cpu"), "strict": digits_trainer(DEVICE)}
    for trainer in trainers.values():
        trainer.fit(X, y, X_val, y_val, progress=False)
    return trainers


def test_training_the_digits_model_gives_the_numpy_weights(digits_runs):
    reference, portable = digits_runs["numpy"], digits_runs["strict"]
    for array in every_array(portable.model).values():
        assert_on_device(array)  # trained on the device, not on the host
    expected = reference.model.state_dict()
    for key, value in portable.model.state_dict().items():
        np.testing.assert_allclose(value, expected[key], rtol=0, atol=1e-6, err_msg=key)
    for got, want in zip(portable.history, reference.history):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert got[key] == pytest.approx(want[key], rel=1e-9), key


@pytest.mark.parametrize(("source", "target"), [("strict", "cpu"), ("numpy", DEVICE)])
def test_a_checkpoint_moves_between_devices_bit_for_bit(digits_runs, source, target):
    checkpoint = digits_runs[source].state_dict()
    assert all(type(v) is np.ndarray for v in checkpoint.values())
    resumed = digits_trainer(target)
    resumed.load_state_dict(checkpoint)
    for array in every_array(resumed.model).values():
        assert namespace(array) is namespace(to_device(np.zeros(1), target))
    again = resumed.state_dict()
    assert set(again) == set(checkpoint)
    for key, value in checkpoint.items():
        assert again[key].dtype == value.dtype and again[key].tobytes() == value.tobytes(), key


# ----------------------------------------------------------------------------------------------
# train.device in a config
# ----------------------------------------------------------------------------------------------
def test_cuda_without_cupy_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, monkeypatch):
    from minicnn.cli import main

    monkeypatch.setitem(sys.modules, "cupy", None)
    out = tmp_path / "run"
    args = ["--config", "configs/digits_fast.toml", "--out", str(out), "--set", "train.device=cuda"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device 'cuda' needs CuPy"), err
    assert 'pip install -e ".[gpu]"' in err[0]
    assert not out.exists()


def test_a_run_may_resume_on_another_device(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.write_config(DIGITS)

    def changed(**train):
        return dataclasses.replace(DIGITS, train=dataclasses.replace(DIGITS.train, **train))

    run_dir.check_resume(changed(device="cuda"))  # what was learned does not depend on where
    with pytest.raises(ValueError, match="train.lr = 0.5 differs"):
        run_dir.check_resume(changed(lr=0.5))


def test_a_run_on_a_device_writes_numpy_files_and_resumes_on_the_cpu(tmp_path, monkeypatch):
    """A run with ``train.device = "cuda"``, the GPU played by array-api-strict's device1 (the only
    stand-in here: no GPU): checkpoints, the model and the kernel history are written from NumPy
    arrays, the figures get the model on the host, and the run resumes on the CPU."""
    from minicnn.io import load_npz
    from minicnn.nn import _backend
    from minicnn.see.change import KernelHistory
    from minicnn.train import run

    monkeypatch.setattr(_backend, "_cupy", lambda: StandInCuPy)
    config = load_config("configs/digits_fast.toml", ["train.epochs=1", "train.device=cuda"])
    seen = {}

    def figures(run_dir, model, history, dataset):
        seen.update(every_array(model))

    out = tmp_path / "run"
    run(config, out, quiet=True, finish=figures, on_epoch_end=KernelHistory(out))
    assert StandInCuPy.moved > 0  # the model went to the stand-in GPU
    assert seen and all(type(a) is np.ndarray for a in seen.values())
    for name in ("last.npz", "model.npz", "kernels_history.npz"):
        assert all(type(v) is np.ndarray for v in load_npz(out / name).values()), name
    resumed = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=2, device="cpu"))
    run(resumed, out, resume=True, quiet=True)
    assert int(load_npz(out / "last.npz")["epoch"]) == 2


class StandInCuPy:
    """What :func:`minicnn.nn._backend.to_device` asks of CuPy, answered with device1 arrays."""

    moved = 0

    @classmethod
    def asarray(cls, array):
        cls.moved += 1
        return xps.asarray(array, device=DEVICE[1])
