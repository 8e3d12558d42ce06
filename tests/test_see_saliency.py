"""Tests for minicnn.see.saliency (saliency, occlusion, per-class mean maps) and the classic-match
percentile of minicnn.see.filters, checked against independent computations."""

import numpy as np
import pytest

from minicnn.nn.layers import BatchNorm2D, Conv2D, Dense, Flatten, LeakyReLU, MaxPool2D, ReLU
from minicnn.nn.model import Sequential
from minicnn.see import filters, plots, saliency


def model64(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(1, 3, 5, padding=2, dtype=np.float64, rng=rng),
        ReLU(),
        Conv2D(3, 4, 3, padding=1, dtype=np.float64, rng=rng),
        BatchNorm2D(4, dtype=np.float64),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(4 * 16, 10, dtype=np.float64, rng=rng),
    )


def test_saliency_is_the_numerical_gradient_of_the_predicted_score():
    model = model64()
    X = np.random.default_rng(1).standard_normal((3, 1, 8, 8))
    gradient, predicted = saliency.saliency(model, X)
    with model.evaluating():
        logits = model.forward(X)
    np.testing.assert_array_equal(predicted, logits.argmax(axis=1))
    eps = 1e-6
    for n, (r, c) in [(0, (3, 4)), (1, (0, 0)), (2, (7, 2)), (0, (5, 5))]:
        plus, minus = X.copy(), X.copy()
        plus[n, 0, r, c] += eps
        minus[n, 0, r, c] -= eps
        with model.evaluating():
            numeric = (model.forward(plus)[n, predicted[n]] - model.forward(minus)[n, predicted[n]]) / (
                2 * eps
            )
        assert gradient[n, 0, r, c] == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    assert all(p.grad is None or not np.any(p.grad) for p in model.parameters())  # gradients cleared
    assert model.layers[3].training  # the model's mode is restored


def test_occlusion_is_the_drop_in_probability_with_the_square_blanked():
    model = model64(2)
    image = np.random.default_rng(3).standard_normal((1, 8, 8))
    drop = saliency.occlusion(model, image, blank=-1.5, size=2)
    assert drop.shape == (7, 7)
    p = model.predict_proba(image[None])[0]
    target = int(p.argmax())
    covered = image.copy()
    covered[0, 2:4, 5:7] = -1.5
    assert drop[2, 5] == pytest.approx(p[target] - model.predict_proba(covered[None])[0, target])


def test_class_mean_maps_average_each_class_feature_maps():
    model = model64()
    X = np.random.default_rng(4).standard_normal((12, 1, 8, 8))
    y = np.array([0, 1, 2] * 4)
    classes, means = saliency.class_mean_maps(model, X, y, 1)
    with model.evaluating():
        maps = model.layers[1].forward(model.layers[0].forward(X))
    np.testing.assert_array_equal(classes, [0, 1, 2])
    for c in range(3):
        np.testing.assert_allclose(means[c], maps[y == c].mean(axis=0))


def _tile(image, r, c, h, w):
    return image[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w]


def test_plot_class_mean_maps_draws_the_class_means_of_the_most_varied_channels(tmp_path):
    model = model64()
    X = np.random.default_rng(4).standard_normal((12, 1, 8, 8))
    y = np.array([0, 1, 2] * 4)
    fig = saliency.plot_class_mean_maps(model, X, y, 4, max_channels=2, path=tmp_path / "c.png")
    _, means = saliency.class_mean_maps(model, X, y, 4)
    spread = means.reshape(3, 4, -1).var(axis=0).sum(axis=1)
    channels = np.sort(np.argsort(-spread)[:2])
    axes = {ax.get_label(): ax for ax in fig.axes}
    maps = np.ma.filled(axes["maps"].images[0].get_array(), np.nan)  # NaN gaps come back masked
    inputs = np.ma.filled(axes["inputs"].images[0].get_array(), np.nan)
    assert maps.shape == (3 * 9 - 1, 2 * 9 - 1) and inputs.shape == (3 * 9 - 1, 8)
    for c in range(3):
        for k, channel in enumerate(channels):
            np.testing.assert_allclose(_tile(maps, c, k, 8, 8), means[c, channel])
        mean_input = X[y == c, 0].mean(axis=0)
        stretched = (mean_input - mean_input.min()) / np.ptp(mean_input)
        np.testing.assert_allclose(_tile(inputs, c, 0, 8, 8), stretched)
    assert np.isnan(maps[8]).all() and np.isnan(maps[:, 8]).all()  # the gaps between tiles
    assert axes["maps"].images[0].get_clim()[0] == 0  # after a ReLU the scale starts at 0
    labels = [t.get_text() for t in axes["inputs"].get_yticklabels()]
    assert labels == ["class 0", "class 1", "class 2"]
    assert [t.get_text() for t in axes["maps"].get_xticklabels()] == [f"ch {k}" for k in channels]
    title = fig._suptitle.get_text()
    assert "2 of 4 channels: those whose class means differ most (largest variance across classes)" in title
    rows_in, rows_maps = (axes[name].get_position().height for name in ("inputs", "maps"))
    assert rows_in == pytest.approx(rows_maps, rel=0.02)  # the same scale: the rows line up


