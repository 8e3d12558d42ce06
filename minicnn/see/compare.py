"""Compare finished runs: ``python -m minicnn.compare RUN [RUN ...] [--out DIR]`` (also ``minicnn-compare``).

Prints one row per run (test accuracy, epochs, training time, the median angle its first-layer
kernels turned from initialization) and the config keys whose values differ between the runs, and
draws their training histories overlaid (loss and accuracy, train and validation) into
``DIR/compare_history.png``, with the table in ``DIR/compare.txt`` (default ``DIR``: ``./compare``).

A run is a directory written by ``python train.py`` that finished: its ``metrics.json`` holds a test
accuracy (and ``config.toml`` its settings). Anything else exits 2 with one line saying what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import one_line_errors
from ..io import show_path, write_text_atomic


class NotARunError(ValueError):
    """A folder given to compare is not a finished run directory."""


def load_summary(run_dir) -> dict:
    """A finished run's ``name``, ``test_accuracy``, ``epochs``, ``train_seconds``, ``median_angle`` (degrees,
    NaN without ``init.npz``), ``history`` (one dict per epoch) and ``config`` (:func:`flat_config`)."""
    from ..train.config import flat_config, load_config
    from .change import run_kernel_change

    path = Path(run_dir)
    if not path.is_dir():
        raise NotARunError(f"{show_path(path)} is not a directory; expected a run directory of train.py")
    metrics_path, config_path = path / "metrics.json", path / "config.toml"
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError):
        metrics = None
    if not isinstance(metrics, dict) or "test_accuracy" not in metrics or not config_path.is_file():
        missing = (
            "config.toml" if isinstance(metrics, dict) and "test_accuracy" in metrics else "metrics.json"
        )
        raise NotARunError(
            f"{show_path(path)} is not a finished run: it has no {missing}"
            f"{' with a test accuracy' if missing == 'metrics.json' else ''}; train it to the end "
            f"(python train.py --resume {show_path(path)}) or name another folder"
        )
    angle = float("nan")
    if (path / "init.npz").is_file() and (path / "model.npz").is_file():
        angle = float(np.nanmedian(run_kernel_change(path)["angles"]))
    history = metrics.get("history") or []
    return {
        "name": str(run_dir),
        "test_accuracy": float(metrics["test_accuracy"]),
        "epochs": int(metrics.get("epochs_run", len(history))),
        "train_seconds": float(metrics.get("train_seconds", sum(r.get("seconds", 0) for r in history))),
        "median_angle": angle,
        "history": history,
        "config": flat_config(load_config(config_path)),
    }


def differing_keys(summaries: list[dict]) -> list[str]:
    """The config keys (``train.lr``, ``model.layers[0].out_channels``) whose values are not the same in
    every run, a key that only some runs have included; sorted. When the runs' layers differ in number
    or type, the layer keys become one, ``model.layers`` (:func:`layers_summary`)."""
    keys = set().union(*(s["config"] for s in summaries))
    differ = sorted(k for k in keys if len({repr(s["config"].get(k, "-")) for s in summaries}) > 1)
    if len({tuple(_layer_types(s["config"])) for s in summaries}) > 1:
        differ = ["model.layers"] + [k for k in differ if not k.startswith("model.layers[")]
    return differ


def _layer_types(config: dict) -> list[str]:
    count = 0
    while f"model.layers[{count}].type" in config:
        count += 1
    return [config[f"model.layers[{i}].type"] for i in range(count)]


def layers_summary(config: dict) -> str:
    """A run's layers in a few words: ``"16 layers, Conv2D 4-32-64-64"`` (the convolutions' channels)."""
    types = _layer_types(config)
    channels = [
        str(config.get(f"model.layers[{i}].out_channels", "?")) for i, t in enumerate(types) if t == "Conv2D"
    ]
    return f"{len(types)} layers, Conv2D {'-'.join(channels) or 'none'}"


def _setting(summary: dict, key: str) -> str:
    return (
        layers_summary(summary["config"]) if key == "model.layers" else str(summary["config"].get(key, "-"))
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_comparison(summaries: list[dict]) -> str:
    """The results table, then the config keys that differ (one row per key, one column per run)."""
    rows = [
        [
            s["name"],
            f"{s['test_accuracy']:.4f}",
            str(s["epochs"]),
            f"{s['train_seconds']:.1f}",
            "-" if np.isnan(s["median_angle"]) else f"{s['median_angle']:.1f}",
        ]
        for s in summaries
    ]
    text = _table(["run", "test accuracy", "epochs", "training s", "median angle (deg)"], rows)
    keys = differing_keys(summaries)
    if not keys:
        return text + "\n\nThe runs' configs are the same."
    columns = [f"run {i + 1}" for i in range(len(summaries))]
    settings = [[key, *(_setting(s, key) for s in summaries)] for key in keys]
    legend = "\n".join(f"run {i + 1}: {s['name']}" for i, s in enumerate(summaries))
    return (
        f"{text}\n\nConfig keys that differ ({len(keys)}):\n{_table(['key', *columns], settings)}\n{legend}"
    )


def plot_histories(summaries: list[dict], path=None):
    """Loss (left) and accuracy (right) per epoch of every run, one colour per run, train solid and
    validation dashed. Returns a Figure with 2 Axes, one line per run and split that was recorded."""
    from .plots import new_figure, save

    fig = new_figure(10.0, 3.8)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for i, summary in enumerate(summaries):
            for split, style in (("train", "-"), ("val", "--")):
                points = [
                    (r.get("epoch", e + 1), r[f"{split}_{metric}"])
                    for e, r in enumerate(summary["history"])
                    if r.get(f"{split}_{metric}") is not None
                ]
                if points:
                    xs, ys = zip(*points)
                    label = f"{Path(summary['name']).name} {'train' if split == 'train' else 'validation'}"
                    ax.plot(xs, ys, style, color=f"C{i % 10}", marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy loss" if metric == "loss" else "accuracy")
        ax.set_title(metric.capitalize(), fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{len(summaries)} runs: train solid, validation dashed", fontsize=11)
    return save(fig, path)


def compare_runs(run_dirs, out="compare", stream=None) -> list[str]:
    """Print the comparison of ``run_dirs`` and write ``out/compare.txt`` and ``out/compare_history.png``;
    returns the two paths."""
    summaries = [load_summary(run_dir) for run_dir in run_dirs]
    text = format_comparison(summaries)
    print(text, file=sys.stdout if stream is None else stream)
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, "compare.txt"), os.path.join(out, "compare_history.png")]
    write_text_atomic(paths[0], text + "\n")
    plot_histories(summaries, path=paths[1])
    return paths


@one_line_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minicnn.compare",
        description="Compare finished runs: results, the config keys that differ, histories overlaid.",
    )
    parser.add_argument("runs", metavar="RUN", nargs="+", help="run directories written by train.py")
    parser.add_argument(
        "--out", default="compare", help="folder for the table and figure (default ./compare)"
    )
    args = parser.parse_args(argv)
    for path in compare_runs(args.runs, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
