"""One contract for every layer minicnn knows: a row per built-in layer (the registry's list, so a new
layer without a row fails here), and for each row a float64 gradient check, an ONNX conversion run in
onnxruntime against ``predict_proba``, and the explorer page's JavaScript forward pass against NumPy
in a real browser. Adding a built-in layer means its class, its JavaScript forward, one row here and
its docs."""

import re
from pathlib import Path

import numpy as np
import pytest

from minicnn.nn import layers as L
from minicnn.nn.gradcheck import check_layer

REPO = Path(__file__).resolve().parent.parent


def rows():
    """``{layer name: (model on (1, 6, 6) images ending in class scores, the layer in it, the shape of
    that layer's input)}``, float64, with every bias and BatchNorm statistic drawn at random so a
    wrong layout shows."""
    rng = np.random.default_rng(0)
    f64 = {"dtype": np.float64}

    def conv(c_in=1, c_out=3, **kw):
        return L.Conv2D(c_in, c_out, 3, padding=1, rng=rng, **f64, **kw)

    def head(features, layers):
        return L.Sequential([*layers, L.Dense(features, 4, rng=rng, **f64)])

    def image_row(layer):
        features = int(np.prod(layer.output_shape((1, 3, 6, 6))[1:]))
        return head(features, [conv(), layer, L.Flatten()]), layer, (2, 3, 6, 6)

    norm = L.BatchNorm2D(3, **f64)
    norm.running_mean[:], norm.running_var[:] = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    dense = L.Dense(36, 4, rng=rng, **f64)
    flatten = L.Flatten()
    gap = L.GlobalAvgPool2D()
    inner = L.Sequential(conv(3, 3), L.Tanh())
    residual = L.Residual([conv(3, 3), L.ReLU()], shortcut=[L.Conv2D(3, 3, 1, rng=rng, **f64)])
    found = {
        "Conv2D": image_row(
            L.Conv2D(3, 3, (3, 2), stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2), rng=rng, **f64)
        ),
        "Dense": (L.Sequential(L.Flatten(), dense), dense, (2, 36)),
        "ReLU": image_row(L.ReLU()),
        "LeakyReLU": image_row(L.LeakyReLU(0.2)),
        "Tanh": image_row(L.Tanh()),
        "Sigmoid": image_row(L.Sigmoid()),
        "MaxPool2D": image_row(L.MaxPool2D(3, stride=2, padding=1)),
        "AvgPool2D": image_row(L.AvgPool2D(2, stride=1, padding=1)),
        "GlobalAvgPool2D": (head(3, [conv(), gap]), gap, (2, 3, 6, 6)),
        "Flatten": (head(36, [flatten]), flatten, (2, 1, 6, 6)),
        "Dropout": image_row(L.Dropout(0.5, rng=1)),
        "BatchNorm2D": image_row(norm),
        "Sequential": image_row(inner),
        "Residual": image_row(residual),
    }
    for model, _, _ in found.values():
        for p in model.parameters():
            if p.data.ndim == 1:
                p.data[:] = rng.normal(0.0, 0.3, size=p.data.shape)
    return found


ROWS = rows()


def test_every_built_in_layer_has_a_row():
    assert set(ROWS) == set(L.LAYERS)


def test_the_public_names_come_from_the_registry():
    import minicnn

    assert set(L.LAYERS) <= set(L.__all__) and set(L.LAYERS) <= set(minicnn.__all__)
    assert all(getattr(minicnn, name) is cls for name, cls in L.LAYERS.items())


def test_the_page_script_has_a_forward_pass_for_exactly_the_built_in_layers():
    script = (REPO / "minicnn" / "see" / "explore.js").read_text()
    table = script[script.index("const FORWARD = {") :].split("};")[0]
    in_script = set(re.findall(r"^\s+(\w+):", table, flags=re.MULTILINE))
    declared = {name for name, cls in L.LAYERS.items() if cls.javascript == L.BUILTIN_JAVASCRIPT}
    assert in_script == declared
    assert declared == set(L.LAYERS) - {"Sequential"}  # a Sequential adds its layers, not itself