def test_plot_class_mean_maps_rows_line_up_when_the_maps_are_smaller_than_the_inputs(tmp_path):
    model = model64()
    X = np.random.default_rng(4).standard_normal((12, 1, 8, 8))
    y = np.array([0, 1, 2] * 4)
    fig = saliency.plot_class_mean_maps(model, X, y, 5, path=tmp_path / "c.png")  # after pooling: 4x4
    axes = {ax.get_label(): ax for ax in fig.axes}
    inputs = np.ma.filled(axes["inputs"].images[0].get_array(), np.nan)
    maps = np.ma.filled(axes["maps"].images[0].get_array(), np.nan)
    assert inputs.shape == (3 * 8 + 2 * 2, 8) and maps.shape == (3 * 4 + 2, 4 * 5 - 1)
    assert np.isnan(inputs[8:10]).all()  # two rows of gap: half as many pixels per row in the maps
    fig.canvas.draw()
    for r in range(3):
        top_in = axes["inputs"].transData.transform((0, r * 10 - 0.5))[1]
        top_maps = axes["maps"].transData.transform((0, r * 5 - 0.5))[1]
        bottom_in = axes["inputs"].transData.transform((0, r * 10 + 7.5))[1]
        bottom_maps = axes["maps"].transData.transform((0, r * 5 + 3.5))[1]
        assert top_in == pytest.approx(top_maps, abs=0.5) and bottom_in == pytest.approx(bottom_maps, abs=0.5)


def test_plot_class_mean_maps_of_colour_images_draws_them_in_colour(tmp_path):
    rng = np.random.default_rng(7)
    model = Sequential(Conv2D(3, 2, 3, padding=1, dtype=np.float64, rng=rng), LeakyReLU())
    X = rng.standard_normal((8, 3, 6, 6))
    y = np.array([0, 1] * 4)
    fig = saliency.plot_class_mean_maps(model, X, y, 1, path=tmp_path / "c.png")
    axes = {ax.get_label(): ax for ax in fig.axes}
    inputs = axes["inputs"].images[0].get_array()
    assert inputs.shape == (2 * 7 - 1, 6, 3) and (inputs[6] == 1).all()  # white between colour tiles
    mean = X[y == 1].mean(axis=0).transpose(1, 2, 0)
    np.testing.assert_allclose(_tile(inputs, 1, 0, 6, 6), (mean - mean.min()) / np.ptp(mean))
    low, high = axes["maps"].images[0].get_clim()
    assert low == -high < 0  # LeakyReLU's negative side: a scale symmetric about 0


@pytest.mark.parametrize("shape", [(1, 1, 2, 3), (2, 3, 1, 1), (3, 2, 4, 4, 3)])
def test_mosaic_places_tile_r_c_at_its_offset_with_gaps_between(shape):
    tiles = np.arange(np.prod(shape), dtype=float).reshape(shape)
    image = plots.mosaic(tiles, gap=2)
    rows, cols, h, w = shape[:4]
    assert image.shape[:2] == (rows * (h + 2) - 2, cols * (w + 2) - 2)
    for r in range(rows):
        for c in range(cols):
            np.testing.assert_array_equal(
                image[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w], tiles[r, c]
            )
    covered = rows * cols * h * w * (shape[4] if len(shape) > 4 else 1)
    gaps = image.size - covered
    filled = np.isnan(image).sum() if len(shape) == 4 else (image == 1).sum() - (tiles == 1).sum()
    assert filled == gaps


