"""python -m minicnn.compare: two real runs side by side, the keys that differ, histories overlaid;
folders that are not finished runs refused with one line and exit 2."""

import json
import re
import shutil

import numpy as np
import pytest

from minicnn.see import compare
from minicnn.see.change import run_kernel_change


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, train_run):
    """digits_fast.toml for 2 epochs, and again for 3 epochs with another learning rate and seed."""
    folder = tmp_path_factory.mktemp("compare")
    a = train_run(folder / "a", "--set", "train.epochs=2")
    b = train_run(folder / "b", "--set", "train.epochs=3", "--set", "train.lr=0.002", "--seed", "5")
    return a, b


def test_compare_prints_each_runs_results_and_the_keys_that_differ(two_runs, tmp_path, capsys):
    a, b = two_runs
    assert compare.main([str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    for run in (a, b):
        metrics = json.loads((run / "metrics.json").read_text())
        angle = float(np.median(run_kernel_change(run)["angles"]))
        row = re.search(rf"^{re.escape(str(run))}\s+(\S+)\s+(\d+)\s+(\S+)\s+(\S+)$", out, flags=re.M)
        assert row, out
        assert float(row.group(1)) == pytest.approx(metrics["test_accuracy"], abs=5e-5)
        assert int(row.group(2)) == len(metrics["history"])
        assert float(row.group(3)) == pytest.approx(metrics["train_seconds"], abs=0.05)
        assert float(row.group(4)) == pytest.approx(angle, abs=0.05)
    keys = {
        line.split()[0]
        for line in out.split("Config keys that differ")[1].splitlines()[3:]
        if line[:1].isalnum()
    }
    assert {"seed", "train.epochs", "train.lr"} <= keys
    assert "train.batch_size" not in keys and "model.layers[0].out_channels" not in keys
    assert (tmp_path / "cmp" / "compare.txt").read_text().strip() == out.split("\nwrote ")[0].strip()


def test_history_figure_overlays_each_runs_train_and_validation_curves(two_runs):
    summaries = [compare.load_summary(run) for run in two_runs]
    fig = compare.plot_histories(summaries)
    loss_ax, accuracy_ax = fig.axes
    for ax, metric in ((loss_ax, "loss"), (accuracy_ax, "accuracy")):
        assert len(ax.lines) == 4  # 2 runs x (train, validation)
        for summary, (train, val) in zip(summaries, zip(ax.lines[::2], ax.lines[1::2])):
            np.testing.assert_allclose(train.get_ydata(), [r[f"train_{metric}"] for r in summary["history"]])
            np.testing.assert_allclose(val.get_ydata(), [r[f"val_{metric}"] for r in summary["history"]])
            assert train.get_color() == val.get_color() and val.get_linestyle() == "--"
    assert loss_ax.lines[0].get_color() != loss_ax.lines[2].get_color()


def test_the_same_config_twice_has_no_differing_keys(two_runs, capsys):
    summary = compare.load_summary(two_runs[0])
    assert compare.differing_keys([summary, summary]) == []
    assert "configs are the same" in compare.format_comparison([summary, summary])


def _not_a_run(case, two_runs, tmp_path):
    if case == "missing":
        return tmp_path / "nowhere"
    if case == "file":
        (tmp_path / "f.txt").write_text("x")
        return tmp_path / "f.txt"
    if case == "empty folder":
        return tmp_path
    run = tmp_path / "unfinished"
    shutil.copytree(two_runs[0], run)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["test_accuracy"]  # as the file stands between epochs: no test result yet
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "is not a directory"),
        ("file", "is not a directory"),
        ("empty folder", "is not a finished run: it has no metrics.json with a test accuracy"),
        ("unfinished", "is not a finished run: it has no metrics.json with a test accuracy"),
    ],
)
def test_a_folder_that_is_not_a_finished_run_exits_2_with_one_line(case, message, two_runs, tmp_path, capsys):
    bad = _not_a_run(case, two_runs, tmp_path)
    assert compare.main([str(two_runs[0]), str(bad), "--out", str(tmp_path / "cmp")]) == 2
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert str(bad) in err and not (tmp_path / "cmp").exists()


def test_runs_with_other_layers_differ_in_one_summarized_key():
    def summary(types, channels, lr):
        config = {"train.lr": lr, "train.epochs": 5}
        for i, t in enumerate(types):
            config[f"model.layers[{i}].type"] = t
            if t == "Conv2D":
                config[f"model.layers[{i}].out_channels"] = channels.pop(0)
        return {"config": config}

    a = summary(["Conv2D", "ReLU", "Flatten", "Dense"], [4], 0.01)
    b = summary(["Conv2D", "ReLU", "Conv2D", "ReLU", "Flatten", "Dense"], [8, 16], 0.01)
    assert compare.differing_keys([a, b]) == ["model.layers"]
    assert compare.layers_summary(b["config"]) == "6 layers, Conv2D 8-16"
    c = summary(["Conv2D", "ReLU", "Flatten", "Dense"], [8], 0.02)  # same types: the keys themselves
    assert compare.differing_keys([a, c]) == ["model.layers[0].out_channels", "train.lr"]
