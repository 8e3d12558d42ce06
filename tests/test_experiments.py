"""The experiments in experiments/, at small scale: each must reach its claim, and draw its figure."""

import importlib.util
import pathlib

import numpy as np
import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"


def load(name):
    """Import experiments/<name>.py (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- 1. kernel recovery ---------------------------------------------------------------------------------
def test_reference_targets_are_a_true_cross_correlation():
    recovery = load("kernel_recovery")
    image = np.arange(16.0).reshape(1, 1, 4, 4)
    kernel = np.zeros((3, 3))
    kernel[0, 2] = 1.0  # picks the pixel up and to the right: no flip in cross-correlation
    out = recovery.reference_correlate(image, kernel, bias=0.5)
    assert out[0, 0, 1, 1] == image[0, 0, 0, 2] + 0.5
    assert out[0, 0, 0, 0] == 0.5  # zero padding above


def test_kernel_recovery_reaches_the_cosine_and_bias_thresholds_at_small_scale(tmp_path):
    recovery = load("kernel_recovery")
    results = recovery.run(n_images=200, steps=250, seed=0)
    assert set(results) == {"sobel x", "sharpen", "random"}
    for name, r in results.items():
        assert r["cosine"] >= 0.999, name
        assert r["bias_error"] <= 0.01, name
        # and it really moved: the random initialization was far from the target
        assert (
            abs(np.dot(r["kernels"][0].ravel(), r["target"].ravel()))
            / (np.linalg.norm(r["kernels"][0]) * np.linalg.norm(r["target"]))
            < 0.9
        )
    fig = recovery.plot(results, path=tmp_path / "recovery.png")
    assert len(fig.axes) == 3 * (6 + 1 + 2)  # per kernel: 6 moments, the target, colorbar, cosine curve
    assert (tmp_path / "recovery.png").stat().st_size > 5000


def test_kernel_recovery_fails_when_training_is_too_short():
    # the threshold is a real bar: three steps do not reach it
    recovery = load("kernel_recovery")
    image = recovery.digit_images(50)
    r = recovery.recover(recovery.targets_named(np.random.default_rng(0))["sharpen"][0], 0.1, image, steps=3)
    assert r["cosine"] < 0.999


# --- 4. stride and size ------------------------------------------------------------------------------------
def test_stride_sizes_follow_the_formula_and_maps_are_subsampled(tmp_path):
    stride = load("stride")
    image = stride.digit(3)
    kernel = np.random.default_rng(0).normal(size=(3, 3))
    results = stride.strided_maps(image, kernel)
    assert [r["map"].shape for r in results] == [(8, 8), (4, 4), (3, 3)]
    assert [r["formula_size"] for r in results] == [8, 4, 3]
    full = results[0]["map"]
    for r in results:
        np.testing.assert_allclose(r["map"], full[:: r["stride"], :: r["stride"]])
    assert [round(r["kept"], 3) for r in results] == [1.0, 0.25, round(9 / 64, 3)]
    fig = stride.plot(image, kernel, results, path=tmp_path / "stride.png")
    assert len(fig.axes) == 2 * 4 + 1
    assert (tmp_path / "stride.png").stat().st_size > 5000


@pytest.mark.parametrize(
    "size, kernel, padding, s, expected", [(8, 3, 0, 2, 3), (7, 5, 2, 3, 3), (28, 3, 1, 2, 14)]
)
def test_stride_formula_agrees_with_conv2d_for_other_sizes(size, kernel, padding, s, expected):
    from minicnn.nn.functional import conv_output_size
    from minicnn.nn.layers import Conv2D

    layer = Conv2D(1, 1, kernel, stride=s, padding=padding, rng=0)
    out = layer.forward(np.zeros((1, 1, size, size), np.float32))
    assert out.shape[2] == conv_output_size(size, kernel, s, 2 * padding) == expected


# --- 2. learned versus frozen ------------------------------------------------------------------------------
REPO = EXPERIMENTS.parent


def test_frozen_variant_marks_conv_tables_untrainable_and_keeps_the_rest():
    from minicnn.train.config import load_config

    lvf = load("learned_vs_frozen")
    cfg = load_config(REPO / "configs" / "digits.toml")
    convs = [i for i, spec in enumerate(cfg.model.layers) if spec["type"] == "Conv2D"]
    for which, expected in (("learned", []), ("first frozen", convs[:1]), ("all frozen", convs)):
        layers = lvf.with_frozen_convs(cfg, which).model.layers
        assert [i for i, spec in enumerate(layers) if spec.get("trainable") is False] == expected
    assert "trainable" not in cfg.model.layers[convs[0]]  # the original config is untouched


def test_learned_vs_frozen_small_scale_frozen_kernels_do_not_move(tmp_path):
    lvf = load("learned_vs_frozen")
    results = lvf.run(
        REPO / "configs" / "digits_fast.toml",
        seeds=(0,),
        variants=("learned", "all frozen"),
        overrides=["train.epochs=2"],
    )
    learned, frozen = results["learned"][0], results["all frozen"][0]
    assert learned["moved"][0] > 0.05  # the kernels were learned
    assert frozen["moved"] == [0.0]  # frozen means frozen
    for r in (learned, frozen):
        assert 0.5 < r["test_accuracy"] <= 1.0
    assert "| all kernels learned (default) |" in lvf.table(results)
    assert len(lvf.plot(results, path=tmp_path / "lvf.png").axes) == 1
    assert (tmp_path / "lvf.png").stat().st_size > 5000


# --- 3. zeroing each first-layer filter ------------------------------------------------------------------
def test_filter_ablation_measures_each_filter_and_restores_the_weights(tmp_path):
    ablation = load("filter_ablation")
    model, X_test, y_test = ablation.trained_model(
        REPO / "configs" / "digits_fast.toml", overrides=["train.epochs=3"]
    )
    conv = ablation.first_conv(model)
    before = conv.weight.data.copy(), conv.bias.data.copy()
    result = ablation.ablate(model, X_test, y_test)
    np.testing.assert_array_equal(conv.weight.data, before[0])
    np.testing.assert_array_equal(conv.bias.data, before[1])
    assert result["baseline"] == ablation.accuracy(model, X_test, y_test) > 0.8
    assert result["accuracies"].shape == (conv.out_channels,)
    np.testing.assert_allclose(result["drops"], result["baseline"] - result["accuracies"])
    assert result["drops"].max() > 0  # at least one filter matters on its own
    # zeroing a filter by hand gives the accuracy the experiment reports for it
    k = int(np.argmax(result["drops"]))
    conv.weight.data[k] = 0
    conv.bias.data[k] = 0
    assert ablation.accuracy(model, X_test, y_test) == result["accuracies"][k]
    conv.weight.data[...], conv.bias.data[...] = before
    fig = ablation.plot(result, conv.weight.data, len(y_test), path=tmp_path / "ablation.png")
    assert len(fig.axes) == 1 + 8 + 1  # bars, the 8 most important kernels, colorbar
    assert (tmp_path / "ablation.png").stat().st_size > 5000
