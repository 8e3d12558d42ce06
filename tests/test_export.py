"""Tests for minicnn.export: ONNX files that onnx's checker accepts and that two independent runtimes
(onnx's reference evaluator and onnxruntime) run to the probabilities Sequential.predict_proba gives."""

import dataclasses
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator

from minicnn.data import load_dataset
from minicnn.export import OPSET, build_onnx, to_onnx
from minicnn.export import main as export_main
from minicnn.nn.layers import LAYERS, Flatten, Layer
from minicnn.nn.model import Sequential
from minicnn.train.build import build_model
from minicnn.train.config import load_config

REPO = pathlib.Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5

#: Two models that between them use every layer type with the settings ONNX spells differently:
#: "same" padding of an even kernel (one more pixel after), explicit ((top, bottom), (left, right))
#: padding, dilation, strides, asymmetric kernels, padded pooling (minicnn averages padded zeros;
#: max ignores them), no bias.
EVERY_LAYER = {
    "flatten": [
        {"type": "Conv2D", "out_channels": 6, "kernel_size": 4, "padding": "same"},
        {"type": "BatchNorm2D"},
        {"type": "LeakyReLU", "negative_slope": 0.2},
        {"type": "MaxPool2D", "kernel_size": 3, "stride": 1, "padding": 1},
        {
            "type": "Conv2D",
            "out_channels": 8,
            "kernel_size": 3,
            "stride": 2,
            "padding": [1, 0],
            "bias": False,
        },
        {"type": "Tanh"},
        {"type": "AvgPool2D", "kernel_size": 2, "stride": 1, "padding": 1},
        {"type": "Flatten"},
        {"type": "Dropout", "p": 0.3},
        {"type": "Dense", "out_features": 10},
    ],
    "global_pool": [
        {"type": "Conv2D", "out_channels": 8, "kernel_size": 3, "padding": "same", "dilation": 2},
        {"type": "Sigmoid"},
        {
            "type": "Conv2D",
            "out_channels": 12,
            "kernel_size": [2, 3],
            "stride": [1, 2],
            "padding": [[0, 1], [2, 0]],
        },
        {"type": "ReLU"},
        {"type": "AvgPool2D", "kernel_size": [2, 1]},
        {"type": "GlobalAvgPool2D"},
        {"type": "Dense", "out_features": 10, "bias": False},
    ],
    # a residual network: an identity shortcut, then a strided block whose shortcut is a nested
    # Sequential (1x1 Conv2D and BatchNorm2D) written out as a list of tables
    "residual": [
        {"type": "Conv2D", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {
            "type": "Residual",
            "body": [
                {"type": "Conv2D", "out_channels": 4, "kernel_size": 3, "padding": 1},
                {"type": "BatchNorm2D"},
                {"type": "ReLU"},
            ],
        },
        {
            "type": "Residual",
            "body": [{"type": "Conv2D", "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1}],
            "shortcut": [
                {"type": "Conv2D", "out_channels": 6, "kernel_size": 1, "stride": 2},
                {"type": "BatchNorm2D"},
            ],
        },
        {"type": "Sequential", "layers": [{"type": "ReLU"}, {"type": "Flatten"}]},
        {"type": "Dense", "out_features": 10},
    ],
}


def _types(specs) -> set[str]:
    """Every layer type in ``specs``, nested tables included."""
    found = set()
    for spec in specs:
        found.add(spec["type"])
        for value in spec.values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                found |= _types(value)
    return found


@pytest.fixture(scope="module")
def digits():
    """The default config's data: standardized digits test images (360, 1, 8, 8) float32."""
    return load_dataset(load_config(REPO / "configs" / "digits.toml").data)


def randomized(model: Sequential, seed: int = 0) -> Sequential:
    """``model`` with its biases and BatchNorm scales and statistics drawn at random (positive
    variances), so a wrong layout, epsilon or padding shows in the outputs instead of hiding behind
    ones and zeros. Kernels keep their He initialization, which keeps the logits of a trained model's
    size (float32 rounding of logits in the thousands would exceed the 1e-5 tolerance by itself)."""
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for name, value in state.items():
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, value.shape).astype(value.dtype)
        elif value.ndim == 1 and name.endswith("weight"):
            state[name] = rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
        elif value.ndim == 1:
            state[name] = rng.normal(0.0, 0.2, value.shape).astype(value.dtype)
    model.load_state_dict(state)
    return model


def run_both(proto, X: np.ndarray) -> dict[str, np.ndarray]:
    """The ``probabilities`` output from onnx's reference evaluator and from onnxruntime."""
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return {
        "reference": ReferenceEvaluator(proto).run(["probabilities"], {"input": X})[0],
        "onnxruntime": session.run(["probabilities"], {"input": X})[0],
    }


def assert_matches_predict_proba(model, proto, X):
    expected = model.predict_proba(X)
    for runtime, probabilities in run_both(proto, X).items():
        assert probabilities.shape == expected.shape, runtime
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=TOLERANCE, err_msg=runtime)


def test_default_model_on_the_digits_test_images_matches_predict_proba(digits, tmp_path):
    model = randomized(
        build_model(load_config(REPO / "configs" / "digits.toml").model.layers, digits.input_shape, rng=0)
    )
    path = tmp_path / "digits.onnx"
    to_onnx(model, path, digits.input_shape)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert_matches_predict_proba(model, proto, digits.X_test)


@pytest.mark.parametrize("name", sorted(EVERY_LAYER))
def test_every_layer_type_matches_predict_proba(name, digits, tmp_path):
    model = randomized(build_model(EVERY_LAYER[name], digits.input_shape, rng=1), seed=1)
    path = tmp_path / f"{name}.onnx"
    to_onnx(model, path, digits.input_shape)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert_matches_predict_proba(model, proto, digits.X_test)


def test_the_two_models_between_them_use_every_layer_type_and_onnx_operator(digits):
    used = set().union(*(_types(specs) for specs in EVERY_LAYER.values()))
    assert used == set(LAYERS)
    protos = [
        build_onnx(build_model(specs, digits.input_shape, rng=0), digits.input_shape)
        for specs in EVERY_LAYER.values()
    ]
    ops = {node.op_type for proto in protos for node in proto.graph.node}
    assert ops >= {
        "Conv",
        "Relu",
        "LeakyRelu",
        "Tanh",
        "Sigmoid",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
        "BatchNormalization",
        "Identity",
        "Softmax",
        "Add",
    }


def test_attributes_spell_out_same_padding_and_count_padded_zeros(digits):
    proto = build_onnx(build_model(EVERY_LAYER["flatten"], digits.input_shape, rng=0), digits.input_shape)
    nodes = {
        node.name: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for node in proto.graph.node
    }
    assert nodes["0"]["pads"] == [1, 1, 2, 2]  # kernel 4, "same": top, left, bottom, right
    assert nodes["4"]["pads"] == [1, 0, 1, 0] and nodes["4"]["strides"] == [2, 2]
    assert nodes["6"]["count_include_pad"] == 1
    proto = build_onnx(build_model(EVERY_LAYER["global_pool"], digits.input_shape, rng=0), digits.input_shape)
    conv = next(node for node in proto.graph.node if node.name == "2")
    assert {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}["pads"] == [0, 2, 1, 0]
    assert nodes["1"]["epsilon"] == pytest.approx(1e-5)


def test_graph_has_opset_17_a_dynamic_batch_and_the_state_dict_names(digits):
    model = build_model(EVERY_LAYER["flatten"], digits.input_shape, rng=0)
    proto = build_onnx(model, digits.input_shape)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET >= 17
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "N" and not batch.HasField("dim_value")
    assert {init.name for init in proto.graph.initializer} == set(model.state_dict())
    for batch_size in (1, 7):
        X = digits.X_test[:batch_size]
        assert_matches_predict_proba(model, proto, X)


def test_a_nested_sequential_exports_with_the_state_dict_names(digits):
    block = randomized(build_model(EVERY_LAYER["flatten"][:4], digits.input_shape, rng=4))
    head = build_model(EVERY_LAYER["flatten"][4:], (6, 8, 8), rng=5)
    model = Sequential(block, head)
    proto = build_onnx(model, digits.input_shape)
    assert (
        {init.name for init in proto.graph.initializer}
        == set(model.state_dict())
        >= {"0.1.running_var", "1.0.weight"}
    )
    assert_matches_predict_proba(model, proto, digits.X_test)


def test_a_float64_model_exports_as_float32_and_still_matches(digits):
    model = randomized(build_model(EVERY_LAYER["global_pool"], digits.input_shape, dtype=np.float64, rng=2))
    assert_matches_predict_proba(model, build_onnx(model, digits.input_shape), digits.X_test[:50])


def test_standardization_goes_in_front_of_the_network(digits):
    model = randomized(build_model(EVERY_LAYER["global_pool"], digits.input_shape, rng=3))
    raw = digits.X_test * digits.std[None, :, None, None] + digits.mean[None, :, None, None]
    proto = build_onnx(model, digits.input_shape, mean=digits.mean, std=digits.std)
    for runtime, probabilities in run_both(proto, raw.astype(np.float32)).items():
        np.testing.assert_allclose(
            probabilities, model.predict_proba(digits.X_test), atol=TOLERANCE, err_msg=runtime
        )


def test_a_layer_onnx_cannot_express_is_named():
    class Cube(Layer):
        def forward(self, x):
            return x**3

    model = Sequential(Flatten(), Cube())
    with pytest.raises(
        ValueError, match=r"layer 1 \(Cube\) has no ONNX conversion: write Cube.to_onnx\(self, graph, name\)"
    ):
        build_onnx(model, (1, 8, 8))


@pytest.mark.parametrize("shape", [(1, 8), (0, 8, 8), (1, 2, 2), (3, 8, 8), (1.0, 8, 8)])
def test_an_input_shape_the_model_cannot_take_is_rejected(shape):
    model = build_model(EVERY_LAYER["flatten"], (1, 8, 8), rng=0)
    with pytest.raises(ValueError, match="to_onnx"):
        build_onnx(model, shape)


def test_without_onnx_installed_one_line_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    model = build_model(EVERY_LAYER["flatten"], (1, 8, 8), rng=0)
    with pytest.raises(ImportError, match=r'pip install "minicnn\[onnx\]"'):
        to_onnx(model, tmp_path / "m.onnx", (1, 8, 8))
    model.save(tmp_path / "model.npz")
    args = [str(tmp_path), "--onnx", str(tmp_path / "m.onnx"), "--input-shape", "1", "8", "8"]
    assert export_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "minicnn[onnx]" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, train_run):
    """A run of the default config (configs/digits.toml), shortened to one epoch."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    return train_run(out, "--set", "train.epochs=1", "--set", "train.warmup_epochs=0", config="digits.toml")


def test_command_exports_a_run_that_takes_unstandardized_images(run_dir, digits, tmp_path, capsys):
    path = tmp_path / "run.onnx"
    assert export_main([str(run_dir), "--onnx", str(path)]) == 0
    assert "standardization included" in capsys.readouterr().out
    cfg = load_config(run_dir / "config.toml")
    raw = load_dataset(dataclasses.replace(cfg.data, standardize=False)).X_test
    model = Sequential.load(run_dir / "model.npz")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    for runtime, probabilities in run_both(proto, raw).items():
        np.testing.assert_allclose(
            probabilities, model.predict_proba(digits.X_test), atol=TOLERANCE, err_msg=runtime
        )


def test_command_without_standardization_takes_the_runs_standardized_inputs(run_dir, digits, tmp_path):
    path = tmp_path / "net.onnx"
    args = [str(run_dir), "--onnx", str(path), "--no-standardize", "--input-shape", "1", "8", "8"]
    assert export_main(args) == 0
    assert_matches_predict_proba(Sequential.load(run_dir / "model.npz"), onnx.load(path), digits.X_test)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_command_on_a_folder_that_is_not_a_run_exits_2_with_one_line(make, tmp_path, capsys):
    folder = tmp_path / "nothing"
    if make == "empty":
        folder.mkdir()
    assert export_main([str(folder), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(folder) in err


def test_output_folder_that_does_not_exist_exits_2_with_one_line(run_dir, tmp_path, capsys):
    assert export_main([str(run_dir), "--onnx", str(tmp_path / "no" / "such" / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_runs_as_python_dash_m(run_dir, tmp_path):
    path = tmp_path / "cli.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "minicnn.export", str(run_dir), "--onnx", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {path}")
    assert [out.name for out in onnx.load(path).graph.output] == ["logits", "probabilities"]
