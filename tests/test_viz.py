"""Tests for minicnn.see.plots: every plot returns a Figure with the expected Axes and saves a real PNG."""

import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from minicnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from minicnn.nn.model import Sequential
from minicnn.see import plots as viz
from minicnn.see.run_figures import write_run_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_model(seed=0, padding="same"):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(1, 4, 3, padding=padding, rng=rng),
        ReLU(),
        MaxPool2D(2),
        Conv2D(4, 6, 3, padding="same", rng=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(6 * 2 * 2 if padding == "same" else 6, 10, rng=rng),
    )


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.random((20, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 20)


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000


def test_viz_never_imports_pyplot(tmp_path):
    # the object API needs no pyplot; drawing and saving every figure must not import it (so the
    # user's backend is never chosen or changed for them)
    import subprocess

    code = (
        "import sys, numpy as np; from minicnn.see.run_figures import write_run_figures; "
        "from test_viz import small_model; "
        "rng = np.random.default_rng(0); X = rng.random((12, 1, 8, 8)).astype(np.float32); "
        "y = rng.integers(0, 10, 12); h = [{'epoch': 1, 'train_loss': 1.0}]; "
        f"write_run_figures({str(tmp_path)!r}, small_model(), small_model(1), h, X, y); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).parent),
    )
    assert result.stdout.strip() == "False"


def test_plot_filters_first_layer_one_tile_per_filter_plus_colorbar(tmp_path):
    layer = Conv2D(1, 10, 3, rng=0)
    fig = viz.plot_filters(layer, path=tmp_path / "f.png")
    assert isinstance(fig, Figure)
    assert [ax.get_label() for ax in fig.axes] == ["kernels", "<colorbar>"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [f"filter {k}" for k in range(10)]
    drawn = np.ma.filled(ax.images[0].get_array(), np.nan)  # rows of 8, a 1-pixel gap between tiles
    for k in range(10):
        r, c = divmod(k, 8)
        tile = drawn[4 * r : 4 * r + 3, 4 * c : 4 * c + 3]
        np.testing.assert_allclose(tile, layer.weight.data[k, 0], rtol=1e-6)
    assert np.isnan(drawn[4:, 8:]).all()  # the spare places of the last row stay blank
    assert len(ax.collections[0].get_paths()) == 10  # and unframed
    assert_png(tmp_path / "f.png")


def test_plot_filters_uses_one_symmetric_scale_centred_on_zero():
    weight = np.zeros((3, 1, 3, 3))
    weight[0, 0, 0, 0], weight[2, 0, 1, 1] = 0.5, -2.0
    fig = viz.plot_filters(weight)
    limits = {ax.images[0].get_clim() for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"}
    assert limits == {(-2.0, 2.0)}


def test_plot_filters_deeper_layer_grid_or_one_input_channel(tmp_path):
    layer = Conv2D(4, 6, 3, rng=0)
    assert len(viz.plot_filters(layer).axes) == 6 * 4 + 1
    fig = viz.plot_filters(layer, in_channel=2, path=tmp_path / "slice.png")
    drawn = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    np.testing.assert_allclose(drawn[:3, 4:7], layer.weight.data[1, 2], rtol=1e-6)  # filter 1 on channel 2
    assert len(fig.axes) == 1 + 1
    assert_png(tmp_path / "slice.png")
    with pytest.raises(ValueError, match="in_channel must be in"):
        viz.plot_filters(layer, in_channel=4)


def test_before_after_shares_one_scale_over_both_rows(tmp_path):
    init, learned = Conv2D(1, 5, 3, rng=0), Conv2D(1, 5, 3, rng=1)
    learned.weight.data *= 3
    fig = viz.plot_filters_before_after(init, learned, path=tmp_path / "ba.png")
    assert len(fig.axes) == 2 * 5 + 1
    m = np.abs(learned.weight.data).max()
    climits = {ax.images[0].get_clim() for ax in fig.axes[:-1]}
    assert climits == {(-m, m)}
    assert_png(tmp_path / "ba.png")
    wrapped = viz.plot_filters_before_after(Conv2D(1, 11, 3, rng=0), Conv2D(1, 11, 3, rng=1), columns=4)
    assert len(wrapped.axes) == 2 * 11 + 1  # 3 blocks of (initial, learned) rows; empty cells removed


def test_feature_maps_returns_the_layer_output_in_eval_mode(images):
    X, _ = images
    model = small_model()
    model.train()
    maps = viz.feature_maps(model, X[:3], layer=2)
    assert maps.shape == (3, 4, 4, 4)
    expected = model.layers[2].forward(model.layers[1].forward(model.layers[0].forward(X[:3])))
    np.testing.assert_allclose(maps, expected)
    assert model.training  # mode restored
    assert viz.feature_maps(model, X[0, 0], layer=0).shape == (1, 4, 8, 8)  # one (H, W) image


def test_receptive_field_grid_places_pooled_and_valid_maps_on_the_input():
    assert viz.receptive_field_grid(small_model(), 0) == (0.0, 1.0)  # same padding: pixel over pixel
    assert viz.receptive_field_grid(small_model(), 2) == (0.5, 2.0)  # 2x2 pool: centred between pixels
    assert viz.receptive_field_grid(small_model(padding="valid"), 0) == (1.0, 1.0)  # valid 3x3 loses a border


def test_plot_feature_maps_default_stages_are_conv_relu_pool(tmp_path, images):
    X, _ = images
    model = small_model()
    assert viz.default_stages(model) == ["0", "1", "2"]
    fig = viz.plot_feature_maps(model, X[0], path=tmp_path / "fm.png")
    labels = [ax.get_label() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert labels == ["input 0", "maps 0", "input 1", "maps 1", "input 2", "maps 2"]
    assert_png(tmp_path / "fm.png")
    fig = viz.plot_feature_maps(model, X[0], layer=3)
    assert [t.get_text() for t in fig.axes[1].texts] == [f"ch {c}" for c in range(6)]
    with pytest.raises(ValueError, match="not feature maps"):
        viz.plot_feature_maps(model, X[0], layer=7)


def maps_drawn(fig, layer: int, count: int, size: int, gap: int) -> list[np.ndarray]:
    """The first ``count`` tiles (size x size) of layer ``layer``'s mosaic, row by row."""
    ax = next(ax for ax in fig.axes if ax.get_label() == f"maps {layer}")
    image = np.ma.filled(ax.images[0].get_array(), np.nan)
    columns = (image.shape[1] + gap) // (size + gap)
    return [
        image[r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size]
        for r, c in (divmod(k, columns) for k in range(count))
    ]


def test_feature_maps_cover_the_input_pixels_each_cell_is_centred_on(images):
    X, _ = images
    model = small_model()
    fig = viz.plot_feature_maps(model, X[0])
    conv, pooled = viz.feature_maps(model, X[0], 0)[0], viz.feature_maps(model, X[0], 2)[0]
    for c, tile in enumerate(maps_drawn(fig, 0, 4, 8, 1)):
        np.testing.assert_allclose(tile, conv[c], rtol=1e-6)  # same padding: one cell per pixel
    for c, tile in enumerate(maps_drawn(fig, 2, 4, 8, 1)):
        np.testing.assert_allclose(tile, np.kron(pooled[c], np.ones((2, 2))), rtol=1e-6)  # 2x2 blocks
    valid = small_model(padding="valid")
    fig = viz.plot_feature_maps(valid, X[0], layer=0)
    tile = maps_drawn(fig, 0, 1, 8, 1)[0]
    assert np.isnan(tile[0]).all() and np.isnan(tile[:, -1]).all()  # a valid 3x3 loses the border
    np.testing.assert_allclose(tile[1:-1, 1:-1], viz.feature_maps(valid, X[0], 0)[0, 0], rtol=1e-6)


def test_feature_maps_of_many_channels_show_the_strongest_and_say_so(images):
    X, _ = images
    rng = np.random.default_rng(0)
    model = Sequential(Conv2D(1, 40, 3, padding=1, rng=rng), ReLU())
    maps = viz.feature_maps(model, X[0], 0)[0]
    strongest = np.sort(np.argsort(-np.abs(maps).mean(axis=(1, 2)))[:16])
    fig = viz.plot_feature_maps(model, X[0], max_channels=16)
    assert [t.get_text() for t in fig.axes[1].texts] == [f"ch {c}" for c in strongest]
    for tile, c in zip(maps_drawn(fig, 0, 16, 8, 1), strongest):
        np.testing.assert_allclose(tile, maps[c], rtol=1e-6)
    assert (
        "16 of 40 channels: those with the largest mean |activation| after layer 0"
        in fig._suptitle.get_text()
    )


def test_plot_history_draws_train_and_validation_and_tolerates_missing_keys(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "train_accuracy": 1 - 1 / (e + 1),
            "val_loss": 1.2 / e,
            "val_accuracy": 0.9 - 1 / (e + 2),
            "lr": 1e-3,
            "seconds": 0.1,
        }
        for e in range(1, 6)
    ]
    fig = viz.plot_history(history, path=tmp_path / "h.png")
    assert len(fig.axes) == 2
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    assert_png(tmp_path / "h.png")
    no_val = [{k: v for k, v in row.items() if not k.startswith("val")} for row in history]
    assert [len(ax.lines) for ax in viz.plot_history(no_val).axes] == [1, 1]
    as_lists = {"train_loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}
    assert [len(ax.lines) for ax in viz.plot_history(as_lists).axes] == [2, 0]


def test_plot_confusion_matrix_counts_match_sklearn(tmp_path):
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    fig = viz.plot_confusion_matrix(y_true, y_pred, path=tmp_path / "c.png")
    assert len(fig.axes) == 2
    matrix = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 2]])
    assert "accuracy 0.714" in fig.axes[0].get_title()
    assert_png(tmp_path / "c.png")


def test_plot_mistakes_shows_only_the_misclassified(tmp_path, images):
    X, y = images
    y_pred = y.copy()
    y_pred[[2, 5, 11]] = (y[[2, 5, 11]] + 1) % 10
    fig = viz.plot_mistakes(X, y, y_pred, path=tmp_path / "m.png")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == [f"true {y[i]}, pred {y_pred[i]}" for i in (2, 5, 11)]
    drawn = ax.images[0].get_array()
    h, w = X.shape[2:]
    top = drawn.shape[0] - h  # one row of tiles under the room for the titles
    for k, i in enumerate((2, 5, 11)):
        image = X[i, 0].astype(np.float64)
        stretched = (image - image.min()) / np.ptp(image)
        np.testing.assert_allclose(drawn[top:, k * (w + 1) : k * (w + 1) + w], stretched, atol=1e-6)
    assert_png(tmp_path / "m.png")
    assert len(viz.plot_mistakes(X, y, y, path=tmp_path / "none.png").axes) == 1
    assert_png(tmp_path / "none.png")
    assert len(viz.plot_mistakes(X, y, (y + 1) % 10, max_images=7).axes[0].texts) == 7


def test_write_run_figures_writes_all_six(tmp_path, images):
    X, y = images
    model, init = small_model(0), small_model(0)
    model.layers[0].weight.data *= 2
    history = [{"epoch": 1, "train_loss": 2.0, "train_accuracy": 0.3}]
    paths = write_run_figures(
        tmp_path, model=model, init_model=init, history=history, X_test=X, y_test=y, figures=True
    )
    assert sorted(p.split("/")[-1] for p in paths) == sorted(viz.FIGURE_NAMES)
    for name in viz.FIGURE_NAMES:
        assert_png(tmp_path / name)


def test_write_run_figures_learned_figure_shows_init_learned_and_change(tmp_path):
    model, init = small_model(0), small_model(0)
    model.layers[0].weight.data *= 4
    model.layers[0].weight.data[0, 0, 0, 0] += 1.0  # kernel 0 turns, the others only grow
    paths = write_run_figures(tmp_path, model=model, init_model=init)  # only the two filter figures
    assert [p.split("/")[-1] for p in paths] == ["filters_init.png", "filters_learned.png"]
    from minicnn.see.change import kernel_angles
    from minicnn.see.kernels import plot_filters_change

    fig = plot_filters_change(init.layers[0], model.layers[0])
    change = next(ax for ax in fig.axes if ax.get_label() == "change")
    drawn = np.ma.filled(change.images[0].get_array(), np.nan)
    np.testing.assert_allclose(
        drawn[:3, :3], (model.layers[0].weight.data - init.layers[0].weight.data)[0, 0], rtol=1e-6
    )
    angles = kernel_angles(init.layers[0].weight.data, model.layers[0].weight.data)
    assert [t.get_text().split("°")[0] for t in change.texts] == [f"{a:.0f}" for a in angles]
    assert angles[0] > 1 and np.allclose(angles[1:], 0, atol=1e-3)


def test_feature_maps_after_relu_use_a_scale_from_zero(images):
    model = small_model()
    fig = viz.plot_feature_maps(model, images[0][0])
    axes = {ax.get_label(): ax for ax in fig.axes}
    conv, relu = axes["maps 0"], axes["maps 1"]
    assert conv.images[0].get_clim()[0] < 0 < conv.images[0].get_clim()[1]
    assert relu.images[0].get_clim()[0] == 0 and relu.images[0].get_clim()[1] > 0
    np.testing.assert_allclose(maps_drawn(fig, 1, 1, 8, 1)[0], viz.feature_maps(model, images[0][0], 1)[0, 0])


def test_confusion_matrix_leaves_zero_cells_blank():
    fig = viz.plot_confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]))
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in fig.axes[0].texts
    }
    assert texts == {(0, 0): "1", (0, 1): "1", (1, 1): "1", (2, 2): "1"}


