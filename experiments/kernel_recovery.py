"""Experiment 1, kernel recovery: gradient descent finds a kernel that made the data.

Take images x and targets y = x cross-correlated with a known kernel K, plus a bias b (computed here
with plain NumPy, independently of minicnn). Train one randomly initialized Conv2D on the pairs (x, y)
with a mean-squared error. If learning works, the layer's kernel must become K and its bias b:
cosine similarity >= 0.999 and |bias - b| <= 0.01, for Sobel x, sharpen and a random kernel.

Run ``python experiments/kernel_recovery.py [--out DIR] [--steps N]``; writes ``kernel_recovery.png``
(the kernel at several moments of training beside the target, and the cosine similarity per step)
and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from minicnn.nn.layers import Conv2D
from minicnn.nn.losses import MSELoss
from minicnn.nn.optim import Adam, CosineLR
from minicnn.see.filters import cosine_similarity
from minicnn.see.filters import kernel as classic_kernel

COSINE_THRESHOLD, BIAS_TOLERANCE = 0.999, 0.01


def digit_images(n: int | None = None) -> np.ndarray:
    """scikit-learn digits in [0, 1], (N, 1, 8, 8) float64 (the first ``n``)."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:n] / 16.0
    return images[:, None].astype(np.float64)


def reference_correlate(images: np.ndarray, kernel: np.ndarray, bias: float) -> np.ndarray:
    """``bias + sum_{u,v} x[i+u, j+v] K[u, v]`` with zero padding that keeps the size (odd kernels).

    images : (N, 1, H, W); kernel : (kh, kw). Written with NumPy windows, not with minicnn, so the
    targets do not share a bug with the layer being trained.
    """
    kh, kw = kernel.shape
    padded = np.pad(images[:, 0], ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))
    return (np.einsum("nijuv,uv->nij", windows, kernel) + bias)[:, None]


def targets_named(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, float]]:
    """The three kernels to recover, with their biases: Sobel x, sharpen, and a random one."""
    return {
        "sobel x": (classic_kernel("sobel x"), 0.5),
        "sharpen": (classic_kernel("sharpen"), -0.25),
        "random": (rng.normal(0.0, 1.0, (3, 3)), float(rng.normal(0.0, 0.5))),
    }


def recover(
    kernel: np.ndarray,
    bias: float,
    images: np.ndarray,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 0.1,
    seed: int = 0,
) -> dict:
    """Train ``Conv2D(1, 1, 3, padding="same")`` with MSE to reproduce ``kernel`` and ``bias``.

    Returns a dict with ``kernels`` (steps + 1, kh, kw) and ``biases`` (steps + 1,) along training,
    ``losses`` (steps,), and the final ``cosine`` and ``bias_error``.
    """
    rng = np.random.default_rng(seed)
    targets = reference_correlate(images, kernel, bias)
    layer = Conv2D(1, 1, kernel.shape, padding="same", dtype=np.float64, rng=rng)
    loss_fn = MSELoss()
    optimizer = Adam(layer.parameters(), lr=lr)
    # a decaying rate lets Adam settle on the exact minimum instead of circling it
    schedule = CosineLR(optimizer, total=steps, min_factor=0.001)
    kernels, biases, losses = [layer.weight.data[0, 0].copy()], [float(layer.bias.data[0])], []
    for _ in range(steps):
        batch = rng.choice(len(images), size=min(batch_size, len(images)), replace=False)
        losses.append(loss_fn.forward(layer.forward(images[batch]), targets[batch]))
        optimizer.zero_grad()
        layer.backward(loss_fn.backward())
        optimizer.step()
        schedule.step()
        kernels.append(layer.weight.data[0, 0].copy())
        biases.append(float(layer.bias.data[0]))
    return {
        "kernels": np.array(kernels),
        "biases": np.array(biases),
        "losses": np.array(losses),
        "target": kernel,
        "target_bias": bias,
        "cosine": cosine_similarity(kernels[-1], kernel),
        "bias_error": abs(biases[-1] - bias),
    }


def run(n_images: int | None = 500, steps: int = 400, seed: int = 0) -> dict[str, dict]:
    """Recover each of :func:`targets_named`'s kernels; results by name."""
    images = digit_images(n_images)
    named = targets_named(np.random.default_rng(seed))
    return {
        name: recover(k, b, images, steps=steps, seed=seed + i)
        for i, (name, (k, b)) in enumerate(named.items())
    }


def plot(results: dict[str, dict], path=None):
    """Rows: one per kernel; columns: the kernel at a few steps, the target, and cosine per step."""
    from minicnn.see.plots import KERNEL_CMAP, new_figure, save, symmetric_limit

    steps = len(next(iter(results.values()))["losses"])
    moments = sorted({0, 5, 20, 60, steps // 4, steps})
    fig = new_figure(1.45 * (len(moments) + 1) + 3.6, 1.6 * len(results) + 0.6)
    grid = fig.add_gridspec(
        len(results), len(moments) + 3, width_ratios=[1] * (len(moments) + 1) + [0.12, 2.4]
    )
    for row, (name, r) in enumerate(results.items()):
        vmax = symmetric_limit(r["target"], r["kernels"])
        tiles = [(r["kernels"][t], f"step {t}") for t in moments] + [(r["target"], "target")]
        image = None
        for col, (values, title) in enumerate(tiles):
            ax = fig.add_subplot(grid[row, col])
            image = ax.imshow(values, cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8, fontweight="bold" if title == "target" else None)
            if col == 0:
                ax.set_ylabel(name, fontsize=10)
        fig.colorbar(image, cax=fig.add_subplot(grid[row, len(tiles)]))
        ax = fig.add_subplot(grid[row, len(tiles) + 1])
        # 1 - cosine on a log scale: the distance from a perfect match, visible down to 1e-10
        gaps = [max(1.0 - cosine_similarity(k, r["target"]), 1e-12) for k in r["kernels"]]
        ax.semilogy(np.arange(len(gaps)), gaps, lw=1.2, label="1 - cosine")
        ax.axhline(1 - COSINE_THRESHOLD, color="gray", ls=":", lw=1, label="threshold (cosine 0.999)")
        ax.set_ylabel("1 - cosine to target", fontsize=8)
        if row == 0:
            ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_title(f"final cosine {r['cosine']:.6f}, |bias error| {r['bias_error']:.1e}", fontsize=8)
        if row == len(results) - 1:
            ax.set_xlabel("training step", fontsize=8)
    fig.suptitle(
        "Kernel recovery: one Conv2D trained with MSE on pairs (image, image cross-correlated with "
        "the target kernel + bias)",
        fontsize=11,
    )
    return save(fig, path)


def table(results: dict[str, dict]) -> str:
    lines = [
        "| kernel | cosine similarity | 1 - cosine | bias (target) | bias (learned) | passes |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ok = r["cosine"] >= COSINE_THRESHOLD and r["bias_error"] <= BIAS_TOLERANCE
        lines.append(
            f"| {name} | {r['cosine']:.6f} | {1 - r['cosine']:.1e} | {r['target_bias']:.4f} | "
            f"{r['biases'][-1]:.4f} | {'yes' if ok else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/experiments", help="folder for kernel_recovery.png")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = run(steps=args.steps, seed=args.seed)
    print(table(results))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "kernel_recovery.png")
    plot(results, path=path)
    print(f"wrote {path}")
    return (
        0
        if all(
            r["cosine"] >= COSINE_THRESHOLD and r["bias_error"] <= BIAS_TOLERANCE for r in results.values()
        )
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
