"""Figures laid out by arithmetic: a grid of panels of known size, with measured room for their labels.

A run's figures are tiled images and small plots whose sizes we choose (so many inches per pixel of a
mosaic), labelled with text we wrote. Matplotlib's constrained layout finds room for labels by
measuring every artist of every Axes, twice, in an extra draw before each save: about 40% of the time
a run's figures took to draw. :class:`Sheet` measures only what sits outside the panels (tick labels,
axis labels, titles, colour bars' ticks and the texts that reach past a panel's edge), then places
every Axes once. The panels keep the sizes asked for; the figure grows around them.

    sheet = Sheet([[Panel(3.0, 2.0, "kernels")]])
    ax = sheet.axes[0, 0]
    ...draw into ax..., sheet.colorbar(image, ax, label="weight")
    fig = sheet.finish("Title", 11)
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

#: Points per inch: Matplotlib's font sizes and paddings are in points.
POINTS = 72.0
#: Inches of space at the figure's edges and between neighbouring cells of the grid.
PAD = 0.08
#: A colour bar's width and its gap to its panel, in inches.
BAR_WIDTH, BAR_PAD = 0.13, 0.1
#: The most inches the panels of a figure take across and down: with their labels, a laptop's screen.
MAX_PANELS = (11.0, 10.5)
#: The least width of a figure, in inches: one small kernel still gets a readable figure.
MIN_WIDTH = 3.0


@dataclasses.dataclass(frozen=True)
class Panel:
    """One Axes of a :class:`Sheet`: its box in inches (the data area: ticks and labels go around it),
    and the Axes' label (``ax.get_label()``)."""

    width: float
    height: float
    label: str = ""


def fit(inches_per_pixel: float, width: float, height: float) -> float:
    """``inches_per_pixel``, or less, so that images ``width`` x ``height`` pixels in all fit
    :data:`MAX_PANELS`."""
    return min(inches_per_pixel, MAX_PANELS[0] / width, MAX_PANELS[1] / height)


def image_panel(shape, inches_per_pixel: float, label: str = "", extra_rows: float = 0.0) -> Panel:
    """A panel showing an image of ``shape`` (rows, columns, ...) at ``inches_per_pixel``, square pixels;
    ``extra_rows``: rows of the data area beyond the image (room a panel's limits add for its titles)."""
    return Panel(shape[1] * inches_per_pixel, (shape[0] + extra_rows) * inches_per_pixel, label)


