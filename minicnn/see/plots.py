"""Pictures of what a CNN computes: kernels, feature maps, training history, mistakes.

Every function returns a :class:`matplotlib.figure.Figure` and, given ``path``, also saves it as a
PNG. Figures are built with the object API (``Figure`` with an Agg canvas), never through
``pyplot``: this module works headless, leaves the user's chosen backend alone, and keeps no
global list of open figures.

Colour conventions, the same in every figure:

- kernels and feature maps: a diverging map (``RdBu_r``) with one symmetric scale centred on zero,
  so white means 0, red positive, blue negative, and equal colours mean equal values across tiles;
- digits and other input images: gray, ink dark on white.

The figures a training run draws are laid out by arithmetic (:class:`~.layout.Sheet`: each panel
its own size in inches, room measured for its labels, no layout engine); the others use Matplotlib's
constrained layout (:func:`new_figure`).

Only the seeing tools (and the scripts) import matplotlib; the numerical core never does.
"""

from __future__ import annotations

import gc
import os
import typing

import numpy as np
from matplotlib import rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.transforms import Bbox

from ..io import save_figure_atomic
from ..nn.layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, Layer, no_grad
from .layout import Panel, Sheet, fit, image_panel

KERNEL_CMAP = "RdBu_r"
IMAGE_CMAP = "gray_r"
DPI = 100
#: Font size of the small labels beside and under tiles: readable at the saved size (100 dpi).
LABEL_SIZE = 9

FIGURE_NAMES = (
    "filters_init.png",
    "filters_learned.png",
    "feature_maps.png",
    "history.png",
    "confusion.png",
    "mistakes.png",
)


# --- helpers ------------------------------------------------------------------------------------------
def new_figure(width: float, height: float) -> Figure:
    """A Figure with its own Agg canvas and constrained layout (no pyplot, no global state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


#: zlib level of the PNGs written (Pillow's default is 6): level 3 encodes a run's figures about 10%
#: faster for files about a fifth larger (measured on the digits run's figures).
PNG_COMPRESS_LEVEL = 3


def save(fig: Figure, path=None, dpi: int = DPI) -> Figure:
    """Save ``fig`` to ``path`` (a PNG) when a path is given, atomically and never through a link
    (:func:`minicnn.io.save_figure_atomic`); return the figure."""
    if path is not None:
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        options = {"pil_kwargs": {"compress_level": PNG_COMPRESS_LEVEL}} if _is_png(path) else {}
        save_figure_atomic(fig, path, dpi=dpi, **options)
    return fig


def _is_png(path) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in ("", ".png")


def symmetric_limit(*arrays) -> float:
    """The largest absolute value over ``arrays``: the ``m`` of a colour scale ``[-m, m]`` (1 if all zero)."""
    m = max((float(np.max(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    return m if m > 0 else 1.0


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def kernel_array(layer_or_weight) -> np.ndarray:
    """(out, in, kh, kw) kernels from a Conv2D, a Parameter or an array ((kh, kw) and (out, kh, kw) too)."""
    if isinstance(layer_or_weight, Conv2D):
        weight = layer_or_weight.weight.data
    else:
        weight = getattr(layer_or_weight, "data", layer_or_weight)
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim == 2:
        weight = weight[None, None]
    elif weight.ndim == 3:
        weight = weight[:, None]
    if weight.ndim != 4:
        raise ValueError(f"expected a Conv2D or kernels (out, in, kh, kw), got shape {weight.shape}")
    return weight


def as_image(image) -> np.ndarray:
    """One image as (H, W) for gray or (H, W, 3) for colour; from (H, W), (1, H, W), (3, H, W), (H, W, 3)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] == 1:
        return image[0]
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[2] != 3:
        return image.transpose(1, 2, 0)
    return image


