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
from matplotlib.animation import PillowWriter
from matplotlib.figure import Figure

from ..io import check_write_target, write_atomic
from ..nn.functional import pad2d
from ..nn.layers import Conv2D
from .change import kernel_angles, norm_ratios
from .plots import (
    IMAGE_CMAP,
    KERNEL_CMAP,
    LABEL_SIZE,
    _bare,
    _frame_tiles,
    _weights,
    mosaic,
    new_figure,
    save,
    symmetric_limit,
    tiled_axes,
)


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
    Rows 1 and 2 share one symmetric colour scale; row 3 (the change) has its own, so a small change
    is still visible. The angle is the honest measure: after a normalization only direction matters.

    Returns
    -------
    Figure whose first ``3 * out`` Axes are the tiles, row by row.
    """
    before, after = _weights(initial), _weights(learned)
    if before.shape != after.shape:
        raise ValueError(f"plot_filters_change: shapes differ, {before.shape} vs {after.shape}")
    angles, ratios = kernel_angles(before, after), norm_ratios(before, after)
    (b, channel), (a, _) = _slice(before, in_channel), _slice(after, in_channel)
    n_out = len(b)
    fig = new_figure(max(1.3 * n_out + 1.6, 5.5), 5.2)
    axes = fig.subplots(3, n_out, squeeze=False)
    rows = (
        ("initial", b, symmetric_limit(b, a)),
        ("learned", a, symmetric_limit(b, a)),
        ("learned − initial", a - b, symmetric_limit(a - b)),
    )
    for r, (label, kernels, vmax) in enumerate(rows):
        for k in range(n_out):
            ax = axes[r, k]
            image = ax.imshow(kernels[k], cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
            _bare(ax)
            if r == 0:
                ax.set_title(f"kernel {k}", fontsize=LABEL_SIZE)
            if r == 2:
                ax.set_xlabel(f"{angles[k]:.0f}°\n×{ratios[k]:.2f}", fontsize=LABEL_SIZE)
        axes[r, 0].set_ylabel(label, fontsize=LABEL_SIZE)
        fig.colorbar(image, ax=list(axes[r]), shrink=0.9, aspect=12, label="weight" if r < 2 else "change")
    median = float(np.nanmedian(angles))
    note = "" if before.shape[1] == 1 else f", input channel {channel} shown"
    fig.suptitle(
        title
        or f"Kernels turned a median {median:.0f}° from their initialization{note}\n"
        "(under each: angle from init, norm learned / initial)",
        fontsize=10,
    )
    return save(fig, path)


def _unit(kernels: np.ndarray) -> np.ndarray:
    """Each kernel (…, out, kh, kw) divided by its norm over (kh, kw); all-zero kernels stay zero."""
    norms = np.linalg.norm(kernels.reshape(*kernels.shape[:-2], -1), axis=-1)[..., None, None]
    return np.divide(kernels, norms, out=np.zeros_like(kernels, dtype=np.float64), where=norms > 0)


def _history_rows(epochs: np.ndarray, max_rows: int) -> np.ndarray:
    """Indices of the snapshots to draw: all if few, else evenly spaced, always the first and last."""
    if len(epochs) <= max_rows:
        return np.arange(len(epochs))
    return np.unique(np.round(np.linspace(0, len(epochs) - 1, max_rows)).astype(int))


def plot_filters_evolution(
    history: dict, in_channel: int | None = None, max_rows: int = 11, path=None
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

    Notes
    -----
    Each tile is titled with the kernel's angle from its initialization at that epoch.

    Returns
    -------
    Figure whose first ``rows * out`` Axes are the tiles, row by row.
    """
    epochs, kernels = np.asarray(history["epochs"]), np.asarray(history["kernels"], dtype=np.float64)
    shown = _history_rows(epochs, max_rows)
    unit = _unit(kernels[:, :, 0 if in_channel is None else in_channel])
    n_out = unit.shape[1]
    vmax = symmetric_limit(unit[shown])
    fig = new_figure(max(1.1 * n_out + 1.6, 5.0), 1.05 * len(shown) + 1.1)
    axes = fig.subplots(len(shown), n_out, squeeze=False)
    for r, e in enumerate(shown):
        angles = kernel_angles(kernels[0], kernels[e])
        for k in range(n_out):
            ax = axes[r, k]
            image = ax.imshow(unit[e, k], cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
            _bare(ax)
            ax.set_title(f"{angles[k]:.0f}°", fontsize=LABEL_SIZE - 1, pad=2)
        axes[r, 0].set_ylabel(f"epoch {epochs[e]}", fontsize=LABEL_SIZE)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, aspect=30, label="weight / kernel norm")
    thinned = "" if len(shown) == len(epochs) else f", {len(shown)} of {len(epochs)} snapshots"
    fig.suptitle(f"Kernels over training\n(unit norm; angle from init above each{thinned})", fontsize=10)
    return save(fig, path)


