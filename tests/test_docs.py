"""docs/convolution.md's matrix-form snippet runs through the public functional API and equals Conv2D."""

import re
from pathlib import Path

import numpy as np

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "convolution.md"


def test_matrix_form_snippet_matches_the_layer_forward_and_backward():
    blocks = [b for b in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S) if "dx_layer" in b]
    assert len(blocks) == 1
    names = {"__name__": "docs"}
    exec(compile(blocks[0], "docs/convolution.md matrix form", "exec"), names)
    layer, x = names["layer"], names["x"]
    assert names["cols"].shape == (2, 27, 64)
    with layer.evaluating():
        np.testing.assert_allclose(names["Y"], layer.forward(x), atol=1e-12)
    np.testing.assert_allclose(names["dx"], names["dx_layer"], atol=1e-12)
    np.testing.assert_allclose(names["dW"], layer.weight.grad, atol=1e-12)
    assert np.abs(names["dx"]).max() > 0.1  # a real gradient, not zeros matched against zeros


TRAINING = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def run_directory_table() -> list[str]:
    """The file names in the first column of docs/training.md's run-directory table, in order."""
    text = TRAINING.read_text()
    table = text[text.index("| file | contents |") :].split("\n\n")[0]
    return [name for row in table.splitlines()[2:] for name in re.findall(r"`([^`]+)`", row.split("|")[1])]


def test_the_run_directory_table_lists_exactly_what_a_run_writes(tmp_path, train_run):
    """A real (one-epoch, with figures) run of configs/digits_fast.toml: every file it writes has a row,
    and every row names a file it wrote."""
    run = train_run(tmp_path / "run", "--set", "train.epochs=1", "--set", "output.figures=true")
    written = sorted(path.name for path in run.iterdir())
    listed = run_directory_table()
    assert len(listed) == len(set(listed)) and "filters_evolution.gif" in listed
    assert sorted(listed) == written
    from minicnn.train import RunDir

    assert set(RunDir.FILES) <= set(listed)  # what --overwrite removes is documented too


def test_make_figures_draws_the_learning_figures_of_a_finished_run(finished_run, tmp_path):
    """docs/make_figures.py, which draws the README's pictures, runs on a finished run (its
    ``learning`` part once broke unnoticed when layer names became dotted strings)."""
    import importlib.util

    from PIL import Image

    from minicnn.see.change import load_kernel_history

    spec = importlib.util.spec_from_file_location(
        "make_figures", Path(__file__).parent.parent / "docs" / "make_figures.py"
    )
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    out = tmp_path / "figures"
    assert (
        make_figures.main(
            ["--run", str(finished_run), "--only", "learning", "feature_maps", "--out", str(out)]
        )
        == 0
    )
    expected = {
        "filters_learned",
        "filters_evolution",
        "top_patches",
        "saliency",
        "class_maps_first",
        "feature_maps",
    }
    assert {p.stem for p in out.glob("*.png")} == expected
    with Image.open(out / "filters_evolution.gif") as gif:  # one frame per kept epoch, as the run's own GIF
        assert gif.n_frames == len(load_kernel_history(finished_run)["epochs"])