class Sheet:
    """A figure of :class:`Panel` s in a grid (rows of cells, ``None`` for an empty cell), laid out once
    when :meth:`finish` is called, with no layout engine.

    Columns take the widest panel and the most room any of its panels needs on each side; rows the
    same. Panels sit at the top left of their cell, colour bars right beside their panel, the title
    centred on top, the content centred under it when the title is wider.
    """

    def __init__(self, cells: list[list[Panel | None]]):
        width = max(len(row) for row in cells)
        self.cells = np.empty((len(cells), width), dtype=object)  # Panel or None
        for r, row in enumerate(cells):
            self.cells[r, : len(row)] = row
        self.fig = Figure()
        FigureCanvasAgg(self.fig)
        self.axes = np.empty(self.cells.shape, dtype=object)
        for (r, c), panel in np.ndenumerate(self.cells):
            if panel is not None:
                self.axes[r, c] = self.fig.add_axes((0, 0, 1, 1), label=panel.label)
        # each column's width and each row's height: its largest panel's
        self._widths = _largest(self.cells, "width", axis=0)
        self._heights = _largest(self.cells, "height", axis=1)
        self._bars: dict[tuple[int, int], tuple] = {}  # cell -> (colour bar's Axes, shrink)
        self._footer = None

    def colorbar(self, mappable, ax, shrink: float = 0.9, **kwargs):
        """A colour bar right of the panel ``ax``, ``shrink`` times its height, centred on it;
        ``kwargs`` go to ``Figure.colorbar`` (``label=...``). Returns the Colorbar."""
        r, c = (int(i) for i in np.argwhere(self.axes == ax)[0])
        bar = self.fig.colorbar(mappable, cax=self.fig.add_axes((0, 0, 1, 1), label="<colorbar>"), **kwargs)
        self._bars[r, c] = (bar.ax, shrink)
        return bar

    def legend(self, handles, **kwargs):
        """A legend centred under the grid (``kwargs`` go to ``Figure.legend``)."""
        self._footer = self.fig.legend(handles=handles, loc="lower center", **kwargs)
        return self._footer

    def finish(self, title: str | None = None, fontsize: float = 10.0) -> Figure:
        """Title the figure, size it and place every Axes; returns the Figure.

        Panels are placed first at their final size, so tick locators see their final lengths, then
        the room their labels need is measured and everything placed again around them."""
        heading = self.fig.suptitle(title, fontsize=fontsize, va="top") if title else None
        renderer = RendererAgg(1, 1, self.fig.dpi)  # for measuring text only: a one-pixel canvas
        self._place(renderer, heading, measured=False)
        self._place(renderer, heading, measured=True)
        return self.fig

    # --- the arithmetic --------------------------------------------------------------------------------
    def _place(self, renderer, heading, measured: bool) -> None:
        """Size the figure and place every Axes; ``measured``: with the room each panel's labels need
        (else none)."""
        widths, heights = self._widths, self._heights
        rooms = np.zeros(self.cells.shape + (4,))  # per cell: left, right, top, bottom, inches
        if measured:
            for (r, c), panel in np.ndenumerate(self.cells):
                if panel is not None:
                    rooms[r, c] = self._room(renderer, r, c)
        left, right = rooms[..., 0].max(axis=0), rooms[..., 1].max(axis=0)
        top, bottom = rooms[..., 2].max(axis=1), rooms[..., 3].max(axis=1)
        content_width = float(np.sum(left + widths + right)) + PAD * (len(widths) - 1)
        title_width, title_height = _extent(heading, renderer) if heading is not None else (0.0, 0.0)
        head = title_height + PAD if heading is not None else 0.0  # inches above the first row
        foot = _extent(self._footer, renderer)[1] + PAD if measured and self._footer is not None else 0.0
        fig_width = max(content_width + 2 * PAD, title_width + 2 * PAD, MIN_WIDTH)
        fig_height = float(np.sum(top + heights + bottom)) + PAD * (len(heights) + 1) + head + foot
        self.fig.set_size_inches(fig_width, fig_height)
        x0 = (
            PAD
            + (fig_width - 2 * PAD - content_width) / 2
            + np.concatenate([[0.0], np.cumsum(left + widths + right + PAD)[:-1]])
        )
        y0 = PAD + head + np.concatenate([[0.0], np.cumsum(top + heights + bottom + PAD)[:-1]])
        for (r, c), panel in np.ndenumerate(self.cells):
            if panel is None:
                continue
            x, y = x0[c] + left[c], y0[r] + top[r]  # the panel's top left corner, from the figure's
            ax = typing.cast(Axes, self.axes[r, c])
            ax.set_position(self._fraction(x, y, panel.width, panel.height))
            if (r, c) in self._bars:
                bar, shrink = self._bars[r, c]
                margin = panel.height * (1 - shrink) / 2
                box = self._fraction(x + panel.width + BAR_PAD, y + margin, BAR_WIDTH, panel.height * shrink)
                bar.set_position(box)
        if heading is not None:
            heading.set_y(1 - PAD / fig_height)
        if self._footer is not None:
            self._footer.set_bbox_to_anchor((0.5, PAD / fig_height), transform=self.fig.transFigure)

    def _fraction(self, x: float, y: float, width: float, height: float) -> tuple[float, float, float, float]:
        """A box given in inches from the figure's top left, as Matplotlib's figure fractions."""
        fig_width, fig_height = self.fig.get_size_inches()
        return (x / fig_width, 1 - (y + height) / fig_height, width / fig_width, height / fig_height)

    def _room(self, renderer, r: int, c: int) -> np.ndarray:
        """Inches the panel at (r, c) needs on its left, right, top and bottom: its labels', its texts'
        past its edges, and its colour bar's."""
        ax = self.axes[r, c]
        room = _axes_room(ax, renderer)
        if (r, c) in self._bars:
            bar, _ = self._bars[r, c]
            bar_room = _axes_room(bar, renderer)
            room[1] = max(room[1], BAR_PAD + BAR_WIDTH + bar_room[1])
            room[2] = max(room[2], bar_room[2])
        return room


