"""Runs: a config in, a run directory out; the entry point of the ``train.py`` command.

:func:`prepare` loads the data and builds the model and :class:`~minicnn.train.trainer.Trainer` a
config describes (no files written); :func:`run` adds the :class:`~minicnn.train.rundir.RunDir`,
resuming, Ctrl-C and divergence.

Randomness comes from explicit Generators derived from the config seed: one for the weights
(:func:`~minicnn.train.build.build_model`), one for the Trainer (shuffling and augmentation), and each
Dropout layer's own. All their states go into the checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path

import numpy as np

from .. import data as data_mod
from ..nn.devices import check_device
from ..nn.layers import Dense
from ..nn.layers.saving import check_model_saveable
from ..nn.model import Sequential
from .build import build_model
from .config import Config, ConfigError
from .rundir import RunDir
from .trainer import DivergedError, Trainer


class TrainingInterrupted(Exception):
    """Ctrl-C during :func:`run`; the last completed epoch is saved in ``run_dir / 'last.npz'``."""

    def __init__(self, run_dir, epoch: int):
        self.run_dir, self.epoch = Path(run_dir), epoch
        super().__init__(f"interrupted after epoch {epoch}; checkpoint in {self.run_dir / 'last.npz'}")


def seed_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The run's two Generators from one seed: (model initialization, training)."""
    model_seq, train_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_seq), np.random.default_rng(train_seq)


def prepare(cfg: Config, dataset=None) -> tuple[data_mod.Dataset, Sequential, Trainer]:
    """Load the data and build the model and Trainer a config describes (no files written).

    Returns (dataset, model, trainer). Raises ConfigError when the layers do not fit the data.
    """
    dataset = data_mod.load_dataset(cfg.data) if dataset is None else dataset
    model_rng, train_rng = seed_generators(cfg.seed)
    try:
        model = build_model(
            cfg.model.layers,
            dataset.input_shape,
            dtype=cfg.model.dtype,
            rng=model_rng,
            batch_size=cfg.train.batch_size,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_classifier(model, dataset.num_classes)
    return dataset, model, Trainer.from_config(model, cfg.train, train_rng, augment=cfg.data.augment)


def _check_classifier(model: Sequential, num_classes: int) -> None:
    """The last layer must be a Dense layer with one output per class."""
    index, last = len(model) - 1, model.layers[-1]
    if not isinstance(last, Dense):
        raise ConfigError(
            "model.layers: the last layer must be a Dense layer with one output per class "
            f"({num_classes} here)"
        )
    if last.out_features != num_classes:
        raise ConfigError(
            f"model.layers[{index}].out_features = {last.out_features}, but the data has "
            f"{num_classes} classes (labels 0 to {num_classes - 1})"
        )


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def run(
    cfg: Config,
    run_dir,
    resume: bool = False,
    quiet: bool = False,
    on_epoch_end=None,
    finish=None,
    overwrite: bool = False,
) -> dict:
    """Train the model a config describes, writing everything into ``run_dir`` (a :class:`RunDir`).

    ``finish(run_dir, model, history, dataset)``, when given, runs after the test evaluation (the
    ``train.py`` command draws the figures there; training itself never imports plotting).
    A new run refuses a ``run_dir`` that is not empty unless ``overwrite`` (then only a run's own files
    are removed). With ``resume=True`` training continues from ``run_dir / 'last.npz'``, only when the
    config and the split match the run's own (:meth:`RunDir.check_resume`). One writer at a time: a
    ``run_dir`` another process is writing raises RunDirError naming it (:meth:`RunDir.locked`).
    ``on_epoch_end(trainer,
    record)`` runs after each epoch's checkpoint is written. Returns the metrics dict (as in
    ``metrics.json``).

    Raises ConfigError / DataError / FileNotFoundError before training for bad input,
    :class:`TrainingInterrupted` on Ctrl-C and :class:`DivergedError` when the loss is not finite
    (in both cases ``last.npz`` holds the last good epoch).
    """
    started = time.perf_counter()
    check_device(cfg.train.device)  # "cuda" without CuPy or a GPU: one line, before anything is written
    run_dir = RunDir(run_dir)
    if resume:
        with run_dir.locked():
            dataset, model, trainer = _resume(cfg, run_dir, quiet)
            finished = _finished_metrics(run_dir, trainer)
            if finished is not None:
                _say(quiet, _nothing_to_do(run_dir, trainer, finished))
                return finished
            first_epoch = trainer.epoch
            metrics, drawn = _train_and_finish(run_dir, dataset, model, trainer, quiet, on_epoch_end, finish)
    else:
        run_dir.check_new(overwrite)
        dataset, model, trainer = prepare(cfg)
        check_model_saveable(model)  # a model that could not be saved is refused before anything is written
        with run_dir.locked():
            run_dir.check_new(overwrite)  # again: another run may have used the folder meanwhile
            _start(cfg, run_dir, dataset, model, trainer, quiet)
            first_epoch = trainer.epoch
            metrics, drawn = _train_and_finish(run_dir, dataset, model, trainer, quiet, on_epoch_end, finish)
    _say(
        quiet,
        f"test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) with the "
        f"weights of epoch {trainer.best_epoch}; "
        f"{_time_line(metrics['history'], first_epoch, drawn, time.perf_counter() - started)}; "
        f"everything is in {run_dir.path}",
    )
    return metrics


def _train_and_finish(run_dir: RunDir, dataset, model, trainer, quiet, on_epoch_end, finish):
    """Train and test (:func:`_train_and_test`), then ``finish``; returns the metrics and the seconds
    ``finish`` took (None without it). Ctrl-C and divergence as :func:`run` documents."""
    drawn = None  # seconds spent on the figures; None when there are none to draw
    try:
        metrics = _train_and_test(run_dir, dataset, trainer, quiet, on_epoch_end)
        if finish is not None:
            drawing = time.perf_counter()
            finish(run_dir.path, model.to("cpu"), metrics["history"], dataset)  # figures read NumPy arrays
            drawn = time.perf_counter() - drawing
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir.path, run_dir.checkpoint_epoch or 0) from None
    except DivergedError as exc:
        raise DivergedError(
            f"{exc}. Training stopped; {run_dir.checkpoint} keeps the last good state "
            f"(after epoch {run_dir.checkpoint_epoch})"
        ) from None
    return metrics, drawn


