"""The run directory: one folder per training run, and every file a run writes into it.

=================  ===========================================================================
``config.toml``    the resolved config (rewritten on resume, with any ``--set`` changes)
``split.npz``      the split indices and the standardization (``mean``, ``std``)
``init.npz``       the initial weights (loadable with ``Sequential.load``)
``last.npz``       the checkpoint after the last completed epoch: weights, optimizer, schedule,
                   RNG states, history (:meth:`minicnn.train.trainer.Trainer.state_dict`), and what
                   it was trained under (:func:`provenance`)
``model.npz``      the best validation weights (loadable with ``Sequential.load``)
``metrics.json``   the test results and the history; ``metrics.csv``: the history as a table
``.minicnn.lock``  the single-writer lock (``flock``) and its holder's PID (:meth:`RunDir.locked`)
=================  ===========================================================================

The ``train.py`` command also draws its figures here (:data:`FIGURES`). Every write is atomic and
never through a link (:mod:`minicnn.io`); a name of :attr:`RunDir.FILES` that is a link or another
non-file is refused before training (:meth:`RunDir.check_targets`). A new run refuses a folder
that is not empty, unless told to overwrite, and then removes only the files listed in
:attr:`RunDir.FILES`; the ``.tmp-*`` files a killed write left behind are removed at every start.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import stat
from pathlib import Path

import numpy as np

from ..io import (
    FileFormatError,
    check_write_target,
    load_npz,
    remove_stale_temporaries,
    save_npz_atomic,
    show_path,
    write_text_atomic,
)
from ..nn.model import Sequential
from .config import Config, flat_config, load_config, to_toml
from .trainer import Trainer

#: The columns of ``metrics.csv``: one row per epoch.
METRICS_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
#: The figures the ``train.py`` command draws into a run directory (minicnn.see.run_figures.write_run_figures,
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
    "filters_evolution.gif",
)
#: The lock file that marks a run directory in use (:meth:`RunDir.locked`); never removed, since a
#: second process could otherwise lock a new file of the same name while the first still holds the old.
LOCK_NAME = ".minicnn.lock"


#: The settings a resumed run may change: none changes what was learned so far (``train.epochs`` not
#: below the epochs the checkpoint holds).
RESUME_MAY_CHANGE = (
    "train.epochs",
    "train.threads",
    "train.memory_budget_mib",
    "train.device",
    "output.dir",
    "output.figures",
    "data.download_deadline_s",
    "data.download_min_rate",
)


class RunDirError(ValueError):
    """A run directory cannot be used: not empty for a new run, not a folder, or not a run to resume."""


def _lock(fd: int, lock_path: Path, run_path: Path, mode: int = fcntl.LOCK_EX) -> None:
    """``flock`` ``fd`` without waiting; :class:`RunDirError` naming the holder's PID when taken."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise RunDirError(f"{show_path(lock_path)} is not a regular file; remove it")
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        raise RunDirError(
            f"run directory {show_path(run_path)} is in use by process {holder} (it holds "
            f"{LOCK_NAME}); wait for it to end or choose another --out"
        ) from None


#: The arrays of ``last.npz`` that record what it was trained under (:func:`provenance`).
PROVENANCE_KEYS = ("run/config", "run/split")


def provenance(cfg: Config, dataset) -> dict[str, np.ndarray]:
    """What a checkpoint was trained under, stored in ``last.npz``: ``run/config``, the resolved
    config's settings that change what is learned (all but :data:`RESUME_MAY_CHANGE`) as JSON, and
    ``run/split``, the SHA-256 of the split indices and standardization."""
    settings = {k: v for k, v in flat_config(cfg).items() if k not in RESUME_MAY_CHANGE}
    digest = hashlib.sha256()
    for key, value in sorted({**dataset.indices, "mean": dataset.mean, "std": dataset.std}.items()):
        array = np.ascontiguousarray(value)
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    config, split = np.array(json.dumps(settings, sort_keys=True)), np.array(digest.hexdigest())
    return dict(zip(PROVENANCE_KEYS, (config, split)))


