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
from conftest import FAST, QUICK, one_line_exit_2

from minicnn import io
from minicnn.cli import main as train_main
from minicnn.io import save_npz_atomic

pytestmark = pytest.mark.usefixtures("default_memory_budget")


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
    assert not (run_copy / "history.png").exists()  # figures off: the old run's figure must not stay
    assert (run_copy / "notes.txt").read_text() == "mine"
    assert "seed = 3" in (run_copy / "config.toml").read_text()


def test_case1_overwrite_refuses_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(tmp_path / "f"), "--overwrite"]))
    assert "not a folder" in line and (tmp_path / "f").read_text() == "x"


# --- case 2: resume -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, key",
    [
        (["data.split_seed=5", "train.epochs=3"], "data.split_seed"),
        (["seed=5", "train.epochs=3"], "seed"),
        (["train.optimizer=sgd"], "train.optimizer"),
        (["train.schedule=cosine"], "train.schedule"),
        (["model.dtype=float64"], "model.dtype"),
        (["model.layers.0.out_channels=4"], "model.layers[0].out_channels"),
    ],
)
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


@pytest.mark.parametrize(
    "field, value",
    [
        ("epoch", np.int64(-5)),
        ("epoch", np.int64(7)),
        ("history", '{"a": 1}'),
        ("history", "[1, 2]"),
        ("history", "[" * 100_000 + "]" * 100_000),
    ],
)
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

    def refuse(*args, **kwargs):  # the tests run as root, where chmod 000 still reads
        raise PermissionError(errno.EACCES, "Permission denied", str(config))

    monkeypatch.setattr("minicnn.train.config.tomllib.load", refuse)
    line = one_line_exit_2(capsys, train_main(["--config", str(config), "--out", str(tmp_path / "r")]))
    assert line == f"error: {config}: Permission denied"


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EACCES])
def test_case4_a_full_disk_or_unwritable_folder_is_one_line_and_keeps_no_temporary(
    tmp_path, capsys, monkeypatch, failure
):
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
    assert str(tmp_path / "f") in one_line_exit_2(
        capsys, inspect_main([str(finished_run), "--out", str(tmp_path / "f")])
    )
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


# --- case 5: budgets before allocation --------------------------------------------------------------


@pytest.mark.parametrize(
    "sets",
    [
        ["model.layers.0.out_channels=2147483648", "model.layers.0.kernel_size=1"],
        ["model.layers.0.out_channels=100000000"],
        ["model.layers.0.padding=100000"],
    ],
)
def test_case5_huge_layers_are_refused_by_the_budget_before_the_run_directory(tmp_path, capsys, sets):
    argv = QUICK + ["--out", str(tmp_path / "r"), "--memory-budget", "512"]
    line = one_line_exit_2(capsys, train_main(argv + [a for s in sets for a in ("--set", s)]))
    assert "model.layers[0]" in line and "memory budget" in line and "512 MiB" in line
    assert not (tmp_path / "r").exists()


def test_case5_the_default_budget_refuses_two_billion_channels(tmp_path, capsys):
    sets = ["--set", "model.layers.0.out_channels=2147483648", "--set", "model.layers.0.kernel_size=1"]
    line = one_line_exit_2(capsys, train_main(QUICK + ["--out", str(tmp_path / "r")] + sets))
    assert "memory budget" in line


def test_case5_the_budget_counts_one_batch_of_activations():
    from minicnn.train import build_model

    specs = [{"type": "Conv2D", "out_channels": 64, "kernel_size": 3, "padding": 1}]
    io.set_memory_budget(8 * 2**20)
    build_model(specs, (1, 32, 32), batch_size=1)  # about 0.6 MiB
    with pytest.raises(MemoryError, match=r"model.layers\[0\] \(Conv2D\).*batches of 64"):
        build_model(specs, (1, 32, 32), batch_size=64)


def _idx_header(shape, code=0x08):
    return bytes([0, 0, code, len(shape)]) + b"".join(int(s).to_bytes(4, "big") for s in shape)


def test_case5_a_gzip_idx_bomb_stops_at_the_budget(tmp_path, capsys):
    import gzip

    images = tmp_path / "images.gz"
    with gzip.open(images, "wb", compresslevel=9) as handle:
        handle.write(_idx_header((2000, 100, 100)))
        for _ in range(20):
            handle.write(bytes(2**20))
    assert images.stat().st_size < 100_000
    (tmp_path / "labels").write_bytes(_idx_header((2000,)) + bytes(2000))
    argv = QUICK + [
        "--out",
        str(tmp_path / "r"),
        "--memory-budget",
        "4",
        "--set",
        "data.source=idx",
        "--set",
        f"data.images={images}",
        "--set",
        f"data.labels={tmp_path / 'labels'}",
    ]
    line = one_line_exit_2(capsys, train_main(argv))
    assert "images.gz (shape (2000, 100, 100) of uint8) needs 19.1 MiB, above the memory budget" in line


def test_case5_an_npz_member_that_inflates_above_the_budget_is_refused(tmp_path):
    from minicnn.data.datasets import read_npz_xy

    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, X=np.zeros((2000, 1, 64, 64), np.float32), y=np.zeros(2000, np.int64))
    io.set_memory_budget(8 * 2**20)
    with pytest.raises(ValueError, match="bomb.npz: its arrays inflate to more than"):
        read_npz_xy(bomb)


