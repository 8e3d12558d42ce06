"""An open framework, tried as a user would: a block of your own that holds a child model, a layer of
your own with its own Parameter (and its ONNX and JavaScript parts), and the built-in Residual. Each
counts its parameters, passes a float64 gradient check, trains every weight, saves and loads back
bit-exactly (.npz and .safetensors), trains from a TOML config, runs through inspect, explore and
export; unknown, ambiguous and unsaveable layers get one line.

The user's layers live in a module written into a temporary folder (``mylayers.py``), imported as a
user's own module would be.
"""

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn import Adam, Conv2D, Dense, Flatten, Layer, ReLU, Residual, Sequential, SoftmaxCrossEntropy
from minicnn.nn.gradcheck import check_layer
from minicnn.nn.layers import BatchNorm2D, GlobalAvgPool2D, layer_class

REPO = Path(__file__).resolve().parent.parent

#: The user's module: the block of the issue as written, and a per-channel scale with its own
#: Parameter, its ONNX nodes and its JavaScript forward pass.
MYLAYERS = '''
import numpy as np

from minicnn import Conv2D, Layer, Parameter, ReLU, Sequential


class Block(Layer):
    def __init__(self, c, rng):
        self.body = Sequential(Conv2D(c, c, 3, padding=1, rng=rng), ReLU())

    def output_shape(self, s):
        return s

    def forward(self, x):
        return x + self.body.forward(x)

    def backward(self, g, need_input_grad=True):
        return g + self.body.backward(g)


class Scale(Layer):
    """x * scale[c]: one learned factor per channel."""

    input_ndim = 4
    input_size_argument = "channels"
    javascript = """(x, L) => {
        const s = L.params.scale.data, n = x.data.length / s.length;
        return tensor(x.shape.slice(), x.data.map((v, k) => v * s[Math.floor(k / n)]));
    }"""

    def __init__(self, channels, dtype=np.float32):
        self.channels = channels
        self.scale = Parameter(np.linspace(0.5, 1.5, channels).astype(dtype))

    def forward(self, x):
        self._x = x
        return x * self.scale.data[None, :, None, None]

    def backward(self, grad_out, need_input_grad=True):
        self.scale.grad += (grad_out * self._x).sum(axis=(0, 2, 3))
        return grad_out * self.scale.data[None, :, None, None]

    def to_onnx(self, graph, name):
        scale = graph.constant(f"{name}.scale", self.scale.data.reshape(1, -1, 1, 1))
        graph.add("Mul", name, [scale])
'''


@pytest.fixture(scope="module")
def mylayers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "mylayers.py").write_text(MYLAYERS)
    sys.path.insert(0, str(folder))
    module = importlib.import_module("mylayers")
    yield module
    sys.path.remove(str(folder))


def block_model(mylayers, rng=0):
    rng = np.random.default_rng(rng)
    return Sequential(
        Conv2D(1, 4, 3, padding=1, rng=rng), mylayers.Block(4, rng), Flatten(), Dense(256, 10, rng=rng)
    )


def scale_model(mylayers, rng=0):
    rng = np.random.default_rng(rng)
    conv = Conv2D(1, 4, 3, padding=1, rng=rng)
    return Sequential(conv, mylayers.Scale(4), ReLU(), Flatten(), Dense(256, 10, rng=rng))


def residual_model(rng=0):
    rng = np.random.default_rng(rng)
    return Sequential(
        Conv2D(1, 4, 3, padding=1, rng=rng),
        Residual([Conv2D(4, 4, 3, padding=1, rng=rng), BatchNorm2D(4), ReLU()]),
        Residual(
            [Conv2D(4, 6, 3, stride=2, padding=1, rng=rng)],
            shortcut=[Conv2D(4, 6, 1, stride=2, rng=rng), BatchNorm2D(6)],
        ),
        GlobalAvgPool2D(),
        Dense(6, 10, rng=rng),
    )


MODELS = {
    "block": block_model,
    "scale": scale_model,
    "residual": lambda mylayers, rng=0: residual_model(rng),
}


def digits(n=64):
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images[:n] / 16.0).astype(np.float32)[:, None], data.target[:n]


# ----------------------------------------------------------------------------------------------
# Parameters, summary, gradients, training
# ----------------------------------------------------------------------------------------------


