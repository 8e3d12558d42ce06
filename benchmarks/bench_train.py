"""End-to-end speed on scikit-learn's 8x8 digits (issue 5).

1. The small digits CNN of the PyTorch yardstick, trained with a minimal loop over core layers
   only: conv3x3 1->16 pad 1, ReLU, maxpool 2, conv3x3 16->32 pad 1, ReLU, maxpool 2, Dense
   128->10; Adam, batch 32, the 1437 training images of the stratified 80% split
   ``train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)``. Seconds per epoch
   (PyTorch: 0.070 s on 2 threads) and ``predict`` images per second on the 360 test images.
2. ``configs/digits.toml`` through the real command, ``python train.py --config
   configs/digits.toml --quiet --out <tmp>`` (target: under 20 s), when the training code exists.

    python benchmarks/bench_train.py [--epochs 10] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from minicnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU  # noqa: E402
from minicnn.nn.losses import SoftmaxCrossEntropy  # noqa: E402
from minicnn.nn.model import Sequential  # noqa: E402
from minicnn.nn.optim import Adam  # noqa: E402

from bench_conv import blas_info, cpu_name, machine_info, write_json  # noqa: E402

TORCH_EPOCH_S = 0.070
CONFIG_TARGET_S = 20.0


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


def small_cnn(seed: int = 0) -> Sequential:
    rng = np.random.default_rng(seed)
    return Sequential(Conv2D(1, 16, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
                      Conv2D(16, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
                      Flatten(), Dense(128, 10, rng=rng))


def train_epoch(model, loss_fn, optimizer, X, y, rng, batch_size: int = 32) -> float:
    """One pass over (X, y) in shuffled batches; returns the mean loss."""
    order = rng.permutation(len(X))
    total = 0.0
    for start in range(0, len(X), batch_size):
        idx = order[start:start + batch_size]
        optimizer.zero_grad()
        total += loss_fn.forward(model.forward(X[idx]), y[idx]) * len(idx)
        model.backward(loss_fn.backward(), need_input_grad=False)
        optimizer.step()
    return total / len(X)


def bench_small_cnn(epochs: int) -> dict:
    X_train, X_test, y_train, y_test = digits_split()
    model, loss_fn = small_cnn(), SoftmaxCrossEntropy()
    optimizer = Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    train_epoch(model, loss_fn, optimizer, X_train, y_train, rng)   # warm-up
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        train_epoch(model, loss_fn, optimizer, X_train, y_train, rng)
        times.append(time.perf_counter() - start)
    accuracy = float((model.predict(X_test) == y_test).mean())
    predict_times = []
    for _ in range(20):
        start = time.perf_counter()
        model.predict(X_test)
        predict_times.append(time.perf_counter() - start)
    return {"train_images": len(X_train), "epochs_timed": epochs, "epoch_best_s": min(times),
            "epoch_median_s": statistics.median(times), "test_accuracy": accuracy,
            "predict_images_per_s": len(X_test) / min(predict_times), "test_images": len(X_test)}


def bench_config(config: Path) -> dict | None:
    """Wall time of ``train.py --config <config> --quiet`` and the training time it reports."""
    if not config.exists() or not (ROOT / "train.py").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(config), "--quiet",
                                 "--out", str(Path(tmp) / "run")], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            return {"error": result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"],
                    "wall_s": wall}
        metrics_path = Path(tmp) / "run" / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    history = metrics.get("history", [])
    return {"config": str(config.relative_to(ROOT)), "wall_s": wall, "train_s": metrics.get("train_seconds"),
            "epochs": len(history), "test_accuracy": metrics.get("test_accuracy"),
            "epoch_median_s": statistics.median(r["seconds"] for r in history) if history else None}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs of the small CNN")
    parser.add_argument("--config", default=str(ROOT / "configs" / "digits.toml"))
    parser.add_argument("--skip-config", action="store_true", help="only the small CNN")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; NumPy {np.__version__}; BLAS: {blas_info()}; "
          f"load average {os.getloadavg()[0]:.2f}\n")
    small = bench_small_cnn(args.epochs)
    print(f"small digits CNN, Adam, batch 32, {small['train_images']} training images:")
    print(f"  {small['epoch_best_s']:.3f} s/epoch best, {small['epoch_median_s']:.3f} median of "
          f"{small['epochs_timed']} (PyTorch {TORCH_EPOCH_S:.3f}; x{small['epoch_best_s'] / TORCH_EPOCH_S:.2f})")
    print(f"  predict: {small['predict_images_per_s']:,.0f} images/s on the {small['test_images']} test images "
          f"(accuracy {small['test_accuracy']:.3f} after {small['epochs_timed'] + 1} epochs)")
    config = None if args.skip_config else bench_config(Path(args.config))
    if config is None and not args.skip_config:
        print(f"\n{args.config}: skipped (no configs/digits.toml or minicnn.train.trainer)")
    elif config is not None and "error" in config:
        print(f"\n{args.config}: failed after {config['wall_s']:.1f} s: {config['error'][0]}")
    elif config is not None:
        print(f"\n{config['config']} via train.py --quiet: {config['wall_s']:.1f} s in all "
              f"(target < {CONFIG_TARGET_S:.0f} s), {config['train_s']:.1f} s training, "
              f"{config['epochs']} epochs "
              f"({config['epoch_median_s']:.2f} s median), test accuracy {config['test_accuracy']:.4f}")
    result = {"machine": machine_info(), "small_cnn": small, "torch_epoch_s": TORCH_EPOCH_S, "config": config}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
