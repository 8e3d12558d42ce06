"""Cost of the full-dataset recipes, measured on synthetic data of the same shape (issue 14).

MNIST, Fashion-MNIST and CIFAR-10 cannot be downloaded where minicnn is developed, so each recipe
(``configs/mnist.toml``, ``configs/fashion_mnist.toml``, ``configs/cifar10.toml``) is run by
``train.py`` itself for one epoch on random uint8 images of the real shape (60,000 x 28x28 grey, or
50,000 x 32x32 colour, plus a 10,000-image test file), read through ``source = "npz"`` and so the same
uint8 pipeline. Reported: the epoch's training time, the whole process's wall time and peak resident
memory (``ru_maxrss`` of the child), and the load average, which matters on a shared machine.

``--fraction F`` trains on that fraction of the training images and scales the epoch time up by
1/F (an estimate: the time of an epoch is proportional to its number of batches).

    python benchmarks/bench_datasets.py mnist [--fraction 1.0]
    python benchmarks/bench_datasets.py cifar10 --fraction 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_conv import machine_info  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHAPES = {"mnist": (60_000, 1, 28, 28), "fashion_mnist": (60_000, 1, 28, 28), "cifar10": (50_000, 3, 32, 32)}


def synthetic(folder: str, name: str, fraction: float) -> tuple[str, str]:
    """Random uint8 images of the dataset's shape (train part cut to ``fraction``) as two .npz files."""
    rng = np.random.default_rng(0)
    n, c, h, w = SHAPES[name]
    paths = []
    for part, count in (("train", int(round(n * fraction))), ("test", 10_000)):
        X = rng.integers(0, 256, size=(count, c, h, w), dtype=np.uint8)
        y = np.arange(count) % 10
        path = os.path.join(folder, f"{name}-{part}.npz")
        np.savez(path, X=X, y=y)
        paths.append(path)
    return paths[0], paths[1]


def one_epoch(name: str, fraction: float) -> dict:
    """Run ``train.py`` for one epoch of the recipe on synthetic data; return the measurements."""
    with tempfile.TemporaryDirectory() as folder:
        train, test = synthetic(folder, name, fraction)
        overrides = [
            'data.source="npz"',
            f"data.path={train}",
            f"data.test_path={test}",
            "train.epochs=1",
            "train.warmup_epochs=0",
            "output.figures=false",
        ]
        config = os.path.join(ROOT, "configs", f"{name}.toml")
        command = [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            "--quiet",
            "--config",
            config,
            "--out",
            os.path.join(folder, "run"),
        ]
        command += [part for value in overrides for part in ("--set", value)]
        load_before = os.getloadavg()
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        metrics = json.load(open(os.path.join(folder, "run", "metrics.json")))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kilobytes on Linux
    epoch = metrics["train_seconds"]
    return {
        "dataset": name,
        "train_images": int(round(SHAPES[name][0] * 0.9 * fraction)),
        "fraction": fraction,
        "epoch_seconds": epoch,
        "full_epoch_seconds_estimate": epoch / fraction,
        "wall_seconds": wall,
        "peak_rss_mb": peak_mb,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(SHAPES))
    parser.add_argument("--fraction", type=float, default=1.0, help="of the training images (default all)")
    args = parser.parse_args()
    print(json.dumps(machine_info()))
    result = one_epoch(args.dataset, args.fraction)
    print(json.dumps(result, indent=2))
    print(
        f"{args.dataset}: one epoch of {result['train_images']} training images in "
        f"{result['epoch_seconds']:.1f} s (full epoch: {result['full_epoch_seconds_estimate']:.0f} s); "
        f"process wall {result['wall_seconds']:.1f} s; peak memory {result['peak_rss_mb']:.0f} MB; "
        f"load average {result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} after"
    )


if __name__ == "__main__":
    main()
