"""The classic filters, applied by minicnn's own Conv2D to a digit and to a photo: one gallery figure.

Run ``python -m minicnn.gallery [--out DIR]``; it writes ``DIR/gallery.png`` (default: the current
folder). Each column is one filter: its kernel with the weights written in, then the digit and
the photo after a :class:`~minicnn.nn.layers.Conv2D` whose weights were set to that kernel by hand
(:func:`minicnn.see.filters.conv_from_kernel`). The photo is ``china.jpg``, which ships with
scikit-learn (``sklearn.datasets.load_sample_image``), downscaled and cropped.

Filters whose weights sum to 1 (blurs, sharpen, emboss, ...) keep the brightness and are shown as
images. Filters whose weights sum to 0 (edge and gradient detectors) answer with signed values,
shown on the feature-map colour scale: red positive, blue negative, white 0. Those run on the
photo's gray version, as one feature map.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ..errors import one_line_errors
from . import filters as kernels
from .plots import IMAGE_CMAP, KERNEL_CMAP, new_figure, save, symmetric_limit

#: The gallery's filters, in order; "invert" and "sepia" are the 1x1 per-pixel effects.
GALLERY = (
    "identity",
    "box blur",
    "gaussian blur",
    "sharpen",
    "edge enhance",
    "emboss",
    "invert",
    "sepia",
    "edge detect",
    "laplacian",
    "sobel x",
    "sobel y",
    "prewitt x",
    "prewitt y",
)


def load_digit(index: int = 0) -> np.ndarray:
    """A scikit-learn digit scaled to [0, 1], (8, 8) float64 (ink is 1)."""
    from sklearn.datasets import load_digits

    return load_digits().images[index] / 16.0


def load_photo(factor: int = 2, crop=(slice(40, 170), slice(70, 250))) -> np.ndarray:
    """scikit-learn's ``china.jpg`` in [0, 1], downscaled by averaging ``factor`` x ``factor`` blocks
    and cropped to the temple: (130, 180, 3) float64 with the defaults."""
    from sklearn.datasets import load_sample_image

    photo = load_sample_image("china.jpg").astype(np.float64) / 255.0
    h, w = (photo.shape[0] // factor) * factor, (photo.shape[1] // factor) * factor
    small = photo[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))
    return small[crop]


def gray(image: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R 601 weights) of an RGB image (H, W, 3); a gray image is returned as is."""
    return image @ np.array([0.299, 0.587, 0.114]) if image.ndim == 3 else image


def filtered(name: str, image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Apply the named filter with Conv2D. Returns ``(result, signed)``; ``signed`` for zero-sum kernels,
    whose answer is a signed feature map of the gray image rather than a picture."""
    if name == "invert":
        layer = kernels.invert_conv(channels=1 if image.ndim == 2 else image.shape[2])
        x = image[None, None] if image.ndim == 2 else image.transpose(2, 0, 1)[None]
        out = layer.forward(x)[0]
        return (out[0] if image.ndim == 2 else out.transpose(1, 2, 0)), False
    if name == "sepia":
        out = kernels.sepia_conv().forward(image.transpose(2, 0, 1)[None])[0]
        return out.transpose(1, 2, 0), False
    values = kernels.kernel(name)
    if abs(values.sum()) < 1e-12:
        return kernels.apply(values, gray(image)), True
    return kernels.apply(values, image), False


def _draw_kernel(ax, name: str) -> None:
    if name == "invert":
        values, note = np.array([[-1.0]]), "1x1: weight -1, bias +1"
    elif name == "sepia":
        values, note = kernels.SEPIA, "1x1 across R,G,B (out x in)"
    else:
        values, note = kernels.kernel(name), "3x3 kernel"
    vmax = symmetric_limit(values)
    ax.imshow(values, cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
    for (r, c), v in np.ndenumerate(values):
        text = f"{v:.2f}".lstrip("0").replace("-0.", "-.") if v != round(v) else f"{int(v)}"
        ax.text(
            c,
            r,
            text,
            ha="center",
            va="center",
            fontsize=8 if values.size > 1 else 11,
            color="white" if abs(v) > 0.6 * vmax else "black",
        )
    ax.set_title(name, fontsize=10, fontweight="bold")
    ax.set_xlabel(note, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_result(ax, result: np.ndarray, signed: bool, is_digit: bool) -> None:
    if signed:
        # the 99th percentile, not the maximum: a few extreme pixels (the zero-padded border of the
        # photo) would otherwise wash every edge out to white
        vmax = float(np.percentile(np.abs(result), 99)) or symmetric_limit(result)
        ax.imshow(result, cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
    elif result.ndim == 2:
        # digits are ink-high: show them ink-dark like every digit in minicnn; photos as they are
        ax.imshow(np.clip(result, 0, 1), cmap=IMAGE_CMAP if is_digit else "gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(result, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def plot_gallery(
    digit: np.ndarray | None = None,
    photo: np.ndarray | None = None,
    names=GALLERY,
    columns: int = 7,
    path=None,
):
    """The gallery Figure: for each filter, its kernel, the filtered digit and the filtered photo.

    digit : (H, W) in [0, 1]; photo : (H, W, 3) in [0, 1]
        Defaults from :func:`load_digit`, :func:`load_photo`.
    Returns a Figure with 3 Axes per filter.
    """
    digit = load_digit() if digit is None else np.asarray(digit, dtype=np.float64)
    photo = load_photo() if photo is None else np.asarray(photo, dtype=np.float64)
    names = list(names)
    blocks = -(-len(names) // columns)
    fig = new_figure(1.7 * columns, 4.6 * blocks + 0.4)
    grid = fig.add_gridspec(3 * blocks, columns, height_ratios=[1.0, 1.0, 1.1] * blocks)
    for k, name in enumerate(names):
        block, col = divmod(k, columns)
        ax_kernel, ax_digit, ax_photo = (fig.add_subplot(grid[3 * block + r, col]) for r in range(3))
        _draw_kernel(ax_kernel, name)
        if name == "sepia":  # sepia mixes R, G and B: a gray digit has no colours to mix
            ax_digit.text(
                0.5, 0.5, "needs RGB", ha="center", va="center", fontsize=8, transform=ax_digit.transAxes
            )
            ax_digit.set_xticks([])
            ax_digit.set_yticks([])
        else:
            _draw_result(ax_digit, *filtered(name, digit), is_digit=True)
        _draw_result(ax_photo, *filtered(name, photo), is_digit=False)
        if col == 0:
            ax_digit.set_ylabel("digit", fontsize=9)
            ax_photo.set_ylabel("photo", fontsize=9)
    fig.suptitle(
        "Classic filters applied by minicnn's Conv2D (weights set by hand). Zero-sum kernels: "
        "signed response, red > 0 > blue",
        fontsize=11,
    )
    fig.supxlabel(
        "Colour scales: each kernel its own, symmetric about 0; zero-sum responses up to their "
        "99th percentile of |value|. Photo: scikit-learn's china.jpg.",
        fontsize=8,
    )
    return save(fig, path)


@one_line_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minicnn.gallery", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".", help="folder for gallery.png (default: current folder)")
    args = parser.parse_args(argv)
    path = os.path.join(args.out, "gallery.png")
    plot_gallery(path=path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
