"""Tests for the views of learning: kernel angles, per-epoch snapshots, the change/evolution/top-patch
figures (minicnn.see.change, minicnn.see.kernels), checked through the arrays they draw."""

import itertools

import numpy as np
import pytest
from PIL import Image

from minicnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from minicnn.nn.model import Sequential
from minicnn.see import change, kernels


def small_model(seed=0, out_channels=3, kernel_size=5):
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2D(1, out_channels, kernel_size, padding=kernel_size // 2, rng=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(out_channels * 16, 10, rng=rng),
    )


def rotated(kernel: np.ndarray, degrees: float, seed: int = 0) -> np.ndarray:
    """``kernel`` turned by ``degrees`` towards a random direction orthogonal to it (same norm)."""
    a = kernel.ravel() / np.linalg.norm(kernel)
    b = np.random.default_rng(seed).standard_normal(a.size)
    b -= (b @ a) * a
    b /= np.linalg.norm(b)
    t = np.radians(degrees)
    return (np.cos(t) * a + np.sin(t) * b).reshape(kernel.shape) * np.linalg.norm(kernel)


# --- angles and norm ratios ---------------------------------------------------------------------------
def test_kernel_angles_recovers_known_turns_and_ignores_scale():
    initial = np.random.default_rng(1).standard_normal((4, 1, 5, 5))
    turns = [0.0, 10.0, 45.0, 120.0]
    learned = np.stack([rotated(k, t, seed=100 + i) for i, (k, t) in enumerate(zip(initial, turns))])
    learned *= np.array([1.0, 2.0, 0.5, 3.0])[:, None, None, None]
    np.testing.assert_allclose(change.kernel_angles(initial, learned), turns, atol=1e-6)
    np.testing.assert_allclose(change.norm_ratios(initial, learned), [1.0, 2.0, 0.5, 3.0])


def test_kernel_angles_of_a_zero_kernel_is_nan_and_shapes_must_agree():
    initial = np.ones((2, 1, 3, 3))
    learned = initial.copy()
    learned[1] = 0
    angles = change.kernel_angles(initial, learned)
    assert angles[0] == pytest.approx(0.0, abs=1e-6) and np.isnan(angles[1])
    with pytest.raises(ValueError, match="differ in shape"):
        change.kernel_angles(initial, np.ones((3, 1, 3, 3)))


# --- snapshots after each epoch -------------------------------------------------------------------------
class FakeTrainer:
    def __init__(self, model):
        self.model = model


def test_kernel_history_keeps_init_and_each_epoch_and_survives_a_resume(tmp_path):
    model = small_model()
    model.save(tmp_path / "init.npz")
    initial = model.layers[0].weight.data.copy()
    hook = change.KernelHistory(tmp_path)
    seen = []
    for epoch in (1, 2, 3):
        model.layers[0].weight.data += 0.1 * epoch
        seen.append(model.layers[0].weight.data.copy())
        hook(FakeTrainer(model), {"epoch": epoch})
    saved = change.load_kernel_history(tmp_path)
    np.testing.assert_array_equal(saved["epochs"], [0, 1, 2, 3])
    np.testing.assert_array_equal(saved["kernels"][0], initial)
    np.testing.assert_array_equal(saved["kernels"][1:], seen)
    assert saved["layer"] == "0"
    # resumed after epoch 2: the snapshots of epochs 0 to 2 are kept, epoch 3 is redone
    resumed = change.KernelHistory(tmp_path)
    model.layers[0].weight.data[...] = 7.0
    resumed(FakeTrainer(model), {"epoch": 3})
    again = change.load_kernel_history(tmp_path)
    np.testing.assert_array_equal(again["epochs"], [0, 1, 2, 3])
    np.testing.assert_array_equal(again["kernels"][:3], saved["kernels"][:3])
    assert np.all(again["kernels"][3] == 7.0)


def test_load_kernel_history_is_none_for_a_run_without_one(tmp_path):
    assert change.load_kernel_history(tmp_path) is None