def test_mistakes_show_the_probability_of_the_wrong_prediction_even_for_one(images):
    X, y = images
    y_pred = y.copy()
    y_pred[4] = (y[4] + 1) % 10
    probabilities = np.full((len(y), 10), 0.05)
    probabilities[4, y_pred[4]] = 0.55
    fig = viz.plot_mistakes(X, y, y_pred, probabilities=probabilities)
    assert fig.axes[0].texts[0].get_text() == f"true {y[4]}, pred {y_pred[4]}\np({y_pred[4]}) = 0.55"
    title = fig._suptitle.get_window_extent(fig.canvas.get_renderer())
    assert 0 <= title.x0 and title.x1 <= fig.bbox.width  # one mistake still leaves room for the title


def test_history_draws_the_label_smoothing_floor():
    eps, k = 0.1, 10
    floor = viz.smoothing_floor(eps, k)
    target = np.full(k, eps / k)
    target[0] += 1 - eps
    rng = np.random.default_rng(0)
    others = rng.dirichlet(np.ones(k), 200)  # no distribution does better than the target itself
    assert floor == pytest.approx(-(target * np.log(target)).sum())
    assert np.all(-(np.log(others) * target).sum(axis=1) >= floor)
    fig = viz.plot_history([{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.6}], eps, k)
    floors = [line for line in fig.axes[0].lines if "label smoothing" in line.get_label()]
    assert len(floors) == 1 and floors[0].get_ydata()[0] == pytest.approx(floor)
    assert viz.smoothing_floor(0.0, 10) == 0.0


def test_write_run_figures_with_figures_false_writes_nothing(tmp_path, images):
    X, y = images
    assert (
        write_run_figures(
            tmp_path / "run",
            model=small_model(),
            init_model=None,
            history=[],
            X_test=X,
            y_test=y,
            figures=False,
        )
        == []
    )
    assert not (tmp_path / "run").exists()
