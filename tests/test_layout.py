"""The arithmetic layout of the run's figures (minicnn.see.layout): panels keep their sizes, every label
gets room inside the figure, and nothing overlaps."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text

from minicnn.see import kernels, layout, plots, saliency
from minicnn.see.layout import MAX_PANELS, MIN_WIDTH, Panel, Sheet, fit

sys.path.insert(0, str(Path(__file__).parent))
from test_figure_sizes import run_like  # noqa: E402


def inches(fig, ax) -> np.ndarray:
    """An Axes' box (x0, y0, width, height) in inches."""
    width, height = fig.get_size_inches()
    box = ax.get_position()
    return np.array([box.x0 * width, box.y0 * height, box.width * width, box.height * height])


def test_a_sheet_keeps_each_panels_size_and_lines_up_its_columns_and_rows():
    sheet = Sheet([[Panel(2.0, 1.0, "a"), Panel(1.0, 1.5, "b")], [Panel(1.5, 0.5, "c"), None]])
    a, b = sheet.axes[0]
    c = sheet.axes[1, 0]
    c.set_ylabel("a long label\non two lines")
    a.set_title("a title")
    fig = sheet.finish("The figure's title", 12)
    boxes = {ax.get_label(): inches(fig, ax) for ax in (a, b, c)}
    np.testing.assert_allclose(boxes["a"][2:], [2.0, 1.0])
    np.testing.assert_allclose(boxes["b"][2:], [1.0, 1.5])
    np.testing.assert_allclose(boxes["c"][2:], [1.5, 0.5])
    assert boxes["a"][0] == pytest.approx(boxes["c"][0])  # one column: one left edge
    top = boxes["a"][1] + boxes["a"][3]
    assert top == pytest.approx(boxes["b"][1] + boxes["b"][3])  # one row: one top edge
    assert boxes["c"][1] + boxes["c"][3] < boxes["b"][1]  # the second row under the first's tallest
    assert [ax.get_label() for ax in fig.axes] == ["a", "b", "c"]
    assert fig._suptitle.get_text() == "The figure's title"
    assert_laid_out(fig)


def test_a_figure_is_as_wide_as_its_title_and_at_least_the_least_width():
    fig = Sheet([[Panel(0.5, 0.5)]]).finish()
    assert fig.get_figwidth() == pytest.approx(MIN_WIDTH)
    fig = Sheet([[Panel(0.5, 0.5)]]).finish("a title much wider than the one small panel under it, " * 2)
    assert fig.get_figwidth() > MIN_WIDTH
    assert_laid_out(fig)


def test_colour_bars_sit_beside_their_panel_with_their_labels_inside_the_figure():
    sheet = Sheet([[Panel(2.0, 2.0, "maps")], [Panel(2.0, 1.0, "other")]])
    image = sheet.axes[0, 0].imshow(np.arange(16.0).reshape(4, 4) * 1000)
    bar = sheet.colorbar(image, sheet.axes[0, 0], shrink=0.5, label="a colour bar's label")
    fig = sheet.finish()
    panel, bar_box = inches(fig, sheet.axes[0, 0]), inches(fig, bar.ax)
    assert bar_box[0] == pytest.approx(panel[0] + panel[2] + layout.BAR_PAD)
    assert bar_box[3] == pytest.approx(0.5 * panel[3])
    assert bar_box[1] + bar_box[3] / 2 == pytest.approx(panel[1] + panel[3] / 2)  # centred on its panel
    assert bar.ax.get_label() == "<colorbar>"
    assert_laid_out(fig)


def test_text_past_a_panels_edge_gets_room():
    sheet = Sheet([[Panel(2.0, 1.0)]])
    ax = sheet.axes[0, 0]
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.text(0.5, -0.05, "under the panel\nand a second line", ha="center", va="top")
    fig = sheet.finish()
    assert_laid_out(fig)


def test_fit_shrinks_the_pixels_of_large_images_to_the_screen():
    assert fit(0.1, 20, 30) == 0.1
    assert fit(0.1, 1000, 30) == pytest.approx(MAX_PANELS[0] / 1000)
    assert fit(0.1, 20, 500) == pytest.approx(MAX_PANELS[1] / 500)


