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

The ``train.py`` command also draws its figures here (:data:`FIGURES`). Every write is atomic
(:mod:`minicnn.io`). A new run refuses a folder that is not empty, unless told to overwrite, and then
removes only the files listed in :attr:`RunDir.FILES`; the ``.tmp-*`` files a killed write left
behind are removed at every start.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from ..io import (
    FileFormatError,
    load_npz,
    remove_stale_temporaries,
    save_npz_atomic,
    show_path,
    write_text_atomic,
)
from ..nn.model import Sequential
from .config import Config, load_config, to_dict, to_toml
from .trainer import Trainer

#: The columns of ``metrics.csv``: one row per epoch.
METRICS_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
#: The figures the ``train.py`` command draws into a run directory (minicnn.see.plots.write_run_figures,
#: minicnn.see.kernels.write_kernel_figures, minicnn.see.saliency.write_saliency_figures).
FIGURES = (
    "filters_init.png",
    "filters_learned.png",
    "feature_maps.png",
    "history.png",
    "confusion.png",
    "mistakes.png",
    "filters_evolution.png",
    "top_patches.png",
    "saliency.png",
    "class_maps_first.png",
    "class_maps_last.png",
)


#: The settings a resumed run may change: none changes what was learned so far (``train.epochs`` not
#: below the epochs the checkpoint holds).
RESUME_MAY_CHANGE = (
    "train.epochs",
    "train.threads",
    "train.memory_budget_mib",
    "train.device",
    "output.dir",
    "output.figures",
)


class RunDirError(ValueError):
    """A run directory cannot be used: not empty for a new run, not a folder, or not a run to resume."""


def _flatten(tree, prefix: str = "") -> dict:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; list items as ``key[i]``."""
    if isinstance(tree, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in tree.items()]
    elif isinstance(tree, list) and any(isinstance(v, dict) for v in tree):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(tree)]
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(_flatten(value, key))
    return flat


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

    #: Every file a run writes: all that ``overwrite=True`` may remove.
    FILES = (
        "config.toml",
        "split.npz",
        "init.npz",
        "last.npz",
        "model.npz",
        "metrics.json",
        "metrics.csv",
        "kernels_history.npz",  # written by train.py (minicnn.see.change.KernelHistory)
        *FIGURES,
    )

    # --- claiming the folder ---------------------------------------------------------------------
    def check_new(self, overwrite: bool = False) -> None:
        """Refuse, before anything is written, a path that is not a folder, or a folder that holds
        anything (but stale temporaries) unless ``overwrite``. Raises :class:`RunDirError`."""
        shown = show_path(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run directory {shown} exists and is not a folder; choose another --out")
        if not self.path.is_dir():
            return
        remove_stale_temporaries(self.path)
        entries = sorted(os.listdir(self.path))
        if entries and not overwrite:
            raise RunDirError(
                f"run directory {shown} exists and is not empty ({len(entries)} entries, "
                f"e.g. {entries[0]!r}); choose another --out, or --overwrite to replace a "
                "run's files (other files are kept)"
            )

    def clear(self) -> list[str]:
        """Remove the files a run writes (:attr:`FILES`; links themselves, never their targets) and
        stale temporaries; every other file stays. Returns the names removed."""
        removed = remove_stale_temporaries(self.path)
        for name in self.FILES:
            path = self.path / name
            if path.is_symlink() or path.is_file():
                path.unlink()
                removed.append(name)
        return removed

    # --- writing ---------------------------------------------------------------------------------
    def start(self, cfg: Config, dataset, trainer: Trainer) -> None:
        """A fresh run: create the folder, clear a previous run's files (:meth:`clear`), write the config,
        the split, the initial weights and the epoch-0 checkpoint. ``dataset`` is the
        :class:`minicnn.data.Dataset` the run trains on."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.clear()
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
        """Restore ``trainer`` from ``last.npz``; :class:`FileFormatError` naming the file if it does not
        fit: another model, a negative epoch, a history of the wrong type or length."""
        try:
            trainer.load_state_dict(load_npz(self.checkpoint))
        except (ValueError, RecursionError) as exc:
            reason = "JSON nested too deep" if isinstance(exc, RecursionError) else exc
            raise FileFormatError(f"cannot resume from {show_path(self.checkpoint)}: {reason}") from None
        history, epoch, best = trainer.history, trainer.epoch, trainer.best_epoch
        if not isinstance(history, list) or not all(isinstance(record, dict) for record in history):
            raise FileFormatError(
                f"cannot resume from {show_path(self.checkpoint)}: its history is a "
                f"{type(history).__name__}, expected a list of one record per epoch"
            )
        if epoch < 0 or epoch != len(history) or not 0 <= best <= epoch:
            raise FileFormatError(
                f"cannot resume from {show_path(self.checkpoint)}: epoch {epoch}, best "
                f"epoch {best} and {len(history)} history records do not agree"
            )
        self.checkpoint_epoch = epoch

    def check_resume(self, cfg: Config) -> None:
        """Refuse to resume with a config that differs from the run's ``config.toml`` in a setting that
        would change what was learned so far (anything but :data:`RESUME_MAY_CHANGE`). Raises
        :class:`RunDirError` naming the first such key. Clears stale temporaries first, as
        :meth:`check_new` does."""
        remove_stale_temporaries(self.path)
        old, new = _flatten(to_dict(load_config(self.config))), _flatten(to_dict(cfg))
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key) and key not in RESUME_MAY_CHANGE:
                raise RunDirError(
                    f"--resume {show_path(self.path)}: {key} = {new.get(key)!r} differs from "
                    f"the run's {old.get(key)!r}; a resumed run may change only "
                    f"{', '.join(RESUME_MAY_CHANGE)}"
                )

    def check_epochs(self, cfg: Config) -> None:
        """Refuse to resume with fewer epochs than the checkpoint holds (after :meth:`load_checkpoint`)."""
        trained = self.checkpoint_epoch or 0
        if cfg.train.epochs < trained:
            raise RunDirError(
                f"--resume {show_path(self.path)}: train.epochs = {cfg.train.epochs} is fewer "
                f"than the {trained} epochs the run has trained"
            )

    def check_split(self, dataset) -> None:
        """Refuse to resume when the data no longer give the split and standardization in ``split.npz``."""
        saved = load_npz(self.split)
        current = {**dataset.indices, "mean": dataset.mean, "std": dataset.std}
        for key in sorted(saved.keys() | current.keys()):
            if key not in saved or key not in current or not np.array_equal(saved[key], current[key]):
                raise RunDirError(
                    f"--resume {show_path(self.path)}: the data give another {key!r} than "
                    f"{show_path(self.split)}; the data or the split changed since the run "
                    "began"
                )

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