def test_the_block_of_the_issue_counts_its_childs_parameters_and_the_summary_shows_them(mylayers):
    model = block_model(mylayers)
    assert [name for name, _ in model.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.body.0.weight",
        "1.body.0.bias",
        "3.weight",
        "3.bias",
    ]
    assert len(model.parameters()) == 6
    rows = {
        line.split()[0] + " " + line.split()[1]: line for line in model.summary((1, 8, 8)).splitlines()[2:6]
    }
    assert rows["1: Block"].split()[-1] == f"{4 * 4 * 9 + 4:,}"
    assert "  body: Sequential" in model.summary((1, 8, 8))
    assert f"Total params: {sum(p.size for p in model.parameters()):,}" in model.summary((1, 8, 8))
    state = model.state_dict()
    assert "1.body.0.weight" in state and state["1.body.0.weight"].shape == (4, 4, 3, 3)


def test_residual_keys_are_pytorchs_and_a_mismatched_shortcut_is_one_line():
    model = residual_model()
    names = [name for name, _ in model.named_parameters()]
    assert "1.body.0.weight" in names and "2.shortcut.0.weight" in names and "2.shortcut.1.bias" in names
    assert "2.shortcut.1.running_var" in model.state_dict()
    with pytest.raises(
        ValueError,
        match=r"^Residual: the body outputs \(6, 4, 4\) but the identity shortcut outputs \(4, 8, 8\)",
    ):
        Residual([Conv2D(4, 6, 3, stride=2, padding=1)]).output_shape((1, 4, 8, 8))
    with pytest.raises(ValueError, match="the shortcut outputs") as info:
        Residual([Conv2D(4, 6, 3, padding=1)], shortcut=Conv2D(4, 5, 1)).forward(
            np.zeros((1, 4, 8, 8), np.float32)
        )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_passes_a_float64_gradient_check(name, mylayers):
    model = MODELS[name](mylayers).astype(np.float64)
    if name == "residual":
        model.eval()  # BatchNorm2D's batch statistics make the check a different function per batch size
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8))
    report = check_layer(model, x)
    assert report.worst < 1e-6, report


def test_residual_gradients_are_exact_through_both_branches_in_training_mode():
    rng = np.random.default_rng(2)
    block = Residual(
        [
            Conv2D(2, 3, 3, stride=2, padding=1, bias=False, rng=rng, dtype=np.float64),
            BatchNorm2D(3, dtype=np.float64),
        ],
        shortcut=[Conv2D(2, 3, 1, stride=2, rng=rng, dtype=np.float64)],
    )
    report = check_layer(block, rng.standard_normal((3, 2, 6, 6)))
    assert set(report.errors) == {
        "input",
        "body.0.weight",
        "body.1.weight",
        "body.1.bias",
        "shortcut.0.weight",
        "shortcut.0.bias",
    }
    assert report.worst < 1e-6, report


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_changes_every_weight(name, mylayers):
    model = MODELS[name](mylayers)
    before = model.state_dict()
    X, y = digits()
    loss_fn, optimizer = SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss_fn.forward(model.forward(X), y)
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
    unchanged = [key for key, p in model.named_parameters() if np.array_equal(p.data, before[key])]
    assert not unchanged


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_and_load_back_bit_exactly(name, suffix, mylayers, tmp_path):
    model = MODELS[name](mylayers)
    model.layers[0].freeze()
    path = model.save(tmp_path / f"model{suffix}")
    loaded = Sequential.load(path)
    assert [type(layer) for _, layer in loaded.named_layers()] == [
        type(layer) for _, layer in model.named_layers()
    ]
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].tobytes() == value.tobytes(), key
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in model.parameters()]
    X, _ = digits(8)
    np.testing.assert_array_equal(loaded.predict_logits(X), model.predict_logits(X))


def test_a_residual_safetensors_file_has_pytorchs_keys_shapes_and_bytes(tmp_path):
    from safetensors.numpy import load_file

    model = residual_model()
    path = model.save(tmp_path / "resnet.safetensors")
    tensors = load_file(str(path))
    assert set(tensors) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert tensors[key].shape == value.shape and tensors[key].tobytes() == value.tobytes()


# ----------------------------------------------------------------------------------------------
# Knowing layers by name: configs, files, errors
# ----------------------------------------------------------------------------------------------


def test_a_layer_is_known_by_name_once_its_class_is_defined(mylayers):
    assert layer_class("Scale") is mylayers.Scale
    assert layer_class("mylayers:Scale") is mylayers.Scale
    assert layer_class("Residual") is Residual
    assert "Residual" in minicnn.__all__ and "Residual" in minicnn.nn.layers.LAYERS


