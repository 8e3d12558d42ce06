"""Experiment 2, learned versus frozen: does the digits network need to learn its kernels?

The default digits network (``configs/digits.toml``) is trained three ways, over several seeds, on
the same split: all kernels learned (the default); the first convolution's kernels frozen at their
random initialization; and every convolution's kernels frozen (``trainable = false`` in the layer's
config table), so only the batch-norm scales and shifts and the final Dense layer learn. The test
accuracy of each is reported, whatever it is.

Run ``python experiments/learned_vs_frozen.py [--config PATH] [--seeds 0 1 2 3 4] [--set key=value]
[--out DIR]``; prints a Markdown table and writes ``learned_vs_frozen.md``, ``learned_vs_frozen.json``
(the raw results) and ``learned_vs_frozen.png`` (accuracy per seed) into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from minicnn.data import load_dataset
from minicnn.nn.layers import Conv2D
from minicnn.train import prepare
from minicnn.train.config import load_config, replace

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    "learned": "all kernels learned (default)",
    "first frozen": "first Conv2D frozen at random init",
    "all frozen": "every Conv2D frozen at random init",
}


def with_frozen_convs(cfg, which: str):
    """A copy of ``cfg`` whose Conv2D layer tables get ``trainable = false``: none (``"learned"``),
    the first (``"first frozen"``) or all (``"all frozen"``)."""
    if which not in VARIANTS:
        raise ValueError(f"which must be one of {list(VARIANTS)}, got {which!r}")
    layers, seen = [], 0
    for spec in cfg.model.layers:
        spec = dict(spec)
        if spec["type"] == "Conv2D":
            if which == "all frozen" or (which == "first frozen" and seen == 0):
                spec["trainable"] = False
            seen += 1
        layers.append(spec)
    return replace(cfg, model=dataclasses.replace(cfg.model, layers=tuple(layers)))


def train_once(cfg, dataset) -> dict:
    """Train quietly with the one training loop; return the test accuracy and how far each Conv2D moved.

    ``moved[i]`` is ``|W_end - W_init| / |W_init|`` for the i-th Conv2D (0 for a frozen one).
    """
    _, model, trainer = prepare(cfg, dataset)
    convs = [layer for _, layer in model.find_layers(Conv2D)]
    initial = [layer.weight.data.copy() for layer in convs]
    start = time.perf_counter()
    trainer.fit(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val, progress=False)
    _, accuracy = trainer.evaluate(dataset.X_test, dataset.y_test)
    moved = [
        float(np.linalg.norm(layer.weight.data - w0) / np.linalg.norm(w0))
        for layer, w0 in zip(convs, initial)
    ]
    return {"test_accuracy": accuracy, "moved": moved, "seconds": time.perf_counter() - start}


def run(
    config_path=REPO / "configs" / "digits.toml",
    seeds=(0, 1, 2, 3, 4),
    variants=tuple(VARIANTS),
    overrides=(),
    log=None,
) -> dict[str, list[dict]]:
    """Results by variant: one dict per seed (see :func:`train_once`), all on the config's one split."""
    base = load_config(config_path, overrides)
    dataset = load_dataset(base.data)
    results = {v: [] for v in variants}
    for seed in seeds:
        for variant in variants:
            cfg = replace(with_frozen_convs(base, variant), seed=int(seed))
            result = train_once(cfg, dataset)
            result["seed"] = int(seed)
            results[variant].append(result)
            if log is not None:
                log(
                    f"seed {seed}, {variant}: test accuracy {result['test_accuracy']:.4f} "
                    f"({result['seconds']:.0f}s)"
                )
    return results


def table(results: dict[str, list[dict]]) -> str:
    seeds = [r["seed"] for r in next(iter(results.values()))]
    head = "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |"
    lines = [head, "|---" * (len(seeds) + 2) + "|"]
    for variant, rows in results.items():
        accs = np.array([r["test_accuracy"] for r in rows])
        cells = " | ".join(f"{a:.4f}" for a in accs)
        std = accs.std(ddof=1) if len(accs) > 1 else 0
        lines.append(f"| {VARIANTS[variant]} | {cells} | {accs.mean():.4f} ± {std:.4f} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path=None):
    from minicnn.see.plots import new_figure, save

    fig = new_figure(6.0, 3.4)
    ax = fig.subplots()
    for k, rows in enumerate(results.values()):
        accs = [r["test_accuracy"] for r in rows]
        ax.scatter(np.full(len(accs), k) + np.linspace(-0.12, 0.12, len(accs)), accs, s=22, zorder=3)
        ax.hlines(np.mean(accs), k - 0.25, k + 0.25, color="k", lw=1.5, zorder=4)
    ax.set_xticks(
        range(len(results)),
        [VARIANTS[v].replace(" at random init", "\nat random init") for v in results],
        fontsize=8,
    )
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", alpha=0.3)
    n = len(next(iter(results.values())))
    ax.set_title(f"Digits network: learned vs frozen kernels ({n} seeds; bar = mean)", fontsize=10)
    return save(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "digits.toml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        metavar="NAME",
        help=f"which of {list(VARIANTS)} to train (default all)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/experiments")
    args = parser.parse_args(argv)
    results = run(
        args.config,
        args.seeds,
        variants=args.variants,
        overrides=args.overrides,
        log=lambda text: print(text, flush=True),
    )
    text = table(results)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "learned_vs_frozen.md"), "w") as handle:
        handle.write(f"config: {args.config} {' '.join(args.overrides)}\n\n{text}\n")
    with open(os.path.join(args.out, "learned_vs_frozen.json"), "w") as handle:
        json.dump({"config": args.config, "overrides": args.overrides, "results": results}, handle, indent=1)
    plot(results, path=os.path.join(args.out, "learned_vs_frozen.png"))
    print(f"wrote {args.out}/learned_vs_frozen.md, .json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
