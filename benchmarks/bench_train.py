"""Training speed end to end beside PyTorch, measured in the same run (issue 13).

Two networks, each trained by minicnn and by PyTorch in its own worker process, asked in turn over
``--rounds`` alternating rounds; seconds per epoch, best of ``--epochs`` epochs per round:

1. ``digits``: the small CNN on scikit-learn's 8x8 digits: conv3x3 1->16 pad 1, ReLU, maxpool 2,
   conv3x3 16->32 pad 1, ReLU, maxpool 2, Dense 128->10; Adam, batch 32, the 1437 training images of
   ``train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)``.
2. ``mnist``: a 28x28 network of the MNIST kind: conv3x3 1->32 pad 1, ReLU, conv3x3 32->64 pad 1,
   ReLU, maxpool 2, Dense 12544->10; Adam, batch 64, 4,000 images per epoch (random images of MNIST's
   shape and 10 random labels: the time of an epoch does not depend on the pixel values).

Both libraries use a minimal loop (forward, loss, backward without the first layer's input gradient,
Adam step). Optionally also ``configs/digits.toml`` through ``python train.py --quiet`` (``--config``).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_train.py \
        [--rounds 3] [--json out.json]
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    ROOT,
    Worker,
    alternate,
    blas_info,
    load_text,
    machine_info,
    machine_line,
    serve,
    set_minicnn_threads,
    torch_available,
    torch_setup,
    write_json,
)

TARGET_RATIO = 1.0
#: name: (input shape (C, H, W), batch size, images per epoch)
NETS = {"digits": ((1, 8, 8), 32, None), "mnist": ((1, 28, 28), 64, 4000)}


def data(name: str):
    """(X, y) float32 images and int labels of one benchmark network."""
    if name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
        return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)[0::2]
    shape, _, count = NETS[name]
    rng = np.random.default_rng(0)
    return rng.standard_normal((count, *shape), dtype=np.float32), rng.integers(0, 10, count)


# ---- inside the workers ------------------------------------------------------------------------


def minicnn_trainer(name: str):
    """A function that trains one epoch of network ``name`` with minicnn."""
    from minicnn.nn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from minicnn.nn.losses import SoftmaxCrossEntropy
    from minicnn.nn.model import Sequential
    from minicnn.nn.optim import Adam

    rng = np.random.default_rng(0)
    if name == "digits":
        model = Sequential(
            Conv2D(1, 16, 3, padding=1, rng=rng),
            ReLU(),
            MaxPool2D(2),
            Conv2D(16, 32, 3, padding=1, rng=rng),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(128, 10, rng=rng),
        )
    else:
        model = Sequential(
            Conv2D(1, 32, 3, padding=1, rng=rng),
            ReLU(),
            Conv2D(32, 64, 3, padding=1, rng=rng),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(64 * 14 * 14, 10, rng=rng),
        )
    loss_fn, optimizer = SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-3)
    X, y = data(name)
    batch = NETS[name][1]

    def epoch():
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            loss_fn.forward(model.forward(X[idx]), y[idx])
            model.backward(loss_fn.backward(), need_input_grad=False)
            optimizer.step()

    return epoch


def torch_trainer(name: str):
    """The same network and loop in PyTorch."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "digits":
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(128, 10),
        )
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 14 * 14, 10),
        )
    loss_fn, optimizer = nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)
    X, y = data(name)
    X, y = torch.from_numpy(X), torch.from_numpy(np.asarray(y, dtype=np.int64))
    batch = NETS[name][1]

    def epoch():
        order = torch.randperm(len(X))
        for start in range(0, len(X), batch):
            idx = order[start : start + batch]
            optimizer.zero_grad()
            loss_fn(model(X[idx]), y[idx]).backward()
            optimizer.step()

    return epoch


def time_epochs(trainers: dict, make, name: str, epochs: int) -> dict:
    if name not in trainers:
        trainers[name] = make(name)
        trainers[name]()  # warm-up epoch
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        trainers[name]()
        times.append(time.perf_counter() - start)
    return {"best_s": min(times), "median_s": statistics.median(times)}


