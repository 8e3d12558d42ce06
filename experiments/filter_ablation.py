"""Experiment 3, useful if unreadable: zero each first-layer filter in turn and measure the damage.

Learned kernels rarely look like a Sobel or a blur, but that does not make them noise. For each
filter of the first Conv2D of a trained digits network, set its kernel and bias to zero (the feature
map it fed to the next layer becomes constant), measure the test accuracy, and put the filter back.
The drop in accuracy is that filter's contribution on its own; its cosine similarity to the nearest
classic kernel says how readable it is, but only where that cosine beats 95% of random kernels of
the same shape (:func:`minicnn.see.filters.classic_match`); below that it says "no classic match".

Run ``python experiments/filter_ablation.py [--run RUN_DIR | --config PATH] [--out DIR]``: with
``--run``, the model of a finished ``train.py`` run and its test split; otherwise a model trained now
from the config (default ``configs/digits.toml``). Writes ``filter_ablation.png`` (a bar chart) and
prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from minicnn.nn.layers import Conv2D
from minicnn.see.filters import classic_match, match_label

REPO = Path(__file__).resolve().parent.parent


def first_conv(model) -> Conv2D:
    found = model.find_layers(Conv2D)
    if not found:
        raise ValueError("the model has no Conv2D layer")
    return found[0][1]


def accuracy(model, X, y) -> float:
    return float(np.mean(model.predict(X) == y))


def ablate(model, X, y, layer: Conv2D | None = None) -> dict:
    """Test accuracy with each filter of ``layer`` (default the first Conv2D) zeroed in turn.

    The weights are restored after each measurement (and checked to be). Returns ``baseline``,
    ``accuracies`` (one per filter) and ``drops`` (baseline - accuracy, per filter).
    """
    layer = first_conv(model) if layer is None else layer
    baseline = accuracy(model, X, y)
    saved_weight = layer.weight.data.copy()
    saved_bias = None if layer.bias is None else layer.bias.data.copy()
    accuracies = []
    try:
        for k in range(layer.out_channels):
            layer.weight.data[k] = 0.0
            if layer.bias is not None:
                layer.bias.data[k] = 0.0
            accuracies.append(accuracy(model, X, y))
            layer.weight.data[k] = saved_weight[k]
            if layer.bias is not None:
                layer.bias.data[k] = saved_bias[k]
    finally:
        layer.weight.data[...] = saved_weight
        if saved_bias is not None:
            layer.bias.data[...] = saved_bias
    accuracies = np.array(accuracies)
    return {"baseline": baseline, "accuracies": accuracies, "drops": baseline - accuracies}


def trained_model(config_path, seed: int = 0, overrides=()):
    """Train the config's model with the one training loop; return (model, X_test, y_test)."""
    from minicnn.train import prepare
    from minicnn.train.config import load_config, replace

    cfg = replace(load_config(config_path, overrides), seed=seed)
    dataset, model, trainer = prepare(cfg)
    trainer.fit(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, progress=False)
    return model, dataset.X_test, dataset.y_test


def from_run(run_dir):
    """The model of a finished run and the test split it was scored on."""
    from minicnn.nn.model import Sequential
    from minicnn.see.inspect import load_test_split

    X_test, y_test = load_test_split(run_dir)
    return Sequential.load(os.path.join(run_dir, "model.npz")), X_test, y_test


def plot(result: dict, weights: np.ndarray, n_test: int, path=None):
    """Bars: accuracy drop per filter (percentage points). Below: the most important kernels."""
    from matplotlib.patches import Patch

    from minicnn.see.plots import KERNEL_CMAP, new_figure, save, symmetric_limit

    drops = 100 * result["drops"]
    order = np.argsort(-drops)
    top = order[:8]
    fig = new_figure(max(7.0, 0.28 * len(drops) + 1.5), 5.2)
    grid = fig.add_gridspec(2, len(top), height_ratios=[2.3, 1.0])
    ax = fig.add_subplot(grid[0, :])
    colors = ["tab:red" if k in top else "tab:gray" for k in range(len(drops))]
    ax.bar(np.arange(len(drops)), drops, color=colors)
    ax.legend(
        handles=[
            Patch(color="tab:red", label=f"the {len(top)} largest drops (kernels drawn below)"),
            Patch(color="tab:gray", label="the other filters"),
        ],
        fontsize=8,
        loc="upper right",
    )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(drops)), [str(k) for k in range(len(drops))], fontsize=7)
    ax.set_xlabel("first-layer filter zeroed")
    ax.set_ylabel("test accuracy drop\n(percentage points)")
    ax.set_title(
        f"Zeroing one first-layer filter at a time (baseline test accuracy "
        f"{result['baseline']:.4f}; one image = {100 / n_test:.2f} points)",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    vmax = symmetric_limit(weights[top, 0])
    for col, k in enumerate(top):
        tile = fig.add_subplot(grid[1, col])
        image = tile.imshow(weights[k, 0], cmap=KERNEL_CMAP, vmin=-vmax, vmax=vmax)
        tile.set_xticks([])
        tile.set_yticks([])
        tile.set_title(f"filter {k}: -{drops[k]:.1f}", fontsize=9)
        tile.set_xlabel(short_match(classic_match(weights[k, 0])), fontsize=8)
    fig.colorbar(image, ax=fig.axes[1:], shrink=0.8, label="weight")
    return save(fig, path)


def short_match(match: dict) -> str:
    """Two short lines for a tile: the classic name only when above the 95th percentile of random kernels."""
    if not match["meaningful"]:
        return f"no classic match\n(cos {match['cosine']:.2f}, {np.floor(match['percentile']):.0f}th pct)"
    return f"like {match['name']}\ncos {match['cosine']:.2f}, {np.floor(match['percentile']):.0f}th pct"


def table(result: dict, weights: np.ndarray) -> str:
    lines = [
        "| filter | test accuracy without it | drop (points) | nearest classic filter |",
        "|---|---|---|---|",
    ]
    for k in np.argsort(-result["drops"]):
        lines.append(
            f"| {k} | {result['accuracies'][k]:.4f} | {100 * result['drops'][k]:.2f} | "
            f"{match_label(classic_match(weights[k, 0]))} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="a run directory written by train.py")
    source.add_argument("--config", default=str(REPO / "configs" / "digits.toml"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/experiments")
    args = parser.parse_args(argv)
    model, X_test, y_test = from_run(args.run) if args.run else trained_model(args.config, args.seed)
    result = ablate(model, X_test, y_test)
    weights = first_conv(model).weight.data
    print(f"baseline test accuracy {result['baseline']:.4f} on {len(y_test)} images")
    print(table(result, weights))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "filter_ablation.png")
    plot(result, weights, len(y_test), path=path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