def _check_provenance(state: dict, current: dict, shown: str) -> dict:
    """Refuse a checkpoint trained under another config or split than ``current``; pops and returns
    its record."""
    record = {key: state.pop(key, None) for key in current}
    if any(value is None or value.dtype.kind != "U" or value.shape != () for value in record.values()):
        raise RunDirError(
            f"cannot resume from {shown}: it carries no record of the config and split it was "
            "trained under (run/config, run/split); it was not written by this version of train.py"
        )
    try:
        saved = json.loads(str(record["run/config"]))
    except (ValueError, RecursionError):
        saved = None
    if not isinstance(saved, dict):
        raise FileFormatError(f"cannot resume from {shown}: its run/config record is not a JSON object")
    now = json.loads(str(current["run/config"]))
    for key in sorted(saved.keys() | now.keys()):
        if saved.get(key) != now.get(key):
            raise RunDirError(
                f"cannot resume from {shown}: it was trained with {key} = {saved.get(key)!r}, "
                f"the config now says {now.get(key)!r}"
            )
    if str(record["run/split"]) != str(current["run/split"]):
        raise RunDirError(
            f"cannot resume from {shown}: it was trained on another split or standardization "
            "than the run's split.npz and data give now"
        )
    return current


def _check_checkpoint_arrays(state: dict, model: Sequential) -> None:
    """The weights (``model/``) and best weights (``best/``) must be finite real floats; the best
    weights, when present, exactly the model's keys and shapes."""
    for key, value in state.items():
        if key.startswith(("model/", "best/")):
            if value.dtype.kind != "f":
                raise ValueError(f"{key} has dtype {value.dtype}, expected float32 or float64")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{key} holds NaN or infinite values")
    best = {key[len("best/") :]: value for key, value in state.items() if key.startswith("best/")}
    if best:
        expected = model.state_dict()
        if best.keys() != expected.keys():
            raise ValueError(
                f"its best weights have keys {sorted(best)[:6]}, expected {sorted(expected)[:6]}"
            )
        for key, value in best.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"best/{key} has shape {value.shape}, expected {expected[key].shape}")


def _check_history_records(history: list[dict], shown: str) -> None:
    """Each record holds its epoch (1, 2, ...) and numbers (or null for validation) under
    :data:`METRICS_COLUMNS`."""
    for i, record in enumerate(history):
        for column in METRICS_COLUMNS:
            value = record.get(column)
            if column.startswith("val_") and value is None:  # no validation split
                continue
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
                raise FileFormatError(
                    f"cannot resume from {shown}: history record {i} has {column} = {value!r:.60}, "
                    "expected a finite number"
                )
        if record["epoch"] != i + 1:
            raise FileFormatError(
                f"cannot resume from {shown}: history record {i} is of epoch {record['epoch']!r}, "
                f"expected {i + 1}"
            )


