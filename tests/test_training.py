"""minicnn.train.trainer: build_model, the Trainer, runs, checkpoints, resume, divergence."""

import dataclasses
import inspect
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn import train as training
from minicnn.io import load_npz, save_npz_atomic
from minicnn.nn.layers import BatchNorm2D, Conv2D, Dense, Dropout
from minicnn.nn.model import Sequential
from minicnn.nn.parameter import Parameter
from minicnn.train.config import ConfigError, TrainConfig, from_dict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

SPECS = [
    {"type": "Conv2D", "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "BatchNorm2D"},
    {"type": "ReLU"},
    {"type": "MaxPool2D", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Dropout", "p": 0.2},
    {"type": "Dense", "out_features": 10},
]


def small_config(**train):
    """A few-second config that exercises every random part: init, shuffling, augmentation, dropout."""
    settings = {
        "epochs": 3,
        "batch_size": 64,
        "optimizer": "adamw",
        "lr": 0.01,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "label_smoothing": 0.1,
    }
    settings.update(train)
    return from_dict(
        {
            "seed": 7,
            "model": {"layers": SPECS},
            "train": settings,
            "data": {"augment": {"shift": 1, "rotate": 5.0}},
            "output": {"figures": False},
        }
    )


def weights(path):
    return {k: v for k, v in load_npz(path).items() if not k.startswith("__")}


def assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# --- build_model -----------------------------------------------------------------------------------


def test_build_model_infers_input_sizes_and_freezes():
    specs = [dict(SPECS[0], trainable=False)] + SPECS[1:]
    model = training.build_model(specs, (1, 8, 8), rng=0)
    conv, bn, dense = model.layers[0], model.layers[1], model.layers[6]
    assert isinstance(conv, Conv2D) and conv.in_channels == 1 and not conv.weight.requires_grad
    assert isinstance(bn, BatchNorm2D) and bn.num_features == 4
    assert isinstance(dense, Dense) and dense.in_features == 4 * 4 * 4 and dense.weight.requires_grad
    assert model.forward(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)


def test_build_model_is_deterministic_in_its_rng_and_layers_get_their_own_generators():
    a = training.build_model(SPECS, (1, 8, 8), rng=np.random.default_rng(3))
    b = training.build_model(SPECS, (1, 8, 8), rng=np.random.default_rng(3))
    c = training.build_model(SPECS, (1, 8, 8), rng=np.random.default_rng(4))
    assert_same_arrays(a.state_dict(), b.state_dict())
    assert not np.array_equal(a.layers[0].weight.data, c.layers[0].weight.data)
    assert not np.array_equal(a.layers[0].weight.data.ravel()[:40], a.layers[6].weight.data.ravel()[:40])
    assert isinstance(a.layers[5], Dropout) and a.layers[5].rng is not b.layers[5].rng


def test_build_model_float64():
    model = training.build_model(SPECS, (1, 8, 8), dtype="float64", rng=0)
    assert model.layers[0].weight.dtype == np.float64 and model.layers[6].weight.dtype == np.float64


@pytest.mark.parametrize(
    "specs, expected",
    [
        (
            [{"type": "Conv2d", "out_channels": 2, "kernel_size": 3}],
            "model.layers[0].type = 'Conv2d': unknown layer type 'Conv2d' (did you mean 'Conv2D'?)",
        ),
        (
            [{"type": "Flatten"}, {"type": "Dense", "out_feature": 3}],
            "model.layers[1].out_feature: Dense has no argument 'out_feature' (did you mean 'out_features'?)",
        ),
        (
            [{"type": "Conv2D", "out_channels": 2, "kernel_size": 3, "in_channels": 3}],
            "model.layers[0].in_channels = 3",
        ),
        (
            [{"type": "Dense", "out_features": 3}],
            "model.layers[0] (Dense): its input has shape (1, 8, 8); add a Flatten",
        ),
        (
            [{"type": "Conv2D", "out_channels": 2, "kernel_size": 11}],
            "model.layers[0] (Conv2D): its input (1, 8, 8) is too small for "
            "Conv2D(1, 2, kernel_size=(11, 11)); the output would be (2, -2, -2)",
        ),
        (
            [{"type": "Flatten"}, {"type": "MaxPool2D", "kernel_size": 2}],
            "model.layers[1] (MaxPool2D): needs an image input (C, H, W), got shape (64,)",
        ),
        (
            [{"type": "Flatten"}, {"type": "BatchNorm2D"}],
            "model.layers[1] (BatchNorm2D): needs an image input",
        ),
        (
            [{"type": "GlobalAvgPool2D"}, {"type": "GlobalAvgPool2D"}],
            "model.layers[1] (GlobalAvgPool2D): needs an",
        ),
        (
            [{"type": "MaxPool2D", "kernel_size": 4}, {"type": "MaxPool2D", "kernel_size": 3}],
            "model.layers[1] (MaxPool2D): its input (1, 2, 2) is too small",
        ),
        ([{"type": "Conv2D", "out_channels": -2, "kernel_size": 3}], "model.layers[0] (Conv2D):"),
        ([{"type": "ReLU", "trainable": "no"}], "model.layers[0].trainable = 'no'"),
    ],
)
def test_build_model_errors_name_the_layer_and_key(specs, expected):
    with pytest.raises(ValueError) as info:
        training.build_model(specs, (1, 8, 8), rng=0)
    assert expected in str(info.value)


def test_build_model_infers_sizes_through_output_shape_without_a_forward_pass(monkeypatch):
    from minicnn.nn.layers import LAYERS

    def no_forward(self, x):
        raise AssertionError(f"{self!r}: build_model ran a forward pass")

    for cls in LAYERS.values():
        monkeypatch.setattr(cls, "forward", no_forward)
    model = training.build_model(SPECS, (1, 8, 8), rng=0)
    assert model.layers[6].in_features == 64 and model.output_shape((5, 1, 8, 8)) == (5, 10)


def test_the_size_argument_is_declared_by_the_layer_classes():
    from minicnn.nn.layers import LAYERS

    declared = {name: cls.input_size_argument for name, cls in LAYERS.items() if cls.input_size_argument}
    assert declared == {"Conv2D": "in_channels", "Dense": "in_features", "BatchNorm2D": "num_features"}
    for name, argument in declared.items():  # each names a real constructor argument
        assert argument in inspect.signature(LAYERS[name]).parameters


@settings(max_examples=40, deadline=None)
@given(
    channels=st.integers(1, 3),
    size=st.integers(5, 12),
    out_channels=st.integers(1, 4),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    pool=st.integers(1, 2),
    global_pool=st.booleans(),
)
def test_inferred_sizes_match_what_forward_produces(
    channels, size, out_channels, kernel, stride, padding, pool, global_pool
):
    specs = [
        {
            "type": "Conv2D",
            "out_channels": out_channels,
            "kernel_size": kernel,
            "stride": stride,
            "padding": padding,
        },
        {"type": "BatchNorm2D"},
        {"type": "MaxPool2D", "kernel_size": pool},
        {"type": "Conv2D", "out_channels": 3, "kernel_size": 1},
        {"type": "GlobalAvgPool2D" if global_pool else "Flatten"},
        {"type": "Dense", "out_features": 2},
    ]
    model = training.build_model(specs, (channels, size, size), dtype="float64", rng=0)
    x = np.random.default_rng(0).normal(size=(2, channels, size, size))
    hidden = x
    with model.evaluating():
        for layer in model.layers[:5]:
            hidden = layer.forward(hidden)
    assert model.layers[3].in_channels == out_channels == model.layers[1].num_features
    assert model.layers[5].in_features == hidden.shape[1]
    assert model.predict_logits(x).shape == (2, 2)


# --- Trainer ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1, 8, 8)).astype(np.float32)
    y = np.arange(60) % 10
    X[np.arange(60), 0, y % 8, y // 2] += 4.0  # a learnable bright pixel per class
    return X, y


def make_trainer(seed=0, **train):
    model = training.build_model(SPECS, (1, 8, 8), rng=seed)
    settings = {"epochs": 4, "batch_size": 16, "lr": 0.01}
    settings.update(train)
    return training.Trainer.from_config(model, TrainConfig(**settings), np.random.default_rng(seed))


def test_trainer_takes_its_loss_optimizer_and_schedule_as_objects(tiny_data):
    from minicnn.nn.losses import SoftmaxCrossEntropy
    from minicnn.nn.optim import SGD, StepLR

    X, y = tiny_data
    model = training.build_model(SPECS, (1, 8, 8), rng=0)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    schedule = StepLR(optimizer, step_size=1, gamma=0.5)
    loss = SoftmaxCrossEntropy()
    trainer = training.Trainer(model, loss, optimizer, schedule, 0, epochs=3, batch_size=16)
    history = trainer.fit(X, y, progress=False)
    assert trainer.loss is loss and trainer.optimizer is optimizer and trainer.schedule is schedule
    assert [r["lr"] for r in history] == [0.05, 0.025, 0.0125] and optimizer.steps == 3 * 4
    assert trainer.evaluate(X, y)[0] == loss.forward(model.predict_logits(X), y)


@pytest.mark.parametrize(
    "options, kind, expected",
    [
        (
            {"optimizer": "sgd", "lr": 0.2, "momentum": 0.5, "nesterov": True, "weight_decay": 0.01},
            "SGD",
            {"lr": 0.2, "momentum": 0.5, "nesterov": True, "weight_decay": 0.01},
        ),
        ({"optimizer": "adam", "lr": 0.002, "betas": (0.8, 0.9)}, "Adam", {"lr": 0.002, "betas": (0.8, 0.9)}),
        ({"optimizer": "adamw", "weight_decay": 0.1}, "AdamW", {"weight_decay": 0.1}),
    ],
)
def test_make_optimizer_passes_the_configs_hyperparameters(options, kind, expected):
    optimizer = training.make_optimizer(TrainConfig(**options), [Parameter(np.zeros(3))])
    assert type(optimizer).__name__ == kind
    assert {key: getattr(optimizer, key) for key in expected} == expected


@pytest.mark.parametrize(
    "options, kind, expected",
    [
        ({"schedule": "constant"}, "ConstantLR", {}),
        ({"schedule": "step", "step_size": 3, "gamma": 0.5}, "StepLR", {"step_size": 3, "gamma": 0.5}),
        (
            {"schedule": "cosine", "epochs": 9, "warmup_epochs": 2, "min_lr_factor": 0.1},
            "CosineLR",
            {"total": 9, "warmup": 2, "min_factor": 0.1},
        ),
    ],
)
def test_make_schedule_passes_the_configs_settings(options, kind, expected):
    config = TrainConfig(**options)
    schedule = training.make_schedule(config, training.make_optimizer(config, [Parameter(np.zeros(3))]))
    assert type(schedule).__name__ == kind
    assert {key: getattr(schedule, key) for key in expected} == expected


def test_the_factory_tables_cover_every_config_choice_with_real_arguments():
    from minicnn.train.config import SCHEDULES
    from minicnn.train.trainer import OPTIMIZER_TABLE, SCHEDULE_TABLE

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(OPTIMIZER_TABLE) == set(
        next(f for f in dataclasses.fields(TrainConfig) if f.name == "optimizer").metadata["choices"]
    )
    assert set(SCHEDULE_TABLE) == set(SCHEDULES)
    for cls, arguments in list(OPTIMIZER_TABLE.values()) + list(SCHEDULE_TABLE.values()):
        assert set(arguments) <= set(inspect.signature(cls).parameters), cls
        assert set(arguments.values()) <= fields, cls


def test_trainer_learns_and_reports_loss_and_accuracy(tiny_data):
    X, y = tiny_data
    trainer = make_trainer(epochs=15)
    loss0, acc0 = trainer.evaluate(X, y)
    history = trainer.fit(X, y, X, y, progress=False)
    loss1, acc1 = trainer.evaluate(X, y)
    assert len(history) == 15 and [r["epoch"] for r in history] == list(range(1, 16))
    assert set(history[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    }
    assert loss1 < loss0 and acc1 > acc0 and acc1 > 0.8


def test_fit_restores_the_best_validation_weights(tiny_data, monkeypatch):
    X, y = tiny_data
    trainer = make_trainer(epochs=4)
    # (loss, accuracy): epoch 3 ties epoch 2's accuracy with a lower loss; epoch 4 ties with a higher one
    scores = iter([(1.0, 0.5), (0.5, 0.9), (0.45, 0.9), (0.6, 0.9)])
    monkeypatch.setattr(trainer, "evaluate", lambda X_, y_: next(scores))
    snapshots = {}
    trainer.fit(
        X,
        y,
        X,
        y,
        progress=False,
        on_epoch_end=lambda t, r: snapshots.setdefault(r["epoch"], t.model.state_dict()),
    )
    assert trainer.best_epoch == 3
    assert_same_arrays(trainer.model.state_dict(), snapshots[3])


def test_keep_last_ends_with_the_last_epochs_weights_and_still_stops_early(tiny_data, monkeypatch):
    X, y = tiny_data
    trainer = make_trainer(epochs=4, keep="last")
    scores = iter([(1.0, 0.5), (0.5, 0.9), (0.6, 0.8), (0.7, 0.8)])  # the best is epoch 2
    monkeypatch.setattr(trainer, "evaluate", lambda X_, y_: next(scores))
    snapshots = {}
    trainer.fit(
        X,
        y,
        X,
        y,
        progress=False,
        on_epoch_end=lambda t, r: snapshots.update({r["epoch"]: t.model.state_dict()}),
    )
    assert trainer.best_epoch == 4 and trainer.best_state is None
    assert_same_arrays(trainer.model.state_dict(), snapshots[4])
    assert any(not np.array_equal(snapshots[2][k], snapshots[4][k]) for k in snapshots[4])
    stopping = make_trainer(epochs=20, patience=2, keep="last")
    monkeypatch.setattr(stopping, "evaluate", lambda X_, y_: (1.0, 0.5))
    assert len(stopping.fit(X, y, X, y, progress=False)) == 3 and stopping.best_epoch == 3
    with pytest.raises(ConfigError, match="keep"):
        TrainConfig(keep="first")


def test_early_stopping_after_patience_epochs_without_improvement(tiny_data, monkeypatch):
    X, y = tiny_data
    trainer = make_trainer(epochs=20, patience=2)
    monkeypatch.setattr(trainer, "evaluate", lambda X_, y_: (1.0, 0.5))
    history = trainer.fit(X, y, X, y, progress=False)
    assert len(history) == 3 and trainer.stopped_early and trainer.best_epoch == 1


def test_without_validation_the_last_weights_are_kept(tiny_data):
    X, y = tiny_data
    trainer = make_trainer(epochs=2, patience=1)
    history = trainer.fit(X, y, progress=False)
    assert len(history) == 2 and history[-1]["val_loss"] is None and trainer.best_epoch == 2


def test_last_partial_batch_is_trained_on(tiny_data, monkeypatch):
    X, y = tiny_data
    trainer = make_trainer(batch_size=25)  # 60 = 25 + 25 + 10
    sizes = []
    forward = trainer.model.forward
    monkeypatch.setattr(trainer.model, "forward", lambda x: sizes.append(len(x)) or forward(x))
    trainer.train_epoch(X, y)
    assert sizes == [25, 25, 10] and trainer.optimizer.steps == 3


def test_nan_in_the_data_raises_diverged_error(tiny_data):
    X, y = tiny_data
    X = X.copy()
    X[5] = np.nan
    trainer = make_trainer()
    with pytest.raises(training.DivergedError, match="became nan .*in epoch 1, batch"):
        trainer.train_epoch(X, y)


def test_trainer_state_round_trips_through_a_npz_file(tiny_data, tmp_path):
    X, y = tiny_data
    a = make_trainer(epochs=4)
    a.fit(X[:40], y[:40], X[40:], y[40:], progress=False)
    save_npz_atomic(tmp_path / "state.npz", a.state_dict())
    state = load_npz(tmp_path / "state.npz")
    assert state["rng"].dtype.kind == "U" and state["rng"].shape == ()
    assert json.loads(str(state["rng"]))["bit_generator"] == "PCG64"
    b = make_trainer(seed=99, epochs=4)
    b.load_state_dict(state)
    assert b.epoch == 4 and b.history == a.history and b.best_epoch == a.best_epoch
    assert b.rng.bit_generator.state == a.rng.bit_generator.state
    assert b.model.layers[5].rng.bit_generator.state == a.model.layers[5].rng.bit_generator.state
    assert_same_arrays(b.model.state_dict(), a.model.state_dict())
    assert_same_arrays(b.optimizer.state_dict(), a.optimizer.state_dict())


def test_loading_a_mismatched_checkpoint_is_a_clear_error(tiny_data):
    specs = SPECS[:4] + [{"type": "Flatten"}, {"type": "Dense", "out_features": 3}]
    other = training.Trainer.from_config(training.build_model(specs, (1, 8, 8), rng=0), TrainConfig(), 0)
    with pytest.raises(ValueError, match="checkpoint does not match"):
        make_trainer().load_state_dict(other.state_dict())


# --- runs -------------------------------------------------------------------------------------------


def test_two_runs_with_one_seed_give_identical_weights(tmp_path, monkeypatch):
    cfg = small_config(epochs=2)
    training.run(cfg, tmp_path / "a", quiet=True)
    later = time.time() + 7200
    monkeypatch.setattr(time, "time", lambda: later)  # as if rerun hours later: no timestamps in the file
    training.run(cfg, tmp_path / "b", quiet=True)
    assert_same_arrays(weights(tmp_path / "a" / "model.npz"), weights(tmp_path / "b" / "model.npz"))
    assert (tmp_path / "a" / "model.npz").read_bytes() == (tmp_path / "b" / "model.npz").read_bytes()
    monkeypatch.undo()
    training.run(from_dict({**json.loads(json.dumps(_raw(cfg))), "seed": 8}), tmp_path / "c", quiet=True)
    assert not np.array_equal(
        weights(tmp_path / "a" / "model.npz")["0.weight"], weights(tmp_path / "c" / "model.npz")["0.weight"]
    )


def _raw(cfg):
    from minicnn.train.config import to_dict

    return to_dict(cfg)


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = small_config(epochs=4)
    full = training.run(cfg, tmp_path / "full", quiet=True)

    def stop_after_two(trainer, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(training.TrainingInterrupted) as info:
        training.run(cfg, tmp_path / "part", quiet=True, on_epoch_end=stop_after_two)
    assert info.value.epoch == 2
    assert int(load_npz(tmp_path / "part" / "last.npz")["epoch"]) == 2
    resumed = training.run(cfg, tmp_path / "part", resume=True, quiet=True)
    for name in ("model.npz", "last.npz"):
        a, b = load_npz(tmp_path / "full" / name), load_npz(tmp_path / "part" / name)
        a = {k: v for k, v in a.items() if k != "history"}
        b = {k: v for k, v in b.items() if k != "history"}
        assert_same_arrays(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(full["history"])
    assert resumed["test_accuracy"] == full["test_accuracy"]


def test_run_directory_contents_and_metrics(tmp_path):
    cfg = small_config(epochs=2)
    metrics = training.run(cfg, tmp_path / "r", quiet=True)
    run_dir = tmp_path / "r"
    for name in (
        "config.toml",
        "metrics.json",
        "metrics.csv",
        "model.npz",
        "last.npz",
        "init.npz",
        "split.npz",
    ):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert {"test_accuracy", "test_loss", "train_seconds", "history"} <= set(saved)
    assert saved["test_accuracy"] == metrics["test_accuracy"] and len(saved["history"]) == 2
    assert (run_dir / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_accuracy")
    model = Sequential.load(run_dir / "model.npz")
    assert model.forward(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)
    from minicnn.train.config import load_config

    assert load_config(run_dir / "config.toml") == cfg
    assert len(load_npz(run_dir / "split.npz")["test"]) == 360


def test_failed_checkpoint_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    cfg = small_config(epochs=3)
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        if str(dst).endswith("last.npz") and int(load_npz(src)["epoch"]) == 2:
            calls["n"] += 1
            raise OSError("simulated crash between write and rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        training.run(cfg, tmp_path / "r", quiet=True)
    assert calls["n"] == 1
    state = load_npz(tmp_path / "r" / "last.npz")
    assert int(state["epoch"]) == 1
    assert not [p for p in os.listdir(tmp_path / "r") if p.startswith(".tmp-")]
    monkeypatch.setattr(os, "replace", real_replace)
    resumed = training.run(cfg, tmp_path / "r", resume=True, quiet=True)
    assert len(resumed["history"]) == 3


def test_diverging_run_stops_with_message_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = small_config(epochs=4)

    def blow_up(trainer, record):
        if record["epoch"] == 1:  # as if a huge step had left an infinite weight
            trainer.model.layers[6].weight.data[0, 0] = np.inf

    with pytest.raises(training.DivergedError) as info:
        training.run(cfg, tmp_path / "r", quiet=True, on_epoch_end=blow_up)
    message = str(info.value)
    assert "became" in message and "in epoch 2, batch 1" in message and "lower train.lr" in message
    assert "keeps the last good state (after epoch 1)" in message
    state = load_npz(tmp_path / "r" / "last.npz")
    assert int(state["epoch"]) == 1
    assert all(np.isfinite(v).all() for k, v in state.items() if k.startswith("model/"))


def test_last_layer_must_match_the_number_of_classes(tmp_path):
    raw = _raw(small_config())
    raw["model"]["layers"][-1]["out_features"] = 7
    with pytest.raises(ConfigError, match=r"model.layers\[6\].out_features = 7, but the data has 10 classes"):
        training.run(from_dict(raw), tmp_path / "r", quiet=True)
    raw["model"]["layers"].append({"type": "ReLU"})
    with pytest.raises(ConfigError, match="the last layer must be a Dense"):
        training.run(from_dict(raw), tmp_path / "r", quiet=True)
    assert not (tmp_path / "r").exists()  # checked before anything is written


def test_idx_example_config_trains_on_mnist_format_files(tmp_path):
    from minicnn.data import write_idx
    from minicnn.train.config import load_config

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 2 * labels + 4, 4:24] = 255  # a horizontal bar whose height is the class
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    overrides = [
        f"data.{key}={tmp_path}/{name}"
        for key, name in (
            ("images", "train-images-idx3-ubyte.gz"),
            ("labels", "train-labels-idx1-ubyte.gz"),
            ("test_images", "t10k-images-idx3-ubyte.gz"),
            ("test_labels", "t10k-labels-idx1-ubyte.gz"),
        )
    ]
    overrides += ["train.epochs=1", "train.warmup_epochs=0", "data.val_fraction=0.2", "output.figures=false"]
    cfg = load_config(CONFIGS / "idx_example.toml", overrides)
    metrics = training.run(cfg, tmp_path / "r", quiet=True)
    assert len(metrics["history"]) == 1 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert len(load_npz(tmp_path / "r" / "split.npz")["test"]) == 20


def test_ctrl_c_stops_at_the_next_batch_and_restores_the_handler(tmp_path, monkeypatch):
    import signal

    before = signal.getsignal(signal.SIGINT)
    steps = []
    step = training.Trainer._step
    monkeypatch.setattr(training.Trainer, "_step", lambda self, *args: steps.append(1) or step(self, *args))

    def press_ctrl_c(trainer, record):
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # noted by run's handler, acted on after the next batch

    with pytest.raises(training.TrainingInterrupted) as info:
        training.run(small_config(epochs=3), tmp_path / "r", quiet=True, on_epoch_end=press_ctrl_c)
    assert info.value.epoch == 1 and int(load_npz(tmp_path / "r" / "last.npz")["epoch"]) == 1
    assert len(steps) == 21 + 1  # one epoch of 1293 / 64 batches, then the batch the signal waited for
    assert signal.getsignal(signal.SIGINT) is before


def test_resuming_a_finished_run_says_so_and_rewrites_nothing(tmp_path, capsys):
    cfg = small_config(epochs=2)
    first = training.run(cfg, tmp_path / "r", quiet=True)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir() if p.name != ".minicnn.lock"}
    again = training.run(cfg, tmp_path / "r", resume=True)
    out = capsys.readouterr().out
    assert "is already finished (2 of 2 epochs" in out and "nothing to do" in out
    assert "train.epochs=7" in out
    assert again["test_accuracy"] == first["test_accuracy"]
    assert {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir() if p.name != ".minicnn.lock"
    } == before


def test_time_line_after_a_resume_counts_this_sessions_training_only(tmp_path, capsys):
    cfg = small_config(epochs=3)

    def stop_after_two(trainer, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(training.TrainingInterrupted):
        training.run(cfg, tmp_path / "r", quiet=True, on_epoch_end=stop_after_two)
    capsys.readouterr()
    resumed = training.run(cfg, tmp_path / "r", resume=True, finish=lambda *args: time.sleep(0.2))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.search(
        r"; ([\d.]+)s training \(\+([\d.]+)s before the resume\), ([\d.]+)s figures, ([\d.]+)s in all", line
    )
    assert found, line
    now, earlier, figures, total = map(float, found.groups())
    seconds = [r["seconds"] for r in resumed["history"]]
    assert now == pytest.approx(seconds[2], abs=0.06) and earlier == pytest.approx(sum(seconds[:2]), abs=0.11)
    assert figures >= 0.2 and now + figures <= total + 0.1


def test_time_line_says_when_no_figures_were_drawn(tmp_path, capsys):
    training.run(small_config(epochs=2), tmp_path / "r")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.search(r"; [\d.]+s training, figures off, [\d.]+s in all;", line), line
