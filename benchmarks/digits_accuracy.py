"""Test accuracy and time of a config over several training seeds, as a markdown table.

    python benchmarks/digits_accuracy.py                      # configs/digits.toml, seeds 0 to 4
    python benchmarks/digits_accuracy.py --config configs/digits_fast.toml --seeds 0 1

Each seed is one ``python train.py --quiet`` process, run one after another (never in parallel, so the
times are per run). "wall s" is the whole process, start-up and test evaluation included; "train s" is
the sum of the epochs (metrics.json's ``train_seconds``). Figures are off unless ``--figures``.
The test split is the same for every seed (``data.split_seed``), so the seeds differ only in training.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # works from a clone without installing

from minicnn.io import load_npz  # noqa: E402


def run_seed(config: str, seed: int, out_dir: Path, overrides: list[str], figures: bool) -> dict:
    command = [sys.executable, str(ROOT / "train.py"), "--config", config, "--seed", str(seed), "--quiet",
               "--out", str(out_dir), "--set", f"output.figures={'true' if figures else 'false'}"]
    for assignment in overrides:
        command += ["--set", assignment]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"seed {seed} failed (exit {result.returncode}): {result.stderr.strip()}")
    metrics = json.loads((out_dir / "metrics.json").read_text())
    return {"seed": seed, "accuracy": metrics["test_accuracy"], "train": metrics["train_seconds"], "wall": wall,
            "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
            "n_test": len(load_npz(out_dir / "split.npz")["test"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "digits.toml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY.PATH=VALUE")
    parser.add_argument("--figures", action="store_true", help="also draw the figures (counted in wall s)")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="minicnn-bench-") as tmp:
        for seed in args.seeds:
            rows.append(run_seed(args.config, seed, Path(tmp) / f"seed-{seed}", args.overrides, args.figures))
            print(f"seed {seed}: {rows[-1]['accuracy']:.4f} in {rows[-1]['wall']:.1f}s", file=sys.stderr, flush=True)

    config = os.path.relpath(args.config, ROOT)
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"
    print(f"`{config}`{' ' + ' '.join('--set ' + o for o in args.overrides) if args.overrides else ''}, "
          f"{os.cpu_count()} CPU cores, BLAS threads: {threads}; test split: {len(rows) and rows[0]['n_test']} "
          f"images\n")
    print("| seed | test accuracy | epochs (best) | train s | wall s |")
    print("|-----:|--------------:|--------------:|--------:|-------:|")
    for r in rows:
        print(f"| {r['seed']} | {100 * r['accuracy']:.2f}% | {r['epochs']} ({r['best_epoch']}) | "
              f"{r['train']:.1f} | {r['wall']:.1f} |")
    accuracies = [r["accuracy"] for r in rows]
    walls = [r["wall"] for r in rows]
    print(f"| **mean** | **{100 * statistics.mean(accuracies):.2f}%** | | "
          f"{statistics.mean(r['train'] for r in rows):.1f} | {statistics.mean(walls):.1f} |")
    print(f"| **min / max** | {100 * min(accuracies):.2f}% / {100 * max(accuracies):.2f}% | | | "
          f"{min(walls):.1f} / {max(walls):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