# --- figures ----------------------------------------------------------------------------------------------
def drawn_tiles(ax, count: int, tile_shape: tuple[int, int]) -> list[np.ndarray]:
    """The first ``count`` tiles of the mosaic drawn in ``ax``, row by row, read back from its image:
    the tile size and the gaps come from where the tiles' frames are."""
    image = np.ma.filled(ax.images[0].get_array(), np.nan)
    frames = ax.collections[0].get_paths()
    corners = sorted({(round(p.vertices[0, 1] + 0.5), round(p.vertices[0, 0] + 0.5)) for p in frames})
    h, w = tile_shape
    return [image[top : top + h, left : left + w] for top, left in corners[:count]]


def test_filters_change_draws_initial_learned_and_their_difference_with_angles(tmp_path):
    initial = np.random.default_rng(0).standard_normal((3, 1, 5, 5))
    learned = np.stack(
        [rotated(k, t, seed=100 + i) for i, (k, t) in enumerate(zip(initial, (5.0, 30.0, 90.0)))]
    )
    fig = kernels.plot_filters_change(initial, learned, path=tmp_path / "f.png")
    axes = {ax.get_label(): ax for ax in fig.axes}
    expected = {"initial": initial[:, 0], "learned": learned[:, 0], "change": (learned - initial)[:, 0]}
    for name, values in expected.items():
        for k, tile in enumerate(drawn_tiles(axes[name], 3, (5, 5))):
            np.testing.assert_allclose(tile, values[k])
    assert [t.get_text().split("°")[0] for t in axes["change"].texts] == ["5", "30", "90"]
    # initial and learned share one colour scale, the change has its own
    assert axes["initial"].images[0].get_clim() == axes["learned"].images[0].get_clim()
    assert axes["change"].images[0].get_clim()[1] == pytest.approx(np.abs(learned - initial)[:, 0].max())
    assert "median 30°" in fig._suptitle.get_text()
    assert (tmp_path / "f.png").is_file()


def history_of_turns(turns=(0.0, 10.0, 20.0, 40.0), out=2):
    initial = np.random.default_rng(3).standard_normal((out, 1, 3, 3))
    snapshots = [
        np.stack([2.0**e * rotated(k, t * (1 + i / out), seed=100 + i) for i, k in enumerate(initial)])
        for e, t in enumerate(turns)
    ]
    return {"epochs": np.arange(len(turns)), "kernels": np.stack(snapshots), "layer": 0}


def test_filters_evolution_draws_unit_norm_kernels_epoch_by_epoch_with_their_angles():
    history = history_of_turns()
    fig = kernels.plot_filters_evolution(history)
    (ax,) = fig.axes[:1]
    drawn = drawn_tiles(ax, 8, (3, 3))
    for e in range(4):
        for k in range(2):
            values = history["kernels"][e, k, 0]
            np.testing.assert_allclose(drawn[2 * e + k], values / np.linalg.norm(values), atol=1e-12)
    assert [ax.texts[2 * e].get_text() for e in range(4)] == ["0°", "10°", "20°", "40°"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"epoch {e}" for e in range(4)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]


def test_filters_evolution_thins_many_epochs_but_keeps_first_and_last():
    history = history_of_turns(tuple(range(0, 60, 2)))
    fig = kernels.plot_filters_evolution(history, max_rows=5)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "epoch 0" and labels[-1] == "epoch 29" and len(labels) == 5


def test_filters_evolution_of_many_kernels_shows_those_that_turned_most_and_says_so():
    history = history_of_turns((0.0, 10.0, 20.0), out=40)  # kernel i turns by 20 (1 + i / 40) degrees
    fig = kernels.plot_filters_evolution(history, max_kernels=16)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(k) for k in range(24, 40)]
    assert "the 16 of 40 kernels that turned most" in fig._suptitle.get_text()
    last = drawn_tiles(fig.axes[0], 48, (3, 3))[32:]
    for c, k in enumerate(range(24, 40)):
        values = history["kernels"][-1, k, 0]
        np.testing.assert_allclose(last[c], values / np.linalg.norm(values), atol=1e-12)


def test_filters_evolution_gif_has_one_frame_per_epoch_that_change(tmp_path):
    history = history_of_turns((0.0, 30.0, 60.0, 90.0))
    unit = kernels.animate_filters_evolution(history, tmp_path / "e.gif")
    assert unit.shape == (4, 2, 3, 3)
    np.testing.assert_allclose(np.linalg.norm(unit.reshape(4, 2, -1), axis=2), 1.0)
    with Image.open(tmp_path / "e.gif") as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("L"), dtype=float))
    assert len(frames) == 4
    assert all(np.abs(a - b).mean() > 0.5 for a, b in itertools.pairwise(frames))  # the kernels visibly turn
    assert all(f.std() > 10 for f in frames)  # not blank


