"""Did the kernels learn? Figures of the plotted layer's kernels against their initialization and over time.

- :func:`plot_filters_change`: initial, learned, and learned minus initial (on its own colour scale),
  with each kernel's angle from initialization and norm ratio under it (``filters_learned.png``).
- :func:`plot_filters_evolution`: the kernels after each epoch, epochs down, kernels across, each
  scaled to unit norm so that a turn shows even when the length changes (``filters_evolution.png``);
  :func:`animate_filters_evolution` makes the same into an animated GIF (``filters_evolution.gif``).
- :func:`top_patches` / :func:`plot_top_patches`: the training patches that excite each kernel most
  (Zeiler and Fergus 2014), and their mean (``top_patches.png``).

The angles come from :mod:`minicnn.see.change`; the snapshots from the ``kernels_history.npz`` that
``python train.py`` writes after every epoch.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..io import check_write_target, write_atomic
from ..nn.functional import pad2d
from ..nn.layers import Conv2D, no_grad
from .change import kernel_angles, norm_ratios
from .layout import Sheet, fit, image_panel
from .plots import (
    IMAGE_CMAP,
    KERNEL_CMAP,
    KERNEL_INCHES,
    LABEL_SIZE,
    MAX_COLUMNS,
    FigureStep,
    frame_tiles,
    kernel_array,
    label_tiles,
    mosaic,
    rgb_bytes,
    run_steps,
    save,
    show_pixels,
    symmetric_limit,
    tiled_sheet,
    wrap,
)

#: The colour of padding in patches (amber): no grey of the image scale, so it never reads as ink.
PADDING_RGBA = (0.98, 0.75, 0.2, 1.0)


def _slice(weight: np.ndarray, in_channel: int | None) -> tuple[np.ndarray, int]:
    """(out, kh, kw) kernels of one input channel (0 unless given) of (out, in, kh, kw) weights."""
    channel = 0 if in_channel is None else int(in_channel)
    if not 0 <= channel < weight.shape[1]:
        raise ValueError(f"in_channel must be in [0, {weight.shape[1]}), got {in_channel}")
    return weight[:, channel], channel


def plot_filters_change(
    initial, learned, in_channel: int | None = None, title: str | None = None, path=None
) -> Figure:
    """Initial, learned and learned-minus-initial kernels, the angle and norm ratio under each.

    Parameters
    ----------
    initial, learned : Conv2D or ndarray of shape (out, in, kh, kw)
    in_channel : int, optional
        Which input channel's slice to draw (default 0; the only one for a first layer). The angles
        and norm ratios are of the whole kernels (in, kh, kw).
    title : str, optional

    Notes
    -----
    Three blocks, one above the other, each the kernels in a grid of at most :data:`~.plots.MAX_COLUMNS`
    columns, twice as many above 32 kernels (:func:`~.plots.wrap`, :func:`~.plots.mosaic`): the Axes
    labelled ``"initial"`` and ``"learned"`` share one symmetric colour scale; ``"change"`` has its
    own, so a small change is still visible, with each kernel's angle from initialization and norm
    ratio under it. The angle is the honest measure: after a normalization only direction matters.

    Returns
    -------
    Figure with the three labelled Axes and their colorbars.
    """
    before, after = kernel_array(initial), kernel_array(learned)
    if before.shape != after.shape:
        raise ValueError(f"plot_filters_change: shapes differ, {before.shape} vs {after.shape}")
    angles, ratios = kernel_angles(before, after), norm_ratios(before, after)
    (b, channel), (a, _) = _slice(before, in_channel), _slice(after, in_channel)
    kh = b.shape[1]
    columns = MAX_COLUMNS if len(b) <= 4 * MAX_COLUMNS else 2 * MAX_COLUMNS  # 64 kernels: 4 rows of 16
    blocks = {"initial": wrap(b, columns), "learned": wrap(a, columns), "change": wrap(a - b, columns)}
    rows, cols = blocks["initial"].shape[:2]
    # room under each row of the change for two lines of text; a thin gap elsewhere
    gaps = {"initial": (max(1, round(0.2 * kh)), 1), "learned": (max(1, round(0.2 * kh)), 1)}
    gaps["change"] = (max(2, round(0.9 * kh)), 1)
    images = {name: mosaic(grid, gaps[name]) for name, grid in blocks.items()}
    height = sum(image.shape[0] for image in images.values())
    pixel = fit(KERNEL_INCHES / b.shape[2], images["initial"].shape[1], height)
    sheet = Sheet([[image_panel(image.shape, pixel, name)] for name, image in images.items()])
    axes = dict(zip(images, sheet.axes[:, 0]))
    shared = symmetric_limit(b, a)
    for name, ax in axes.items():
        vmax = shared if name != "change" else symmetric_limit(a - b)
        shown = show_pixels(ax, images[name], cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
        first = [f"{r * cols}-{min((r + 1) * cols, len(b)) - 1}" for r in range(rows)] if rows > 1 else None
        top = [str(k) for k in range(cols)] if name == "initial" else None
        frame_tiles(ax, blocks[name].shape, first, top, gaps[name])
        ax.set_ylabel("learned − initial" if name == "change" else name, fontsize=LABEL_SIZE)
        sheet.colorbar(shown, ax, label="change" if name == "change" else "weight")
    moved = [f"{angle:.0f}°\n×{ratio:.2f}" for angle, ratio in zip(angles, ratios)]
    label_tiles(axes["change"], blocks["change"].shape, gaps["change"], moved, linespacing=0.9)
    note = "" if before.shape[1] == 1 else f", input channel {channel} shown"
    return save(sheet.finish(title or _change_title(angles, note), 10), path)


def _change_title(angles: np.ndarray, note: str) -> str:
    plural = "s" if len(angles) != 1 else ""
    return (
        f"{len(angles)} kernel{plural} turned a median {float(np.nanmedian(angles)):.0f}° from their "
        f"initialization{note}\n"
        "(kernel number above; under each change: angle from init, norm learned / initial)"
    )


def _unit(kernels: np.ndarray) -> np.ndarray:
    """Each kernel (…, out, kh, kw) divided by its norm over (kh, kw); all-zero kernels stay zero."""
    norms = np.linalg.norm(kernels.reshape(*kernels.shape[:-2], -1), axis=-1)[..., None, None]
    return np.divide(kernels, norms, out=np.zeros_like(kernels, dtype=np.float64), where=norms > 0)


def _history_rows(epochs: np.ndarray, max_rows: int) -> np.ndarray:
    """Indices of the snapshots to draw: all if few, else evenly spaced, always the first and last."""
    if len(epochs) <= max_rows:
        return np.arange(len(epochs))
    return np.unique(np.round(np.linspace(0, len(epochs) - 1, max_rows)).astype(int))


def most_turned(angles: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` kernels with the largest angles (NaN last), in kernel order; all when
    there are no more than ``count``."""
    if len(angles) <= count:
        return np.arange(len(angles))
    return np.sort(np.argsort(-np.nan_to_num(angles, nan=-1.0), kind="stable")[:count])