def test_plot_saliency_draws_the_gradient_and_occlusion_of_each_image(tmp_path):
    model = model64()
    X = np.random.default_rng(5).standard_normal((3, 1, 8, 8))
    fig = saliency.plot_saliency(model, X, np.array([1, 2, 3]), blank=-2.0, count=3, path=tmp_path / "s.png")
    axes = {ax.get_label(): ax for ax in fig.axes}
    drawn = {
        name: np.ma.filled(axes[name].images[0].get_array(), np.nan) for name in ("saliency", "occlusion")
    }
    gradient, predicted = saliency.saliency(model, X)
    titles = [t.get_text() for t in axes["images"].get_xticklabels()]
    for i in range(3):
        np.testing.assert_allclose(_tile(drawn["saliency"], 0, i, 8, 8), gradient[i, 0])
        drop = saliency.occlusion(model, X[i], -2.0, 2, int(predicted[i]))  # (7, 7): square (r, c) at r + .5
        occluded = drawn["occlusion"][:16, 18 * i : 18 * i + 16]  # twice as fine, 2 pixels between tiles
        np.testing.assert_allclose(occluded[1:-1, 1:-1], np.kron(drop, np.ones((2, 2))))
        assert np.isnan(occluded[0]).all() and np.isnan(occluded[:, -1]).all()  # no square centred there
        assert f"pred {predicted[i]}" in titles[i]
    assert np.ptp(gradient) > 0


def test_conv_activation_layers_are_the_relus_after_first_and_last_conv():
    assert saliency.conv_activation_layers(model64()) == ("1", "4")
    model = model64()
    model.layers[1] = LeakyReLU(0.1)  # the default config's first activation
    assert saliency.conv_activation_layers(model) == ("1", "4")
    model.layers[1] = Flatten()  # not an activation: the convolution's own output
    assert saliency.conv_activation_layers(model)[0] == "0"


# --- the nearest classic filter, judged against random kernels --------------------------------------------
def test_chance_cosines_are_the_best_matches_of_random_kernels():
    chance = filters.chance_cosines((3, 3))
    assert len(chance) == filters.N_RANDOM_KERNELS and np.all(np.diff(chance) >= 0)
    # independent check on a few fresh random kernels: their best match lies in the same distribution
    rng = np.random.default_rng(123)
    fresh = [filters.most_similar(rng.standard_normal((3, 3)))[1] for _ in range(300)]
    assert np.mean(fresh) == pytest.approx(chance.mean(), abs=0.03)
    assert 0.45 < chance.mean() < 0.65  # random 3x3 kernels already match something at cos ~0.55
    assert filters.chance_cosines((3, 3)) is chance  # cached per shape


def test_classic_match_names_a_real_sobel_and_refuses_a_random_kernel():
    sobel = filters.classic_match(2 * filters.kernel("sobel x") + 0.01)
    assert sobel["name"] == "sobel x" and sobel["meaningful"] and sobel["percentile"] > 99
    assert filters.match_label(sobel) == "like sobel x, cos 1.00, above all random kernels"
    near = filters.classic_match(filters.kernel("sobel x") + np.random.default_rng(2).normal(0, 0.5, (3, 3)))
    assert filters.match_label(near) == (
        f"like {near['name']}, cos {near['cosine']:.2f}, above {int(near['percentile'])}% of random kernels"
    )
    weak = filters.classic_match(np.random.default_rng(7).standard_normal((3, 3)))
    expected = 100 * np.mean(filters.chance_cosines((3, 3)) < weak["cosine"])
    assert weak["percentile"] == pytest.approx(expected)
    if weak["percentile"] < filters.MATCH_PERCENTILE:
        assert filters.match_label(weak).startswith("no classic match")
    noise = [filters.classic_match(k) for k in np.random.default_rng(8).standard_normal((200, 5, 5))]
    assert 0.01 < np.mean([m["meaningful"] for m in noise]) < 0.10  # about 5% of random kernels pass