def _start(cfg: Config, run_dir: RunDir, dataset, model, trainer, quiet: bool) -> None:
    """Write a new run's first files into ``run_dir`` and say what it will train on."""
    run_dir.start(cfg, dataset, trainer)
    _say(
        quiet,
        f"{model.summary(dataset.input_shape)}\ndata: {len(dataset.y_train)} train, "
        f"{len(dataset.y_val)} validation, {len(dataset.y_test)} test images of shape "
        f"{dataset.input_shape}; run directory {run_dir.path}",
    )


def _nothing_to_do(run_dir: RunDir, trainer: Trainer, finished: dict) -> str:
    """What resuming a finished run says."""
    early = ", stopped early" if trainer.stopped_early else ""
    return (
        f"{run_dir.path} is already finished ({trainer.epoch} of {trainer.epochs} epochs{early}; test "
        f"accuracy {finished['test_accuracy']:.4f}): nothing to do. To train longer, resume with "
        f"--set train.epochs={trainer.epoch + 5}, say"
    )


def _time_line(history: list[dict], first_epoch: int, figures: float | None, total: float) -> str:
    """Where this session's time went: training (the epochs after ``first_epoch``; with the earlier
    ones too after a resume), figures (None: none drawn) and the whole session."""
    now = sum(r["seconds"] for r in history if r["epoch"] > first_epoch)
    earlier = f" (+{sum(r['seconds'] for r in history) - now:.1f}s before the resume)" if first_epoch else ""
    drawn = "figures off" if figures is None else f"{figures:.1f}s figures"
    return f"{now:.1f}s training{earlier}, {drawn}, {total:.1f}s in all"


def _finished_metrics(run_dir: RunDir, trainer: Trainer) -> dict | None:
    """A resumed run's saved metrics (with the history) when it has nothing left to do: all its epochs
    trained (or stopped early) and tested; None otherwise."""
    if trainer.epoch < trainer.epochs and not trainer.stopped_early:
        return None
    try:
        saved = json.loads(run_dir.metrics_json.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and "test_accuracy" in saved else None


def _resume(cfg: Config, run_dir: RunDir, quiet: bool):
    """:func:`prepare` a resumed run, checked against the run's own config, split and checkpoint, and
    restored from its checkpoint; the config is rewritten only then (with more epochs, say), and not
    for a finished run, which :func:`run` leaves as it is."""
    run_dir.check_resume(cfg)
    dataset, model, trainer = prepare(cfg)
    run_dir.check_split(dataset)
    run_dir.load_checkpoint(trainer, cfg, dataset)
    run_dir.check_epochs(cfg)
    if _finished_metrics(run_dir, trainer) is None:
        _say(quiet, f"resuming {run_dir.path} after epoch {trainer.epoch}")
        run_dir.write_config(cfg)
    return dataset, model, trainer


def _train_and_test(run_dir: RunDir, dataset, trainer: Trainer, quiet: bool, on_epoch_end) -> dict:
    """Fit with a checkpoint after every epoch, save the best weights, evaluate on the test split and
    write the metrics; returns them with the history."""

    def end_of_epoch(trainer_, record):
        run_dir.end_of_epoch(trainer_)
        if on_epoch_end is not None:
            on_epoch_end(trainer_, record)

    with _ctrl_c_between_batches() as stop_requested:
        history = trainer.fit(
            dataset.X_train,
            dataset.y_train,
            dataset.X_val,
            dataset.y_val,
            progress=not quiet,
            on_epoch_end=end_of_epoch,
            on_batch=stop_requested,
        )
        stop_requested()
    run_dir.save_model(trainer.model)  # the best validation weights, which fit put back
    test_loss, test_acc = trainer.evaluate(dataset.X_test, dataset.y_test)
    metrics = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "train_seconds": float(sum(r["seconds"] for r in history)),
        "best_epoch": trainer.best_epoch,
        "epochs_run": trainer.epoch,
        "stopped_early": trainer.stopped_early,
    }
    run_dir.write_metrics(history, metrics)
    return {**metrics, "history": history}


@contextlib.contextmanager
def _ctrl_c_between_batches():
    """Turn Ctrl-C into a KeyboardInterrupt raised by our own code, between two batches.

    Python's default handler raises wherever the program is, including inside a ``__del__`` (tqdm's,
    for one), where the exception is printed and swallowed and training goes on. Here the handler
    only takes note, and the check this yields (called after every batch) raises. A second Ctrl-C
    raises at once. Outside the main thread, signals cannot be handled and nothing changes.
    """
    requested = []

    def on_sigint(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    def check(*_):
        if requested:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        yield check
        return
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
