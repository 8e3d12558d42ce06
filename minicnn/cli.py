"""Command: ``python train.py`` (or ``minicnn-train``): train from a config, then draw the figures.

Exit codes: 0 done; 2 bad config, bad data, a file that cannot be read or written, a run directory
in use, or a size above the memory budget (one line on stderr); 3 the loss
diverged (NaN or inf); 130 interrupted with Ctrl-C (the checkpoint of the last completed epoch is
kept and can be resumed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from . import io
from .errors import one_line_errors
from .train.config import load_config

#: The default config, shipped inside the package (an installed minicnn has no configs/ folder); a test
#: keeps it identical to the documented configs/digits.toml.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "train" / "configs" / "digits.toml"
EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a minicnn model from a TOML config and write a run directory.",
        epilog="example: python train.py --config configs/digits_fast.toml --set train.epochs=5 --seed 1",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML config (default: configs/digits.toml)")
    parser.add_argument(
        "--set",
        metavar="KEY.PATH=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config value, typed as its field (repeatable), e.g. train.lr=0.01",
    )
    parser.add_argument("--out", metavar="DIR", help="run directory (default: <output.dir>/<name>-<time>)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="let --out name a folder that is not empty; a previous run's files there are "
        "replaced, other files kept",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR with its config.toml (only more epochs, output options, "
        "threads and the memory budget may change)",
    )
    parser.add_argument("--seed", type=int, metavar="N", help="training seed (same as --set seed=N)")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads of NumPy's matrix products (same as --set train.threads=N; "
        "default 0: automatic, the cores other processes leave free)",
    )
    parser.add_argument(
        "--memory-budget",
        type=int,
        metavar="MiB",
        help="largest model + one batch, or data file, in MiB (same as --set "
        "train.memory_budget_mib=N; default: half the machine's memory)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors (results: run dir)")
    return parser


def default_run_dir(output_dir: str, config_path) -> Path:
    """``<output_dir>/<config name>-<YYYYmmdd-HHMMSS>``, with a suffix if that exists already."""
    base = Path(output_dir) / f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def _figure_writer(figures, quiet: bool, label_smoothing: float = 0.0):
    """The step that draws a finished run's figures (:func:`minicnn.see.plots.write_run_figures`)."""

    def draw(run_dir, model, history, dataset):
        import numpy as np

        from .nn.model import Sequential
        from .see.plots import write_run_figures  # matplotlib only once training is done

        X_test, X_train = np.asarray(dataset.X_test), np.asarray(dataset.X_train)  # uint8 Images -> floats
        write_run_figures(
            run_dir,
            model=model,
            init_model=Sequential.load(run_dir / "init.npz"),
            history=history,
            X_test=X_test,
            y_test=dataset.y_test,
            figures=figures,
            label_smoothing=label_smoothing,
        )
        from .see.change import load_kernel_history
        from .see.kernels import write_kernel_figures
        from .see.saliency import write_saliency_figures

        write_kernel_figures(run_dir, model, load_kernel_history(run_dir), X_train)
        # blank for occlusion: an empty pixel as the model sees it (the darkest value of each channel)
        write_saliency_figures(run_dir, model, X_test, dataset.y_test, blank=X_train.min(axis=(0, 2, 3)))

    return draw


@contextlib.contextmanager
def blas_threads(threads: int, quiet: bool = True, watching=None):
    """Use ``threads`` BLAS threads (0: :class:`minicnn.nn.threads.AutoThreads`) while training, then
    restore the count. Yields the per-epoch callback that re-chooses the automatic count, or None.
    ``watching``: an AutoThreads already watching the load (:meth:`~minicnn.nn.threads.AutoThreads.watch`)
    for the automatic count, which then need not wait to look.

    Why: OpenBLAS's threads spin while they wait for each other, so on a machine whose cores are
    busy with other work, a thread per core makes training several times slower (README, "Speed").
    """
    from .nn import threads as threads_api

    previous = threads_api.get_num_threads()
    if threads:
        threads_api.set_num_threads(threads)
        governor = None
    else:
        governor = watching or threads_api.AutoThreads()
        if governor.start() is not None and not quiet:
            print(
                f"BLAS threads: {governor.threads} (automatic: other processes use {governor.others:.1f} of "
                f"{governor.cores} cores; --threads N fixes the count)"
            )
    try:
        yield None if governor is None else governor.update
    finally:
        if previous is not None:
            threads_api.set_num_threads(previous)


def _each(*hooks):
    """One ``on_epoch_end(trainer, record)`` that calls every hook given (None ones skipped)."""

    def on_epoch_end(trainer, record):
        for hook in hooks:
            if hook is not None:
                hook(trainer, record)

    return on_epoch_end


def _overrides(args) -> list[str]:
    """The ``--set`` assignments, with the options that stand for one (``--seed N``: ``seed=N``)."""
    shortcuts = {
        "seed": args.seed,
        "train.threads": args.threads,
        "train.memory_budget_mib": args.memory_budget,
    }
    return list(args.overrides) + [f"{key}={value}" for key, value in shortcuts.items() if value is not None]


def _config_and_run_dir(args, overrides):
    """The config and the run directory the arguments name (a resumed run's own)."""
    if not args.resume:
        config_path = args.config or DEFAULT_CONFIG
        cfg = load_config(config_path, overrides)
        return cfg, Path(args.out) if args.out else default_run_dir(cfg.output.dir, config_path)
    if args.config or args.out or args.overwrite:
        raise ValueError(
            "--resume RUN_DIR uses RUN_DIR's config.toml and writes into RUN_DIR; "
            "leave out --config and --out (and --overwrite)"
        )
    run_dir = Path(args.resume)
    checkpoint = run_dir / "last.npz"
    if not checkpoint.is_file():
        what = io.file_kind(checkpoint) if os.path.lexists(checkpoint) else "missing"
        raise ValueError(f"cannot resume: {io.show_path(checkpoint)} is {what}; expected a run's checkpoint")
    return load_config(run_dir / "config.toml", overrides), run_dir


@one_line_errors
def main(argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, and return the exit code."""
    args = build_parser().parse_args(argv)
    from .nn.threads import AutoThreads

    watching = AutoThreads().watch()  # the load while the program starts, for --threads 0 (automatic)
    try:
        from . import train as training  # imported here so --help answers at once

        cfg, run_dir = _config_and_run_dir(args, _overrides(args))
        io.set_memory_budget(cfg.train.memory_budget_mib * 2**20 or None)
        figures = (
            _figure_writer(cfg.output.figures, args.quiet, cfg.train.label_smoothing)
            if cfg.output.figures
            else None
        )
        from .see.change import KernelHistory, load_kernel_history  # NumPy only

        if args.resume:
            load_kernel_history(run_dir)  # a malformed one is refused before anything trains

        with blas_threads(cfg.train.threads, args.quiet, watching) as governor:
            training.run(
                cfg,
                run_dir,
                resume=bool(args.resume),
                quiet=args.quiet,
                finish=figures,
                on_epoch_end=_each(KernelHistory(run_dir), governor),
                overwrite=args.overwrite,
            )
    except training.DivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except training.TrainingInterrupted as exc:
        print(
            f"\ninterrupted: {exc.run_dir / 'last.npz'} holds the weights after epoch {exc.epoch}. "
            f"Resume with: python train.py --resume {exc.run_dir}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("\ninterrupted before training started; nothing to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