def animate_filters_evolution(history: dict, path, in_channel: int | None = None, fps: int = 4) -> np.ndarray:
    """An animated GIF of the kernels (unit norm) epoch by epoch, written with matplotlib's PillowWriter.

    history : as for :func:`plot_filters_evolution`; path : the ``.gif`` to write.
    Returns the frames' kernels, ndarray of shape (E, out, kh, kw) (unit norm), as drawn.
    """
    from matplotlib.animation import FuncAnimation

    check_write_target(path)  # refused before any frame is drawn
    epochs, kernels = np.asarray(history["epochs"]), np.asarray(history["kernels"], dtype=np.float64)
    unit = _unit(kernels[:, :, 0 if in_channel is None else in_channel])
    n_out, vmax = unit.shape[1], symmetric_limit(unit)
    fig = new_figure(max(1.2 * n_out + 0.4, 3.0), 1.9)
    axes = fig.subplots(1, n_out, squeeze=False)[0]
    images = [ax.imshow(unit[0, k], cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax) for k, ax in enumerate(axes)]
    for ax in axes:
        _bare(ax)
    heading = fig.suptitle("", fontsize=LABEL_SIZE + 1)

    def draw(e):
        angles = kernel_angles(kernels[0], kernels[e])
        for k, (ax, image) in enumerate(zip(axes, images)):
            image.set_data(unit[e, k])
            ax.set_title(f"{angles[k]:.0f}°", fontsize=LABEL_SIZE)
        heading.set_text(f"epoch {epochs[e]}: kernels (unit norm), angle from init")
        return images

    animation = FuncAnimation(fig, draw, frames=len(epochs), blit=False)
    animation.save(path, writer=_AtomicGifWriter(fps=fps), dpi=80)
    return unit


