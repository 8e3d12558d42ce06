"""Figures that cost little memory: :class:`PixelImage` draws what ``imshow(..., interpolation="nearest")``
draws, pixel for pixel, without Matplotlib's screen-sized float arrays, and :func:`draw_steps` frees
each figure as soon as it is written."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import numpy as np
import pytest

from minicnn.see.plots import PixelImage, draw_steps, new_figure, show_pixels


def _render(data, *, fast: bool, figsize=(5.0, 3.0), colorbar=True, **kwargs) -> np.ndarray:
    """The canvas's RGBA pixels after drawing ``data`` the way a figure of ours does."""
    fig = new_figure(*figsize)
    ax = fig.subplots()
    if fast:
        image = show_pixels(ax, data, **kwargs)
    else:
        image = ax.imshow(data, interpolation="nearest", **kwargs)
    if colorbar and np.ndim(data) == 2:
        fig.colorbar(image, ax=ax)
    ax.set_xticks([1.0])
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


@pytest.mark.parametrize(
    "shape, figsize",
    [
        ((3, 4), (5.0, 3.0)),
        ((37, 91), (5.0, 3.0)),
        ((100, 13), (4.0, 6.0)),
        ((8, 8), (2.3, 2.1)),
        ((1, 200), (9, 2)),
    ],
)
def test_pixel_image_draws_the_same_pixels_as_imshow(shape, figsize):
    rng = np.random.default_rng(0)
    values = rng.normal(size=shape)
    values[0, 0] = np.nan  # a gap of a mosaic: the colormap's "bad" colour in both
    kwargs = {"cmap": "RdBu_r", "vmin": -2.0, "vmax": 2.0}
    slow, fast = (
        _render(values, fast=False, figsize=figsize, **kwargs),
        _render(values, fast=True, figsize=figsize, **kwargs),
    )
    assert slow.shape == fast.shape
    assert np.array_equal(slow, fast), f"{np.any(slow != fast, axis=2).sum()} pixels differ"
    colours = (rng.random((*shape, 4)) * 255).astype(np.uint8)
    colours[..., 3] = np.where(rng.random(shape) < 0.3, 0, 255)  # transparent pixels, as the padding overlay
    assert np.array_equal(
        _render(colours, fast=False, figsize=figsize), _render(colours, fast=True, figsize=figsize)
    )


def test_pixel_image_autoscales_and_keeps_the_data_for_readers():
    values = np.arange(12.0).reshape(3, 4)
    slow, fast = (
        _render(values, fast=False),
        _render(values, fast=True),
    )  # no vmin/vmax: both scale to the data
    assert np.array_equal(slow, fast)
    fig = new_figure(3, 3)
    image = show_pixels(fig.subplots(), values, cmap="gray_r", vmin=0, vmax=11)
    assert isinstance(image, PixelImage)
    assert np.array_equal(image.get_array(), values)  # tests read the drawn data, as from imshow
    assert image.get_clim() == (0, 11)


def test_pixel_image_falls_back_to_matplotlib_for_other_interpolations():
    values = np.random.default_rng(1).normal(size=(6, 9))
    fig = new_figure(4, 3)
    ax = fig.subplots()
    image = show_pixels(ax, values, cmap="magma")
    image.set_interpolation("bilinear")
    fig.canvas.draw()
    mine = np.asarray(fig.canvas.buffer_rgba()).copy()
    other = new_figure(4, 3)
    other.subplots().imshow(values, cmap="magma", interpolation="bilinear")
    other.canvas.draw()
    assert np.array_equal(mine, np.asarray(other.canvas.buffer_rgba()))


def _draw_peak(fast: bool) -> int:
    """tracemalloc's peak while saving one large mosaic figure (1000 x 1000 pixels)."""
    import io

    values = np.random.default_rng(2).normal(size=(120, 120)).astype(np.float32)
    fig = new_figure(10, 10)
    ax = fig.subplots()
    if fast:
        show_pixels(ax, values, cmap="RdBu_r", vmin=-3, vmax=3)
    else:
        ax.imshow(values, cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
    tracemalloc.start()
    try:
        fig.savefig(io.BytesIO(), format="png", dpi=100)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_pixel_image_needs_a_fraction_of_imshows_memory():
    slow, fast = _draw_peak(fast=False), _draw_peak(fast=True)
    # imshow: float arrays of the ~800 x 800 image area (about 30 bytes a pixel); ours: its RGBA bytes
    assert fast < slow / 3, f"PixelImage peak {fast / 2**20:.1f} MiB, imshow {slow / 2**20:.1f} MiB"


def test_draw_steps_frees_each_figure_once_written():
    alive = []

    def step(name):
        def draw():
            fig = new_figure(2, 2)
            fig.subplots().plot([0, 1])
            alive.append(weakref.ref(fig))
            return [name]

        return name, draw

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # only draw_steps' own collections may free them
    try:
        for name, paths in draw_steps([step("a"), step("b")]):
            assert paths == [name]
            assert alive[-1]() is None, f"figure of step {name} still alive after the step"
    finally:
        if was_enabled:
            gc.enable()
    assert len(alive) == 2
    assert not gc.get_freeze_count(), "draw_steps left objects frozen"