def test_case5_a_model_file_declaring_huge_layers_is_one_line_in_inspect(finished_run, tmp_path, capsys):
    from minicnn.see.inspect import main as inspect_main

    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    arrays = io.load_npz(run / "model.npz")
    meta = json.loads(str(arrays["__architecture__"]))
    meta["layers"][0]["out_channels"] = 2**40
    arrays["__architecture__"] = np.array(json.dumps(meta))
    save_npz_atomic(run / "model.npz", arrays)
    assert "model.npz" in one_line_exit_2(capsys, inspect_main([str(run)]))


# --- case 6: one error type for malformed files (Sequential.load: tests/test_model.py) -------------


@pytest.mark.parametrize(
    "record", ["[1, 2, 3]", '{"layers": [{"type": "ReLU"}], "frozen": 5}', "[" * 200_000 + "]" * 200_000]
)
def test_case6_inspect_of_a_malformed_architecture_is_one_line(finished_run, tmp_path, capsys, record):
    from minicnn.see.inspect import main as inspect_main

    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    arrays = io.load_npz(run / "model.npz")
    arrays["__architecture__"] = np.array(record)
    save_npz_atomic(run / "model.npz", arrays)
    assert "model.npz" in one_line_exit_2(capsys, inspect_main([str(run)]))


# --- case 7: nonsense refused (layer constructors: tests/test_layers.py, tests/test_model.py) -------


def test_case7_nan_layer_argument_names_the_key_and_writes_nothing(tmp_path, capsys):
    config = tmp_path / "nan.toml"
    config.write_text(Path(FAST).read_text().replace("kernel_size = 3", "kernel_size = nan", 1))
    line = one_line_exit_2(capsys, train_main(["--config", str(config), "--out", str(tmp_path / "r")]))
    assert "model.layers[0].kernel_size = nan" in line and not (tmp_path / "r").exists()


def test_case7_uint64_labels_above_int64_are_refused_before_the_run_directory(tmp_path, capsys):
    data = tmp_path / "d.npz"
    y = np.arange(40, dtype=np.uint64) % 2
    y[3] = 2**63 + 1
    np.savez(data, X=np.zeros((40, 1, 8, 8), np.float32), y=y)
    argv = QUICK + ["--out", str(tmp_path / "r"), "--set", "data.source=npz", "--set", f"data.path={data}"]
    assert "labels must be < 2**63" in one_line_exit_2(capsys, train_main(argv))
    assert not (tmp_path / "r").exists()


# --- case 8: smaller ----------------------------------------------------------------------------------


def test_case8_set_errors_name_the_override_not_the_file(capsys):
    line = one_line_exit_2(capsys, train_main(["--config", FAST, "--set", "train.epochs=0"]))
    assert line.startswith("error: --set train.epochs=0: ") and "digits_fast.toml" not in line
    line = one_line_exit_2(capsys, train_main(["--config", FAST, "--set", "model.layers.0.kernel_size=inf"]))
    assert line.startswith("error: --set model.layers.0.kernel_size=inf: model.layers[0].kernel_size = inf")


def test_case8_nesterov_with_adam_is_refused(capsys):
    line = one_line_exit_2(capsys, train_main(["--config", FAST, "--set", "train.nesterov=true"]))
    assert "train.nesterov" in line and "sgd" in line


def test_case8_idx_size_check_does_not_overflow_and_names_the_file(tmp_path):
    from minicnn.data import DataError
    from minicnn.data.datasets import read_idx

    path = tmp_path / "huge.idx"
    path.write_bytes(_idx_header((2**32 - 1, 2**32 - 1, 2**32 - 1)) + bytes(16))
    with pytest.raises(DataError, match="huge.idx: IDX header declares shape"):
        read_idx(path)


def test_case8_stale_temporaries_are_removed_on_resume(run_copy):
    (run_copy / ".tmp-abc.npz").write_bytes(b"half a save")
    assert resume(run_copy, "train.epochs=1") == 0
    assert not (run_copy / ".tmp-abc.npz").exists()


def test_case8_a_nul_byte_in_a_path_is_never_printed_raw(capsys):
    one_line_exit_2(capsys, train_main(["--config", "bad\x00name.toml"]))
    capsys.readouterr()
    code = train_main(["--config", "bad\x00name.toml"])
    assert code == 2 and "\x00" not in capsys.readouterr().err


def _fail_with(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize(
    "exc, expected",
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/x.png"), "out/x.png: No space left on device"),
        (MemoryError("Unable to allocate 15.0 GiB for an array"), "out of memory: Unable to allocate"),
        (PermissionError(errno.EACCES, "Permission denied", "c.toml"), "c.toml: Permission denied"),
    ],
)
@pytest.mark.parametrize("command", ["train", "inspect", "explore", "gallery", "export"])
def test_case4_every_command_answers_os_and_memory_errors_in_one_line(
    tmp_path, capsys, monkeypatch, command, exc, expected
):
    import importlib

    inner, argv = {
        "train": ("minicnn.train.run", QUICK + ["--out", str(tmp_path / "r")]),
        "inspect": ("minicnn.see.inspect.inspect_run", [str(tmp_path)]),
        "explore": ("minicnn.see.explore.write_page", [str(tmp_path)]),
        "gallery": ("minicnn.see.gallery.plot_gallery", ["--out", str(tmp_path)]),
        "export": ("minicnn.export._run_inputs", [str(tmp_path), "--onnx", str(tmp_path / "m")]),
    }[command]
    monkeypatch.setattr(inner, _fail_with(exc))
    module = {
        "train": "minicnn.cli",
        "inspect": "minicnn.see.inspect",
        "explore": "minicnn.see.explore",
        "gallery": "minicnn.see.gallery",
        "export": "minicnn.export",
    }[command]
    assert expected in one_line_exit_2(capsys, importlib.import_module(module).main(argv))
