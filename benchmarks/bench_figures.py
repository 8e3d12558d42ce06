"""How long each figure of a run takes to draw, against the run's training: the cost of ``output.figures``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_figures.py [--config PATH]
        [--set key=value ...]

Trains the config (default configs/digits.toml) into a temporary run directory and draws every
figure the ``train.py`` command draws (:func:`minicnn.see.run_figures.figure_steps`) in the run's
finish step, as the command does, timing each. Prints one line per figure with its seconds and its
share of the whole run, then the totals and the load average, since on a busy machine every number
moves: compare shares from one process. Also the peak resident memory before and after the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_line  # noqa: E402


def peak_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "digits.toml"))
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    import numpy as np

    from minicnn import train as training
    from minicnn.cli import blas_threads
    from minicnn.nn.model import Sequential
    from minicnn.see.change import KernelHistory, load_kernel_history
    from minicnn.train.config import load_config

    cfg = load_config(args.config, [*args.overrides, "output.figures=false"])
    measured: dict = {}

    def finish(run_dir, model, history, dataset):
        """Draw the figures as train.py does (its finish step), timing each."""
        measured["peak_trained"] = peak_mib()
        drawing = time.perf_counter()  # as train.py pays it: matplotlib's import included
        from minicnn.see.plots import draw_steps
        from minicnn.see.run_figures import figure_steps

        X_test, X_train = np.asarray(dataset.X_test), np.asarray(dataset.X_train)  # uint8 Images -> floats
        steps = figure_steps(
            run_dir,
            model,
            Sequential.load(run_dir / "init.npz"),
            history,
            X_test,
            dataset.y_test,
            X_train,
            cfg.train.label_smoothing,
            load_kernel_history(run_dir),
        )
        measured["times"] = []
        start = time.perf_counter()
        for name, _ in draw_steps(steps):  # as train.py draws them (its write_figures)
            measured["times"].append((name, time.perf_counter() - start, peak_mib()))
            start = time.perf_counter()
        measured["figures"] = time.perf_counter() - drawing

    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        snapshots = KernelHistory(run_dir)  # what train.py keeps for the kernels' figures
        started = time.perf_counter()
        with blas_threads(cfg.train.threads) as governor:

            def on_epoch_end(trainer, record):
                snapshots(trainer, record)
                if governor is not None:
                    governor(trainer, record)

            metrics = training.run(cfg, run_dir, quiet=True, on_epoch_end=on_epoch_end, finish=finish)
        total = time.perf_counter() - started
    times, figures_seconds, peak_trained = measured["times"], measured["figures"], measured["peak_trained"]
    run_seconds = total - figures_seconds
    print(f"{machine_line()}\nconfig {os.path.relpath(args.config, ROOT)} {' '.join(args.overrides)}")
    print(f"{'figure':<30} {'seconds':>8} {'share of run':>13} {'peak MiB after':>15}")
    for name, seconds, peak in times:
        print(f"{name:<30} {seconds:>8.2f} {seconds / total:>12.1%} {peak:>15.0f}")
    print(
        f"training run {run_seconds:.1f}s ({metrics['train_seconds']:.1f}s in epochs), figures "
        f"{figures_seconds:.1f}s ({sum(t[1] for t in times):.1f}s drawing, the rest imports): figures are "
        f"{figures_seconds / total:.1%} of {total:.1f}s"
    )
    print(f"peak memory {peak_trained:.0f} MiB after training, {peak_mib():.0f} MiB after the figures")
    print("load average " + " ".join(f"{load:.2f}" for load in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
