"""Experiment 4, stride and size: one digit's feature maps at stride 1, 2 and 3.

A Conv2D with a 3x3 kernel (Sobel x) and padding 1 slides over an 8x8 digit. Its output size follows
``H_out = floor((H + 2p - k) / s) + 1``: 8, 4 and 3 for strides 1, 2 and 3. A stride-s map is
exactly the stride-1 map sampled at every s-th row and column, so what a stride loses is the
responses in between: 75% of them at stride 2, 86% at stride 3. The figure shows which ones survive.

Run ``python experiments/stride.py [--out DIR]``; writes ``stride.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from minicnn.nn.functional import conv_output_size
from minicnn.nn.layers import Conv2D
from minicnn.see.filters import kernel as classic_kernel

STRIDES = (1, 2, 3)


def digit(index: int = 0) -> np.ndarray:
    """A scikit-learn digit in [0, 1], (1, 1, 8, 8) float64."""
    from sklearn.datasets import load_digits

    return (load_digits().images[index] / 16.0)[None, None]


def strided_maps(image: np.ndarray, kernel: np.ndarray, strides=STRIDES, padding: int = 1) -> list[dict]:
    """For each stride: the feature map from minicnn's Conv2D and its size from the formula.

    image : (1, 1, H, W); kernel : (k, k). Returns dicts with ``stride``, ``map`` (H_out, W_out),
    ``formula_size`` (from :func:`conv_output_size`), ``kept`` (fraction of the stride-1 responses
    the map keeps) and ``formula`` (the size computation as text).
    """
    k = kernel.shape[0]
    h = image.shape[2]
    results = []
    for s in strides:
        layer = Conv2D(1, 1, k, stride=s, padding=padding, dtype=np.float64, rng=0)
        layer.weight.data[0, 0] = kernel
        layer.bias.data[...] = 0.0
        feature_map = layer.forward(image)[0, 0]
        size = conv_output_size(h, k, s, 2 * padding)
        results.append(
            {
                "stride": s,
                "map": feature_map,
                "formula_size": size,
                "kept": feature_map.size / conv_output_size(h, k, 1, 2 * padding) ** 2,
                "formula": f"floor(({h} + 2*{padding} - {k}) / {s}) + 1 = {size}",
            }
        )
    return results


def plot(image: np.ndarray, kernel: np.ndarray, results: list[dict], path=None):
    """Top row: the digit and each stride's map at its own resolution. Bottom row: the kernel and the
    stride-1 map with the positions each stride keeps outlined and the others faded."""
    from matplotlib.patches import Rectangle

    from minicnn.see.plots import KERNEL_CMAP, new_figure, save, show_image, symmetric_limit

    full = results[0]["map"]
    vmax = symmetric_limit(full)
    fig = new_figure(2.2 * (len(results) + 1) + 0.8, 5.0)
    axes = fig.subplots(2, len(results) + 1)
    show_image(axes[0, 0], image[0, 0], title=f"input {image.shape[2]}x{image.shape[3]}")
    kvmax = symmetric_limit(kernel)
    axes[1, 0].imshow(kernel, cmap=KERNEL_CMAP, vmin=-kvmax, vmax=kvmax)
    for (r, c), v in np.ndenumerate(kernel):
        axes[1, 0].text(c, r, f"{v:g}", ha="center", va="center", fontsize=9)
    axes[1, 0].set_title("kernel: Sobel x, padding 1", fontsize=9)
    axes[1, 0].set_xticks([])
    axes[1, 0].set_yticks([])
    artist = None
    for col, r in enumerate(results, start=1):
        s, feature_map = r["stride"], r["map"]
        ax = axes[0, col]
        artist = ax.imshow(feature_map, cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
        ax.set_title(f"stride {s}: {feature_map.shape[0]}x{feature_map.shape[1]}\n{r['formula']}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax = axes[1, col]
        keep = np.zeros(full.shape, dtype=bool)
        keep[::s, ::s] = True
        ax.imshow(full, cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
        # fade the responses this stride never computes
        ax.imshow(np.where(keep, np.nan, 1.0), cmap="gray", vmin=0, vmax=1, alpha=0.75)
        for i, j in zip(*np.nonzero(keep)):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2, ec="k"))
        ax.set_title(f"stride {s} keeps {keep.sum()} of {keep.size} ({100 * r['kept']:.0f}%)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(artist, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="response")
    fig.suptitle(
        "Stride: a stride-s map is the stride-1 map sampled every s pixels (bottom: outlined cells survive)",
        fontsize=10,
    )
    return save(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/experiments", help="folder for stride.png")
    parser.add_argument("--index", type=int, default=0, help="which digit")
    args = parser.parse_args(argv)
    image, kernel = digit(args.index), classic_kernel("sobel x")
    results = strided_maps(image, kernel)
    print("| stride | output size (formula) | output size (Conv2D) | responses kept |")
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {r['stride']} | {r['formula']} | {r['map'].shape[0]}x{r['map'].shape[1]} | "
            f"{100 * r['kept']:.0f}% |"
        )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "stride.png")
    plot(image, kernel, results, path=path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