#: Inches a kernel's tile takes in :func:`plot_filters_evolution`.
EVOLUTION_INCHES = 0.5


def plot_filters_evolution(
    history: dict, in_channel: int | None = None, max_rows: int = 11, max_kernels: int = 16, path=None
) -> Figure:
    """The plotted layer's kernels after each epoch: epochs down, kernels across, each at unit norm.

    Parameters
    ----------
    history : dict with ``epochs`` (E,) and ``kernels`` (E, out, in, kh, kw), as
        :func:`minicnn.see.change.load_kernel_history` returns (epoch 0: initialization)
    in_channel : int, optional
        Input channel to draw (default 0).
    max_rows : int
        More snapshots than this are thinned to evenly spaced epochs (the first and last kept).
    max_kernels : int
        More kernels than this: the ``max_kernels`` that turned most by the last snapshot
        (:func:`most_turned`), and the title says so.

    Notes
    -----
    One image of tiles (:func:`~.plots.mosaic`) in the Axes labelled ``"kernels"``: row r is the r-th
    snapshot shown (labelled with its epoch), column c a kernel (labelled with its number), on one
    symmetric colour scale; under each tile the kernel's angle from its initialization at that epoch.
    """
    epochs, kernels = np.asarray(history["epochs"]), np.asarray(history["kernels"], dtype=np.float64)
    shown = _history_rows(epochs, max_rows)
    unit = _unit(kernels[:, :, 0 if in_channel is None else in_channel])
    n_out, kh = unit.shape[1:3]
    picked = most_turned(kernel_angles(kernels[0], kernels[-1]), max_kernels)
    tiles = unit[shown][:, picked]
    gap = (max(2, round(0.5 * kh)), 1)
    image = mosaic(tiles, gap)
    pixel = fit(EVOLUTION_INCHES / tiles.shape[3], image.shape[1], image.shape[0])
    sheet = Sheet([[image_panel(image.shape, pixel, "kernels")]])
    ax = sheet.axes[0, 0]
    vmax = symmetric_limit(tiles)
    drawn = show_pixels(ax, image, cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
    frame_tiles(ax, tiles.shape, [f"epoch {epochs[e]}" for e in shown], [str(k) for k in picked], gap)
    turned = [kernel_angles(kernels[0], kernels[e])[picked] for e in shown]
    label_tiles(ax, tiles.shape, gap, [f"{a:.0f}°" for row in turned for a in row], fontsize=LABEL_SIZE - 2)
    sheet.colorbar(drawn, ax, shrink=0.8, label="weight / kernel norm")
    thinned = "" if len(shown) == len(epochs) else f", {len(shown)} of {len(epochs)} snapshots"
    subset = "" if len(picked) == n_out else f"\nthe {len(picked)} of {n_out} kernels that turned most"
    heading = f"Kernels over training (unit norm; kernel number above, angle from init under each{thinned})"
    return save(sheet.finish(heading + subset, 10), path)


#: Colours of the kernels' GIF: white, black and 254 shades of the kernel colour scale.
_GIF_PALETTE_SIZE = 256


def animate_filters_evolution(
    history: dict, path, in_channel: int | None = None, fps: int = 4, tile_pixels: int = 48
) -> np.ndarray:
    """An animated GIF of the kernels (unit norm) epoch by epoch, drawn straight from the arrays with
    Pillow (no matplotlib frame is rendered): the kernels in a grid of at most
    :data:`~.plots.MAX_COLUMNS` columns, each about ``tile_pixels`` wide (whole pixels per weight), its
    angle from initialization under it, on one symmetric colour scale (the ``RdBu_r`` of the PNGs).

    history : as for :func:`plot_filters_evolution`; path : the ``.gif`` to write.
    Returns the frames' kernels, ndarray of shape (E, out, kh, kw) (unit norm), as drawn.
    """
    from PIL import Image, ImageDraw, ImageFont

    check_write_target(path)  # refused before any frame is drawn
    epochs, kernels = np.asarray(history["epochs"]), np.asarray(history["kernels"], dtype=np.float64)
    unit = _unit(kernels[:, :, 0 if in_channel is None else in_channel])
    n_out, kh, kw = unit.shape[1:]
    scale = max(1, tile_pixels // max(kh, kw))
    # frames of palette indices: 0 white, 1 black, 2 to 255 the colour scale (no quantization of
    # RGB frames, which was three quarters of the GIF's time)
    levels = _GIF_PALETTE_SIZE - 2
    vmax = symmetric_limit(unit)
    shades = rgb_bytes(np.linspace(-1.0, 1.0, levels), KERNEL_CMAP, 1.0)  # as imshow colours them
    palette = np.concatenate([[[255, 255, 255], [0, 0, 0]], shades]).astype(np.uint8).ravel().tolist()
    indices = (2 + np.round((unit + vmax) / (2 * vmax) * (levels - 1))).astype(np.uint8)  # (E, out, kh, kw)
    rows, cols = wrap(unit[0]).shape[:2]
    pad, header, caption = 6, 20, 14
    step_x, step_y = kw * scale + pad, kh * scale + caption + pad
    size = (max(cols * step_x + pad, 300), header + rows * step_y)
    font = ImageFont.load_default()
    frames = []
    for e in range(len(epochs)):
        angles = kernel_angles(kernels[0], kernels[e])
        frame = Image.new("P", size, 0)
        frame.putpalette(palette)
        pen = ImageDraw.Draw(frame)
        pen.text((pad, 4), f"epoch {epochs[e]}: kernels (unit norm), angle from init", fill=1, font=font)
        for k in range(n_out):
            r, c = divmod(k, cols)
            left, top = pad + c * step_x, header + r * step_y
            tile = np.kron(indices[e, k], np.ones((scale, scale), dtype=np.uint8))  # whole pixels per weight
            frame.paste(Image.fromarray(tile, mode="L"), (left, top))
            pen.text((left, top + kh * scale + 1), f"{angles[k]:.0f}°", fill=1, font=font)
        frames.append(frame)
    write_atomic(  # never through a link, never half a file
        path,
        lambda handle: frames[0].save(
            handle, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0
        ),
        ".gif",
    )
    return unit


def top_patches(model, X: np.ndarray, layer: int | str, count: int = 9, batch_size: int = 256) -> dict:
    """The input patches that excite each kernel of a first-layer Conv2D most (one per image).

    Parameters
    ----------
    model : Sequential whose layer ``layer`` is its first convolution, reading the input directly
    X : ndarray of shape (N, C, H, W): images as the model sees them (e.g. the training split)
    layer : index into ``model.layers`` or dotted name (``"1.body.0"``) of that convolution
    count : patches per kernel

    Returns
    -------
    dict with ``patches`` (out, count, C, kh_eff, kw_eff): each kernel's top patches of the padded
    input (its receptive field), ``padding`` (out, count, kh_eff, kw_eff): True where a patch's pixel
    is the convolution's zero padding, outside the image, ``activations`` (out, count): the kernel's
    response to each, highest first, and ``images`` (out, count): which image each patch comes from.
    """
    conv = model.get_layer(layer)
    if not isinstance(conv, Conv2D) or model.convolutions()[0][1] is not conv:
        raise ValueError(f"top_patches: layer {layer} must be the model's first convolution, got {conv!r}")
    n, out = len(X), conv.out_channels
    where, best = np.empty((n, out), dtype=np.int64), np.empty((n, out))
    with model.evaluating(), no_grad():  # batch by batch, keeping each image's strongest place per kernel
        for start in range(0, n, batch_size):
            flat = conv.forward(X[start : start + batch_size])
            w_out = flat.shape[3]
            flat = flat.reshape(len(flat), out, -1)
            where[start : start + len(flat)] = flat.argmax(axis=2)
            best[start : start + len(flat)] = flat.max(axis=2)
    images = np.argsort(-best, axis=0, kind="stable")[:count].T  # (out, count)
    outside = pad2d(np.zeros((1, 1, *X.shape[2:])), conv.pad_amounts, value=1.0)[0, 0] > 0
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    patches = np.empty((out, count, X.shape[1], span_h, span_w))
    padding = np.empty((out, count, span_h, span_w), dtype=bool)
    for o in range(out):
        for rank, i in enumerate(images[o]):
            r, c = divmod(int(where[i, o]), w_out)
            window = np.s_[r * sh : r * sh + span_h, c * sw : c * sw + span_w]
            padded = pad2d(np.asarray(X[i : i + 1], dtype=np.float64), conv.pad_amounts)[0]  # only this one
            patches[o, rank] = padded[(slice(None), *window)]
            padding[o, rank] = outside[window]
    activations = np.take_along_axis(best.T, images, axis=1)
    return {"patches": patches, "padding": padding, "activations": activations, "images": images}


def plot_top_patches(
    model, X: np.ndarray, layer: int | str, count: int = 9, max_kernels: int = 16, path=None
) -> Figure:
    """Per kernel (one row): the kernel, its ``count`` most exciting training patches, and their mean.

    X : ndarray of shape (N, 1, H, W), the images the patches are cut from (the training split).
    Returns a Figure of three tiled images (:func:`~.plots.mosaic`), the Axes labelled ``"kernels"``
    (each kernel divided by its largest absolute weight: its own colour scale; a dilated one spread
    over its patch, NaN between its weights), ``"patches"`` (a
    kernel's row of patches, its response under each) and ``"mean"``; the patches and their means
    share one gray scale. One image per column instead of 88 Axes: 0.3 s to draw instead of 2 s.
    Padding (outside the image) is drawn in :data:`PADDING_RGBA`, named in a legend. More than
    ``max_kernels`` kernels: those with the largest mean response over their top patches, as the
    title says.
    """
    found = top_patches(model, X, layer, count)
    conv = model.get_layer(layer)
    n_out = len(found["patches"])
    picked = np.arange(n_out)
    if n_out > max_kernels:  # the kernels whose top patches excite them most
        picked = np.sort(np.argsort(-found["activations"].mean(axis=1), kind="stable")[:max_kernels])
    found = {key: value[picked] for key, value in found.items()}
    patches, activations = found["patches"][:, :, 0], found["activations"]
    weights = conv.weight.data[picked, 0].astype(np.float64)
    out, h = len(weights), patches.shape[2]
    # a dilated kernel drawn where its weights meet the patch (NaN between them): tiles of one size
    dh, dw = conv.dilation
    scaled = np.full((out, 1, *patches.shape[2:]), np.nan)
    scaled[:, 0, ::dh, ::dw] = [k / symmetric_limit(k) for k in weights]
    means = patches.mean(axis=1)[:, None]
    gap = (max(1, round(h / 3)), 1)  # room under each row of patches for the responses
    images = {"kernels": mosaic(scaled, gap), "patches": mosaic(patches, gap), "mean": mosaic(means, gap)}
    inside = ~found["padding"]
    low, high = float(np.min(patches[inside], initial=0.0)), float(np.max(patches[inside], initial=1.0))
    width = sum(image.shape[1] for image in images.values())
    pixel = fit((0.9 if out <= 8 else 0.6) / h, width, images["patches"].shape[0])
    sheet = tiled_sheet(images, images["patches"].shape[0] * pixel)
    axes = dict(zip(images, sheet.axes[0]))
    show_pixels(axes["kernels"], images["kernels"], cmap=KERNEL_CMAP, vmin=-1, vmax=1)
    for name in ("patches", "mean"):
        show_pixels(axes[name], images[name], cmap=IMAGE_CMAP, vmin=low, vmax=high)
    padding = _draw_padding(sheet, axes["patches"], found["padding"], gap)
    frame_tiles(axes["kernels"], scaled.shape, [f"kernel {o}" for o in picked], None, gap)
    frame_tiles(axes["patches"], patches.shape, None, None, gap)
    frame_tiles(axes["mean"], means.shape, None, None, gap)
    label_tiles(axes["patches"], patches.shape, gap, [f"{a:.1f}" for a in activations.ravel()])
    axes["kernels"].set_title("kernel", fontsize=LABEL_SIZE)
    axes["patches"].set_title(f"top {count} patches →", fontsize=LABEL_SIZE, loc="left")
    axes["mean"].set_title("mean", fontsize=LABEL_SIZE)
    padding_note = "; the mean counts padding as 0" if padding else ""
    subset = (
        ""
        if len(picked) == n_out
        else f"\n{len(picked)} of {n_out} kernels: those with the largest mean response to their top patches"
    )
    heading = (
        "What each first-layer kernel responds to most: its top training patches "
        f"(response under each; ink dark{padding_note}){subset}"
    )
    return save(sheet.finish(heading, 10), path)


def _draw_padding(sheet: Sheet, ax, padding: np.ndarray, gap) -> bool:
    """Padding (out, count, h, w) True where a patch lies outside the image: drawn over the patches'
    mosaic in ``ax`` in :data:`PADDING_RGBA` and named in a legend under the figure. Padding is not
    ink: a zero there would read as grey. Returns whether there was any."""
    marked = mosaic(padding.astype(float), gap) == 1
    if not marked.any():
        return False
    # uint8 RGBA: the colours as drawn, an eighth of float64's memory
    overlay = np.zeros((*marked.shape, 4), dtype=np.uint8)
    overlay[marked] = np.round(np.multiply(PADDING_RGBA, 255)).astype(np.uint8)
    show_pixels(ax, overlay)
    sheet.legend(
        [Patch(facecolor=PADDING_RGBA, edgecolor="black", label="padding (outside the image)")],
        fontsize=LABEL_SIZE - 1,
        frameon=False,
    )
    return True


def write_kernel_figures(run_dir, model, history=None, X_train=None) -> list[str]:
    """``filters_evolution.png`` and ``.gif`` (from ``history``) and ``top_patches.png`` (from ``X_train``)
    for a run's first convolution (depth first); returns the paths written."""
    return run_steps(kernel_figure_steps(run_dir, model, history, X_train))


def kernel_figure_steps(run_dir, model, history=None, X_train=None) -> list[FigureStep]:
    """:func:`write_kernel_figures`'s figures as named steps, not yet drawn."""
    import os

    from .change import first_conv_name

    def target(name):
        return os.path.join(run_dir, name)

    def evolution():
        plot_filters_evolution(history, path=target("filters_evolution.png"))
        return [target("filters_evolution.png")]

    def gif():
        animate_filters_evolution(history, target("filters_evolution.gif"))
        return [target("filters_evolution.gif")]

    def patches():
        plot_top_patches(model, X_train, layer, path=target("top_patches.png"))
        return [target("top_patches.png")]

    steps: list[FigureStep] = []
    if history is not None and len(history["epochs"]) > 1:
        steps += [("filters_evolution.png", evolution), ("filters_evolution.gif", gif)]
    layer = first_conv_name(model)
    if X_train is not None and len(X_train) and model.get_layer(layer).in_channels == 1:
        steps.append(("top_patches.png", patches))
    return steps


__all__ = [
    "animate_filters_evolution",
    "kernel_figure_steps",
    "most_turned",
    "plot_filters_change",
    "plot_filters_evolution",
    "plot_top_patches",
    "top_patches",
    "write_kernel_figures",
]
