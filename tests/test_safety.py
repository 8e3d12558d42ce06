"""Issue 12, case by case: run directories never clobbered, resume rules, safe writes, one-line errors
for operating-system failures, memory budgets, wrong exceptions on malformed files, nonsense refused.

Commands run in-process (``main(argv)``) with a one-epoch model and no figures, so each case costs
well under a second of training.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from minicnn import io
from minicnn.cli import main as train_main
from minicnn.io import save_npz_atomic

ROOT = Path(__file__).resolve().parent.parent
FAST = str(ROOT / "configs" / "digits_fast.toml")
QUICK = ["--config", FAST, "--quiet", "--set", "train.epochs=1", "--set", "output.figures=false"]


def one_line_exit_2(capsys, code):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    assert train_main(QUICK + ["--out", str(run)]) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


@pytest.fixture(autouse=True)
def _default_budget():
    yield
    io.set_memory_budget(None)


# --- case 1: silent overwrite ----------------------------------------------------------------------

def test_case1_a_folder_that_is_not_empty_is_refused_and_the_users_file_kept(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "metrics.csv").write_text("notes\n")
    line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(tmp_path / "d")]))
    assert str(tmp_path / "d") in line and "--overwrite" in line
    assert (tmp_path / "d" / "metrics.csv").read_text() == "notes\n"


def test_case1_a_previous_run_is_refused_without_overwrite(run_copy, capsys):
    before = (run_copy / "model.npz").read_bytes()
    one_line_exit_2(capsys, train_main(QUICK + ["--out", str(run_copy), "--set", "seed=3"]))
    assert (run_copy / "model.npz").read_bytes() == before


def test_case1_overwrite_removes_only_a_runs_files(run_copy, capsys):
    (run_copy / "history.png").write_bytes(b"old figure")
    (run_copy / "notes.txt").write_text("mine")
    assert train_main(QUICK + ["--out", str(run_copy), "--overwrite", "--set", "seed=3"]) == 0
    assert not (run_copy / "history.png").exists()   # figures off: the old run's figure must not stay
    assert (run_copy / "notes.txt").read_text() == "mine"
    assert "seed = 3" in (run_copy / "config.toml").read_text()


def test_case1_overwrite_refuses_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(tmp_path / "f"), "--overwrite"]))
    assert "not a folder" in line and (tmp_path / "f").read_text() == "x"


# --- case 2: resume -------------------------------------------------------------------------------

@pytest.mark.parametrize("change, key", [
    (["data.split_seed=5", "train.epochs=3"], "data.split_seed"), (["seed=5", "train.epochs=3"], "seed"),
    (["train.optimizer=sgd"], "train.optimizer"), (["train.schedule=cosine"], "train.schedule"),
    (["model.dtype=float64"], "model.dtype"),
    (["model.layers.0.out_channels=4"], "model.layers[0].out_channels")])
def test_case2_resume_refuses_settings_that_change_what_was_learned(run_copy, capsys, change, key):
    config = (run_copy / "config.toml").read_text()
    argv = ["--resume", str(run_copy), "--quiet"] + [a for c in change for a in ("--set", c)]
    assert key in one_line_exit_2(capsys, train_main(argv))
    assert (run_copy / "config.toml").read_text() == config


def test_case2_fewer_epochs_are_refused_not_written(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(QUICK + ["--out", str(run), "--set", "train.epochs=2"]) == 0
    line = one_line_exit_2(capsys, resume(run, "train.epochs=1"))
    assert "train.epochs" in line and "epochs = 2" in (run / "config.toml").read_text()


def resume(run, *sets):
    return train_main(["--resume", str(run), "--quiet"] + [a for s in sets for a in ("--set", s)])


def test_case2_more_epochs_and_output_options_are_allowed(run_copy):
    assert resume(run_copy, "train.epochs=2", "train.threads=1", "output.figures=false") == 0
    assert json.loads((run_copy / "metrics.json").read_text())["epochs_run"] == 2


def test_case2_a_changed_split_file_is_refused(run_copy, capsys):
    split = io.load_npz(run_copy / "split.npz")
    split["mean"] = split["mean"] + 1
    save_npz_atomic(run_copy / "split.npz", split)
    line = one_line_exit_2(capsys, resume(run_copy, "train.epochs=2"))
    assert "'mean'" in line and "split.npz" in line


@pytest.mark.parametrize("field, value", [("epoch", np.int64(-5)), ("epoch", np.int64(7)),
                                          ("history", '{"a": 1}'), ("history", "[1, 2]"),
                                          ("history", "[" * 100_000 + "]" * 100_000)])
def test_case2_a_checkpoint_with_a_bad_epoch_or_history_is_refused(run_copy, capsys, field, value):
    state = io.load_npz(run_copy / "last.npz")
    state[field] = np.array(value)
    save_npz_atomic(run_copy / "last.npz", state)
    line = one_line_exit_2(capsys, resume(run_copy, "train.epochs=3"))
    assert "last.npz" in line


# --- case 3: temporary files never follow links ----------------------------------------------------

def test_case3_a_planted_temporary_link_is_removed_and_its_target_kept(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    run = tmp_path / "D"
    run.mkdir()
    (run / ".tmp-metrics.json").symlink_to(outside)
    assert train_main(QUICK + ["--out", str(run)]) == 0
    assert outside.read_text() == "keep me" and not (run / ".tmp-metrics.json").is_symlink()
    assert not [p for p in os.listdir(run) if p.startswith(".tmp-")]


# --- case 4: operating-system errors are one line, exit 2 -------------------------------------------

def test_case4_out_under_a_file_and_a_name_too_long(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert "f/sub" in one_line_exit_2(capsys, train_main(QUICK + ["--out", str(tmp_path / "f" / "sub")]))
    line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(tmp_path / ("a" * 300))]))
    assert "too long" in line


def test_case4_unreadable_config_is_one_line(tmp_path, capsys, monkeypatch):
    config = tmp_path / "c.toml"
    shutil.copy(FAST, config)

    def refuse(*args, **kwargs):   # the tests run as root, where chmod 000 still reads
        raise PermissionError(errno.EACCES, "Permission denied", str(config))
    monkeypatch.setattr("minicnn.train.config.tomllib.load", refuse)
    line = one_line_exit_2(capsys, train_main(["--config", str(config), "--out", str(tmp_path / "r")]))
    assert line == f"error: {config}: Permission denied"


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EACCES])
def test_case4_a_full_disk_or_unwritable_folder_is_one_line_and_keeps_no_temporary(tmp_path, capsys,
                                                                                  monkeypatch, failure):
    def fail(fd):
        raise OSError(failure, os.strerror(failure))
    monkeypatch.setattr("minicnn.io.os.fsync", fail)
    line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(tmp_path / "r")]))
    assert os.strerror(failure) in line
    assert not [p for p in os.listdir(tmp_path / "r") if p.startswith(".tmp-")]


def test_case4_a_config_that_is_a_folder_is_one_line(tmp_path, capsys):
    assert "is a folder" in one_line_exit_2(capsys, train_main(["--config", str(tmp_path)]))


def test_case4_inspect_out_on_a_file_and_config_a_folder(finished_run, tmp_path, capsys):
    from minicnn.see.inspect import main as inspect_main
    (tmp_path / "f").write_text("x")
    assert str(tmp_path / "f") in one_line_exit_2(capsys, inspect_main([str(finished_run), "--out",
                                                                        str(tmp_path / "f")]))
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    (run / "config.toml").unlink()
    (run / "config.toml").mkdir()
    assert "config.toml is not a file" in one_line_exit_2(capsys, inspect_main([str(run)]))


def test_case4_gallery_and_explore_report_os_errors_in_one_line(tmp_path, capsys):
    from minicnn.see.explore import main as explore_main
    from minicnn.see.gallery import main as gallery_main
    (tmp_path / "f").write_text("x")
    assert str(tmp_path / "f") in one_line_exit_2(capsys, gallery_main(["--out", str(tmp_path / "f")]))
    assert "error:" in one_line_exit_2(capsys, explore_main([str(tmp_path / "nope")]))