class _AtomicGifWriter(PillowWriter):
    """PillowWriter whose GIF goes through :func:`minicnn.io.write_atomic` (never through a link)."""

    def finish(self):
        frames, duration = self._frames, int(1000 / self.fps)
        write_atomic(
            self.outfile,
            lambda handle: frames[0].save(
                handle, format="GIF", save_all=True, append_images=frames[1:], duration=duration, loop=0
            ),
            ".gif",
        )


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
    input (its receptive field), ``activations`` (out, count): the kernel's response to each, highest
    first, and ``images`` (out, count): which image each patch comes from.
    """
    conv = model.get_layer(layer)
    if not isinstance(conv, Conv2D) or model.convolutions()[0][1] is not conv:
        raise ValueError(f"top_patches: layer {layer} must be the model's first convolution, got {conv!r}")
    with model.evaluating():
        response = np.concatenate([conv.forward(X[i : i + batch_size]) for i in range(0, len(X), batch_size)])
    n, out, _, w_out = response.shape
    flat = response.reshape(n, out, -1)
    where = flat.argmax(axis=2)  # each image's strongest position, per kernel
    best = np.take_along_axis(flat, where[..., None], axis=2)[..., 0]
    images = np.argsort(-best, axis=0)[:count].T  # (out, count)
    padded = pad2d(np.asarray(X, dtype=np.float64), conv.pad_amounts)
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    patches = np.empty((out, count, X.shape[1], span_h, span_w))
    for o in range(out):
        for rank, i in enumerate(images[o]):
            r, c = divmod(int(where[i, o]), w_out)
            patches[o, rank] = padded[i, :, r * sh : r * sh + span_h, c * sw : c * sw + span_w]
    return {"patches": patches, "activations": np.take_along_axis(best.T, images, axis=1), "images": images}


def plot_top_patches(model, X: np.ndarray, layer: int | str, count: int = 9, path=None) -> Figure:
    """Per kernel (one row): the kernel, its ``count`` most exciting training patches, and their mean.

    X : ndarray of shape (N, 1, H, W), the images the patches are cut from (the training split).
    Returns a Figure of three tiled images (:func:`~.plots.mosaic`), the Axes labelled ``"kernels"``
    (each kernel divided by its largest absolute weight: its own colour scale; a dilated one spread
    over its patch, NaN between its weights), ``"patches"`` (a
    kernel's row of patches, its response under each) and ``"mean"``; the patches and their means
    share one gray scale. One image per column instead of 88 Axes: 0.3 s to draw instead of 2 s.
    """
    found = top_patches(model, X, layer, count)
    patches, activations = found["patches"][:, :, 0], found["activations"]
    conv = model.get_layer(layer)
    weights = conv.weight.data[:, 0].astype(np.float64)
    out, h = len(weights), patches.shape[2]
    # a dilated kernel drawn where its weights meet the patch (NaN between them): tiles of one size
    dh, dw = conv.dilation
    scaled = np.full((out, 1, *patches.shape[2:]), np.nan)
    scaled[:, 0, ::dh, ::dw] = [k / symmetric_limit(k) for k in weights]
    means = patches.mean(axis=1)[:, None]
    gap = (max(1, round(h / 3)), 1)  # room under each row of patches for the responses
    images = {"kernels": mosaic(scaled, gap), "patches": mosaic(patches, gap), "mean": mosaic(means, gap)}
    low, high = float(np.min(patches)), float(np.max(patches))
    fig = new_figure(1.0 * (count + 2) + 0.6, 1.15 * out + 0.8)
    axes = tiled_axes(fig, images)
    axes["kernels"].imshow(images["kernels"], cmap=KERNEL_CMAP, vmin=-1, vmax=1, interpolation="nearest")
    for name in ("patches", "mean"):
        axes[name].imshow(images[name], cmap=IMAGE_CMAP, vmin=low, vmax=high, interpolation="nearest")
    _frame_tiles(axes["kernels"], scaled.shape, [f"kernel {o}" for o in range(out)], None, gap)
    rows, columns = _frame_tiles(axes["patches"], patches.shape, None, None, gap)
    _frame_tiles(axes["mean"], means.shape, None, None, gap)
    for o, (_, bottom) in enumerate(rows):
        for rank, (left, right) in enumerate(columns):
            axes["patches"].text(
                (left + right) / 2,
                bottom + 0.05 * h,
                f"{activations[o, rank]:.1f}",
                ha="center",
                va="top",
                fontsize=LABEL_SIZE - 1,
            )
    axes["kernels"].set_title("kernel", fontsize=LABEL_SIZE)
    axes["patches"].set_title(f"top {count} patches →", fontsize=LABEL_SIZE, loc="left")
    axes["mean"].set_title("mean", fontsize=LABEL_SIZE)
    fig.suptitle(
        "What each first-layer kernel responds to most: its top training patches "
        "(response under each; ink dark)",
        fontsize=10,
    )
    return save(fig, path)


def write_kernel_figures(run_dir, model, history=None, X_train=None) -> list[str]:
    """``filters_evolution.png`` and ``.gif`` (from ``history``) and ``top_patches.png`` (from ``X_train``)
    for a run's first convolution (depth first); returns the paths written."""
    import os

    from .change import first_conv_name

    written = []
    if history is not None and len(history["epochs"]) > 1:
        written.append(os.path.join(run_dir, "filters_evolution.png"))
        plot_filters_evolution(history, path=written[-1])
        written.append(os.path.join(run_dir, "filters_evolution.gif"))
        animate_filters_evolution(history, written[-1])
    layer = first_conv_name(model)
    if X_train is not None and len(X_train) and model.get_layer(layer).in_channels == 1:
        written.append(os.path.join(run_dir, "top_patches.png"))
        plot_top_patches(model, X_train, layer, path=written[-1])
    return written


__all__ = [
    "animate_filters_evolution",
    "plot_filters_change",
    "plot_filters_evolution",
    "plot_top_patches",
    "top_patches",
    "write_kernel_figures",
]