@pytest.mark.parametrize("out_channels, shape", [(4, (1, 8, 8)), (64, (1, 28, 28)), (32, (3, 32, 32))])
def test_every_figure_of_a_run_is_laid_out_without_overlaps(out_channels, shape, tmp_path):
    run = run_like(out_channels, shape)
    model, X, y = run["model"], run["X"], run["y"]
    learned, initial = model.layers[0].weight.data, run["init"].layers[0].weight.data
    y_pred = (y + (np.arange(len(y)) % 3 == 0)) % 10
    figures = [
        kernels.plot_filters_change(initial, learned),
        plots.plot_filters(initial[:, :1]),
        kernels.plot_filters_evolution(run["history"]),
        plots.plot_feature_maps(model, X[0]),
        saliency.plot_class_mean_maps(model, X, y, 1),
        saliency.plot_saliency(model, X, y, blank=np.zeros(shape[0])),
        plots.plot_mistakes(X, y, y_pred, probabilities=np.full((len(y), 10), 0.1)),
        plots.plot_confusion_matrix(y, y_pred),
        plots.plot_history(
            [{"epoch": e, "train_loss": 2.0 / e, "val_accuracy": 1 - 0.5 / e} for e in (1, 2, 3)]
        ),
    ]
    if shape[0] == 1:
        figures.append(kernels.plot_top_patches(model, X, 0))
    for fig in figures:
        assert_laid_out(fig)


def assert_laid_out(fig) -> None:
    """Every visible text of ``fig`` lies inside it, no two Axes overlap, and no Axes' labels, ticks or
    title (nor the figure's title) reach into another Axes."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    figure_box = fig.bbox
    tick_labels = {
        t for ax in fig.axes for axis in (ax.xaxis, ax.yaxis) for t in _tick_texts(axis, drawn=False)
    }
    drawn_ticks = [
        t for ax in fig.axes for axis in (ax.xaxis, ax.yaxis) for t in _tick_texts(axis, drawn=True)
    ]
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text() and t not in tick_labels]
    texts += drawn_ticks
    for text in texts:
        box = text.get_window_extent(renderer)
        inside = (
            box.x0 >= figure_box.x0 - 1
            and box.x1 <= figure_box.x1 + 1
            and box.y0 >= figure_box.y0 - 1
            and box.y1 <= figure_box.y1 + 1
        )
        assert inside, f"{text.get_text()!r} at {box.extents} is outside the figure {figure_box.extents}"
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for first, second in itertools.combinations(axes, 2):
        overlap = first.get_window_extent().intersection(
            first.get_window_extent(), second.get_window_extent()
        )
        assert overlap is None or overlap.width * overlap.height < 1, (first.get_label(), second.get_label())
    headings = [fig._suptitle] if fig._suptitle is not None else []
    for ax in axes:
        own = _decorations(ax) + headings
        for other in axes:
            if other is ax:
                continue
            for text in own:
                box = text.get_window_extent(renderer)
                overlap = box.intersection(box, other.get_window_extent())
                assert overlap is None or overlap.width * overlap.height < 2, (
                    f"{text.get_text()!r} of {ax.get_label()!r} overlaps {other.get_label()!r}"
                )


def _tick_texts(axis, drawn: bool) -> list[Text]:
    """An axis's tick labels: all it holds, or (``drawn``) those of the ticks inside its view, which
    are the ones drawn (Matplotlib keeps the others for reuse)."""
    ticks = axis.get_major_ticks()
    if drawn:
        low, high = sorted(axis.get_view_interval())
        slack = 1e-9 * max(abs(low), abs(high), 1.0)
        ticks = ticks[: len(axis.get_majorticklocs())]
        ticks = [t for t in ticks if low - slack <= t.get_loc() <= high + slack]
    labels = [text for tick in ticks for text in (tick.label1, tick.label2)]
    return [t for t in labels if t.get_visible() and t.get_text()] if drawn else labels


def _decorations(ax) -> list[Text]:
    """The texts an Axes draws outside its box: tick labels, axis labels and titles."""
    labels = [*_tick_texts(ax.xaxis, True), *_tick_texts(ax.yaxis, True), ax.xaxis.label, ax.yaxis.label]
    titles = [t for t in ax.get_children() if isinstance(t, Text) and t not in ax.texts]
    return [t for t in labels + titles if t.get_visible() and t.get_text()]