def test_filters_evolution_gif_draws_each_kernel_in_its_colours(tmp_path):
    from matplotlib import colormaps

    history = history_of_turns((0.0, 30.0), out=12)  # 12 kernels: two rows of the grid
    unit = kernels.animate_filters_evolution(history, tmp_path / "e.gif", tile_pixels=30)
    vmax = np.abs(unit).max()
    with Image.open(tmp_path / "e.gif") as gif:
        gif.seek(1)
        frame = np.asarray(gif.convert("RGB"), dtype=float)
    assert frame.shape[1] <= 8 * 36 + 6 + 10  # 8 columns at most: a bounded width
    for k in (0, 11):  # the first kernel, and the fourth of the second row
        r, c = divmod(k, 8)
        top, left = 20 + r * (30 + 14 + 6), 6 + c * (30 + 6)
        centres = frame[top + 5 : top + 30 : 10, left + 5 : left + 30 : 10]  # one pixel per weight
        expected = colormaps["RdBu_r"]((unit[1, k] + vmax) / (2 * vmax))[..., :3] * 255
        assert np.abs(centres - expected).max() <= 4  # 254 shades of the scale in the palette


def test_top_patches_are_the_strongest_responses_one_per_image():
    model = small_model(out_channels=2, kernel_size=3)
    X = np.random.default_rng(5).random((30, 1, 8, 8)).astype(np.float32)
    found = kernels.top_patches(model, X, 0, count=4)
    conv = model.layers[0]
    assert found["patches"].shape == (2, 4, 1, 3, 3)
    padded = np.pad(X.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    for o in range(2):
        w, b = conv.weight.data[o].astype(np.float64), float(conv.bias.data[o])
        # brute force: every image's best window response for kernel o
        best = np.array(
            [
                max(np.sum(padded[n, :, r : r + 3, c : c + 3] * w) + b for r in range(8) for c in range(8))
                for n in range(len(X))
            ]
        )
        np.testing.assert_allclose(found["activations"][o], np.sort(best)[::-1][:4], rtol=1e-4)
        for rank in range(4):
            response = np.sum(found["patches"][o, rank] * w) + b
            assert response == pytest.approx(found["activations"][o, rank], rel=1e-4)
        assert len(set(found["images"][o])) == 4


def test_plot_top_patches_draws_the_kernel_the_patches_and_their_mean(tmp_path):
    model = small_model(out_channels=2, kernel_size=3)
    X = np.random.default_rng(6).random((25, 1, 8, 8)).astype(np.float32)
    fig = kernels.plot_top_patches(model, X, 0, count=3, path=tmp_path / "t.png")
    found = kernels.top_patches(model, X, 0, count=3)
    axes = {ax.get_label(): ax for ax in fig.axes}
    drawn = {
        name: np.ma.filled(axes[name].images[0].get_array(), np.nan)
        for name in ("kernels", "patches", "mean")
    }
    assert drawn["patches"].shape == (2 * 3 + 1, 3 * 4 - 1)  # a 1-pixel gap between rows and columns

    def tile(image, o, rank):
        return image[4 * o : 4 * o + 3, 4 * rank : 4 * rank + 3]

    for o in range(2):
        weight = model.layers[0].weight.data[o, 0]
        np.testing.assert_allclose(tile(drawn["kernels"], o, 0), weight / np.abs(weight).max(), rtol=1e-6)
        for rank in range(3):
            np.testing.assert_allclose(tile(drawn["patches"], o, rank), found["patches"][o, rank, 0])
        np.testing.assert_allclose(tile(drawn["mean"], o, 0), found["patches"][o, :, 0].mean(axis=0))
    responses = [float(t.get_text()) for t in axes["patches"].texts]
    np.testing.assert_allclose(responses, found["activations"].ravel(), atol=0.05)
    assert [t.get_text() for t in axes["kernels"].get_yticklabels()] == ["kernel 0", "kernel 1"]
    assert axes["kernels"].images[0].get_clim() == (-1, 1)
    assert (tmp_path / "t.png").is_file()


def test_plot_top_patches_spreads_a_dilated_kernel_over_its_patch(tmp_path):
    model = Sequential(Conv2D(1, 2, 3, dilation=2, rng=np.random.default_rng(3)), ReLU())
    X = np.random.default_rng(6).random((10, 1, 9, 9)).astype(np.float32)
    fig = kernels.plot_top_patches(model, X, 0, count=2, path=tmp_path / "t.png")
    axes = {ax.get_label(): ax for ax in fig.axes}
    drawn = {name: np.ma.filled(axes[name].images[0].get_array(), np.nan) for name in ("kernels", "patches")}
    assert drawn["kernels"].shape[0] == drawn["patches"].shape[0]  # 5x5 tiles in both: the rows line up
    weight = model.layers[0].weight.data[1, 0]
    tile = drawn["kernels"][5 + 2 : 5 + 2 + 5]  # kernel 1, below kernel 0 and a 2-pixel gap
    np.testing.assert_allclose(tile[::2, ::2], weight / np.abs(weight).max(), rtol=1e-6)
    assert np.isnan(tile[1::2]).all() and np.isnan(tile[:, 1::2]).all()


def test_top_patches_refuses_a_layer_that_does_not_read_the_input():
    model = small_model()
    with pytest.raises(ValueError, match="must be the model's first convolution"):
        kernels.top_patches(model, np.zeros((2, 1, 8, 8), np.float32), 1)


def test_train_command_keeps_kernel_snapshots_and_draws_the_learning_figures(tmp_path):
    from pathlib import Path

    from minicnn.cli import main as train

    config = Path(__file__).resolve().parent.parent / "configs" / "digits_fast.toml"
    out = tmp_path / "run"
    assert train(["--config", str(config), "--set", "train.epochs=2", "--out", str(out), "--quiet"]) == 0
    saved = change.load_kernel_history(out)
    np.testing.assert_array_equal(saved["epochs"], [0, 1, 2])
    from minicnn.io import load_npz

    np.testing.assert_array_equal(
        saved["kernels"][0], Sequential.load(out / "init.npz").layers[0].weight.data
    )
    np.testing.assert_array_equal(saved["kernels"][-1], load_npz(out / "last.npz")["model/0.weight"])
    assert not np.array_equal(saved["kernels"][1], saved["kernels"][0])
    for name in (
        "filters_learned.png",
        "filters_evolution.png",
        "filters_evolution.gif",
        "top_patches.png",
        "saliency.png",
        "class_maps_first.png",
        "class_maps_last.png",
        "mistakes.png",
        "history.png",
    ):
        assert (out / name).is_file(), name


def test_top_patches_mark_the_padding_and_the_figure_draws_it_in_its_own_labelled_colour():
    model = small_model(out_channels=2, kernel_size=3)  # padding 1
    X = np.zeros((6, 1, 8, 8), np.float32)
    X[:, :, 0, 0] = 1.0  # a bright corner: the strongest response sits at the image's edge
    found = kernels.top_patches(model, X, 0, count=2)
    for o in range(2):
        for rank in range(2):
            image = found["images"][o, rank]
            response = model.layers[0].forward(X[image : image + 1])[0, o]
            r, c = np.unravel_index(np.argmax(response), response.shape)
            rows, cols = np.arange(r - 1, r + 2), np.arange(c - 1, c + 2)
            outside = ((rows < 0) | (rows > 7))[:, None] | ((cols < 0) | (cols > 7))[None, :]
            np.testing.assert_array_equal(found["padding"][o, rank], outside)
    assert found["padding"].any()
    fig = kernels.plot_top_patches(model, X, 0, count=2)
    ax = next(ax for ax in fig.axes if ax.get_label() == "patches")
    overlay = ax.images[1].get_array()
    marked = overlay[..., 3] > 0
    for o in range(2):
        for rank in range(2):
            tile = marked[4 * o : 4 * o + 3, 4 * rank : 4 * rank + 3]
            np.testing.assert_array_equal(tile, found["padding"][o, rank])
    np.testing.assert_allclose(overlay[marked][0] / 255, kernels.PADDING_RGBA, atol=0.5 / 255)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["padding (outside the image)"]
