"""Test accuracy, kernel change and time of configs over several training seeds, as markdown tables.

    python benchmarks/digits_accuracy.py                      # configs/digits.toml, seeds 0 to 4
    python benchmarks/digits_accuracy.py --config configs/digits.toml configs/digits_best.toml
    python benchmarks/digits_accuracy.py --config configs/digits_fast.toml --seeds 0 1 --no-frozen

Run it as ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 python benchmarks/...``:
on shared cores, one BLAS thread per run avoids oversubscription (a run took 7 minutes with two).

Each seed is one ``python train.py --quiet`` process, run one after another (never in parallel, so the
times are per run). "wall s" is the whole process, start-up and test evaluation included; "train s" is
the sum of the epochs (metrics.json's ``train_seconds``). Figures are off unless ``--figures``.
The test split is the same for every seed (``data.split_seed``), so the seeds differ only in training.

Per seed it also reports how far the plotted layer (the first Conv2D, whose kernels the run's figures
show) turned: the median and range of the angles between each kernel's initial and final weights
(:func:`minicnn.see.change.kernel_angles`). Unless ``--no-frozen``, every seed is trained a second
time with that layer frozen at its initialization (``--set model.layers.<i>.trainable=false``), so the
table says whether learning those kernels matters.
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
sys.path.insert(0, str(ROOT))  # works from a clone without installing

from minicnn.io import load_npz  # noqa: E402
from minicnn.see.change import run_kernel_change  # noqa: E402


def run_seed(config: str, seed: int, out_dir: Path, overrides: list[str], figures: bool) -> dict:
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        config,
        "--seed",
        str(seed),
        "--quiet",
        "--out",
        str(out_dir),
        "--set",
        f"output.figures={'true' if figures else 'false'}",
    ]
    for assignment in overrides:
        command += ["--set", assignment]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"seed {seed} failed (exit {result.returncode}): {result.stderr.strip()}")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    change = run_kernel_change(out_dir)
    return {
        "seed": seed,
        "accuracy": metrics["test_accuracy"],
        "train": metrics["train_seconds"],
        "wall": wall,
        "epochs": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "layer": change["layer"],
        "angles": change["angles"],
        "n_test": len(load_npz(out_dir / "split.npz")["test"]),
    }


def measure(config: str, seeds, overrides, figures: bool, frozen: bool, tmp: Path) -> list[dict]:
    """Train ``config`` once per seed (and once more with the plotted layer frozen); one row per seed."""
    rows = []
    for seed in seeds:
        row = run_seed(config, seed, tmp / f"{Path(config).stem}-{seed}", overrides, figures)
        if frozen:
            freeze = f"model.layers.{row['layer']}.trainable=false"
            row["frozen"] = run_seed(
                config, seed, tmp / f"{Path(config).stem}-{seed}-frozen", overrides + [freeze], figures
            )["accuracy"]
        rows.append(row)
        note = f" (frozen {row['frozen']:.4f})" if frozen else ""
        print(
            f"{config} seed {seed}: {row['accuracy']:.4f}{note} in {row['wall']:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def blas_kernel() -> str:
    """The BLAS library and its CPU kernel, as threadpoolctl reports them (bench extra)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i['internal_api']} {i.get('architecture', '?')}" for i in blas) or "no BLAS found"


def print_table(config: str, rows: list[dict], overrides: list[str], frozen: bool) -> None:
    shown = os.path.relpath(config, ROOT)
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    print(
        f"`{shown}`{' ' + ' '.join('--set ' + o for o in overrides) if overrides else ''}, "
        f"{os.cpu_count()} CPU cores, BLAS threads: {threads} ({blas_kernel()}), load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; test split: {rows[0]['n_test']} images; "
        f"kernel angles of layer {rows[0]['layer']} (the plotted one)\n"
    )
    frozen_head = (" frozen-layer accuracy |", "----------------------:|") if frozen else ("", "")
    print(
        f"| seed | test accuracy |{frozen_head[0]} median angle (range) | epochs (best) | train s | wall s |"
    )
    print(
        f"|-----:|--------------:|{frozen_head[1]}---------------------:|--------------:|--------:|-------:|"
    )
    for r in rows:
        cell = f" {100 * r['frozen']:.2f}% |" if frozen else ""
        print(
            f"| {r['seed']} | {100 * r['accuracy']:.2f}% |{cell} {np.median(r['angles']):.1f} deg "
            f"({r['angles'].min():.1f} to {r['angles'].max():.1f}) | {r['epochs']} ({r['best_epoch']}) | "
            f"{r['train']:.1f} | {r['wall']:.1f} |"
        )
    accuracies = [r["accuracy"] for r in rows]
    medians = [float(np.median(r["angles"])) for r in rows]
    cell = f" **{100 * statistics.mean(r['frozen'] for r in rows):.2f}%** |" if frozen else ""
    print(
        f"| **mean** | **{100 * statistics.mean(accuracies):.2f}%** |{cell} "
        f"{statistics.mean(medians):.1f} deg | | "
        f"{statistics.mean(r['train'] for r in rows):.1f} | {statistics.mean(r['wall'] for r in rows):.1f} |"
    )
    print(
        f"| **min / max** | {100 * min(accuracies):.2f}% / {100 * max(accuracies):.2f}% |"
        f"{' |' if frozen else ''} {min(medians):.1f} / {max(medians):.1f} deg | | | |"
    )
    pooled = np.concatenate([r["angles"] for r in rows])
    print(
        f"\nmedian angle over all {pooled.size} plotted kernels of these seeds: "
        f"{np.median(pooled):.1f} deg ({np.mean(pooled >= 25):.0%} of them at least 25 deg)"
    )
    if frozen:
        gain = statistics.mean(r["accuracy"] - r["frozen"] for r in rows)
        print(
            f"learning the plotted layer instead of freezing it: {100 * gain:+.2f} points "
            "of mean test accuracy"
        )
    print()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", default=[str(ROOT / "configs" / "digits.toml")])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY.PATH=VALUE")
    parser.add_argument("--figures", action="store_true", help="also draw the figures (counted in wall s)")
    parser.add_argument(
        "--no-frozen",
        dest="frozen",
        action="store_false",
        help="skip the second run per seed with the plotted layer frozen",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="minicnn-bench-") as tmp:
        for config in args.config:
            rows = measure(config, args.seeds, args.overrides, args.figures, args.frozen, Path(tmp))
            print_table(config, rows, args.overrides, args.frozen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
