"""The training loop: build a model from layer specs, train it, checkpoint it, resume it.

Two levels:

- :func:`build_model` and :class:`Trainer` work on in-memory arrays and touch no files; the
  scikit-learn estimator and any script call them directly.
- :func:`run` wraps them for a config: it loads the data, writes the run directory (config,
  checkpoints, metrics, figures) and handles interruption and divergence.

Randomness comes from explicit Generators derived from the config seed: one for the weights
(:func:`build_model`), one for the Trainer (shuffling and augmentation), and each Dropout layer's own.
All their states go into the checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import inspect
import io
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np

from .. import data as data_mod
from ..io import load_npz, save_npz_atomic, write_text_atomic
from ..nn.layers import LAYERS, Dense, Dropout, as_generator
from ..nn.losses import SoftmaxCrossEntropy
from ..nn.model import Sequential
from ..nn.optim import OPTIMIZERS, ConstantLR, CosineLR, StepLR, clip_grad_norm
from .config import AugmentConfig, Config, ConfigError, TrainConfig, to_toml

#: Constructor arguments inferred from the incoming shape; a spec may give them only if they agree.
_INFERRED = {"Conv2D": "in_channels", "Dense": "in_features", "BatchNorm2D": "num_features"}


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


class TrainingInterrupted(Exception):
    """Ctrl-C during :func:`run`; the last completed epoch is saved in ``run_dir / 'last.npz'``."""

    def __init__(self, run_dir, epoch: int):
        self.run_dir, self.epoch = Path(run_dir), epoch
        super().__init__(f"interrupted after epoch {epoch}; checkpoint in {self.run_dir / 'last.npz'}")


# ----------------------------------------------------------------------------------------------
# Building a model from specs
# ----------------------------------------------------------------------------------------------

def build_model(layer_specs, input_shape, dtype=np.float32, rng=None) -> Sequential:
    """A :class:`Sequential` from layer specs in the config's form.

    Parameters
    ----------
    layer_specs : list of dict
        ``{"type": "Conv2D", "out_channels": 16, "kernel_size": 3, "padding": 1}``; any layer may add
        ``"trainable": False`` to freeze its parameters. ``in_channels`` (Conv2D), ``in_features``
        (Dense) and ``num_features`` (BatchNorm2D) are inferred by passing the shape through.
    input_shape : (C, H, W)
    dtype : float32 or float64, for layers that hold parameters
    rng : int seed, numpy.random.Generator or None
        Each layer that draws random numbers gets its own Generator, seeded from this one in order.

    Raises ValueError naming ``model.layers[i]`` and the key for an unknown type or a bad argument.
    """
    rng = as_generator(rng)
    dtype = np.dtype(dtype)
    shape = (1,) + tuple(int(s) for s in input_shape)
    layers = []
    for i, spec in enumerate(layer_specs):
        where = f"model.layers[{i}]"
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind not in LAYERS:
            close = difflib.get_close_matches(str(kind), list(LAYERS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}.type = {kind!r}: unknown layer{hint}; known: {', '.join(LAYERS)}")
        cls = LAYERS[kind]
        trainable = spec.pop("trainable", True)
        if not isinstance(trainable, bool):
            raise ValueError(f"{where}.trainable = {trainable!r}: expected true or false")
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("rng", "dtype")]
        for key in spec:
            if key not in accepted:
                close = difflib.get_close_matches(key, accepted + ["trainable"], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{where}.{key}: {kind} has no argument {key!r}{hint}; it takes "
                                 f"{', '.join(accepted + ['trainable']) or 'no arguments but trainable'}")
        inferred = _INFERRED.get(kind)
        if inferred:
            actual = _inferred_size(kind, shape, where)
            if inferred in spec and spec[inferred] != actual:
                raise ValueError(f"{where}.{inferred} = {spec[inferred]!r}, but its input is {shape[1:]}, "
                                 f"which needs {actual}; leave it out to infer it")
            spec[inferred] = actual
        params = inspect.signature(cls).parameters
        if "dtype" in params:
            spec["dtype"] = dtype
        if "rng" in params:
            spec["rng"] = np.random.default_rng(rng.integers(2**63))
        try:
            layer = cls(**spec)
            if not trainable:
                layer.freeze()
            out = layer.eval().forward(np.zeros(shape, dtype=dtype))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where} ({kind}): {exc}") from None
        layer.train()
        layers.append(layer)
        shape = out.shape
    return Sequential(layers)


def _inferred_size(kind: str, shape, where: str) -> int:
    if kind == "Dense":
        if len(shape) != 2:
            raise ValueError(f"{where} (Dense): its input has shape {shape[1:]}; add a Flatten or "
                             "GlobalAvgPool2D layer before it")
        return shape[1]
    if len(shape) != 4:
        raise ValueError(f"{where} ({kind}): needs an image input (C, H, W), got shape {shape[1:]}")
    return shape[1]


def last_dense(model: Sequential) -> tuple[int, Dense] | None:
    """(index, layer) of the model's last Dense layer, or None."""
    found = [(i, layer) for i, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    return found[-1] if found else None


# ----------------------------------------------------------------------------------------------
# The Trainer
# ----------------------------------------------------------------------------------------------

def _json_array(value) -> np.ndarray:
    """A JSON text as a 0-d str array: how RNG states and history travel in a .npz without pickle."""
    return np.array(json.dumps(value))


def _from_json_array(array) -> object:
    return json.loads(str(array))


class Trainer:
    """Trains a classifier with softmax cross-entropy; the one training loop every entry point uses.

    Parameters
    ----------
    model : Sequential
        Maps (N, C, H, W) images to (N, K) logits.
    config : TrainConfig
        Epochs, batch size, optimizer and hyperparameters, schedule, clipping, label smoothing, patience.
    rng : numpy.random.Generator or int seed
        Shuffles the batches and draws the augmentation.
    augment : AugmentConfig, optional
        Random transforms of the training batches (none by default).

    Attributes
    ----------
    epoch : int
        Completed epochs.
    history : list of dict
        One record per epoch: ``epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds``
        (validation entries are None without validation data).
    best_epoch : int
        The epoch whose weights :meth:`fit` restores (best validation accuracy, ties to lower loss).
    """

    def __init__(self, model: Sequential, config: TrainConfig, rng, augment: AugmentConfig | None = None):
        self.model = model
        self.config = config
        self.rng = as_generator(rng)
        self.augment = augment if augment is not None else AugmentConfig()
        self.loss = SoftmaxCrossEntropy(label_smoothing=config.label_smoothing)
        self.optimizer = self._make_optimizer()
        self.schedule = self._make_schedule()
        self.epoch = 0
        self.history: list[dict] = []
        self.best_epoch = 0
        self.best_score = (-math.inf, -math.inf)
        self.best_state: dict | None = None
        self.bad_epochs = 0
        self.stopped_early = False

    def _make_optimizer(self):
        c = self.config
        params = self.model.parameters()
        if c.optimizer == "sgd":
            return OPTIMIZERS["sgd"](params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                     weight_decay=c.weight_decay)
        return OPTIMIZERS[c.optimizer](params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)

    def _make_schedule(self):
        c = self.config
        if c.schedule == "cosine":
            return CosineLR(self.optimizer, total=c.epochs, warmup=c.warmup_epochs, min_factor=c.min_lr_factor)
        if c.schedule == "step":
            return StepLR(self.optimizer, step_size=c.step_size, gamma=c.gamma)
        return ConstantLR(self.optimizer)

    # --- one epoch -------------------------------------------------------------------------------
    def train_epoch(self, X: np.ndarray, y: np.ndarray, on_batch=None) -> tuple[float, float]:
        """One pass over (X, y) in shuffled batches; returns the mean training loss and accuracy.

        X : (N, C, H, W), y : (N,) int. ``on_batch(loss)`` is called after each step (progress bars).
        Raises :class:`DivergedError` if the loss or the gradients stop being finite (before that
        step's update).
        """
        self.model.train()
        params = self.model.parameters()
        total_loss, correct = 0.0, 0
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging loss is reported once, below
            for batch, idx in enumerate(data_mod.batch_indices(len(X), self.config.batch_size, self.rng)):
                loss, batch_correct = self._step(X[idx], y[idx], params, batch)
                total_loss += loss * len(idx)
                correct += batch_correct
                if on_batch is not None:
                    on_batch(loss)
        return total_loss / len(X), correct / len(X)

    def _step(self, xb: np.ndarray, yb: np.ndarray, params, batch: int) -> tuple[float, int]:
        """One optimizer step on a batch: augment, forward, loss, backward, clip, update.

        Returns the batch's mean loss and its number of correct predictions.
        """
        xb = data_mod.augment(xb, self.augment, self.rng)
        logits = self.model.forward(xb)
        loss = self.loss.forward(logits, yb)
        if not math.isfinite(loss):
            self._diverged(f"the training loss became {loss}", batch)
        self.optimizer.zero_grad()
        self.model.backward(self.loss.backward(), need_input_grad=False)
        # the norm is needed anyway for clipping; a NaN can hide from the loss (ReLU maps NaN to 0)
        grad_norm = clip_grad_norm(params, self.config.clip_grad_norm)
        if not math.isfinite(grad_norm):
            self._diverged(f"the gradients became {grad_norm} (loss {loss:.4g})", batch)
        self.optimizer.step()
        return loss, int((logits.argmax(axis=1) == yb).sum())

    def _diverged(self, what: str, batch: int):
        raise DivergedError(f"{what} in epoch {self.epoch + 1}, batch {batch + 1} (lr {self.optimizer.lr:.3g}); "
                            "lower train.lr or set train.clip_grad_norm")

    def logits(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Model outputs in eval mode, (N, K), computed in batches."""
        return self.model.predict_logits(X, batch_size)

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
        """Mean loss (with the training label smoothing, so it compares with the training loss) and
        accuracy on (X, y), in eval mode."""
        if len(X) == 0:
            return math.nan, math.nan
        logits = self.logits(X, batch_size)
        loss = SoftmaxCrossEntropy(self.config.label_smoothing).forward(logits, y)
        return loss, float((logits.argmax(axis=1) == y).mean())

    # --- the loop --------------------------------------------------------------------------------
    def fit(self, X_train, y_train, X_val=None, y_val=None, progress: bool = True, on_epoch_end=None,
            on_batch=None):
        """Train until ``config.epochs`` (counting epochs done before a resume) or early stopping.

        After each epoch, ``on_epoch_end(trainer, record)`` is called (checkpoints go there), then
        the epoch's line is printed; after each batch, ``on_batch(loss)``. At the end the best
        validation weights are put back in the model (the last ones without validation data).
        With ``progress`` a tqdm bar shows each epoch and one line sums it up.

        Returns the history (list of per-epoch dicts).
        """
        has_val = X_val is not None and len(X_val) > 0
        n_batches = math.ceil(len(X_train) / self.config.batch_size)
        while self.epoch < self.config.epochs and not self.stopped_early:
            start = time.perf_counter()
            lr = self.optimizer.lr
            bar = _Bar(n_batches, f"epoch {self.epoch + 1}/{self.config.epochs}") if progress else None

            def batch_done(loss):
                if bar is not None:
                    bar.update_loss(loss)
                if on_batch is not None:
                    on_batch(loss)

            try:
                train_loss, train_acc = self.train_epoch(X_train, y_train, on_batch=batch_done)
            finally:
                if bar is not None:
                    bar.close()
            val_loss, val_acc = self.evaluate(X_val, y_val) if has_val else (None, None)
            self.schedule.step()
            self.epoch += 1
            record = {"epoch": self.epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                      "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr,
                      "seconds": time.perf_counter() - start}
            self.history.append(record)
            self._track_best(record, has_val)
            if on_epoch_end is not None:
                on_epoch_end(self, record)
            if progress:
                _print_epoch(record, self.config.epochs, improved=self.best_epoch == self.epoch and has_val)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.history

    def train_more(self, X_train, y_train, epochs: int = 1, progress: bool = False):
        """Train ``epochs`` more epochs on ``(X_train, y_train)`` from the current weights and optimizer
        state, after a finished :meth:`fit` too (the epoch budget rises, early stopping is reset). No
        validation data: the weights at the end are kept. Returns the history."""
        self.config = dataclasses.replace(self.config, epochs=self.epoch + epochs)
        self.best_state, self.stopped_early = None, False
        return self.fit(X_train, y_train, progress=progress)

    def _track_best(self, record: dict, has_val: bool) -> None:
        if not has_val:
            self.best_epoch = self.epoch
            return
        score = (record["val_accuracy"], -record["val_loss"])
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_epochs = score, self.epoch, 0
            self.best_state = self.model.state_dict()
        else:
            self.bad_epochs += 1
            if self.config.patience and self.bad_epochs >= self.config.patience:
                self.stopped_early = True

    # --- checkpoints -----------------------------------------------------------------------------
    def _layer_rngs(self) -> dict[str, np.random.Generator]:
        return {str(i): layer.rng for i, layer in enumerate(self.model.layers) if isinstance(layer, Dropout)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit for bit, as arrays for ``np.savez``: the model
        (``model/...``), optimizer (``optim/...``), schedule (``schedule/...``), best weights
        (``best/...``), the Generators' states and the history (JSON in 0-d str arrays), counters."""
        state = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        state.update({f"optim/{k}": v for k, v in self.optimizer.state_dict().items()})
        state.update({f"schedule/{k}": v for k, v in self.schedule.state_dict().items()})
        if self.best_state is not None:
            state.update({f"best/{k}": v for k, v in self.best_state.items()})
        state["rng"] = _json_array(self.rng.bit_generator.state)
        state["layer_rngs"] = _json_array({k: g.bit_generator.state for k, g in self._layer_rngs().items()})
        state["history"] = _json_array(self.history)
        state["epoch"] = np.array(self.epoch)
        state["best_epoch"] = np.array(self.best_epoch)
        state["best_score"] = np.array(self.best_score, dtype=np.float64)
        state["bad_epochs"] = np.array(self.bad_epochs)
        state["stopped_early"] = np.array(self.stopped_early)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (for a model and config built the same way)."""
        def part(prefix):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            self.model.load_state_dict(part("model/"))
            self.optimizer.load_state_dict(part("optim/"))
            self.schedule.load_state_dict(part("schedule/"))
            best = part("best/")
            self.best_state = best or None
            self.rng.bit_generator.state = _from_json_array(state["rng"])
            layer_states = _from_json_array(state["layer_rngs"])
            for key, generator in self._layer_rngs().items():
                generator.bit_generator.state = layer_states[key]
            self.history = _from_json_array(state["history"])
            self.epoch = int(state["epoch"])
            self.best_epoch = int(state["best_epoch"])
            self.best_score = tuple(float(v) for v in state["best_score"])
            self.bad_epochs = int(state["bad_epochs"])
            self.stopped_early = bool(state["stopped_early"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"checkpoint does not match this model and config: {exc}") from None


class _Bar:
    """A tqdm bar over one epoch's batches with the running loss (imported only when shown)."""

    def __init__(self, total: int, desc: str):
        from tqdm.auto import tqdm
        self._bar = tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
        self._sum, self._count = 0.0, 0

    def update_loss(self, loss: float) -> None:
        self._sum, self._count = self._sum + loss, self._count + 1
        self._bar.set_postfix(loss=f"{self._sum / self._count:.4f}", refresh=False)
        self._bar.update()

    def close(self) -> None:
        self._bar.close()


def _fmt(value, spec: str) -> str:
    return "   -  " if value is None else format(value, spec)


def _print_epoch(record: dict, epochs: int, improved: bool) -> None:
    width = len(str(epochs))
    print(f"epoch {record['epoch']:>{width}}/{epochs}  train loss {record['train_loss']:.4f} "
          f"acc {record['train_accuracy']:.4f}  val loss {_fmt(record['val_loss'], '.4f')} "
          f"acc {_fmt(record['val_accuracy'], '.4f')}  lr {record['lr']:.2e}  "
          f"{record['seconds']:.2f}s{'  *' if improved else ''}", flush=True)


# ----------------------------------------------------------------------------------------------
# Runs: a config -> a run directory
# ----------------------------------------------------------------------------------------------

def seed_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The run's two Generators from one seed: (model initialization, training)."""
    model_seq, train_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(model_seq), np.random.default_rng(train_seq)


def prepare(cfg: Config, dataset=None):
    """Load the data and build the model and Trainer a config describes (no files written).

    Returns (dataset, model, trainer). Raises ConfigError when the layers do not fit the data.
    """
    dataset = data_mod.load_dataset(cfg.data) if dataset is None else dataset
    model_rng, train_rng = seed_generators(cfg.seed)
    try:
        model = build_model(cfg.model.layers, dataset.input_shape, dtype=cfg.model.dtype, rng=model_rng)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    found = last_dense(model)
    if found is None or found[0] != len(model) - 1:
        raise ConfigError("model.layers: the last layer must be a Dense layer with one output per class "
                          f"({dataset.num_classes} here)")
    index, dense = found
    if dense.out_features != dataset.num_classes:
        raise ConfigError(f"model.layers[{index}].out_features = {dense.out_features}, but the data has "
                          f"{dataset.num_classes} classes (labels 0 to {dataset.num_classes - 1})")
    trainer = Trainer(model, cfg.train, train_rng, augment=cfg.data.augment)
    return dataset, model, trainer


def _write_metrics(run_dir: Path, history: list[dict], extra: dict) -> None:
    """``metrics.json`` (``extra`` at the top level, then the history) and ``metrics.csv``."""
    write_text_atomic(run_dir / "metrics.json", json.dumps({**extra, "history": history}, indent=2) + "\n")
    columns = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in history)
    write_text_atomic(run_dir / "metrics.csv", table.getvalue())


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def run(cfg: Config, run_dir, resume: bool = False, quiet: bool = False, on_epoch_end=None,
        finish=None) -> dict:
    """Train the model a config describes, writing everything into ``run_dir``.

    The run directory holds ``config.toml`` (the resolved config), ``split.npz`` (the split indices
    and standardization), ``init.npz`` (initial weights), ``last.npz`` (the checkpoint after the last
    completed epoch: weights, optimizer, schedule, RNG states, history), ``model.npz`` (best
    validation weights, loadable with ``Sequential.load``) and ``metrics.json`` / ``metrics.csv``.
    ``finish(run_dir, model, history, dataset)``, when given, runs after the test evaluation (the
    ``train.py`` command draws the figures there; training itself never imports plotting).

    With ``resume=True`` training continues from ``run_dir / 'last.npz'``. ``on_epoch_end(trainer,
    record)`` runs after each epoch's checkpoint is written. Returns the metrics dict (as in
    ``metrics.json``).

    Raises ConfigError / DataError / FileNotFoundError before training for bad input,
    :class:`TrainingInterrupted` on Ctrl-C and :class:`DivergedError` when the loss is not finite
    (in both cases ``last.npz`` holds the last good epoch).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    dataset, model, trainer = prepare(cfg)
    if resume:
        checkpoint = run_dir / "last.npz"
        try:
            trainer.load_state_dict(load_npz(checkpoint))
        except ValueError as exc:
            raise ValueError(f"cannot resume from {checkpoint}: {exc}") from None
        _say(quiet, f"resuming {run_dir} after epoch {trainer.epoch}")
        write_text_atomic(run_dir / "config.toml", to_toml(cfg))  # with any --set changes, e.g. more epochs
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.toml", to_toml(cfg))
        save_npz_atomic(run_dir / "split.npz", {**dataset.indices, "mean": dataset.mean, "std": dataset.std})
        model.save(run_dir / "init.npz")
        save_npz_atomic(run_dir / "last.npz", trainer.state_dict())
        if not quiet:
            print(model.summary(dataset.input_shape))
            print(f"data: {len(dataset.y_train)} train, {len(dataset.y_val)} validation, "
                  f"{len(dataset.y_test)} test images of shape {dataset.input_shape}; run directory {run_dir}")

    saved = {"epoch": trainer.epoch}  # the epoch last.npz holds

    def checkpoint(trainer_, record):
        save_npz_atomic(run_dir / "last.npz", trainer_.state_dict())
        saved["epoch"] = trainer_.epoch
        if trainer_.best_epoch == trainer_.epoch:
            model.save(run_dir / "model.npz")
        _write_metrics(run_dir, trainer_.history, {"best_epoch": trainer_.best_epoch})
        if on_epoch_end is not None:
            on_epoch_end(trainer_, record)

    try:
        with _ctrl_c_between_batches() as stop_requested:
            history = trainer.fit(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val,
                                  progress=not quiet, on_epoch_end=checkpoint, on_batch=stop_requested)
            stop_requested()
        model.save(run_dir / "model.npz")  # the best validation weights, which fit put back
        test_loss, test_acc = trainer.evaluate(dataset.X_test, dataset.y_test)
        train_seconds = float(sum(r["seconds"] for r in history))
        metrics = {"test_accuracy": test_acc, "test_loss": test_loss, "train_seconds": train_seconds,
                   "best_epoch": trainer.best_epoch, "epochs_run": trainer.epoch,
                   "stopped_early": trainer.stopped_early}
        _write_metrics(run_dir, history, metrics)
        if finish is not None:
            finish(run_dir, model, history, dataset)
    except KeyboardInterrupt:
        raise TrainingInterrupted(run_dir, saved["epoch"]) from None
    except DivergedError as exc:
        raise DivergedError(f"{exc}. Training stopped; {run_dir / 'last.npz'} keeps the last good state "
                            f"(after epoch {saved['epoch']})") from None
    _say(quiet, f"test accuracy {test_acc:.4f} (loss {test_loss:.4f}) with the weights of epoch "
                f"{trainer.best_epoch}; {train_seconds:.1f}s training, {time.perf_counter() - started:.1f}s "
                f"in all; everything is in {run_dir}")
    metrics["history"] = history
    return metrics


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

