"""The run directory: one folder per training run, and every file a run writes into it.

=================  ===========================================================================
``config.toml``    the resolved config (rewritten on resume, with any ``--set`` changes)
``split.npz``      the split indices and the standardization (``mean``, ``std``)
``init.npz``       the initial weights (loadable with ``Sequential.load``)
``last.npz``       the checkpoint after the last completed epoch: weights, optimizer, schedule,
                   RNG states, history (:meth:`minicnn.train.trainer.Trainer.state_dict`)
``model.npz``      the best validation weights (loadable with ``Sequential.load``)
``metrics.json``   the test results and the history; ``metrics.csv``: the history as a table
=================  ===========================================================================

The ``train.py`` command also draws its figures here. Every write is atomic (:mod:`minicnn.io`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..io import load_npz, save_npz_atomic, write_text_atomic
from ..nn.model import Sequential
from .config import Config, to_toml
from .trainer import Trainer

#: The columns of ``metrics.csv``: one row per epoch.
METRICS_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


class _File:
    """A file of the run directory as an attribute: ``RunDir(p).checkpoint == p / "last.npz"``."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, run_dir: RunDir | None, owner: type | None = None) -> Path:
        if run_dir is None:
            raise AttributeError(f"{self.name} is a file of a RunDir instance, not of the class")
        return run_dir.path / self.name


class RunDir:
    """A run directory: the paths of its files and the writes a run makes.

    Parameters
    ----------
    path : str or Path
        The folder (created by :meth:`start`).

    Attributes
    ----------
    checkpoint_epoch : int or None
        The epoch the checkpoint (``last.npz``) holds, as far as this object has written or read it.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.checkpoint_epoch: int | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- paths: ``run_dir.checkpoint`` is ``run_dir.path / "last.npz"`` -------------------------------
    config = _File("config.toml")
    split = _File("split.npz")
    init = _File("init.npz")
    checkpoint = _File("last.npz")
    model = _File("model.npz")
    metrics_json = _File("metrics.json")
    metrics_csv = _File("metrics.csv")

    # --- writing ---------------------------------------------------------------------------------
    def start(self, cfg: Config, dataset, trainer: Trainer) -> None:
        """A fresh run: create the folder, write the config, the split, the initial weights and the
        epoch-0 checkpoint. ``dataset`` is the :class:`minicnn.data.Dataset` the run trains on."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(cfg)
        save_npz_atomic(self.split, {**dataset.indices, "mean": dataset.mean, "std": dataset.std})
        trainer.model.save(self.init)
        self.save_checkpoint(trainer)

    def write_config(self, cfg: Config) -> None:
        write_text_atomic(self.config, to_toml(cfg))

    def save_checkpoint(self, trainer: Trainer) -> None:
        """Write ``last.npz``: everything needed to continue bit for bit."""
        save_npz_atomic(self.checkpoint, trainer.state_dict())
        self.checkpoint_epoch = trainer.epoch

    def load_checkpoint(self, trainer: Trainer) -> None:
        """Restore ``trainer`` from ``last.npz``; ValueError naming the file if it does not fit."""
        try:
            trainer.load_state_dict(load_npz(self.checkpoint))
        except ValueError as exc:
            raise ValueError(f"cannot resume from {self.checkpoint}: {exc}") from None
        self.checkpoint_epoch = trainer.epoch

    def save_model(self, model: Sequential) -> None:
        model.save(self.model)

    def end_of_epoch(self, trainer: Trainer) -> None:
        """After each epoch: the checkpoint, the model when this epoch is the best so far, the metrics."""
        self.save_checkpoint(trainer)
        if trainer.best_epoch == trainer.epoch:
            self.save_model(trainer.model)
        self.write_metrics(trainer.history, {"best_epoch": trainer.best_epoch})

    def write_metrics(self, history: list[dict], extra: dict) -> None:
        """``metrics.json`` (``extra`` at the top level, then the history) and ``metrics.csv``."""
        write_text_atomic(self.metrics_json, json.dumps({**extra, "history": history}, indent=2) + "\n")
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=METRICS_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in history)
        write_text_atomic(self.metrics_csv, table.getvalue())