def load_standardization(path, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel ``mean`` and ``std`` (float32, shape (channels,)) of a run's ``split.npz``;
    ValueError naming the file unless both are finite numbers of that shape with std > 0."""
    split = load_npz(path)
    mean, std = (np.asarray(split.get(k, np.zeros(0))).ravel() for k in ("mean", "std"))
    numbers = mean.dtype.kind in "biuf" and std.dtype.kind in "biuf"
    mean, std = (a.astype(np.float32) if numbers else np.zeros(0, np.float32) for a in (mean, std))
    if (
        mean.shape != (channels,)
        or std.shape != (channels,)
        or not np.all(np.isfinite(mean))
        or not np.all(np.isfinite(std) & (std > 0))
    ):
        raise ValueError(
            f"{show_path(path)}: expected finite numbers 'mean' and 'std' of shape "
            f"({channels},) with std > 0, got shapes {mean.shape} and {std.shape}"
        )
    return mean, std


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
        self._provenance: dict[str, np.ndarray] = {}  # what the checkpoints were trained under
        self._held = False  # inside locked()

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
        self.check_not_in_use()  # "in use by process N" says more than "not empty"
        remove_stale_temporaries(self.path)
        entries = sorted(name for name in os.listdir(self.path) if name != LOCK_NAME)
        if entries and not overwrite:
            raise RunDirError(
                f"run directory {shown} exists and is not empty ({len(entries)} entries, "
                f"e.g. {entries[0]!r}); choose another --out, or --overwrite to replace a "
                "run's files (other files are kept)"
            )
        self.check_targets(links_ok=True)

    def check_targets(self, links_ok: bool = False) -> None:
        """Refuse, before anything trains, a name of :attr:`FILES` that exists as anything but a
        regular file (a folder, FIFO, device; a link unless ``links_ok``, for :meth:`clear` removes
        links). Raises :class:`minicnn.io.UnsafeTargetError` naming it."""
        for name in self.FILES:
            if not (links_ok and (self.path / name).is_symlink()):
                check_write_target(self.path / name)

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

    @contextlib.contextmanager
    def locked(self):
        """Hold the run directory (created if needed) for one writer: an exclusive ``flock`` on its
        :data:`LOCK_NAME`, which holds the holder's PID. The OS drops the lock when the holder exits,
        even when killed with -9, so a dead run never leaves the folder locked. A folder another
        process holds raises :class:`RunDirError` naming that process."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK_NAME
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(lock_path, flags, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise RunDirError(f"{show_path(lock_path)} is a symbolic link; remove it") from None
        try:
            _lock(fd, lock_path, self.path)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._held = True
            yield self
        finally:
            self._held = False
            os.close(fd)  # closing releases the lock

    def check_not_in_use(self) -> None:
        """Refuse a folder another process holds (:meth:`locked`), naming it; takes nothing itself."""
        if self._held:
            return
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path / LOCK_NAME, flags)
        except OSError:
            return  # no lock file (a link or worse is refused by locked())
        try:
            _lock(fd, self.path / LOCK_NAME, self.path, fcntl.LOCK_SH)  # a probe, released by close
        finally:
            os.close(fd)

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
        self.save_checkpoint(trainer, cfg, dataset)

    def write_config(self, cfg: Config) -> None:
        write_text_atomic(self.config, to_toml(cfg))

    def save_checkpoint(self, trainer: Trainer, cfg: Config | None = None, dataset=None) -> None:
        """Write ``last.npz``: everything needed to continue bit for bit, and what it was trained under
        (:func:`provenance` of ``cfg`` and ``dataset``, kept from the first write when not given)."""
        if cfg is not None and dataset is not None:
            self._provenance = provenance(cfg, dataset)
        save_npz_atomic(self.checkpoint, {**trainer.state_dict(), **self._provenance})
        self.checkpoint_epoch = trainer.epoch

    def load_checkpoint(self, trainer: Trainer, cfg: Config | None = None, dataset=None) -> None:
        """Restore ``trainer`` from ``last.npz``; :class:`FileFormatError` naming the file if it does not
        fit: another model, weights that are not finite real floats, a negative epoch, a history of
        the wrong type, length or records, best weights of the wrong keys or shapes; and, given
        ``cfg`` and ``dataset``, :class:`RunDirError` naming the key when the checkpoint was trained
        under another config or split (:func:`provenance`)."""
        shown = show_path(self.checkpoint)
        state = load_npz(self.checkpoint)
        if cfg is not None and dataset is not None:
            self._provenance = _check_provenance(state, provenance(cfg, dataset), shown)
        else:  # unchecked: kept as it is for the checkpoints to come
            self._provenance = {key: state.pop(key) for key in PROVENANCE_KEYS if key in state}
        try:
            _check_checkpoint_arrays(state, trainer.model)
            trainer.load_state_dict(state)
        except (ValueError, RecursionError) as exc:
            reason = "JSON nested too deep" if isinstance(exc, RecursionError) else exc
            raise FileFormatError(f"cannot resume from {shown}: {reason}") from None
        history, epoch, best = trainer.history, trainer.epoch, trainer.best_epoch
        if not isinstance(history, list) or not all(isinstance(record, dict) for record in history):
            raise FileFormatError(
                f"cannot resume from {shown}: its history is a "
                f"{type(history).__name__}, expected a list of one record per epoch"
            )
        if epoch < 0 or epoch != len(history) or not 0 <= best <= epoch:
            raise FileFormatError(
                f"cannot resume from {shown}: epoch {epoch}, best "
                f"epoch {best} and {len(history)} history records do not agree"
            )
        _check_history_records(history, shown)
        self.checkpoint_epoch = epoch

    def check_resume(self, cfg: Config) -> None:
        """Refuse to resume with a config that differs from the run's ``config.toml`` in a setting that
        would change what was learned so far (anything but :data:`RESUME_MAY_CHANGE`). Raises
        :class:`RunDirError` naming the first such key. Clears stale temporaries first, as
        :meth:`check_new` does, and refuses planted links or other non-files (:meth:`check_targets`)."""
        remove_stale_temporaries(self.path)
        self.check_targets()
        old, new = flat_config(load_config(self.config)), flat_config(cfg)
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
