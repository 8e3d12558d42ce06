"""Tests for python -m minicnn.inspect, on a run directory made by a short training run."""

import io
import pathlib

import numpy as np
import pytest

from minicnn.nn.layers import Conv2D
from minicnn.see import inspect as mc_inspect
from minicnn.see.filters import kernel

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, train_run):
    """A finished run of configs/digits_fast.toml, shortened to 2 epochs."""
    return train_run(tmp_path_factory.mktemp("runs") / "fast", "--set", "train.epochs=2")


def test_inspect_prints_summary_and_one_row_per_kernel_and_writes_figures(run_dir, tmp_path, capsys):
    from minicnn.nn.model import Sequential
    from minicnn.see.change import kernel_angles, norm_ratios

    code = mc_inspect.main([str(run_dir), "--index", "3", "--out", str(tmp_path)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Total params" in text and "0: Conv2D(1, 8" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "nearest classic filter" in line) + 2
    table = [row for row in lines[start : lines.index("", start)] if not row.startswith("median")]
    assert [int(row.split()[0]) for row in table] == list(range(8))  # one line per first-layer filter
    initial, learned = (
        Sequential.load(run_dir / name).layers[0].weight.data for name in ("init.npz", "model.npz")
    )
    angles, ratios = kernel_angles(initial, learned), norm_ratios(initial, learned)
    for row, angle, ratio in zip(table, angles, ratios):  # filter, norm, mean, angle, norm ratio, label
        fields = row.split()
        assert fields[3] == f"{angle:.1f}°" and fields[4] == f"{ratio:.2f}"
        assert "like " in row or "no classic match" in row
    assert f"median angle from initialization (init.npz): {np.median(angles):.1f}°" in text
    assert "Test image 3: label" in text
    for name in (
        "filters_layer0.png",
        "feature_maps_layer0_image3.png",
        "filters_learned_layer0.png",
        "filters_evolution.png",
        "filters_evolution.gif",
        "top_patches.png",
        "saliency.png",
        "class_maps_first.png",
        "class_maps_last.png",
    ):
        assert (tmp_path / name).is_file(), name


def test_inspect_table_values_match_the_saved_kernels(run_dir):
    from minicnn.nn.model import Sequential
    from minicnn.see.filters import classic_match

    conv = Sequential.load(run_dir / "model.npz").layers[0]
    rows = mc_inspect.kernel_table(conv)
    assert [r["filter"] for r in rows] == list(range(conv.out_channels))
    for r, w in zip(rows, conv.weight.data.astype(np.float64)):
        assert r["norm"] == pytest.approx(np.linalg.norm(w))
        assert r["mean"] == pytest.approx(w.mean())
        assert r["percentile"] == pytest.approx(classic_match(w[0])["percentile"])
        assert r["label"].startswith("like " if r["percentile"] >= 95 else "no classic match")
        assert np.isnan(r["angle"])  # no initial weights given


def test_kernel_table_names_a_hand_set_sobel_filter_and_refuses_a_weak_match():
    layer = Conv2D(1, 3, 3, dtype=np.float64, rng=0)
    layer.weight.data[0, 0] = kernel("sobel x")
    layer.weight.data[1, 0] = -3 * kernel("sharpen")
    layer.weight.data[2, 0] = [[0.3, -1.0, 0.2], [0.9, 0.1, -0.4], [-0.5, 0.6, 0.8]]
    rows = mc_inspect.kernel_table(layer)
    assert (rows[0]["match"], rows[1]["match"]) == ("sobel x", "-sharpen")
    assert rows[0]["cosine"] == pytest.approx(1.0)
    assert rows[0]["label"] == "like sobel x, cos 1.00, above all random kernels"
    assert rows[2]["percentile"] < 95 and rows[2]["label"].startswith("no classic match (best ")


def test_inspect_the_test_images_are_the_runs_test_split(run_dir):
    from minicnn.data import load_dataset
    from minicnn.train.config import load_config

    X, y = mc_inspect.load_test_split(run_dir)
    expected = load_dataset(load_config(run_dir / "config.toml").data)
    np.testing.assert_array_equal(X, expected.X_test)
    np.testing.assert_array_equal(y, expected.y_test)
    assert X.shape == (360, 1, 8, 8)


def test_inspect_reads_the_runs_split_npz_instead_of_drawing_the_split_again(run_dir, tmp_path, monkeypatch):
    import shutil

    from minicnn.data import loading

    def no_drawing(*args, **kwargs):
        raise AssertionError("split_indices called: the run's split.npz was not used")

    monkeypatch.setattr(loading, "split_indices", no_drawing)  # drawing it imports scikit-learn: 1-2 s
    X, y = mc_inspect.load_test_split(run_dir)
    split = np.load(run_dir / "split.npz")
    from minicnn.data import load_digits_arrays

    X_all, y_all = load_digits_arrays()
    np.testing.assert_array_equal(y, y_all[split["test"]])
    assert X.shape == (len(split["test"]), 1, 8, 8)

    # a split.npz that does not partition the data: one line naming the file
    broken = pathlib.Path(shutil.copytree(run_dir, tmp_path / "run"))
    arrays = dict(np.load(broken / "split.npz"))
    arrays["val"] = arrays["train"][:5]  # overlaps the training split
    np.savez(broken / "split.npz", **arrays)
    assert mc_inspect.main([str(broken)]) == 2
    mc_inspect._run_dataset.cache_clear()


def test_check_split_refuses_indices_that_are_not_a_partition():
    from minicnn.data import DataError, check_split, split_indices

    y = np.repeat(np.arange(4), 10)
    good = split_indices(y, 0.2, 0.1, 0)
    assert all(np.array_equal(check_split(good, 40)[k], good[k]) for k in good)
    cases = [
        ({**good, "val": good["train"][:2]}, r"do not cover the 40 images once each"),
        ({**good, "test": good["test"] + 40}, r"do not cover"),
        ({**good, "train": good["train"].astype(np.float64)}, r"split 'train': expected a 1-D array"),
        ({k: v for k, v in good.items() if k != "val"}, r"split 'val': expected .* got nothing"),
        ({**good, "test": good["test"][:, None]}, r"got int64 of shape \(8, 1\)"),
    ]
    for split, message in cases:
        with pytest.raises(DataError, match=message):
            check_split(split, 40)
    own_test = {"train": np.arange(30), "val": np.arange(30, 40), "test": np.arange(5)}
    assert len(check_split(own_test, 40, test_count=5)["test"]) == 5
    with pytest.raises(DataError, match=r"expected the indices 0 to 5"):
        check_split({**own_test, "test": np.arange(1, 7)}, 40, test_count=6)


def test_inspect_rejects_a_layer_that_is_not_a_convolution(run_dir, capsys):
    assert mc_inspect.main([str(run_dir), "--layer", "1"]) == 2
    err = capsys.readouterr().err
    assert "--layer 1 is not a convolution; the convolutions of " in err and " are 0 (names as in" in err
    assert len(err.strip().splitlines()) == 1, err  # no summary table under the error


def test_inspect_rejects_an_index_past_the_test_split(run_dir, capsys):
    assert mc_inspect.main([str(run_dir), "--index", "360"]) == 2
    assert "the test split has 360 images" in capsys.readouterr().err


def test_inspect_of_a_folder_without_a_model_says_so(tmp_path, capsys):
    assert mc_inspect.main([str(tmp_path)]) == 2
    assert "has no model.npz" in capsys.readouterr().err


def test_inspect_run_writes_into_run_dir_inspect_by_default(run_dir):
    stream = io.StringIO()
    paths = mc_inspect.inspect_run(run_dir, stream=stream)
    assert all(str(run_dir / "inspect") in p for p in paths)
    assert "wrote" in stream.getvalue()


def test_inspect_rejects_an_input_channel_the_layer_does_not_have(run_dir, capsys):
    assert mc_inspect.main([str(run_dir), "--in-channel", "1"]) == 2
    assert "--in-channel 1: layer 0 has 1 input channels" in capsys.readouterr().err
