"""What the model looks at: saliency, occlusion, and per-class mean feature maps.

- :func:`saliency`: the gradient of the predicted class's score (its logit) with respect to the input
  pixels, from the layers' own exact backward passes (``model.backward(grad, need_input_grad=True)``
  in eval mode). A large value: changing that pixel changes the score most (Simonyan et al. 2014).
- :func:`occlusion`: slide a blank square over the image and record how much the predicted class's
  probability drops (Zeiler and Fergus 2014). No gradients: it asks the model directly.
- :func:`class_mean_maps`: a layer's feature maps averaged over the images of each class.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..nn.functional import softmax
from ..nn.layers import BatchNorm2D, LeakyReLU, ReLU, Sigmoid, Tanh
from .layout import MAX_PANELS, Sheet, fit, image_panel
from .plots import (
    IMAGE_CMAP,
    KERNEL_CMAP,
    LABEL_SIZE,
    FigureStep,
    as_batch,
    as_image,
    conv_layers,
    feature_maps,
    frame_tiles,
    layers_after,
    maps_on_input,
    mosaic,
    run_steps,
    save,
    show_pixels,
    stretched,
    symmetric_limit,
    tiled_sheet,
)

#: The layers :func:`conv_activation_layers` counts as a convolution's activation.
ACTIVATIONS = (ReLU, LeakyReLU, Tanh, Sigmoid)


def saliency(model, X: np.ndarray, target=None) -> tuple[np.ndarray, np.ndarray]:
    """d score[target] / d input for each image, through the model's exact backward pass in eval mode.

    Parameters
    ----------
    model : Sequential
    X : ndarray of shape (N, C, H, W)
    target : ndarray of shape (N,) of class indices, optional; default the predicted class

    Returns
    -------
    (gradient, target) : ndarray (N, C, H, W) float64, and the (N,) classes used.
    Parameter gradients accumulated on the way are cleared again.
    """
    x = as_batch(model, X)
    with model.evaluating():
        logits = model.forward(x)
        target = logits.argmax(axis=1) if target is None else np.asarray(target)
        grad = np.zeros_like(logits)
        grad[np.arange(len(x)), target] = 1.0
        gradient = model.backward(grad, need_input_grad=True)
    model.zero_grad()
    return gradient.astype(np.float64), target


def occlusion(model, image: np.ndarray, blank, size: int = 2, target: int | None = None) -> np.ndarray:
    """Drop in the probability of ``target`` when a blank ``size`` x ``size`` square covers each place.

    Parameters
    ----------
    image : ndarray of shape (C, H, W)
    blank : float or ndarray of shape (C,): the value of an empty pixel as the model sees it
        (after standardization: ``-mean / std``)
    size : side of the square; it is slid with stride 1
    target : class (default the predicted one)

    Returns
    -------
    ndarray of shape (H - size + 1, W - size + 1): entry (i, j) is ``p(image) - p(image with the
    square at rows i..i+size-1, columns j..j+size-1 blanked)``; positive where the square hurt.
    """
    x = as_batch(model, image)[:1]
    h, w = x.shape[2:]
    fill = np.broadcast_to(np.asarray(blank, dtype=x.dtype).reshape(-1, 1, 1), (x.shape[1], size, size))
    covered = np.repeat(x, (h - size + 1) * (w - size + 1), axis=0)
    for n, (i, j) in enumerate(np.ndindex(h - size + 1, w - size + 1)):
        covered[n, :, i : i + size, j : j + size] = fill
    probability = model.predict_proba(np.concatenate([x, covered]))
    target = int(probability[0].argmax()) if target is None else int(target)
    return (probability[0, target] - probability[1:, target]).reshape(h - size + 1, w - size + 1)


#: Inches an image takes in :func:`plot_saliency`.
SALIENCY_INCHES = 1.2


def plot_saliency(model, X: np.ndarray, y: np.ndarray, blank, count: int = 6, path=None) -> Figure:
    """A few test digits (columns): the image, its saliency and its occlusion map (rows).

    The saliency row shows the signed gradient (red: more ink there raises the predicted class's
    score); the occlusion row the drop in that class's probability when a blank 2x2 square covers the
    spot, drawn at the square's centre. ``X`` (N, 1, H, W), ``y`` (N,), ``blank`` as for :func:`occlusion`.
    Returns a Figure of three tiled images (:func:`~.plots.mosaic`), in the Axes labelled ``"images"``
    (each titled with its label, prediction and probability), ``"saliency"`` (the gradient on the first
    input channel) and ``"occlusion"`` (on a grid twice as fine, :func:`~.plots.maps_on_input`).
    """
    x = as_batch(model, X[:count])
    gradient, predicted = saliency(model, x)
    probability = softmax(model.predict_logits(x).astype(np.float64))
    maps = [occlusion(model, x[i], blank, 2, int(predicted[i])) for i in range(len(x))]
    h, w = x.shape[2:]
    images = np.stack([stretched(as_image(image)) for image in x])  # as show_image draws them
    # square (i, j) covers pixels i..i+1, j..j+1: its centre (i + .5, j + .5), on a grid twice as fine
    occluded = maps_on_input(np.stack(maps), (0.5, 1.0), (h, w))
    rows = {
        "images": mosaic(images[None], 1),
        "saliency": mosaic(gradient[None, :, 0], 1),
        "occlusion": mosaic(occluded[None], 2),
    }
    # three rows h pixels tall: the occlusion's 2h pixels are drawn at half the size
    pixel = fit(SALIENCY_INCHES / w, rows["images"].shape[1], 3 * h)
    sheet = Sheet(
        [
            [image_panel(image.shape, pixel / (2 if name == "occlusion" else 1), name)]
            for name, image in rows.items()
        ]
    )
    axes = dict(zip(rows, sheet.axes[:, 0]))
    gray = images.ndim == 3
    shown = show_pixels(axes["images"], rows["images"], cmap=IMAGE_CMAP if gray else None, vmin=0, vmax=1)
    g_max, o_max = symmetric_limit(gradient), symmetric_limit(*maps)
    g_image = show_pixels(axes["saliency"], rows["saliency"], cmap=KERNEL_CMAP, vmin=-g_max, vmax=g_max)
    o_image = show_pixels(axes["occlusion"], rows["occlusion"], cmap=KERNEL_CMAP, vmin=-o_max, vmax=o_max)
    titles = [f"label {y[i]}, pred {predicted[i]}\np = {probability[i].max():.2f}" for i in range(len(x))]
    frame_tiles(axes["images"], (1, len(x), h, w), None, titles)
    frame_tiles(axes["saliency"], (1, len(x), h, w), None, None)
    frame_tiles(axes["occlusion"], (1, len(x), 2 * h, 2 * w), None, None, 2)
    axes["images"].set_ylabel("test image", fontsize=LABEL_SIZE)
    axes["saliency"].set_ylabel("saliency\nd score / d pixel", fontsize=LABEL_SIZE)
    axes["occlusion"].set_ylabel("occlusion\ndrop in p", fontsize=LABEL_SIZE)
    sheet.colorbar(g_image, axes["saliency"], label="gradient")
    sheet.colorbar(o_image, axes["occlusion"], label="probability drop")
    if gray:  # colour images have no scale
        sheet.colorbar(shown, axes["images"], label="pixel (ink dark)")
    heading = (
        "Where the prediction comes from: gradient of the predicted score (exact backward pass)\n"
        "and the drop in its probability when a blank 2x2 square covers each place"
    )
    return save(sheet.finish(heading, 10), path)


def class_mean_maps(model, X: np.ndarray, y: np.ndarray, layer: int | str) -> tuple[np.ndarray, np.ndarray]:
    """Feature maps after the layer ``layer`` (an index into ``model.layers`` or a dotted name) averaged
    per class.

    Returns ``(classes, means)``: the sorted classes (K,) and ndarray (K, C, H_out, W_out).
    """
    y = np.asarray(y)
    classes = np.unique(y)
    batch = 128  # per-class sums batch by batch: no copy of every map at once
    sums = None  # then (K, C, H_out, W_out), float64
    for start in range(0, len(X), batch):
        maps = feature_maps(model, X[start : start + batch], layer)
        if maps.ndim != 4:
            raise ValueError(
                f"class_mean_maps: layer {layer} outputs shape {maps.shape[1:]}, not feature maps"
            )
        one_hot = (y[start : start + batch, None] == classes).astype(maps.dtype)  # (n, K)
        part = (one_hot.T @ maps.reshape(len(maps), -1)).reshape(len(classes), *maps.shape[1:])
        sums = part.astype(np.float64) if sums is None else sums + part  # each class's sum
        del maps  # before the next batch's maps exist
    if sums is None:
        raise ValueError("class_mean_maps: no images")
    counts = np.array([np.sum(y == c) for c in classes], dtype=np.float64)
    return classes, sums / counts[:, None, None, None]


def plot_class_mean_maps(
    model, X: np.ndarray, y: np.ndarray, layer: int | str, max_channels: int = 8, path=None
) -> Figure:
    """Per class (rows), the mean feature map of each channel (columns) after the layer ``layer``.

    A layer with more than ``max_channels`` channels shows those whose class means differ most
    (largest variance across classes). Left, the class's mean input image.

    Two images of tiles, one pixel apart (NaN between them; between the inputs' rows, as many as
    make their rows line up with the maps'): the Axes labelled ``"inputs"`` holds the mean inputs, one
    tile per row, each stretched to [0, 1] as :func:`~.plots.show_image` would draw it;
    the one labelled ``"maps"`` the (classes, channels shown) grid of mean maps on one colour scale
    (:func:`~.plots.mosaic`). One image instead of a 90-tile grid of Axes: 0.2 s to draw instead of 2.5 s.
    """
    classes, means = class_mean_maps(model, X, y, layer)
    spread = means.reshape(len(classes), means.shape[1], -1).var(axis=0).sum(axis=1)
    channels = np.sort(np.argsort(-spread)[:max_channels])
    _, inputs = class_mean_maps_input(X, y)
    shown = means[:, channels]
    low, high = min(0.0, float(shown.min())), max(float(shown.max()), 1e-12)
    images = np.stack([stretched(as_image(image)) for image in inputs])[:, None]
    # the rows line up (tiled_sheet): gaps in proportion to the tiles' heights (the maps may be
    # smaller than the inputs)
    gap_in = max(1, round(images.shape[2] / shown.shape[2]))
    tiled = {"inputs": mosaic(images, (gap_in, 1)), "maps": mosaic(shown)}
    sheet = tiled_sheet(tiled, min(0.8 * len(classes), MAX_PANELS[1]))
    ax_in, ax_maps = sheet.axes[0]
    gray = images.ndim == 4
    show_pixels(ax_in, tiled["inputs"], cmap=IMAGE_CMAP if gray else None, vmin=0, vmax=1)
    frame_tiles(ax_in, images.shape, [f"class {c}" for c in classes], None, (gap_in, 1))
    image = show_pixels(
        ax_maps,
        tiled["maps"],
        cmap="magma" if low >= 0 else KERNEL_CMAP,
        vmin=low if low >= 0 else -max(high, -low),
        vmax=max(high, -low),
    )
    frame_tiles(ax_maps, shown.shape, None, [f"ch {channel}" for channel in channels])
    sheet.colorbar(image, ax_maps, shrink=0.6, label="mean activation")
    name = type(model.get_layer(layer)).__name__
    subset = (
        ""
        if len(channels) == means.shape[1]
        else f"\n{len(channels)} of {means.shape[1]} channels: those whose class means differ most "
        "(largest variance across classes)"
    )
    heading = f"Mean feature maps per class after layer {layer} ({name}, {means.shape[2]}x{means.shape[3]})"
    return save(sheet.finish(heading + subset, 10), path)


def class_mean_maps_input(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean input image per class: ``(classes (K,), means (K, C, H, W))``."""
    y = np.asarray(y)
    classes = np.unique(y)
    return classes, np.stack([np.asarray(X)[y == c].mean(axis=0, dtype=np.float64) for c in classes])


def conv_activation_layers(model) -> tuple[str, str]:
    """The layers whose outputs :func:`write_saliency_figures` averages per class: the activation after the
    first and after the last convolution, depth first (the convolution itself when no activation
    follows it directly in the Sequential that holds it)."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError("the model has no convolution layer")

    def after(name: str) -> str:
        for later, layer in layers_after(model, name):
            if isinstance(layer, ACTIVATIONS):
                return later
            if not isinstance(layer, BatchNorm2D):
                break
        return name

    return after(convs[0]), after(convs[-1])


def write_saliency_figures(run_dir, model, X_test, y_test, blank) -> list[str]:
    """``saliency.png``, ``class_maps_first.png`` and ``class_maps_last.png`` for a run; returns the paths."""
    return run_steps(saliency_figure_steps(run_dir, model, X_test, y_test, blank))


def saliency_figure_steps(run_dir, model, X_test, y_test, blank) -> list[FigureStep]:
    """:func:`write_saliency_figures`'s figures as named steps, not yet drawn."""
    import os

    def target(name):
        return os.path.join(run_dir, name)

    def draw_saliency():
        plot_saliency(model, X_test, y_test, blank, path=target("saliency.png"))
        return [target("saliency.png")]

    def class_maps(name, layer):
        def draw():
            plot_class_mean_maps(model, X_test, y_test, layer, path=target(name))
            return [target(name)]

        return name, draw

    first, last = conv_activation_layers(model)
    return [
        ("saliency.png", draw_saliency),
        class_maps("class_maps_first.png", first),
        class_maps("class_maps_last.png", last),
    ]


__all__ = [
    "class_mean_maps",
    "class_mean_maps_input",
    "conv_activation_layers",
    "occlusion",
    "plot_class_mean_maps",
    "plot_saliency",
    "saliency",
    "write_saliency_figures",
    "saliency_figure_steps",
]
