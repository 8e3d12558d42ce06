"""train.py / minicnn.cli as a user runs them: subprocesses, exit codes, messages, the run directory."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minicnn.io import load_npz
from minicnn.nn.model import Sequential

ROOT = Path(__file__).resolve().parent.parent
FAST = str(ROOT / "configs" / "digits_fast.toml")
RUN_FILES = ["config.toml", "metrics.json", "metrics.csv", "model.npz", "last.npz", "init.npz"]
FIGURES = [
    "filters_init.png",
    "filters_learned.png",
    "feature_maps.png",
    "history.png",
    "confusion.png",
    "mistakes.png",
]


def train(*args, timeout=400):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_the_packaged_default_config_is_the_documented_configs_digits_toml():
    from minicnn.cli import DEFAULT_CONFIG

    assert DEFAULT_CONFIG.is_relative_to(ROOT / "minicnn"), "an installed package has no configs/ folder"
    assert DEFAULT_CONFIG.read_bytes() == (ROOT / "configs" / "digits.toml").read_bytes(), (
        "minicnn/train/configs/digits.toml must be a copy of configs/digits.toml: cp configs/digits.toml "
        "minicnn/train/configs/"
    )


def test_without_config_the_packaged_default_is_trained(tmp_path, monkeypatch):
    from minicnn.cli import main

    monkeypatch.chdir(tmp_path)  # outside the checkout: no configs/ folder here
    overrides = ["train.epochs=1", "output.figures=false"]
    assert main([arg for key in overrides for arg in ("--set", key)] + ["--out", "r", "--quiet"]) == 0
    from minicnn.train.config import load_config

    assert load_config(tmp_path / "r" / "config.toml") == load_config(
        ROOT / "configs" / "digits.toml", overrides
    )


def test_end_to_end_fast_config_writes_the_run_directory(tmp_path):
    result = train("--config", FAST, "--set", f"output.dir={tmp_path / 'runs'}", "--set", "train.epochs=3")
    assert result.returncode == 0, result.stderr
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert run_dir.name.startswith("digits_fast-")
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    for name in FIGURES:
        assert (run_dir / name).is_file(), name
    from minicnn.train.rundir import LOCK_NAME, RunDir

    # what --overwrite removes is exactly what a run writes: one list, RunDir.FILES
    assert set(os.listdir(run_dir)) - {LOCK_NAME} <= set(RunDir.FILES)
    assert (run_dir / "filters_evolution.gif").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == 3 and 0.5 < metrics["test_accuracy"] <= 1.0
    assert metrics["train_seconds"] > 0 and metrics["test_loss"] > 0
    assert "epoch 3/3" in result.stdout and "test accuracy" in result.stdout and str(run_dir) in result.stdout
    assert "batch" in result.stderr  # the tqdm bar
    model = Sequential.load(run_dir / "model.npz")
    assert len(model.layers) == 5


def test_quiet_prints_no_progress(tmp_path):
    result = train(
        "--config",
        FAST,
        "--out",
        str(tmp_path / "r"),
        "--quiet",
        "--set",
        "train.epochs=1",
        "--set",
        "output.figures=false",
        "--seed",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert "seed = 3" in (tmp_path / "r" / "config.toml").read_text()


def test_bad_config_key_is_one_line_on_stderr_with_exit_code_2(tmp_path):
    result = train("--config", FAST, "--out", str(tmp_path / "r"), "--set", "train.lerning_rate=0.1")
    assert_one_line_error(result, 2, "unknown key 'train.lerning_rate'", "did you mean 'train.lr'?")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "train.epochs=zero"], ["--set train.epochs=zero: expected an integer"]),
        (["--set", "train.lr=-1"], ["train.lr = -1.0: must be > 0.0"]),
        (
            ["--set", "data.source=npz", "--set", "data.path=/no/such/file.npz"],
            ["no such file: /no/such/file.npz"],
        ),
        (["--set", "model.layers.4.out_features=3"], ["out_features = 3, but the data has 10 classes"]),
        (["--set", "model.layers.0.type=Conv3D"], ["model.layers[0].type = 'Conv3D': unknown layer"]),
    ],
)
def test_bad_input_returns_2_with_one_line(tmp_path, capsys, args, fragments):
    from minicnn.cli import main  # in-process: the subprocess path is covered above

    assert main(["--config", FAST, "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in err[0]


def test_missing_config_file_and_missing_resume_dir(tmp_path):
    assert_one_line_error(train("--config", str(tmp_path / "nope.toml")), 2, "no such config file")
    assert_one_line_error(train("--resume", str(tmp_path / "nope"), "--quiet"), 2, "cannot resume")


def test_bad_data_file_exits_2(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((10, 8, 8)), y=np.zeros(9, int))
    result = train(
        "--config",
        FAST,
        "--out",
        str(tmp_path / "r"),
        "--set",
        "data.source=npz",
        "--set",
        f"data.path={tmp_path / 'd.npz'}",
    )
    assert_one_line_error(result, 2, "10 images but 9 labels")


def test_diverging_run_exits_3_with_a_clear_message(tmp_path):
    result = train(
        "--config",
        FAST,
        "--out",
        str(tmp_path / "r"),
        "--quiet",
        "--set",
        "train.optimizer=sgd",
        "--set",
        "train.lr=10",
        "--set",
        "train.momentum=0.9",
    )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert "became" in result.stderr and "lower train.lr" in result.stderr and "last.npz" in result.stderr
    load_npz(tmp_path / "r" / "last.npz")


def test_ctrl_c_checkpoints_exits_130_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "r"
    errors = open(tmp_path / "stderr.txt", "w+")  # a file, not a pipe: the progress bars would fill a pipe
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--config",
            FAST,
            "--out",
            str(run_dir),
            "--set",
            "train.epochs=100000",
            "--set",
            "output.figures=false",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until two epochs are done
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            line = process.stdout.readline() if ready else ""
            if re.match(r"epoch +2/", line) or process.poll() is not None:
                break
        assert process.poll() is None, "training ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    errors.seek(0)
    stderr = errors.read()
    errors.close()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"Resume with: python train.py --resume {run_dir}" in stderr
    epoch = int(load_npz(run_dir / "last.npz")["epoch"])
    assert epoch >= 2 and f"holds the weights after epoch {epoch}" in stderr
    started = time.perf_counter()
    result = train("--resume", str(run_dir), "--quiet", "--set", f"train.epochs={epoch + 1}")
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - started < 60
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == epoch + 1 and "test_accuracy" in metrics


def test_resume_refuses_config_and_out(tmp_path, capsys):
    from minicnn.cli import main

    assert main(["--resume", str(tmp_path), "--config", FAST]) == 2
    assert "leave out --config and --out" in capsys.readouterr().err


def test_help_lists_the_options():
    result = train("--help")
    assert result.returncode == 0
    for option in ("--config", "--set", "--out", "--resume", "--seed", "--quiet"):
        assert option in result.stdout


def test_main_is_importable_and_returns_the_exit_code(tmp_path, capsys):
    from minicnn.cli import main

    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err
