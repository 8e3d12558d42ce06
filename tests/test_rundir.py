"""minicnn.train.rundir: the run directory's file names, metrics tables and checkpoints."""

import json
import re

import numpy as np
import pytest

from minicnn.train import RunDir, Trainer, build_model
from minicnn.train.config import TrainConfig

SPECS = [
    {"type": "Conv2D", "out_channels": 2, "kernel_size": 3},
    {"type": "Dropout", "p": 0.5},
    {"type": "Flatten"},
    {"type": "Dense", "out_features": 3},
]


def make_trainer(seed=0, specs=SPECS):
    return Trainer.from_config(
        build_model(specs, (1, 6, 6), rng=seed), TrainConfig(epochs=2, batch_size=4), seed
    )


def test_paths_name_the_files_a_run_writes(tmp_path):
    run_dir = RunDir(tmp_path / "r")
    names = {
        "config": "config.toml",
        "split": "split.npz",
        "init": "init.npz",
        "checkpoint": "last.npz",
        "model": "model.npz",
        "metrics_json": "metrics.json",
        "metrics_csv": "metrics.csv",
    }
    assert {key: getattr(run_dir, key) for key in names} == {k: tmp_path / "r" / v for k, v in names.items()}


def test_metrics_are_written_as_json_and_csv(tmp_path):
    run_dir = RunDir(tmp_path)
    history = [
        {
            "epoch": 1,
            "train_loss": 0.5,
            "train_accuracy": 0.75,
            "val_loss": None,
            "val_accuracy": None,
            "lr": 0.01,
            "seconds": 1.5,
        }
    ]
    run_dir.write_metrics(history, {"test_accuracy": 0.9})
    assert json.loads(run_dir.metrics_json.read_text()) == {"test_accuracy": 0.9, "history": history}
    assert run_dir.metrics_csv.read_text().splitlines() == [
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds",
        "1,0.5,0.75,,,0.01,1.5",
    ]


def test_a_checkpoint_round_trips_and_records_its_epoch(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 1, 6, 6)).astype(np.float32), np.arange(12) % 3
    trainer = make_trainer()
    trainer.fit(X, y, progress=False)
    run_dir = RunDir(tmp_path)
    run_dir.save_checkpoint(trainer)
    assert run_dir.checkpoint_epoch == 2
    other = make_trainer(seed=5)
    fresh = RunDir(tmp_path)
    fresh.load_checkpoint(other)
    assert fresh.checkpoint_epoch == 2 and other.history == trainer.history
    for key, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(other.model.state_dict()[key], value)
    assert other.model.layers[1].rng.bit_generator.state == trainer.model.layers[1].rng.bit_generator.state


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.save_checkpoint(make_trainer())
    wider = [dict(SPECS[0], out_channels=4)] + SPECS[1:]
    with pytest.raises(
        ValueError, match=re.escape(f"cannot resume from {run_dir.checkpoint}: checkpoint does not match")
    ):
        run_dir.load_checkpoint(make_trainer(specs=wider))