def rgb_for_display(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) colour image in [0, 1] for imshow: kept as is when it is already in [0, 1], else
    (a standardized image) stretched from its own minimum to its maximum, all channels together."""
    low, high = float(image.min()), float(image.max())
    if low >= 0.0 and high <= 1.0:
        return image
    return (image - low) / (high - low) if high > low else np.full_like(image, 0.5)


def show_image(ax, image, title: str | None = None, **kwargs) -> None:
    """Draw a digit or photo: gray (ink dark) for one channel, in colour for RGB."""
    image = as_image(image)
    if image.ndim == 2:
        ax.imshow(image, cmap=IMAGE_CMAP, **kwargs)
    else:
        ax.imshow(rgb_for_display(image), **kwargs)
    if title:
        ax.set_title(title, fontsize=9)
    _bare(ax)


class PixelImage(AxesImage):
    """An image drawn with nearest-neighbour sampling at little memory: what ``imshow(...,
    interpolation="nearest")`` draws, pixel for pixel, without its resampling arrays.

    To draw an image of data (M, N) onto (H, W) screen pixels, Matplotlib resamples in floating point
    at the screen's size: for one of our mosaics filling a 1000 x 1000 figure, about 30 MiB at once
    (the scaled data, its mask and alpha, the normalized values, the colormap's indices), twice per
    save under a layout engine. Nearest-neighbour sampling needs none of it: this colours the data
    at its own size (``M x N`` RGBA bytes, cached until the data or the colours change) and picks each
    screen pixel's row and column with two index arrays, so the only screen-sized array is the uint8
    RGBA result. Anything else (another interpolation, a per-pixel alpha, a rotated or skewed
    transform) goes through Matplotlib's own path. ``tests/test_figures_memory.py`` checks that both
    paths give the same pixels.
    """

    def _make_image(
        self, A, in_bbox, out_bbox, clip_bbox, magnification=1.0, unsampled=False, round_to_pixel_border=True
    ):
        if (
            unsampled
            or not round_to_pixel_border
            or self.get_interpolation() != "nearest"
            or self.get_alpha() is not None
        ):
            return super()._make_image(
                A, in_bbox, out_bbox, clip_bbox, magnification, unsampled, round_to_pixel_border
            )
        clipped = Bbox.intersection(out_bbox, clip_bbox)
        if clipped is None:
            return None, 0, 0, None
        # the screen rectangle Matplotlib's own path fills: the clipped box rounded to whole pixels
        e = clipped.extents * magnification
        x0, y0 = np.floor(e[0] + 0.5), np.ceil(e[1] - 0.5 - 1e-8)
        x1, y1 = np.floor(e[2] + 0.5 + 1e-8), np.ceil(e[3] - 0.5)
        if x1 <= x0 or y1 <= y0:
            return None, 0, 0, None
        # the coloured data (the visible part of it) and the transform from its (column, row) to
        # screen pixels counted from the unrounded corner (e[0], e[1])
        colours, _, _, t = super()._make_image(A, in_bbox, out_bbox, clip_bbox, magnification, True)
        m = t.get_matrix()
        if colours is None or not colours.size or m[0, 1] or m[1, 0]:
            return super()._make_image(
                A, in_bbox, out_bbox, clip_bbox, magnification, unsampled, round_to_pixel_border
            )
        # each screen pixel's centre, back in the data: which column and row it shows
        u = (np.arange(int(x1 - x0)) + 0.5 + x0 - e[0] - m[0, 2]) / m[0, 0]
        v = (np.arange(int(y1 - y0)) + 0.5 + y0 - e[1] - m[1, 2]) / m[1, 1]
        columns = np.clip(np.floor(u).astype(np.intp), 0, colours.shape[1] - 1)
        rows = np.clip(np.floor(v).astype(np.intp), 0, colours.shape[0] - 1)
        return colours[rows[:, None], columns], x0 / magnification, y0 / magnification, t


def show_pixels(ax, data, cmap=None, vmin=None, vmax=None) -> PixelImage:
    """``ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")``, drawn as a
    :class:`PixelImage`: the same pixels at a fraction of the memory. ``data``: (M, N) values
    (NaN drawn as the colormap's "bad" colour) or (M, N, 3 or 4) colours."""
    # the defaults imshow takes from rcParams (the constructor's own differ: resample=False)
    image = PixelImage(
        ax, cmap=cmap, interpolation="nearest", origin="upper", resample=rcParams["image.resample"]
    )
    image.set_data(data)
    image.set_clim(vmin, vmax)
    image.autoscale_None()  # a limit not given comes from the data, as in imshow
    image.set_clip_path(ax.patch)
    image.set_extent(image.get_extent())  # fits the Axes to the image, as imshow does
    ax.set_aspect("equal")
    ax.add_image(image)
    return image


def _gaps(gap) -> tuple[int, int]:
    """A :func:`mosaic`'s gap as (between rows, between columns)."""
    return (gap, gap) if isinstance(gap, int) else (gap[0], gap[1])


def mosaic(tiles: np.ndarray, gap=1) -> np.ndarray:
    """Tiles (rows, cols, h, w) or (rows, cols, h, w, 3) as one float image, ``gap`` pixels (a pair:
    between rows, between columns) of NaN (colour: of 1, white) between neighbouring tiles: tile
    (r, c) starts at ``(r*(h+gap_rows), c*(w+gap_cols))``."""
    gap_rows, gap_cols = _gaps(gap)
    tiles = np.asarray(tiles, dtype=np.float64)
    rows, cols, h, w = tiles.shape[:4]
    fill = np.nan if tiles.ndim == 4 else 1.0
    padded = np.full((rows, h + gap_rows, cols, w + gap_cols, *tiles.shape[4:]), fill)
    padded[:, :h, :, :w] = tiles.transpose(0, 2, 1, 3, *range(4, tiles.ndim))
    out = padded.reshape(rows * (h + gap_rows), cols * (w + gap_cols), *tiles.shape[4:])
    return out[: out.shape[0] - gap_rows, : out.shape[1] - gap_cols]


#: Most tiles side by side in a wrapped grid (:func:`wrap`): a figure of many kernels stays on a screen.
MAX_COLUMNS = 8


def wrap(tiles: np.ndarray, columns: int = MAX_COLUMNS) -> np.ndarray:
    """Tiles (n, h, w) or (n, h, w, 3) as a grid (rows, cols, h, w[, 3]) of at most ``columns``
    columns, row by row; the spare places of the last row are NaN (colour: 1, white)."""
    tiles = np.asarray(tiles, dtype=np.float64)
    n = len(tiles)
    cols = max(1, min(n, columns))
    rows = -(-n // cols)
    grid = np.full((rows * cols, *tiles.shape[1:]), np.nan if tiles.ndim == 3 else 1.0)
    grid[:n] = tiles
    return grid.reshape(rows, cols, *tiles.shape[1:])


def rgb_bytes(values: np.ndarray, cmap: str, vmax: float) -> np.ndarray:
    """Values (any shape) as uint8 RGB colours (shape + (3,)) of ``cmap`` on the scale [-vmax, vmax],
    as ``imshow`` would colour them; for drawing with Pillow."""
    from matplotlib import colormaps

    return colormaps[cmap]((np.asarray(values) + vmax) / (2 * vmax), bytes=True)[..., :3]


def tile_centres(shape, gap=1) -> tuple[list[float], list[float]]:
    """Where the tiles of a :func:`mosaic` of ``shape`` (rows, cols, h, w, ...) and ``gap`` are centred,
    in data coordinates: each row's y, each column's x."""
    gap_rows, gap_cols = _gaps(gap)
    rows, cols, h, w = shape[:4]
    return (
        [r * (h + gap_rows) + (h - 1) / 2 for r in range(rows)],
        [c * (w + gap_cols) + (w - 1) / 2 for c in range(cols)],
    )


def label_tiles(ax, shape, gap, labels, above: bool = False, **text) -> None:
    """Write ``labels[k]`` under (or ``above``) tile k of a :func:`mosaic` of ``shape`` and ``gap`` in
    ``ax``, row by row, centred, in the gap between rows; ``text`` goes to ``ax.text``."""
    ys, xs = tile_centres(shape, gap)
    half = shape[2] / 2
    options = {"ha": "center", "va": "bottom" if above else "top", "fontsize": LABEL_SIZE - 1, **text}
    for k, label in enumerate(labels):
        r, c = divmod(k, shape[1])
        ax.text(xs[c], ys[r] - half - 0.3 if above else ys[r] + half, label, **options)


def tiled_sheet(images: dict, height: float) -> Sheet:
    """A :class:`~.layout.Sheet` of one Axes per :func:`mosaic` image, side by side, each labelled with
    its key and ``height`` inches tall, its width in proportion: their rows line up when the mosaics
    have the same rows of tiles in proportion."""
    return Sheet(
        [[Panel(height * image.shape[1] / image.shape[0], height, name) for name, image in images.items()]]
    )


def stretched(image: np.ndarray) -> np.ndarray:
    """A gray image stretched to [0, 1] (imshow's own scaling of one image); colour as displayed."""
    if image.ndim == 3:
        return rgb_for_display(image)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def frame_tiles(ax, shape, row_labels, column_labels, gap=1, count: int | None = None) -> tuple[list, list]:
    """A thin frame around each tile of a :func:`mosaic` of ``shape`` (and ``gap``), row labels on the
    left and column labels on top (or none), and no other ticks or spines; only the first ``count``
    tiles are framed when given (a wrapped grid's spare places stay blank). Returns each row's
    (top, bottom) and each column's (left, right) edges in data coordinates."""
    gap_rows, gap_cols = _gaps(gap)
    rows, cols, h, w = shape[:4]
    tops = [r * (h + gap_rows) - 0.5 for r in range(rows)]
    lefts = [c * (w + gap_cols) - 0.5 for c in range(cols)]
    frames = [Rectangle((left, top), w, h) for top in tops for left in lefts][:count]
    ax.add_collection(
        PatchCollection(frames, facecolor="none", edgecolor="black", linewidth=0.6, clip_on=False)
    )
    ax.set_yticks([top + h / 2 for top in tops] if row_labels else [], row_labels or [], fontsize=LABEL_SIZE)
    ax.set_xticks(
        [left + w / 2 for left in lefts] if column_labels else [], column_labels or [], fontsize=LABEL_SIZE
    )
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return [(top, top + h) for top in tops], [(left, left + w) for left in lefts]


def _kernel_grid(fig, weight: np.ndarray, vmax: float, row_label: str = "filter", annotate: bool = False):
    """Tiles for kernels (out, in, kh, kw): one row per input channel when there are several."""
    n_out, n_in = weight.shape[:2]
    if n_in == 1:
        cols = min(n_out, 8)
        rows = -(-n_out // cols)
        axes = fig.subplots(rows, cols, squeeze=False)
        tiles: list[tuple[typing.Any, np.ndarray, str | None]] = [
            (axes.flat[k], weight[k, 0], f"{row_label} {k}") for k in range(n_out)
        ]
        for ax in axes.flat[n_out:]:
            ax.remove()
    else:
        axes = fig.subplots(n_out, n_in, squeeze=False)
        tiles = [(axes[o, i], weight[o, i], None) for o in range(n_out) for i in range(n_in)]
        for o in range(n_out):
            axes[o, 0].set_ylabel(f"out {o}", fontsize=8)
        for i in range(n_in):
            axes[0, i].set_title(f"in {i}", fontsize=8)
    image = None
    for ax, values, title in tiles:
        image = ax.imshow(values, cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
        _bare(ax)
        if title:
            ax.set_title(title, fontsize=9)
        if annotate:
            for (r, c), v in np.ndenumerate(values):
                ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=7)
    return image, [t[0] for t in tiles]


#: Inches a kernel's tile takes in the figures of kernels (a 3x3 and a 7x7 kernel alike).
KERNEL_INCHES = 0.8


def _kernel_mosaic(kernels: np.ndarray, vmax: float) -> tuple[Sheet, PixelImage]:
    """Kernels (out, kh, kw) as one tiled image in rows of :data:`MAX_COLUMNS` (:func:`wrap`) in an Axes
    labelled ``"kernels"``, each framed and titled ``filter k``: one Axes instead of one per kernel."""
    grid = wrap(kernels)
    gap = (max(1, round(0.4 * grid.shape[2])), 1)  # room above each row for its titles
    image = mosaic(grid, gap)
    pixel = fit(KERNEL_INCHES / grid.shape[3], image.shape[1], image.shape[0] + gap[0])
    sheet = Sheet([[image_panel(image.shape, pixel, "kernels", extra_rows=gap[0])]])
    ax = sheet.axes[0, 0]
    drawn = show_pixels(ax, image, cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
    frame_tiles(ax, grid.shape, None, None, gap, count=len(kernels))
    ax.set_ylim(image.shape[0] - 0.5, -0.5 - gap[0])
    labels = [f"filter {k}" for k in range(len(kernels))]
    label_tiles(ax, grid.shape, gap, labels, above=True, fontsize=LABEL_SIZE)
    return sheet, drawn


# --- kernels ----------------------------------------------------------------------------------------
def plot_filters(
    layer_or_weight,
    in_channel: int | None = None,
    title: str | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    path=None,
) -> Figure:
    """A grid of a convolution's kernels on one symmetric colour scale centred on zero.

    Parameters
    ----------
    layer_or_weight : Conv2D, or ndarray of shape (out, in, kh, kw)
    in_channel : int, optional
        Show only the kernels' slice on this input channel (one tile per filter). By default a
        layer with one input channel gets one tile per filter, and a deeper layer a grid of
        out_channels rows by in_channels columns.
    title : str, optional
    vmax : float, optional
        The colour scale is ``[-vmax, vmax]``; default the largest absolute weight. Pass the same
        value to two calls to make their figures comparable (before/after training).
    annotate : bool
        Write each weight's value in its cell (readable for a few small kernels).
    path : str or PathLike, optional

    Returns
    -------
    Figure: one kernel per input channel (or one slice): one Axes labelled ``"kernels"`` holding them
    as one tiled image (:func:`_kernel_mosaic`), plus the colorbar, laid out by
    :class:`~.layout.Sheet`; otherwise (several input channels, or ``annotate``) one Axes per tile plus
    the colorbar.
    """
    weight = kernel_array(layer_or_weight)
    if in_channel is None and weight.shape[1] == 3:  # a first layer on colour images
        return plot_rgb_filters(weight, title=title, vmax=vmax, path=path)
    if in_channel is not None:
        if not 0 <= in_channel < weight.shape[1]:
            raise ValueError(f"plot_filters: in_channel must be in [0, {weight.shape[1]}), got {in_channel}")
        weight = weight[:, in_channel : in_channel + 1]
    vmax = symmetric_limit(weight) if vmax is None else float(vmax)
    n_out, n_in = weight.shape[:2]
    kh, kw = weight.shape[2:]
    if n_in == 1:
        slice_note = f", input channel {in_channel}" if in_channel is not None else ""
        default_title = f"{n_out} kernels, {kh}x{kw}{slice_note}"
    else:
        default_title = f"{n_out} filters x {n_in} input channels, {kh}x{kw} kernels"
    if n_in == 1 and not annotate:
        sheet, image = _kernel_mosaic(weight[:, 0], vmax)
        sheet.colorbar(image, sheet.axes[0, 0], label="weight")
        return save(sheet.finish(title or default_title, 11), path)
    if n_in == 1:
        fig = new_figure(max(1.25 * min(n_out, 8) + 1.0, 4.6), 1.35 * -(-n_out // 8) + 0.5)
    else:
        fig = new_figure(0.75 * n_in + 1.2, 0.75 * n_out + 0.6)
    image, tile_axes = _kernel_grid(fig, weight, vmax, annotate=annotate)
    fig.colorbar(image, ax=tile_axes, shrink=0.9, aspect=25 if n_in == 1 else 40, label="weight")
    fig.suptitle(title or default_title, fontsize=11)
    return save(fig, path)


def rgb_kernels(weight: np.ndarray, vmax: float) -> np.ndarray:
    """Kernels on three input channels (out, 3, kh, kw) as colour patches (out, kh, kw, 3) in [0, 1].

    Each weight w becomes ``0.5 + w / (2 vmax)`` in its own colour channel: a zero kernel is mid grey,
    a kernel that responds to red (positive weights on the red input) is red, one that responds
    against green is magenta, and equal colours mean equal weights across patches.
    """
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"rgb_kernels: expected kernels (out, 3, kh, kw), got shape {weight.shape}")
    return np.clip(0.5 + weight.transpose(0, 2, 3, 1) / (2.0 * vmax), 0.0, 1.0)


def plot_rgb_filters(
    layer_or_weight, title: str | None = None, vmax: float | None = None, path=None
) -> Figure:
    """A first layer's colour kernels (out, 3, kh, kw), one RGB patch per filter (:func:`rgb_kernels`).

    ``vmax`` sets the shared scale (default: the largest absolute weight), as in :func:`plot_filters`.
    Returns a Figure with one Axes per filter.
    """
    weight = kernel_array(layer_or_weight)
    vmax = symmetric_limit(weight) if vmax is None else float(vmax)
    patches = rgb_kernels(weight, vmax)
    n_out = len(patches)
    cols = min(n_out, 8)
    fig = new_figure(max(1.25 * cols, 4.6), 1.35 * -(-n_out // cols) + 0.6)
    axes = fig.subplots(-(-n_out // cols), cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n_out:
            ax.remove()
            continue
        show_pixels(ax, patches[k])
        ax.set_title(f"filter {k}", fontsize=9)
        _bare(ax)
    kh, kw = weight.shape[2:]
    fig.suptitle(title or f"{n_out} colour kernels, {kh}x{kw} (grey = 0; scale +-{vmax:.2g})", fontsize=11)
    return save(fig, path)


def plot_filters_before_after(
    init, learned, in_channel: int | None = None, columns: int = 8, path=None
) -> Figure:
    """The kernels at initialization above the learned ones, on ONE colour scale.

    init, learned : Conv2D or ndarray of shape (out, in, kh, kw); one input channel, or pick one
        with ``in_channel`` (default 0 for deeper layers).
    columns : int
        Filters per row; more filters wrap into further (initial, learned) pairs of rows.

    Returns a Figure with 2 * out tiles + 1 colorbar.
    """
    before, after = kernel_array(init), kernel_array(learned)
    if before.shape != after.shape:
        raise ValueError(f"plot_filters_before_after: shapes differ, {before.shape} vs {after.shape}")
    channel = in_channel if in_channel is not None else 0
    before, after = before[:, channel], after[:, channel]
    vmax = symmetric_limit(before, after)
    n_out = before.shape[0]
    cols = min(n_out, columns)
    blocks = -(-n_out // cols)
    fig = new_figure(1.15 * cols + 1.4, 2.5 * blocks + 0.5)
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    images, drawn = [], []
    for k in range(blocks * cols):
        block, col = divmod(k, cols)
        for row, (label, kernels) in enumerate((("initial", before), ("learned", after))):
            ax = axes[2 * block + row, col]
            if k >= n_out:
                ax.remove()
                continue
            images.append(ax.imshow(kernels[k], cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax))
            drawn.append(ax)
            _bare(ax)
            if row == 0:
                ax.set_title(f"filter {k}", fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.colorbar(images[-1], ax=drawn, shrink=0.9, aspect=30, label="weight")
    fig.suptitle(
        "First-layer kernels: at random initialization and learned, on one colour scale", fontsize=11
    )
    return save(fig, path)


# --- feature maps ------------------------------------------------------------------------------------
def as_batch(model, x) -> np.ndarray:
    """x as a batch (N, C, H, W): accepts (H, W) and (C, H, W) for one image."""
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), (C, H, W) or (H, W), got shape {x.shape}")
    dtype = next((p.dtype for p in model.parameters()), np.float32)
    return x.astype(dtype, copy=False)


def _check_layer(model, layer: object) -> str:
    """The name of a layer inside ``model``: an index into ``model.layers`` (negative ones count from
    the end) or a dotted name (``"3.body.0"``) of a layer nested in a block."""
    n = len(model.layers)
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and -n <= layer < n:
        return str(int(layer) % n)
    names = [name for name, _ in model.named_layers() if name]
    if isinstance(layer, str) and layer in names:
        return layer
    raise ValueError(
        f"layer must be an index into model.layers in [0, {n}) or the name of a layer in the model "
        f"(such as {names[-1]!r}), got {layer!r}"
    )


def feature_maps(model, x, layer) -> np.ndarray:
    """The activations after the layer ``layer`` (inclusive), computed in eval mode.

    x : ndarray of shape (N, C, H, W), or one image (C, H, W) or (H, W)
    layer : int (an index into ``model.layers``) or str (a dotted name, ``"3.body.0"``)
    Returns ndarray of shape (N, C_out, H_out, W_out) (or (N, features) after Flatten/Dense).
    The layers run in the order listed; the model's mode is restored afterwards.
    """
    name = _check_layer(model, layer)
    out = as_batch(model, x)
    with model.evaluating(), no_grad():
        return model.output_of(name, out)


def receptive_field_grid(model, layer) -> tuple[float, float]:
    """Where feature-map pixels sit in input coordinates after the layer ``layer`` (an index or a
    dotted name).

    Returns ``(start, jump)``: output pixel i is centred on input pixel ``start + i * jump``
    (the same along both axes for square settings; the first axis is used). Each layer with a
    sliding window (``Layer.window()``: Conv2D, pooling) of kernel k, stride s, dilation d and
    padding p (before) maps ``start += (d (k - 1) / 2 - p) * jump`` and ``jump *= s``; a block's
    layers are followed to the one named.
    """
    return model.grid_of(_check_layer(model, layer))


def conv_layers(model) -> list[str]:
    """Names of the model's convolutions, depth first (``"0"``, ``"3.body.0"``): the layers whose
    ``is_convolution`` is set."""
    return [name for name, _ in model.convolutions()]


def layers_after(model, name: str) -> list[tuple[str, Layer]]:
    """``[(name, layer)]`` of the layers after the one called ``name`` in the Sequential that holds it
    (none when a block of another kind holds it)."""
    parent_name, _, own = name.rpartition(".")
    parent = model.get_layer(parent_name) if parent_name else model
    if not hasattr(parent, "layers") or not own.isdigit():
        return []
    prefix = f"{parent_name}." if parent_name else ""
    return [(f"{prefix}{i}", parent.layers[i]) for i in range(int(own) + 1, len(parent.layers))]


def _is_pooling(layer) -> bool:
    return layer.window() is not None and not layer.is_convolution


def default_stages(model, conv: int | str | None = None) -> list[str]:
    """The names of the layers from a convolution (the first by default) through its activation and
    pooling, stopping before the next convolution, Flatten, Dense or block: 'convolution, after ReLU,
    after pooling'. The layers followed are the convolution's neighbours in the Sequential holding it."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError("the model has no convolution layer")
    start = convs[0] if conv is None else _check_layer(model, conv)
    stages = [start]
    for name, item in layers_after(model, start):
        if item.is_convolution or item.children() or isinstance(item, (Flatten, Dense, GlobalAvgPool2D)):
            break
        stages.append(name)
        if _is_pooling(item):
            break
    return stages


def map_scale(maps: np.ndarray) -> tuple[str, float, float]:
    """``(cmap, vmin, vmax)`` for feature maps: the diverging scale centred on 0, except for maps with
    no negative value (after a ReLU or a max-pool of one), which get a scale from 0 (white) to their
    maximum (red), so half the colours are not spent on values that cannot occur."""
    if np.size(maps) and float(np.min(maps)) >= 0:
        return "Reds", 0.0, symmetric_limit(maps)
    vmax = symmetric_limit(maps)
    return KERNEL_CMAP, -vmax, vmax


#: Inches an input image takes in the feature-map figure: each map's tile takes the same.
MAP_INCHES = 0.9


def plot_feature_maps(
    model, image, layer=None, max_channels: int = 16, columns: int = MAX_COLUMNS, title=None, path=None
) -> Figure:
    """The input image and each channel's feature map after chosen layers, aligned with the input.

    Parameters
    ----------
    model : Sequential
    image : ndarray of shape (C, H, W) or (H, W): one input image
    layer : int, str or a list of them, optional
        Layers whose outputs to show (indices into ``model.layers`` or dotted names such as
        ``"3.body.0"``), one row of the figure each. Default: the first convolution (depth first),
        the layers after it up to and including its activation and pooling (:func:`default_stages`).
    max_channels : int
        A layer with more channels shows the ``max_channels`` with the largest mean absolute activation
        in the first layer shown, the same channels in every row; the title says which rule chose them.
    columns : int
        Channels per row of tiles; more wrap onto further rows (:func:`wrap`).
    title : str, optional
        Names the image (e.g. "test image 0, label 7") at the head of the figure's title.
    path : str or PathLike, optional

    Notes
    -----
    Each map is resampled onto the input's pixels (:func:`maps_on_input`): a tile covers the input
    pixels its cells are centred on (a 4x4 map after 2x2 pooling: each cell over its 2x2 block). A
    layer's tiles are one image (:func:`mosaic`) in the Axes ``"maps <layer>"``, titled with their
    channels, on one colour scale (:func:`map_scale`) under a faint outline of a one-channel input;
    beside it, the input (Axes ``"input <layer>"``).
    """
    x, stages, maps = _stage_maps(model, image, layer)
    n_channels = maps[0].shape[0]
    strength = np.abs(maps[0]).reshape(n_channels, -1).mean(axis=1)
    channels = np.sort(np.argsort(-strength, kind="stable")[:max_channels])  # all, when few
    grids = [
        maps_on_input(m[channels[channels < len(m)]], receptive_field_grid(model, i), x.shape[2:])
        for i, m in zip(stages, maps)
    ]
    wrapped = [wrap(g, columns) for g in grids]
    gap = max(1, round(grids[0].shape[1] / 6))  # room above each tile for its channel number
    images = [mosaic(w, gap) for w in wrapped]
    sheet = _maps_sheet(x.shape[2:], stages, images, [grid.shape[1] for grid in grids])
    for row, (i, m) in enumerate(zip(stages, maps)):
        ax_in, ax_maps = sheet.axes[row]
        show_image(ax_in, x[0], title="input" if row == 0 else None)
        ax_in.set_ylabel(
            f"{i}: {type(model.get_layer(i)).__name__}\n{m.shape[1]}x{m.shape[2]}", fontsize=LABEL_SIZE
        )
        _draw_maps(sheet, ax_maps, images[row], wrapped[row], gap, grids[row], channels, x[0])
    return save(sheet.finish(_maps_title(title, len(channels), n_channels, stages[0]), 10), path)


def _maps_sheet(shape, stages, images, tile_heights) -> Sheet:
    """The feature-map figure's panels: per stage, the input (``shape`` (H, W)) and the mosaic of its
    maps, whose tiles (``tile_heights`` pixels tall) take the input's size."""
    scales = [shape[0] / tile for tile in tile_heights]  # input pixels per pixel of each mosaic
    pixel = fit(  # inches per input pixel
        MAP_INCHES / shape[0],
        shape[1] + max(image.shape[1] * f for image, f in zip(images, scales)),
        sum(max(shape[0], image.shape[0] * f) for image, f in zip(images, scales)),
    )
    return Sheet(
        [
            [image_panel(shape, pixel, f"input {i}"), image_panel(image.shape, pixel * f, f"maps {i}")]
            for i, image, f in zip(stages, images, scales)
        ]
    )


def _maps_title(title, shown: int, n_channels: int, first: str) -> str:
    """:func:`plot_feature_maps`'s title: the image, and which channels when not all are shown."""
    head = f"Feature maps of {title}" if title else "Feature maps"
    more = (
        ""
        if shown == n_channels
        else f"\n{shown} of {n_channels} channels: those with the largest mean |activation| "
        f"after layer {first}"
    )
    return f"{head}:\neach cell drawn over the input pixels it is centred on{more}"


def maps_on_input(maps: np.ndarray, grid: tuple[float, float], shape) -> np.ndarray:
    """Feature maps (C, h, w) resampled onto the input's pixels (H, W) (or a grid twice as fine when
    the cells' edges fall between pixels): each input pixel takes the cell whose centre is nearest,
    as placed by ``grid`` (:func:`receptive_field_grid`), NaN where no cell covers it. Returns
    (C, H f, W f) with f = 1 or 2."""
    start, jump = grid
    edge = start - jump / 2 + 0.5  # where the first cell begins, pixel i spanning [i - 0.5, i + 0.5]
    fine = 1 if float(edge).is_integer() and float(jump).is_integer() else 2

    def cells(n_input: int, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
        centres = (np.arange(n_input * fine) + 0.5) / fine - 0.5
        index = np.floor((centres - start) / jump + 0.5).astype(int)
        return np.clip(index, 0, n_cells - 1), (index < 0) | (index >= n_cells)

    (rows, off_rows), (cols, off_cols) = cells(shape[0], maps.shape[1]), cells(shape[1], maps.shape[2])
    out = maps.astype(np.float64)[:, rows][:, :, cols]
    out[:, off_rows] = np.nan
    out[:, :, off_cols] = np.nan
    return out


def _stage_maps(model, image, layer) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """The image as a batch of one (1, C, H, W), the chosen layer indices (:func:`plot_feature_maps`'s
    ``layer``), and each one's feature maps (C_l, H_l, W_l); ValueError for a layer that has none."""
    chosen = (
        default_stages(model)
        if layer is None
        else ([layer] if isinstance(layer, (int, np.integer, str)) else list(layer))
    )
    stages = [_check_layer(model, i) for i in chosen]
    x = as_batch(model, image)[:1]
    maps = [feature_maps(model, x, i)[0] for i in stages]
    for i, m in zip(stages, maps):
        if m.ndim != 3:
            raise ValueError(
                f"plot_feature_maps: layer {i} ({model.get_layer(i)!r}) outputs shape {m.shape}, "
                "not feature maps (C, H, W)"
            )
    return x, stages, maps


def _draw_maps(sheet: Sheet, ax, image, tiles, gap: int, grid_maps, channels, x: np.ndarray) -> None:
    """One layer's maps: the mosaic ``image`` of ``tiles`` (rows, cols, h, w) in ``ax``, framed, each tile
    titled with its channel number, a faint outline of a one-channel input ``x`` (C, H, W) over each,
    on one colour scale (:func:`map_scale` of the maps ``grid_maps``) with a colorbar."""
    cmap, vmin, vmax = map_scale(grid_maps[np.isfinite(grid_maps)])  # from 0 after a ReLU
    drawn = show_pixels(ax, image, cmap=cmap, vmin=vmin, vmax=vmax)
    frame_tiles(ax, tiles.shape, None, None, gap)
    h = tiles.shape[2]
    label_tiles(ax, tiles.shape, gap, [f"ch {c}" for c in channels[: len(grid_maps)]], above=True)
    if x.shape[0] == 1 and np.ptp(x[0]) > 0:
        # a faint outline of the digit over every map shows where each response sits on the input
        fine = h // x.shape[1]
        outline = np.kron(x[0].astype(np.float64), np.ones((fine, fine)))
        outlines = mosaic(np.broadcast_to(outline, tiles.shape[:2] + outline.shape), gap)
        outlines[~np.isfinite(image)] = np.nan
        level = (outline.min() + outline.max()) / 2
        ax.contour(np.ma.masked_invalid(outlines), levels=[level], colors="k", linewidths=0.6, alpha=0.5)
    sheet.colorbar(drawn, ax, shrink=0.85)


# --- training results ---------------------------------------------------------------------------------
def _history_rows(history) -> list[dict]:
    """A list of per-epoch dicts, from such a list or from a dict of lists."""
    if isinstance(history, dict):
        length = max((len(v) for v in history.values()), default=0)
        return [{k: v[e] for k, v in history.items() if e < len(v)} for e in range(length)]
    return list(history)


def smoothing_floor(label_smoothing: float, n_classes: int) -> float:
    """The least cross-entropy a model can reach with label smoothing ``eps`` over K classes: the
    entropy of the smoothed target (``1 - eps + eps/K`` on the true class, ``eps/K`` elsewhere)."""
    if label_smoothing <= 0:
        return 0.0
    true, other = 1 - label_smoothing + label_smoothing / n_classes, label_smoothing / n_classes
    return float(-true * np.log(true) - (n_classes - 1) * other * np.log(other))


def plot_history(history, label_smoothing: float = 0.0, n_classes: int = 10, path=None) -> Figure:
    """Loss (left) and accuracy (right) per epoch, train and validation.

    history : list of dicts, one per epoch, with keys among ``epoch, train_loss, train_accuracy,
        val_loss, val_accuracy`` (missing keys are skipped), or a dict of such lists.
    label_smoothing, n_classes : with label smoothing the loss cannot fall below
        :func:`smoothing_floor`; that floor is drawn and named, so a loss that stops near it reads right.
    Returns a Figure with 2 Axes.
    """
    rows = _history_rows(history)
    epochs = [row.get("epoch", e + 1) for e, row in enumerate(rows)]
    sheet = Sheet([[Panel(3.2, 2.3), Panel(3.2, 2.3)]])
    axes = sheet.axes[0]
    for ax, metric, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "accuracy", "accuracy")):
        for split, style in (("train", "-o"), ("val", "--s")):
            key = f"{split}_{metric}"
            points = [(x, row[key]) for x, row in zip(epochs, rows) if row.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, markersize=3, label="train" if split == "train" else "validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)
    floor = smoothing_floor(label_smoothing, n_classes)
    if floor > 0:
        axes[0].axhline(
            floor, color="0.4", lw=1, ls=":", label=f"floor {floor:.2f}: label smoothing {label_smoothing:g}"
        )
        axes[0].legend(fontsize=8)
    axes[0].set_title("Loss" + (" (label smoothing puts a floor under it)" if floor > 0 else ""), fontsize=10)
    axes[1].set_title("Accuracy", fontsize=10)
    return save(sheet.finish(), path)


def plot_confusion_matrix(y_true, y_pred, labels=None, path=None) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted) from scikit-learn's metrics.

    Returns a Figure with 2 Axes (matrix and colorbar).
    """
    # scikit-learn counts; the drawing is ours (its ConfusionMatrixDisplay goes through pyplot)
    from sklearn.metrics import accuracy_score, confusion_matrix

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    side = min(max(0.36 * len(labels), 2.6), 6.0)  # room for the title over a few classes
    sheet = Sheet([[Panel(side, side)]])
    ax = sheet.axes[0, 0]
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (r, c), count in np.ndenumerate(matrix):
        if count:  # zero cells stay blank, so the mistakes stand out
            ax.text(
                c,
                r,
                str(count),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if count > threshold else "black",
            )
    ax.set_xticks(range(len(labels)), [str(v) for v in labels])
    ax.set_yticks(range(len(labels)), [str(v) for v in labels])
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    sheet.colorbar(image, ax, shrink=1.0, label="images")
    accuracy = accuracy_score(y_true, y_pred) if len(y_true) else float("nan")
    ax.set_title(f"Confusion matrix, {len(y_true)} test images, accuracy {accuracy:.3f}", fontsize=10)
    return save(sheet.finish(), path)


#: Inches a misclassified image takes in :func:`plot_mistakes`.
MISTAKE_INCHES = 1.2


def plot_mistakes(images, y_true, y_pred, max_images: int = 24, probabilities=None, path=None) -> Figure:
    """A grid of misclassified images titled with the true and predicted labels (and the probability
    the model gave its wrong prediction).

    images : ndarray of shape (N, 1, H, W) or (N, H, W); y_true, y_pred : (N,) labels
    probabilities : ndarray of shape (N, K), optional: the model's class probabilities
    Returns a Figure with one Axes labelled ``"mistakes"``: the mistakes shown (at most ``max_images``)
    as one tiled image in rows of 8 (:func:`mosaic`), each titled with its true and predicted label;
    or a single Axes saying there was none.
    """
    images, y_true, y_pred = np.asarray(images), np.asarray(y_true), np.asarray(y_pred)
    if not len(images) == len(y_true) == len(y_pred):
        raise ValueError(
            f"plot_mistakes: got {len(images)} images, {len(y_true)} true labels and "
            f"{len(y_pred)} predictions; expected the same number"
        )
    wrong = np.flatnonzero(y_true != y_pred)
    shown = wrong[:max_images]
    if len(shown) == 0:
        sheet = Sheet([[Panel(2.8, 1.3)]])
        ax = sheet.axes[0, 0]
        ax.axis("off")
        ax.text(0.5, 0.5, f"no mistakes on {len(images)} images", ha="center", va="center")
        return save(sheet.finish(), path)
    tiles = wrap(np.stack([stretched(as_image(images[i])) for i in shown]))  # as show_image draws them
    rows, cols, h = tiles.shape[:3]
    gap = (max(2, round(0.45 * h)), 1)  # room above each row for two lines of title
    image = mosaic(tiles, gap)
    pixel = fit(MISTAKE_INCHES / tiles.shape[3], image.shape[1], image.shape[0] + gap[0])
    sheet = Sheet([[image_panel(image.shape, pixel, "mistakes", extra_rows=gap[0])]])
    ax = sheet.axes[0, 0]
    gray = tiles.ndim == 4
    if gray:
        image = np.where(np.isnan(image), 0.0, image)  # the gaps white, as the paper under the ink
    show_pixels(ax, image, cmap=IMAGE_CMAP if gray else None, vmin=0, vmax=1)
    frame_tiles(ax, tiles.shape, None, None, gap, count=len(shown))
    ax.set_ylim(image.shape[0] - 0.5, -0.5 - gap[0])  # room above the first row for its titles
    probability = [
        "" if probabilities is None else f"\np({y_pred[i]}) = {probabilities[i, y_pred[i]]:.2f}"
        for i in shown
    ]
    titles = [f"true {y_true[i]}, pred {y_pred[i]}{p}" for i, p in zip(shown, probability)]
    label_tiles(ax, tiles.shape, gap, titles, above=True, fontsize=LABEL_SIZE, linespacing=0.95)
    shown_note = "" if len(shown) == len(wrong) else f" (showing {len(shown)})"
    return save(sheet.finish(f"Misclassified: {len(wrong)} of {len(images)}{shown_note}", 11), path)


def first_conv(model):
    """The first convolution, depth first: the layer whose kernels the run's figures plot."""
    found = model.convolutions()
    if not found:
        raise ValueError("the model has no convolution layer")
    return found[0][1]


#: One figure step: a name for timing, and the call that draws its figures and returns their paths.
FigureStep = tuple[str, typing.Callable[[], list[str]]]


def draw_steps(steps: list[FigureStep]) -> typing.Iterator[tuple[str, list[str]]]:
    """Draw each step's figures in turn, yielding ``(name, paths written)`` after each.

    A Figure, its Axes and their artists refer to one another, so a figure no longer used is freed
    only by Python's cycle collector, which runs by counts of objects allocated, not of bytes: left
    to it, the figures of a run piled up (about 22 MiB of them on the digits). Each step's garbage is
    collected as soon as it is written; what was alive before the first step (modules, the model,
    the data) is frozen out of those collections (:func:`gc.freeze`, undone at the end), so each
    takes a few milliseconds instead of 50.
    """
    gc.freeze()
    try:
        for name, step in steps:
            paths = step()
            gc.collect()
            yield name, paths
    finally:
        gc.unfreeze()


def run_steps(steps: list[FigureStep]) -> list[str]:
    """Draw each step's figures in turn (:func:`draw_steps`); the paths written."""
    return [path for _, paths in draw_steps(steps) for path in paths]


__all__ = [
    "PixelImage",
    "show_pixels",
    "plot_filters",
    "plot_rgb_filters",
    "rgb_kernels",
    "rgb_for_display",
    "plot_filters_before_after",
    "feature_maps",
    "plot_feature_maps",
    "plot_history",
    "plot_confusion_matrix",
    "plot_mistakes",
    "draw_steps",
    "run_steps",
    "receptive_field_grid",
    "default_stages",
    "conv_layers",
    "layers_after",
    "new_figure",
    "save",
    "show_image",
    "symmetric_limit",
    "FIGURE_NAMES",
]