def test_a_long_name_imports_its_module_only_when_a_config_asks(tmp_path, monkeypatch):
    (tmp_path / "freshlayers.py").write_text("from minicnn import Layer\n\nclass Fresh(Layer):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"layer class 'freshlayers:Fresh' is not known: import freshlayers"):
        layer_class("freshlayers:Fresh")  # a saved model never imports
    assert layer_class("freshlayers:Fresh", allow_import=True).__name__ == "Fresh"


def test_two_classes_of_one_short_name_are_told_apart_by_the_long_form(tmp_path, monkeypatch):
    for module in ("zoo_a", "zoo_b"):
        (tmp_path / f"{module}.py").write_text("from minicnn import Layer\n\nclass Twin(Layer):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a, b = (importlib.import_module(m).Twin for m in ("zoo_a", "zoo_b"))
    with pytest.raises(ValueError, match=r"layer type 'Twin' is ambiguous: it names zoo_a:Twin, zoo_b:Twin"):
        layer_class("Twin")
    assert layer_class("zoo_a:Twin") is a and layer_class("zoo_b:Twin") is b


def test_a_model_that_would_not_load_back_is_refused_at_save_time(tmp_path):
    class Local(Layer):  # defined inside a function: no import can make it known
        pass

    with pytest.raises(
        ValueError, match=r"layer 0 \(Local\) cannot be saved: its class is defined inside a function"
    ):
        Sequential(Local()).save(tmp_path / "local")
    assert not list(tmp_path.iterdir())


def test_a_config_that_does_not_rebuild_the_layer_is_refused_at_save_time(tmp_path, monkeypatch):
    (tmp_path / "badlayers.py").write_text(
        textwrap.dedent("""
        import numpy as np
        from minicnn import Layer, Parameter

        class Wide(Layer):
            def __init__(self, width=2):
                self.weight = Parameter(np.zeros(width))

            def get_config(self):
                return {}  # forgets the width
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from badlayers import Wide

    with pytest.raises(
        ValueError, match=r"layer 0 \(Wide\) cannot be saved: rebuilt from get_config\(\) it holds"
    ):
        Sequential(Wide(5)).save(tmp_path / "wide.npz")
    assert not (tmp_path / "wide.npz").exists()


def test_loading_a_file_whose_layer_class_is_unknown_names_it_and_the_import(mylayers, tmp_path):
    path = scale_model(mylayers).save(tmp_path / "scaled.npz")
    script = f"from minicnn import Sequential\nSequential.load({str(path)!r})"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (
        "layer class 'mylayers:Scale' is not known: import mylayers (the module that defines it)"
        in result.stderr
    )
    env_path = f"{Path(mylayers.__file__).parent}"
    script = (
        f"import mylayers\nfrom minicnn import Sequential\nprint(len(Sequential.load({str(path)!r}).layers))"
    )
    ok = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": ""},
    )
    assert ok.stdout.strip() == "5", ok.stderr


# ----------------------------------------------------------------------------------------------
# From a config, through the commands
# ----------------------------------------------------------------------------------------------


CONFIG = """
seed = 0
[data]
source = "digits"
[train]
epochs = 2
batch_size = 64
[output]
figures = false

[[model.layers]]
type = "Conv2D"
out_channels = 4
kernel_size = 3
padding = 1

[[model.layers]]
type = "mylayers:Block"
c = 4

[[model.layers]]
type = "Scale"

[[model.layers]]
type = "Residual"
[[model.layers.body]]
type = "Conv2D"
out_channels = 6
kernel_size = 3
stride = 2
padding = 1
[[model.layers.body]]
type = "BatchNorm2D"
[[model.layers.shortcut]]
type = "Conv2D"
out_channels = 6
kernel_size = 1
stride = 2

[[model.layers]]
type = "ReLU"
[[model.layers]]
type = "Flatten"
[[model.layers]]
type = "Dense"
out_features = 10
"""


@pytest.fixture(scope="module")
def user_run(mylayers, tmp_path_factory):
    """A run of CONFIG: a user's block (long name: the config imports mylayers), a user's layer (short
    name, known once imported) and a Residual from nested tables."""
    from minicnn.cli import main

    folder = tmp_path_factory.mktemp("userrun")
    (folder / "user.toml").write_text(CONFIG)
    assert main(["--config", str(folder / "user.toml"), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def test_a_config_trains_a_model_of_user_layers_and_a_residual_block(user_run, mylayers):
    model = Sequential.load(user_run / "model.npz")
    assert [type(layer).__name__ for layer in model.layers[:4]] == ["Conv2D", "Block", "Scale", "Residual"]
    assert model.layers[2].channels == 4  # filled in from the incoming shape
    initial = Sequential.load(user_run / "init.npz")
    for key, value in model.state_dict().items():
        if not key.endswith(("running_mean", "running_var")):
            assert not np.array_equal(value, initial.state_dict()[key]), key
    written = (user_run / "config.toml").read_text()
    assert "[[model.layers.body]]" in written and 'type = "mylayers:Block"' in written
    metrics = json.loads((user_run / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


def test_inspect_explore_and_export_run_on_the_user_model(user_run, mylayers, tmp_path, capsys):
    from minicnn.export import main as export_main
    from minicnn.see.explore import main as explore_main
    from minicnn.see.inspect import main as inspect_main

    assert inspect_main([str(user_run), "--layer", "3.body.0", "--out", str(tmp_path / "inspect")]) == 0
    assert (tmp_path / "inspect" / "filters_layer3.body.0.png").is_file()
    capsys.readouterr()
    assert explore_main([str(user_run), "--out", str(tmp_path / "page.html")]) == 0
    err = capsys.readouterr().err
    assert err.startswith(
        "warning: the page draws this model only in part: layer 1 (Block) has no JavaScript"
    )
    assert len(err.strip().splitlines()) == 1
    assert export_main([str(user_run), "--onnx", str(tmp_path / "user.onnx")]) == 2
    err = capsys.readouterr().err
    assert "layer 1 (Block) has no ONNX conversion: write Block.to_onnx(self, graph, name)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "user.onnx").exists()


def test_the_commands_refuse_an_unknown_layer_with_one_line(tmp_path):
    (tmp_path / "bad.toml").write_text(CONFIG.replace('"mylayers:Block"', '"nosuchmodule:Block"'))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--config",
            str(tmp_path / "bad.toml"),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert (
        "model.layers[1].type = 'nosuchmodule:Block'" in result.stderr
        and "cannot import nosuchmodule" in result.stderr
    )
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------
# ONNX and the explorer page
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["residual", "scale"])
def test_onnx_of_a_residual_and_a_user_layer_matches_predict_proba(name, mylayers, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from minicnn.export import to_onnx

    model = MODELS[name](mylayers)
    X, _ = digits(32)
    model.train()
    for _ in range(2):  # move BatchNorm2D's running statistics off 0 and 1
        model.forward(X)
    to_onnx(model, tmp_path / "m.onnx", (1, 8, 8))
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": X})
    np.testing.assert_allclose(probabilities, model.predict_proba(X), rtol=0, atol=1e-5)


def test_onnx_export_of_a_layer_without_to_onnx_names_it_and_the_method(mylayers, tmp_path):
    from minicnn.export import to_onnx

    with pytest.raises(
        ValueError,
        match=r"^to_onnx: layer 1 \(Block\) has no ONNX conversion: write Block.to_onnx\(self, graph, name\)",
    ):
        to_onnx(block_model(mylayers), tmp_path / "b.onnx", (1, 8, 8))


def _page(model, tmp_path, name):
    from minicnn.see import explore

    X, y = digits(6)
    run = explore.Run(name, model, None, X, y, np.zeros(1, np.float32), np.ones(1, np.float32), "npz", {})
    data = explore.page_data(run)
    path = tmp_path / f"{name}.html"
    path.write_text(explore.render_page(data))
    return data, path


def test_the_page_runs_a_residual_and_a_user_layer_and_draws_the_block_in_part(browser, mylayers, tmp_path):
    from conftest import open_page

    for name in ("residual", "scale"):
        data, path = _page(MODELS[name](mylayers).eval(), tmp_path, name)
        assert data["unsupported"] is None
        check = open_page(browser, path)("selfCheck()")
        assert check["ok"] is True, (name, check)
    data, path = _page(block_model(mylayers), tmp_path, "block")
    assert data["unsupported"].startswith("layer 1 (Block) has no JavaScript forward pass")
    assert [layer["path"] for layer in data["layers"]] == ["0"]
    open_page(browser, path)
    assert "only in part" in browser.find_element("id", "unsupported").text
    residual = _page(residual_model(), tmp_path, "r")[0]["layers"]
    sums = [layer for layer in residual if layer["type"] == "Residual"]
    # activation k is record k - 1's output: the body's output plus the block's input (identity
    # shortcut), then the strided body's output plus its shortcut's
    assert [layer["inputs"] for layer in sums] == [[4, 1], [6, 8]]


NESTED_FIRST = """
seed = 0
[data]
source = "digits"
[train]
epochs = 2
batch_size = 64

[[model.layers]]
type = "Residual"
[[model.layers.body]]
type = "Conv2D"
out_channels = 4
kernel_size = 3
padding = 1
[[model.layers.body]]
type = "ReLU"
[[model.layers.shortcut]]
type = "Conv2D"
out_channels = 4
kernel_size = 1

[[model.layers]]
type = "MaxPool2D"
kernel_size = 2
[[model.layers]]
type = "Flatten"
[[model.layers]]
type = "Dense"
out_features = 10
"""


def test_a_first_convolution_inside_a_block_is_the_one_the_figures_inspect_and_the_page_show(
    tmp_path, capsys
):
    """ "The first convolution" is the first one depth first: here the Residual's body's Conv2D."""
    from minicnn.cli import main
    from minicnn.see import change, explore, plots
    from minicnn.see.inspect import main as inspect_main

    (tmp_path / "nested.toml").write_text(NESTED_FIRST)
    assert main(["--config", str(tmp_path / "nested.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = tmp_path / "run"
    model = Sequential.load(run / "model.npz")
    assert change.first_conv_name(model) == "0.body.0"
    history = change.load_kernel_history(run)
    assert history["layer"] == "0.body.0" and history["kernels"].shape == (3, 4, 1, 3, 3)
    np.testing.assert_array_equal(history["kernels"][-1], model.get_layer("0.body.0").weight.data)
    assert plots.default_stages(model) == ["0.body.0", "0.body.1"]
    assert plots.receptive_field_grid(model, "0.body.0") == (0.0, 1.0)
    assert plots.receptive_field_grid(model, 1) == (0.5, 2.0)  # after the 2x2 pooling
    assert (run / "filters_learned.png").is_file() and (run / "feature_maps.png").is_file()
    assert inspect_main([str(run), "--out", str(tmp_path / "inspect")]) == 0
    assert "Layer 0.body.0: Conv2D(1, 4" in capsys.readouterr().out
    data = explore.page_data(explore.load_run(run))
    convs = [i for i, layer in enumerate(data["layers"]) if layer["type"] == "Conv2D"]
    assert [data["layers"][i]["path"] for i in convs] == ["0.body.0", "0.shortcut.0"]
    assert list(data["init_kernels"]) == [str(i) for i in convs]


def test_the_commands_load_a_run_of_user_layers_after_import_and_refuse_it_before(
    user_run, mylayers, tmp_path
):
    """A model file never imports; ``--import MODULE`` is how a command learns a user's layer."""
    env = {"PYTHONPATH": str(Path(mylayers.__file__).parent), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "minicnn.inspect", str(user_run), "--out", str(tmp_path / "i")]
    refused = subprocess.run(command, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "layer class 'mylayers:Block' is not known: import mylayers" in refused.stderr
    assert "--import mylayers" in refused.stderr
    loaded = subprocess.run([*command, "--import", "mylayers"], capture_output=True, text=True, env=env)
    assert loaded.returncode == 0, loaded.stderr
    missing = subprocess.run(
        [*command, "--import", "no_such_module"], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2 and "--import no_such_module: cannot import it" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_train_py_refuses_an_ambiguous_and_an_unsaveable_layer_with_one_line(tmp_path, monkeypatch, capsys):
    from minicnn.cli import main

    for module in ("twins_a", "twins_b"):
        (tmp_path / f"{module}.py").write_text("from minicnn import Layer\n\nclass Twin2(Layer):\n    pass\n")
    (tmp_path / "forgetful.py").write_text(
        textwrap.dedent("""
            import numpy as np
            from minicnn import Layer, Parameter

            class Forgetful(Layer):
                def __init__(self, width=2):
                    self.weight = Parameter(np.zeros(width, dtype=np.float32))

                def get_config(self):
                    return {}  # forgets the width
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("twins_a"), importlib.import_module("twins_b")
    for kind, expected in [
        ("Twin2", "layer type 'Twin2' is ambiguous: it names twins_a:Twin2, twins_b:Twin2"),
        ("forgetful:Forgetful", "(Forgetful) cannot be saved: rebuilt from get_config() it holds"),
    ]:
        config = tmp_path / "c.toml"
        width = "width = 5\n" if kind.startswith("forgetful") else ""
        config.write_text(
            '[data]\nsource = "digits"\n[train]\nepochs = 1\n[output]\nfigures = false\n'
            f'[[model.layers]]\ntype = "{kind}"\n{width}'
            '[[model.layers]]\ntype = "Flatten"\n[[model.layers]]\ntype = "Dense"\nout_features = 10\n'
        )
        code = main(["--config", str(config), "--out", str(tmp_path / "run"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert expected in err, err
        assert not (tmp_path / "run").exists()  # refused before anything is written