def worker(library: str, threads: int | None) -> None:
    trainers = {}
    if library == "torch":
        about = torch_setup(threads)
        make = torch_trainer
    else:
        set_minicnn_threads(threads)
        about, make = f"minicnn, BLAS: {blas_info()}", minicnn_trainer
    serve(
        {
            "about": lambda: {"about": about},
            "epoch": lambda net, epochs: time_epochs(trainers, make, net, epochs),
        }
    )


# ---- the parent ---------------------------------------------------------------------------------


def bench_config(config: Path) -> dict:
    """Wall time of ``train.py --config <config> --quiet`` and the training time it reports."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                "--config",
                str(config),
                "--quiet",
                "--set",
                "output.figures=false",
                "--out",
                str(Path(tmp) / "run"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        if result.returncode != 0:
            return {
                "error": (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1],
                "wall_s": wall,
            }
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {
        "config": str(config),
        "wall_s": wall,
        "train_s": metrics["train_seconds"],
        "epochs": metrics["epochs_run"],
        "test_accuracy": metrics["test_accuracy"],
    }


def compare(workers, rounds: int, epochs: int) -> list[dict]:
    rows = []
    print(
        f"{'network':<8} {'minicnn s/epoch':>15} {'PyTorch s/epoch':>15} {'ratio':>6}  "
        "load (1 min) at the best times"
    )
    for net in NETS:
        best = alternate(workers, "epoch", rounds, net=net, epochs=epochs)
        ours, theirs = best["minicnn"], best.get("torch")
        row = {
            "network": net,
            "minicnn_epoch_s": ours["best_s"],
            "minicnn_median_s": ours["median_s"],
            "load": ours["load"][0],
        }
        if theirs:
            row.update(
                torch_epoch_s=theirs["best_s"],
                ratio=ours["best_s"] / theirs["best_s"],
                torch_load=theirs["load"][0],
            )
        rows.append(row)
        text = f"{row['torch_epoch_s']:15.3f} {row['ratio']:6.2f}" if theirs else f"{'-':>15} {'-':>6}"
        loads = f"{row['load']:.1f}" + (f" / {row['torch_load']:.1f}" if theirs else "")
        print(f"{net:<8} {row['minicnn_epoch_s']:15.3f} {text}  {loads}")
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per round and library")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; each library's best is kept"
    )
    parser.add_argument(
        "--threads", type=int, help="threads for both libraries (default: each one's default)"
    )
    parser.add_argument("--config", help="also time python train.py --config CONFIG --quiet")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--worker", choices=("minicnn", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads)
    compared = torch_available() and not args.no_torch
    workers = [Worker(__file__, "minicnn", args.threads)] + (
        [Worker(__file__, "torch", args.threads)] if compared else []
    )
    try:
        print(machine_line())
        for w in workers:
            print(w.ask("about")["about"])
        print(
            f"seconds per epoch, each library in its own process, {args.rounds} alternating rounds, best of "
            f"{args.epochs} epochs; ratio = minicnn / PyTorch\n"
        )
        rows = compare(workers, max(1, args.rounds), max(1, args.epochs))
    finally:
        for w in workers:
            w.close()
    if compared:
        over = [f"{r['network']} {r['ratio']:.2f}" for r in rows if r["ratio"] > TARGET_RATIO]
        print(
            f"\nevery network at most {TARGET_RATIO:.1f}x PyTorch's time per epoch: "
            + ("met" if not over else "NOT met: " + ", ".join(over))
        )
    else:
        print('\ncomparison with PyTorch skipped: PyTorch is not installed (pip install -e ".[bench]")')
    config = bench_config(Path(args.config)) if args.config else None
    if config:
        print(
            f"\ntrain.py --config {args.config} --quiet: "
            + (
                f"failed: {config['error']}"
                if "error" in config
                else f"{config['wall_s']:.1f} s in all, {config['train_s']:.1f} s training, "
                f"{config['epochs']} epochs, "
                f"test accuracy {config['test_accuracy']:.4f}"
            )
            + f" ({load_text()})"
        )
    result = {
        "machine": machine_info(),
        "rounds": args.rounds,
        "epochs": args.epochs,
        "threads": args.threads,
        "networks": rows,
        "config": config,
        "compared_with_torch": compared,
    }
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
