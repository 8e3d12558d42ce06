"""Every figure stays readable from 1 to 64 first-layer kernels and on 8x8, 28x28 and 3x32x32 inputs:
its pixel size stays within screen bounds, and where it shows a subset it draws (and says) which."""

import copy

import numpy as np
import pytest
from PIL import Image

from minicnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from minicnn.nn.model import Sequential
from minicnn.see import kernels, plots, saliency

#: The largest figure, in pixels (width, height): a laptop screen's worth.
MAX_SIZE = (1500, 1400)
SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def run_like(out_channels: int, shape) -> dict:
    """A trained-looking model (its initial copy, perturbed), images, labels and kernel snapshots."""
    rng = np.random.default_rng(out_channels)
    c, h, w = shape
    model = Sequential(
        Conv2D(c, out_channels, 5 if h > 8 else 3, padding="same", rng=rng),
        ReLU(),
        MaxPool2D(2),
        Conv2D(out_channels, 12, 3, padding="same", rng=rng),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(12 * (h // 4) * (w // 4), 10, rng=rng),
    )
    init = copy.deepcopy(model)
    for p in model.parameters():
        p.data += (0.3 * p.data.std() * rng.standard_normal(p.data.shape)).astype(p.data.dtype)
    weight = init.layers[0].weight.data
    snapshots = [weight + 0.1 * e * rng.standard_normal(weight.shape) for e in range(6)]
    return {
        "model": model,
        "init": init,
        "X": rng.random((60, c, h, w)).astype(np.float32),
        "y": np.arange(60) % 10,
        "history": {"epochs": np.arange(6), "kernels": np.stack(snapshots), "layer": 0},
    }


def assert_within_bounds(path):
    with Image.open(path) as image:
        width, height = image.size
    assert 300 <= width <= MAX_SIZE[0] and 80 <= height <= MAX_SIZE[1], (path.name, width, height)


@pytest.mark.parametrize("shape", SHAPES, ids=["8x8", "28x28", "3x32x32"])
@pytest.mark.parametrize("out_channels", [1, 4, 32, 64])
def test_figures_stay_on_a_screen_and_name_the_subset_they_show(out_channels, shape, tmp_path):
    run = run_like(out_channels, shape)
    model, X, y = run["model"], run["X"], run["y"]
    learned, initial = model.layers[0].weight.data, run["init"].layers[0].weight.data
    shown = min(out_channels, 16)

    fig = kernels.plot_filters_change(initial, learned, path=tmp_path / "learned.png")
    frames = next(ax for ax in fig.axes if ax.get_label() == "initial").collections[0].get_paths()
    rows, columns = plots.wrap(learned[:, 0], 16 if out_channels > 32 else 8).shape[:2]
    assert len(frames) == rows * columns and columns <= 16
    assert len(next(ax for ax in fig.axes if ax.get_label() == "change").texts) == out_channels
    plots.plot_filters(initial, vmax=1.0, path=tmp_path / "init.png")

    fig = kernels.plot_filters_evolution(run["history"], path=tmp_path / "evolution.png")
    assert len(fig.axes[0].get_xticklabels()) == shown
    assert (f"the {shown} of {out_channels} kernels" in fig._suptitle.get_text()) == (out_channels > 16)
    kernels.animate_filters_evolution(run["history"], tmp_path / "evolution.gif")

    fig = plots.plot_feature_maps(model, X[0], path=tmp_path / "maps.png")
    assert len(fig.axes[1].texts) == shown
    assert (f"{shown} of {out_channels} channels" in fig._suptitle.get_text()) == (out_channels > 16)

    if shape[0] == 1:
        fig = kernels.plot_top_patches(model, X, 0, path=tmp_path / "patches.png")
        labels = next(ax for ax in fig.axes if ax.get_label() == "kernels").get_yticklabels()
        assert len(labels) == shown
    fig = saliency.plot_class_mean_maps(model, X, y, 1, path=tmp_path / "classes.png")
    maps_ax = next(ax for ax in fig.axes if ax.get_label() == "maps")
    assert len(maps_ax.get_xticklabels()) == min(out_channels, 8)
    assert ("of" in fig._suptitle.get_text().split("\n")[-1]) == (out_channels > 8)
    saliency.plot_saliency(model, X, y, blank=np.zeros(shape[0]), path=tmp_path / "saliency.png")
    for path in sorted(tmp_path.iterdir()):
        assert_within_bounds(path)