def _largest(cells: np.ndarray, name: str, axis: int) -> np.ndarray:
    """The largest ``name`` (width or height) of the panels in each column (axis 0) or row (axis 1)."""
    sizes = np.vectorize(lambda p: 0.0 if p is None else getattr(p, name), otypes=[float])(cells)
    return sizes.max(axis=axis)


def _extent(artist, renderer) -> tuple[float, float]:
    """Width and height in inches of a Text or a legend as ``renderer`` would draw it."""
    box = artist.get_window_extent(renderer)
    return box.width / renderer.dpi, box.height / renderer.dpi


def _axes_room(ax, renderer) -> np.ndarray:
    """Inches an Axes' decorations reach past its box on the left, right, top and bottom: tick labels
    (at the edges too), axis labels, titles (above ticks on top) and texts that lie past an edge."""
    box = ax.get_window_extent(renderer)
    room = {"left": 0.0, "right": 0.0, "top": 0.0, "bottom": 0.0}
    for axis in (ax.yaxis, ax.xaxis):
        _axis_room(axis, box, renderer, room)
    titles = [t for t in ax.get_children() if isinstance(t, Text) and t not in ax.texts and t.get_text()]
    if titles:
        room["top"] += max(_extent(t, renderer)[1] for t in titles) + rcParams["axes.titlepad"] / POINTS
    offset = ax.yaxis.get_offset_text()
    if offset.get_visible() and offset.get_text():  # "1e-3" above a colour bar
        room["top"] = max(room["top"], _extent(offset, renderer)[1] + PAD)
    for text in ax.texts:
        if text.get_visible() and text.get_in_layout():
            _reach(text.get_window_extent(renderer), box, renderer.dpi, room)
    return np.array([room["left"], room["right"], room["top"], room["bottom"]])


def _axis_room(axis, box, renderer, room: dict) -> None:
    """Widen ``room`` for one axis: its drawn tick labels wherever they reach past ``box`` (the Axes'
    box in pixels), then its label beyond them on its side."""
    axis.get_majorticklabels()  # places the tick labels and sets their text (locator, formatter)
    low, high = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(low), abs(high), 1.0)
    ticks = axis.get_major_ticks(len(axis.get_majorticklocs()))
    reach = dict.fromkeys(room, 0.0)
    for tick in ticks:
        if low - slack <= tick.get_loc() <= high + slack:  # Matplotlib draws only these
            for label in (tick.label1, tick.label2):
                if label.get_visible() and label.get_text():
                    _reach(label.get_window_extent(renderer), box, renderer.dpi, reach)
    for side in room:
        room[side] = max(room[side], reach[side])
    if axis.label.get_visible() and axis.label.get_text():
        width, height = _extent(axis.label, renderer)
        side = axis.get_label_position()
        size = width if side in ("left", "right") else height
        room[side] = max(room[side], reach[side] + size + axis.labelpad / POINTS)


def _reach(extent, box, dpi: float, room: dict) -> None:
    """Widen ``room`` (inches per side) to hold ``extent``, a box in pixels, around ``box``."""
    room["left"] = max(room["left"], (box.x0 - extent.x0) / dpi)
    room["right"] = max(room["right"], (extent.x1 - box.x1) / dpi)
    room["top"] = max(room["top"], (extent.y1 - box.y1) / dpi)
    room["bottom"] = max(room["bottom"], (box.y0 - extent.y0) / dpi)
