"""The training loop: :class:`Trainer` takes a model, a loss, an optimizer, a schedule and a Generator.

:meth:`Trainer.from_config` builds the loss, optimizer and schedule a ``[train]`` config
(:class:`~minicnn.train.config.TrainConfig`) describes, through :func:`make_optimizer` and
:func:`make_schedule`: each maps the config's name to a class and the config keys to its constructor
arguments through one declared table. The Trainer works on in-memory arrays and touches no files;
:func:`minicnn.train.runner.run` adds the run directory.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, cast

import numpy as np

from .. import data as data_mod
from ..nn.devices import Device, asarray_like, namespace
from ..nn.layers import Dropout, as_generator
from ..nn.losses import Loss, SoftmaxCrossEntropy
from ..nn.model import Sequential
from ..nn.optim import SGD, Adam, AdamW, ConstantLR, CosineLR, LRSchedule, Optimizer, StepLR, clip_grad_norm
from .config import KEEP, AugmentConfig, TrainConfig


class DivergedError(FloatingPointError):
    """The training loss became NaN or infinite."""


# ----------------------------------------------------------------------------------------------
# Config -> objects
# ----------------------------------------------------------------------------------------------

#: ``train.optimizer`` -> (class, {constructor argument: [train] key}).
OPTIMIZER_TABLE: dict[str, tuple[type[Optimizer], dict[str, str]]] = {
    "sgd": (
        SGD,
        {"lr": "lr", "momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay"},
    ),
    "adam": (Adam, {"lr": "lr", "betas": "betas", "weight_decay": "weight_decay"}),
    "adamw": (AdamW, {"lr": "lr", "betas": "betas", "weight_decay": "weight_decay"}),
}

#: ``train.schedule`` -> (class, {constructor argument: [train] key}).
SCHEDULE_TABLE: dict[str, tuple[type[LRSchedule], dict[str, str]]] = {
    "constant": (ConstantLR, {}),
    "step": (StepLR, {"step_size": "step_size", "gamma": "gamma"}),
    "cosine": (CosineLR, {"total": "epochs", "warmup": "warmup_epochs", "min_factor": "min_lr_factor"}),
}


def _from_table(table: dict, name: str, config: TrainConfig, first):
    cls, arguments = table[name]
    return cls(first, **{argument: getattr(config, key) for argument, key in arguments.items()})


def make_optimizer(config: TrainConfig, params) -> Optimizer:
    """The optimizer ``config.optimizer`` names, over ``params``, with its hyperparameters from ``config``."""
    return _from_table(OPTIMIZER_TABLE, config.optimizer, config, list(params))


def make_schedule(config: TrainConfig, optimizer: Optimizer) -> LRSchedule:
    """The learning-rate schedule ``config.schedule`` names (stepped once per epoch) for ``optimizer``."""
    return _from_table(SCHEDULE_TABLE, config.schedule, config, optimizer)


def _json_array(value) -> np.ndarray:
    """A JSON text as a 0-d str array: how RNG states and history travel in a .npz without pickle."""
    return np.array(json.dumps(value))


def _from_json_array(array) -> Any:
    return json.loads(str(array))


# ----------------------------------------------------------------------------------------------
# The Trainer
# ----------------------------------------------------------------------------------------------


class Trainer:
    """Trains a classifier: the one training loop every entry point uses.

    Parameters
    ----------
    model : Sequential
        Maps (N, C, H, W) images to (N, K) outputs.
    loss : Loss
        ``loss.forward(outputs, labels)`` -> mean loss, ``loss.backward()`` -> d loss / d outputs;
        usually :class:`~minicnn.nn.losses.SoftmaxCrossEntropy`. :meth:`evaluate` reports it too.
    optimizer : Optimizer
        Over ``model.parameters()``; stepped once per batch.
    schedule : LRSchedule
        Drives ``optimizer.lr``; stepped once per epoch.
    rng : numpy.random.Generator or int seed
        Shuffles the batches and draws the augmentation.
    epochs : int
        Train until this many epochs are done (counting those before a resume).
    batch_size : int
    augment : AugmentConfig, optional
        Random transforms of the training batches (none by default).
    clip_grad_norm : float, default 0
        Largest global gradient norm; 0 = no clipping.
    patience : int, default 0
        Stop after this many epochs without a better validation score; 0 = never.
    keep : {"best", "last"}, default "best"
        The weights :meth:`fit` ends with: the best validation epoch's, or the last epoch's (with a
        schedule that anneals to the end, the last are usually better than a noisy validation pick).
    device : "cpu", "cuda", an array namespace module, (module, device), or None (the default)
        Where to train: the model and the optimizer state are moved there now and at the start of
        each epoch (:meth:`minicnn.nn.Layer.to`), and each batch as it is used; None leaves them
        where they are. Predictions, metrics and checkpoints come back as NumPy arrays.

    Notes
    -----
    :meth:`from_config` builds all of these from a :class:`~minicnn.train.config.TrainConfig`.

    Attributes
    ----------
    epoch : int
        Completed epochs.
    history : list of dict
        One record per epoch: ``epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds``
        (validation entries are None without validation data).
    best_epoch : int
        The epoch whose weights :meth:`fit` ends with: best validation accuracy, ties to lower loss
        (or the last epoch, with ``keep="last"``).
    """

    def __init__(
        self,
        model: Sequential,
        loss: Loss,
        optimizer: Optimizer,
        schedule: LRSchedule,
        rng,
        *,
        epochs: int,
        batch_size: int,
        augment: AugmentConfig | None = None,
        clip_grad_norm: float = 0.0,
        patience: int = 0,
        keep: str = "best",
        device: Device | None = None,
    ):
        self.model, self.loss, self.optimizer, self.schedule = model, loss, optimizer, schedule
        self.rng = as_generator(rng)
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.augment = augment if augment is not None else AugmentConfig()
        self.clip_grad_norm, self.patience = float(clip_grad_norm), int(patience)
        if keep not in KEEP:
            raise ValueError(f"Trainer: keep must be one of {KEEP}, got {keep!r}")
        self.keep = keep
        self.epoch = 0
        self.history: list[dict] = []
        self.best_epoch = 0
        self.best_score: tuple[float, ...] = (-math.inf, -math.inf)
        self.best_state: dict | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.device = device
        self._to_device()

    def _to_device(self) -> None:
        """The model and the optimizer state to :attr:`device` (nothing to do where they are)."""
        if self.device is not None:
            self.model.to(self.device)
            self.optimizer.to(self.device)

    @classmethod
    def from_config(
        cls,
        model: Sequential,
        config: TrainConfig,
        rng,
        augment: AugmentConfig | None = None,
        device: Device | None = None,
    ) -> Trainer:
        """The Trainer a ``[train]`` config describes: softmax cross-entropy with its label smoothing,
        :func:`make_optimizer`, :func:`make_schedule`, and its epochs, batch size, clipping, patience
        and device (``device``, when given, replaces the config's: an array namespace, say)."""
        optimizer = make_optimizer(config, model.parameters())
        return cls(
            model,
            SoftmaxCrossEntropy(label_smoothing=config.label_smoothing),
            optimizer,
            make_schedule(config, optimizer),
            rng,
            epochs=config.epochs,
            batch_size=config.batch_size,
            augment=augment,
            clip_grad_norm=config.clip_grad_norm,
            patience=config.patience,
            keep=config.keep,
            device=config.device if device is None else device,
        )

    # --- one epoch -------------------------------------------------------------------------------
    def train_epoch(self, X: np.ndarray, y: np.ndarray, on_batch=None) -> tuple[float, float]:
        """One pass over (X, y) in shuffled batches; returns the mean training loss and accuracy.

        X : (N, C, H, W), y : (N,) int. ``on_batch(loss)`` is called after each step (progress bars).
        Raises :class:`DivergedError` if the loss or the gradients stop being finite (before that
        step's update).
        """
        self._to_device()
        self.model.train()
        params = self.model.parameters()
        total_loss, correct = 0.0, 0
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging loss is reported once, below
            for batch, idx in enumerate(data_mod.batch_indices(len(X), self.batch_size, self.rng)):
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
        # augmented on the host (its random numbers too), then moved to the parameters' device
        where = params[0].data
        xb = asarray_like(data_mod.augment(xb, self.augment, self.rng), where)
        yb = asarray_like(yb, where)
        logits = self.model.forward(xb)
        loss = self.loss.forward(logits, yb)
        if not math.isfinite(loss):
            self._diverged(f"the training loss became {loss}", batch)
        self.optimizer.zero_grad()
        self.model.backward(self.loss.backward(), need_input_grad=False)
        # the norm is needed anyway for clipping; a NaN can hide from the loss (ReLU maps NaN to 0)
        grad_norm = clip_grad_norm(params, self.clip_grad_norm)
        if not math.isfinite(grad_norm):
            self._diverged(f"the gradients became {grad_norm} (loss {loss:.4g})", batch)
        self.optimizer.step()
        xp = namespace(logits)
        return loss, int(xp.count_nonzero(xp.argmax(logits, axis=1) == yb))

    def _diverged(self, what: str, batch: int):
        raise DivergedError(
            f"{what} in epoch {self.epoch + 1}, batch {batch + 1} (lr {self.optimizer.lr:.3g}); "
            "lower train.lr or set train.clip_grad_norm"
        )

    def logits(self, X: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Model outputs in eval mode, (N, K), computed in batches. ``X`` may also be uint8-backed
        :class:`minicnn.data.Images`, converted to floats one batch at a time."""
        return self.model.predict_logits(X, batch_size)

    def evaluate(self, X: np.ndarray, y: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
        """Mean loss (the training loss, label smoothing included, so the two compare) and accuracy on
        (X, y), in eval mode."""
        if len(X) == 0:
            return math.nan, math.nan
        logits = self.logits(X, batch_size)
        loss = self.loss.forward(logits, y)
        return loss, float((logits.argmax(axis=1) == y).mean())

    # --- the loop --------------------------------------------------------------------------------
    def fit(
        self,
        X_train,
        y_train,
        X_val=None,
        y_val=None,
        progress: bool = True,
        on_epoch_end=None,
        on_batch=None,
    ):
        """Train until ``epochs`` (counting epochs done before a resume) or early stopping.

        After each epoch, ``on_epoch_end(trainer, record)`` is called (checkpoints go there), then
        the epoch's line is printed; after each batch, ``on_batch(loss)``. At the end the best
        validation weights are put back in the model (unless ``keep="last"``, or without validation
        data: then the last ones stay).
        With ``progress`` a tqdm bar shows each epoch and one line sums it up.

        Returns the history (list of per-epoch dicts).
        """
        has_val = X_val is not None and len(X_val) > 0
        while self.epoch < self.epochs and not self.stopped_early:
            start = time.perf_counter()
            lr = self.optimizer.lr
            train_loss, train_acc = self._epoch_with_progress(X_train, y_train, progress, on_batch)
            val_loss, val_acc = self.evaluate(X_val, y_val) if has_val else (None, None)
            self.schedule.step()
            self.epoch += 1
            record = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
            self.history.append(record)
            self._track_best(record, has_val)
            if on_epoch_end is not None:
                on_epoch_end(self, record)
            if progress:
                _print_epoch(record, self.epochs, improved=self.bad_epochs == 0 and has_val)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.history

    def _epoch_with_progress(self, X, y, progress: bool, on_batch) -> tuple[float, float]:
        """:meth:`train_epoch`, with a tqdm bar of the running loss when ``progress``."""
        if not progress:
            return self.train_epoch(X, y, on_batch=on_batch)
        bar = _Bar(math.ceil(len(X) / self.batch_size), f"epoch {self.epoch + 1}/{self.epochs}")

        def batch_done(loss):
            bar.update_loss(loss)
            if on_batch is not None:
                on_batch(loss)

        try:
            return self.train_epoch(X, y, on_batch=batch_done)
        finally:
            bar.close()

    def train_more(self, X_train, y_train, epochs: int = 1, progress: bool = False):
        """Train ``epochs`` more epochs on ``(X_train, y_train)`` from the current weights and optimizer
        state, after a finished :meth:`fit` too (the epoch budget rises, early stopping is reset). No
        validation data: the weights at the end are kept. Returns the history."""
        self.epochs = self.epoch + epochs
        self.best_state, self.stopped_early = None, False
        return self.fit(X_train, y_train, progress=progress)

    def _track_best(self, record: dict, has_val: bool) -> None:
        if not has_val:
            self.best_epoch = self.epoch
            return
        score = (record["val_accuracy"], -record["val_loss"])
        if score > self.best_score:
            self.best_score, self.bad_epochs = score, 0
            if self.keep == "best":
                self.best_epoch, self.best_state = self.epoch, self.model.state_dict()
        else:
            self.bad_epochs += 1
            if self.patience and self.bad_epochs >= self.patience:
                self.stopped_early = True
        if self.keep == "last":
            self.best_epoch = self.epoch

    # --- checkpoints -----------------------------------------------------------------------------
    def _layer_rngs(self) -> dict[str, np.random.Generator]:
        return {name: cast(Dropout, layer).rng for name, layer in self.model.find_layers(Dropout)}

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
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

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
    print(
        f"epoch {record['epoch']:>{width}}/{epochs}  train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f}  val loss {_fmt(record['val_loss'], '.4f')} "
        f"acc {_fmt(record['val_accuracy'], '.4f')}  lr {record['lr']:.2e}  "
        f"{record['seconds']:.2f}s{'  *' if improved else ''}",
        flush=True,
    )