@pytest.mark.parametrize("name", sorted(ROWS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradients_are_exact_in_float64(name, mode):
    _, layer, shape = ROWS[name]
    if name == "Dropout" and mode == "train":
        pytest.skip("random in training mode: tests/test_layers.py checks it with a fixed mask")
    layer.train(mode == "train")
    report = check_layer(layer, np.random.default_rng(1).standard_normal(shape))
    layer.train()
    assert report.worst < 1e-6, report


@pytest.mark.parametrize("name", sorted(ROWS))
def test_onnx_matches_predict_proba_in_onnxruntime(name, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from minicnn.export import to_onnx

    model = ROWS[name][0]
    X = np.random.default_rng(2).standard_normal((5, 1, 6, 6)).astype(np.float32)
    to_onnx(model, tmp_path / f"{name}.onnx", (1, 6, 6))
    session = onnxruntime.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"input": X})
    np.testing.assert_allclose(probabilities, model.predict_proba(X.astype(np.float64)), rtol=0, atol=1e-5)


def test_the_pages_javascript_matches_numpy_for_every_layer(browser, tmp_path):
    from conftest import open_page

    from minicnn.see import explore

    X = np.random.default_rng(3).standard_normal((4, 1, 6, 6)).astype(np.float32)
    for name, (model, _, _) in sorted(ROWS.items()):
        model.eval()
        run = explore.Run(
            name, model, None, X, np.arange(4), np.zeros(1, np.float32), np.ones(1, np.float32), "npz", {}
        )
        data = explore.page_data(run)
        assert data["unsupported"] is None, (name, data["unsupported"])
        path = tmp_path / f"{name}.html"
        path.write_text(explore.render_page(data))
        check = open_page(browser, path)("selfCheck()")
        model.train()
        assert check["ok"] is True and check["maxRelativeError"] <= 1e-4, (name, check)


def _held_arrays(layer) -> dict:
    """What a layer kept from its last forward for backward: its ``cache_names`` that are not None."""
    return {name: getattr(layer, name) for name in layer.cache_names if getattr(layer, name) is not None}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_no_grad_gives_the_same_outputs_and_keeps_nothing_for_backward(name):
    from minicnn.nn import grad_enabled, no_grad

    model, layer, shape = ROWS[name]
    x = np.random.default_rng(4).standard_normal(shape)
    with layer.evaluating():
        expected = layer.forward(x)
        keeps = bool(_held_arrays(layer))
        assert keeps or not layer.cache_names or name == "Dropout"  # (Dropout's eval forward needs no mask)
        assert grad_enabled()
        with no_grad():
            assert not grad_enabled()
            out = layer.forward(x)
        assert grad_enabled()
        np.testing.assert_array_equal(out, expected)
        held = {n: a for _, sub in layer.named_layers() for n, a in _held_arrays(sub).items()}
        assert not held, f"{name} kept {sorted(held)} under no_grad"
        if keeps:
            with pytest.raises(
                RuntimeError, match=r"backward\(\) called before forward\(\), or after .*no_grad"
            ):
                layer.backward(np.ones_like(out))
    # predictions run under no_grad: no layer of the model holds the batch's activations afterwards
    rng = np.random.default_rng(5)
    model.forward(rng.standard_normal((2, *model_input_shape(name))))  # keeps them, as training does
    model.predict_proba(rng.standard_normal((3, *model_input_shape(name))))
    assert not any(_held_arrays(sub) for _, sub in model.named_layers())


def model_input_shape(name: str) -> tuple[int, ...]:
    return (36,) if name == "Dense" else (1, 6, 6)


def test_no_grad_is_undone_after_an_error_and_layers_of_ones_own_keep_working():
    from minicnn.nn import grad_enabled, no_grad

    with pytest.raises(ZeroDivisionError), no_grad():
        raise ZeroDivisionError
    assert grad_enabled()

    class Twice(L.Layer):  # a user's layer declares no cache_names: nothing is dropped
        def forward(self, x):
            self.seen = x
            return 2 * x

    layer = Twice()
    with no_grad():
        assert np.array_equal(layer.forward(np.ones(3)), 2 * np.ones(3))
    assert layer.seen is not None


def test_predictions_need_less_memory_than_a_forward_that_keeps_its_activations():
    import tracemalloc

    rng = np.random.default_rng(7)
    model = L.Sequential(
        L.Conv2D(1, 16, 3, padding=1, rng=rng), L.ReLU(), L.Conv2D(16, 16, 3, padding=1, rng=rng), L.ReLU(),
        L.Conv2D(16, 16, 3, padding=1, rng=rng), L.ReLU(), L.Flatten(), L.Dense(16 * 28 * 28, 10, rng=rng),
    )  # fmt: skip
    X = rng.standard_normal((128, 1, 28, 28)).astype(np.float32)
    model.predict(X[:2])

    def peak(run) -> int:
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    with model.evaluating():
        keeping = peak(lambda: model.forward(X))
    predicting = peak(lambda: model.predict_logits(X, batch_size=128))
    # keeping: every layer's input and mask (about 8 activations of 6.4 MB); predicting: two at a time
    assert predicting < 0.5 * keeping, (predicting / 2**20, keeping / 2**20)
