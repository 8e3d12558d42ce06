"""Tests for python -m minicnn.explore: the page's data, the command's errors, and the page itself in a
real headless Chromium (driven by selenium): its forward pass against minicnn's, drawing with pointer
events, feature maps, the sum of products under a cell, kernel angles, occlusion and a screenshot.

Without a Chromium the browser tests skip, unless ``MINICNN_REQUIRE_BROWSER=1`` (``.ci/run`` sets it,
after installing Debian's ``chromium`` and ``chromium-driver``): there a missing browser fails them.
"""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import open_page
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minicnn.nn import layers as L
from minicnn.nn.model import Sequential
from minicnn.see import explore

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "docs" / "figures" / "explore.png"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, train_run):
    """A finished run of configs/digits_fast.toml, shortened to 3 epochs."""
    return train_run(tmp_path_factory.mktemp("runs") / "digits", "--set", "train.epochs=3")


#: Every layer type minicnn has, with stride, padding ("same" and pairs) and dilation.
RGB_LAYERS = [
    {"type": "Conv2D", "out_channels": 4, "kernel_size": 3, "padding": "same", "dilation": 2},
    {"type": "BatchNorm2D"},
    {"type": "LeakyReLU", "negative_slope": 0.1},
    {"type": "Conv2D", "out_channels": 5, "kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0]},
    {"type": "Tanh"},
    {"type": "AvgPool2D", "kernel_size": 2, "stride": 1, "padding": 1},
    {"type": "Sigmoid"},
    {"type": "MaxPool2D", "kernel_size": 3, "stride": 1, "padding": 1},
    {"type": "ReLU"},
    {"type": "Flatten"},
    {"type": "Dropout", "p": 0.25},
    {"type": "Dense", "out_features": 3},
]


def toml_layers(layers: list[dict]) -> str:
    """``[[model.layers]]`` tables (JSON's strings, numbers and lists are TOML's too)."""
    return "".join(
        "[[model.layers]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in layer.items())
        for layer in layers
    )


@pytest.fixture(scope="module")
def rgb_run_dir(tmp_path_factory, train_run):
    """A run on RGB images of 10x12 pixels (an .npz data set) through every layer type minicnn has."""
    folder = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    X = rng.integers(0, 80, size=(120, 3, 10, 12))
    X[np.arange(120), y] += 150  # class k: channel k is bright, so the colours tell the classes apart
    np.savez(folder / "rgb.npz", X=X.astype(np.uint8), y=y)
    config = folder / "rgb.toml"
    config.write_text(
        f'seed = 0\n[data]\nsource = "npz"\npath = "{folder / "rgb.npz"}"\n'
        f"[train]\nepochs = 2\nbatch_size = 16\n{toml_layers(RGB_LAYERS)}"
    )
    return train_run(folder / "run", config=config)


@pytest.fixture(scope="module")
def idx_run_dir(tmp_path_factory, train_run):
    """A run on 14x14 grey images read from IDX files (configs/digits_fast.toml's model, 2 epochs)."""
    from minicnn.data import write_idx

    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 12).astype(np.uint8)
    X = rng.integers(0, 60, size=(120, 14, 14))
    for k in range(10):  # class k: a bright bar in row k + 2
        X[y == k, k + 2, 2:12] += 180
    write_idx(folder / "images.gz", X.astype(np.uint8))
    write_idx(folder / "labels.gz", y)
    return train_run(
        folder / "run",
        "--set",
        "train.epochs=2",
        "--set",
        "data.source=idx",
        "--set",
        f"data.images={folder / 'images.gz'}",
        "--set",
        f"data.labels={folder / 'labels.gz'}",
    )


# ----------------------------------------------------------------------------------------------
# The page's data and file, without a browser
# ----------------------------------------------------------------------------------------------


def page_json(path: Path) -> dict:
    text = Path(path).read_text()
    block = re.search(
        r'<script type="application/json" id="minicnn-data">(.*?)</script>', text, flags=re.DOTALL
    )
    return json.loads(block.group(1))


def test_explore_writes_one_self_contained_page_into_the_run_directory(run_dir, capsys):
    assert explore.main([str(run_dir)]) == 0
    page = run_dir / "explore.html"
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing a browser would fetch
    assert not re.search(
        r"<(link|img|iframe|object|embed)\b|\bsrc\s*=|@import|url\(", text, flags=re.IGNORECASE
    )
    assert text.count("<script") == 2 and "/*@" not in text  # the data block and the inline script
    data = page_json(page)
    assert data["input_shape"] == [1, 8, 8] and data["source"] == "digits" and data["unsupported"] is None


def test_page_holds_the_architecture_weights_standardization_and_minicnns_logits(run_dir, tmp_path):
    out = tmp_path / "page.html"
    assert explore.main([str(run_dir), "--out", str(out)]) == 0
    data = page_json(out)
    model = Sequential.load(run_dir / "model.npz")
    assert [layer["type"] for layer in data["layers"]] == [type(layer).__name__ for layer in model.layers]
    assert data["layers"][0]["output_shape"] == [8, 8, 8] and data["layers"][0]["pad"] == [1, 1, 1, 1]
    weight = data["layers"][0]["params"]["weight"]
    np.testing.assert_array_equal(
        np.array(weight["data"], np.float32).reshape(weight["shape"]), model.layers[0].weight.data
    )
    split = np.load(run_dir / "split.npz")
    np.testing.assert_array_equal(np.float32(data["mean"]), split["mean"])
    np.testing.assert_array_equal(np.float32(data["std"]), split["std"])
    images = np.array(
        [np.reshape(im["input"]["data"], im["input"]["shape"]) for im in data["images"]], np.float32
    )
    assert len(images) == explore.N_IMAGES and sorted({im["label"] for im in data["images"]}) == list(
        range(10)
    )
    model.eval()
    np.testing.assert_array_equal(np.float32(data["check"]["logits"]), model.forward(images))
    np.testing.assert_allclose(data["check"]["probabilities"], model.predict_proba(images), rtol=1e-6)


def conv_only_run() -> explore.Run:
    """A run whose model ends in feature maps, not class scores: a model the page cannot draw."""
    return explore.Run(
        "conv-only",
        Sequential(L.Conv2D(1, 2, 3, rng=0)),
        None,
        np.zeros((3, 1, 8, 8), np.float32),
        np.arange(3),
        np.zeros(1, np.float32),
        np.ones(1, np.float32),
        "digits",
        {},
    )


def test_page_of_a_model_without_class_scores_explains_why(tmp_path):
    run = conv_only_run()
    data = explore.page_data(run)
    assert "output has shape (2, 6, 6)" in data["unsupported"] and "check" not in data


def test_explore_warns_on_stderr_when_it_cannot_draw_the_model(tmp_path, monkeypatch, capsys):
    run = conv_only_run()
    monkeypatch.setattr(explore, "load_run", lambda run_dir: run)
    assert explore.main([str(tmp_path), "--out", str(tmp_path / "page.html")]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"wrote {tmp_path / 'page.html'}"
    assert len(err.splitlines()) == 1 and err.startswith("warning: the page draws this model only in part")
    assert "(2, 6, 6)" in err


def _bad_input(case: str, run_dir: Path, tmp_path: Path) -> list[str]:
    """The command-line arguments for one kind of bad input."""
    if case == "missing":
        return [str(tmp_path / "nowhere")]
    if case == "file":
        (tmp_path / "model.npz").write_bytes(b"not a folder")
        return [str(tmp_path / "model.npz")]
    if case == "corrupt model":
        shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("explore.html"))
        (tmp_path / "run" / "model.npz").write_bytes((run_dir / "model.npz").read_bytes()[:300])
        return [str(tmp_path / "run")]
    if case == "corrupt split":
        shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("explore.html"))
        indices = {key: np.load(run_dir / "split.npz")[key] for key in ("train", "val", "test")}
        np.savez(tmp_path / "run" / "split.npz", mean=np.array(["a"]), std=np.ones(1), **indices)
        return [str(tmp_path / "run")]
    if case == "foreign npz":
        np.savez(tmp_path / "model.npz", X=np.zeros(3))
        return [str(tmp_path)]
    if case == "bad port":
        return [str(run_dir), "--serve", "--port", "70000"]
    if case == "out in a missing folder":
        return [str(run_dir), "--out", str(tmp_path / "missing" / "x.html")]
    return [str(run_dir), "--out", str(tmp_path)] if case == "out is a folder" else [str(tmp_path)]


BAD_INPUT = {
    "missing": "is not a directory",
    "file": "is not a directory",
    "no model": "has no model.npz",
    "corrupt model": "model.npz is not a readable .npz file",
    "foreign npz": "is not a minicnn model file",
    "corrupt split": "expected finite numbers 'mean'",
    "out in a missing folder": "cannot write --out",
    "bad port": "--port 70000: expected a port number",
    "out is a folder": "is a directory; expected the path of an .html file",
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gives_one_line_on_stderr_and_exit_2(case, run_dir, tmp_path, capsys):
    assert explore.main(_bad_input(case, run_dir, tmp_path)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and BAD_INPUT[case] in lines[0]


def test_command_with_a_corrupt_model_exits_2_without_a_traceback(run_dir, tmp_path):
    args = _bad_input("corrupt model", run_dir, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "minicnn.explore", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and BAD_INPUT["corrupt model"] in result.stderr
    assert not (tmp_path / "run" / "explore.html").exists()


# the child as a script started in the background gets it: SIGINT ignored from the start
_IGNORING_SIGINT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "sys.argv[0] = 'minicnn.explore'; runpy.run_module('minicnn.explore', run_name='__main__')"
)


@pytest.mark.parametrize(
    "stop, launch",
    [
        (signal.SIGINT, ["-m", "minicnn.explore"]),
        (signal.SIGINT, ["-c", _IGNORING_SIGINT]),
        (signal.SIGTERM, ["-m", "minicnn.explore"]),
    ],
    ids=["ctrl-c", "ctrl-c-where-sigint-came-in-ignored", "sigterm"],
)
def test_serve_prints_the_address_serves_the_page_and_stops_cleanly(run_dir, tmp_path, stop, launch):
    out = tmp_path / "served.html"
    process = subprocess.Popen(
        [sys.executable, *launch, str(run_dir), "--out", str(out), "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout.readline().startswith("wrote ")
        address = re.search(
            r"serving (http://127\.0\.0\.1:\d+/served\.html)", process.stdout.readline()
        ).group(1)
        with urllib.request.urlopen(address, timeout=30) as response:
            assert response.read() == out.read_bytes()
    finally:
        process.send_signal(stop)
        try:
            _, stderr = process.communicate(timeout=30)
        finally:
            process.kill()  # never leave a server behind, whatever failed above
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_package_data_declares_the_page_assets():
    text = (ROOT / "setup.cfg").read_text()
    for name in ("explore_template.html", "explore.css", "explore.js"):
        assert name in text.split("[options.package_data]")[1].split("[")[0]
        assert (ROOT / "minicnn" / "see" / name).is_file()


# ----------------------------------------------------------------------------------------------
# The page in a real browser
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_page(run_dir):
    assert explore.main([str(run_dir)]) == 0
    return run_dir / "explore.html"


def test_page_forward_pass_matches_minicnn_within_1e4(browser, digits_page):
    page = open_page(browser, digits_page)
    check = page("selfCheck()")
    assert check["ok"] is True and check["images"] == explore.N_IMAGES
    assert check["maxRelativeError"] <= 1e-4 and check["maxProbabilityError"] <= 1e-4
    status = browser.find_element("id", "check-status")
    assert status.get_attribute("data-ok") == "true" and "12 test images" in status.text
    assert (
        browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    )  # fetched nothing


def test_page_self_check_fails_when_the_embedded_logits_are_off(browser, digits_page, tmp_path):
    text = digits_page.read_text()
    data = page_json(digits_page)
    data["check"]["logits"][3][0] = data["check"]["logits"][3][0] * 1.01 + 0.01
    tampered = tmp_path / "tampered.html"
    tampered.write_text(
        text.replace(
            json.dumps(page_json(digits_page), separators=(",", ":")), json.dumps(data, separators=(",", ":"))
        )
    )
    page = open_page(browser, tampered)
    assert page("selfCheck()")["ok"] is False
    assert browser.find_element("id", "check-status").get_attribute("data-ok") == "false"


def draw(browser, points, kind="mouse"):
    """Press, move through ``points`` (pixels from the drawing canvas's top-left corner) and release."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    canvas = browser.find_element("id", "draw")
    rect = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top];", canvas
    )
    kinds = {"mouse": interaction.POINTER_MOUSE, "touch": interaction.POINTER_TOUCH}
    actions = ActionBuilder(browser, mouse=PointerInput(kinds[kind], kind))
    actions.pointer_action.move_to_location(int(rect[0] + points[0][0]), int(rect[1] + points[0][1]))
    actions.pointer_action.pointer_down()
    for x, y in points[1:]:
        actions.pointer_action.move_to_location(int(rect[0] + x), int(rect[1] + y))
    actions.pointer_action.pointer_up()
    actions.perform()


def expected_input(bitmap: np.ndarray, shape, mean, std) -> np.ndarray:
    """The UCI preprocessing in NumPy: 4x4 block counts / 16, repeated over channels, standardized."""
    c, h, w = shape
    counts = bitmap.reshape(h, 4, w, 4).sum(axis=(1, 3)) / 16.0
    return (np.repeat(counts[None], c, axis=0) - np.asarray(mean)[:, None, None]) / np.asarray(std)[
        :, None, None
    ]


@pytest.mark.parametrize("kind", ["mouse", "touch"])
def test_drawing_with_pointer_events_gives_minicnns_prediction_and_feature_maps(
    browser, digits_page, run_dir, kind
):
    page = open_page(browser, digits_page)
    page("clear()")
    draw(browser, [(128, 40), (128, 90), (130, 150), (132, 215)], kind)  # a "1", top to bottom
    page("flush()")
    bitmap = np.array(page("bitmap()")).reshape(32, 32)
    assert bitmap[5:27, 16].all() and not bitmap[:, :8].any()  # the stroke, and nothing far from it
    data = page_json(digits_page)
    x = np.array(page("input()")).reshape(1, 1, 8, 8)
    np.testing.assert_allclose(x[0], expected_input(bitmap, (1, 8, 8), data["mean"], data["std"]), rtol=1e-6)
    model = Sequential.load(run_dir / "model.npz")
    model.eval()
    feature_maps = model.layers[0].forward(x.astype(np.float32))
    assert page("featureValue(0, 3, 4, 4)") == pytest.approx(
        float(feature_maps[0, 3, 4, 4]), rel=1e-5, abs=1e-6
    )
    probabilities = model.predict_proba(x.astype(np.float32))[0]
    np.testing.assert_allclose(page("probabilities()"), probabilities, atol=1e-5)
    assert page("prediction()") == int(probabilities.argmax())
    assert browser.find_element("id", "prediction").get_attribute("data-class") == str(
        int(probabilities.argmax())
    )
    browser.find_element("id", "clear").click()
    page("flush()")
    assert not any(page("bitmap()"))
    np.testing.assert_allclose(page("input()"), np.full(64, -data["mean"][0] / data["std"][0]), rtol=1e-6)


def test_clicking_a_convolution_cell_shows_kernel_patch_products_sum_and_bias(browser, digits_page, run_dir):
    from selenium.webdriver.common.action_chains import ActionChains

    page = open_page(browser, digits_page)
    page("selectImage(2)")
    page("flush()")
    canvas = browser.find_element("css selector", '#layers canvas[data-layer="0"][data-channel="5"]')
    size = canvas.size  # 8x8 cells: the cell (row 2, column 6)
    ActionChains(browser).move_to_element_with_offset(
        canvas, int(size["width"] * (6.5 / 8 - 0.5)), int(size["height"] * (2.5 / 8 - 0.5))
    ).click().perform()
    detail = page("cellDetail(0, 5, 2, 6)")
    x = np.pad(np.array(page("input()")).reshape(8, 8), 1)  # padding=1
    conv = Sequential.load(run_dir / "model.npz").layers[0]
    kernel, patch = conv.weight.data[5, 0].astype(np.float64), x[2:5, 6:9]
    np.testing.assert_allclose(detail["channels"][0]["kernel"], kernel.ravel())
    np.testing.assert_allclose(detail["channels"][0]["patch"], patch.ravel())
    np.testing.assert_allclose(detail["channels"][0]["products"], (kernel * patch).ravel())
    assert detail["sum"] == pytest.approx(float((kernel * patch).sum()))
    assert detail["bias"] == pytest.approx(float(conv.bias.data[5]))
    assert detail["total"] == pytest.approx(detail["value"], abs=1e-9)
    text = browser.find_element("id", "detail").text
    assert "feature map 5, cell (2, 6)" in text and f"{detail['sum']:.5f} + bias {detail['bias']:.5f}" in text


def click_cell(browser, layer: int, channel: int, row: float, column: float, cells: int = 8):
    """Click the centre of cell (row, column) of a feature map drawn on a canvas of ``cells`` cells."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = browser.find_element(
        "css selector", f'#layers canvas[data-layer="{layer}"][data-channel="{channel}"]'
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    size = canvas.size
    ActionChains(browser).move_to_element_with_offset(
        canvas,
        int(size["width"] * ((column + 0.5) / cells - 0.5)),
        int(size["height"] * ((row + 0.5) / cells - 0.5)),
    ).click().perform()
    return canvas


def rect(browser, element) -> dict:
    return browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};",
        element,
    )


def test_clicked_cell_shows_in_a_panel_beside_its_map_that_stays_in_view(browser, digits_page):
    page = open_page(browser, digits_page)
    page("selectImage(1)")
    page("flush()")
    panel = browser.find_element("id", "detail-panel")
    assert not panel.is_displayed()  # nothing clicked yet
    n_layers = len(page_json(digits_page)["layers"])
    canvas = click_cell(browser, 0, 3, 1, 1)
    assert panel.is_displayed() and "feature map 3, cell (1, 1)" in panel.text
    height = browser.execute_script("return window.innerHeight")
    where, clicked = rect(browser, panel), rect(browser, canvas)
    assert where["left"] >= clicked["right"]  # beside the map, not under it
    assert where["top"] <= clicked["bottom"] and where["bottom"] >= clicked["top"]  # level with it
    assert 0 <= where["top"] and where["bottom"] <= height
    maps = browser.find_elements("css selector", "#layers .maps canvas")
    assert all(rect(browser, m)["right"] <= where["left"] for m in maps)  # it covers no map
    browser.execute_script("window.scrollBy(0, 600)")
    assert rect(browser, panel) == where  # scrolling leaves it in view
    browser.find_element("id", "detail-close").click()
    assert not panel.is_displayed() and n_layers > 1


def test_each_row_of_heat_maps_has_its_colour_scale(browser, digits_page):
    page = open_page(browser, digits_page)
    page("selectImage(3)")
    page("flush()")
    acts = page("state.acts.map((t) => Array.from(t.data))")
    scales = browser.find_elements("css selector", "#layers .layer .scale")
    assert len(scales) == len(acts) - 1  # one per layer row
    for scale, values in zip(scales, acts[1:]):
        limit = float(np.abs(values).max())
        assert float(scale.get_attribute("data-limit")) == pytest.approx(limit)
        low, high = (scale.find_element("css selector", name).text for name in (".low", ".high"))
        assert float(low) == pytest.approx(-limit, rel=2e-3) and float(high) == pytest.approx(limit, rel=2e-3)
    bar = np.array(
        browser.execute_script(
            "const c = document.querySelector('#layers .scale canvas');"
            "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, 1).data);"
        )
    ).reshape(-1, 4)
    assert list(bar[0, :3]) == [0, 0, 255] and list(bar[50, :3]) == [255, 255, 255]
    assert list(bar[-1, :3]) == [255, 0, 0]  # blue, white at 0, red: the heat maps' own colours


def test_ink_is_dark_on_white_as_in_the_png_figures(browser, digits_page):
    page = open_page(browser, digits_page)
    page("clear()")
    draw(browser, [(128, 40), (128, 215)])  # a vertical stroke through the middle
    page("flush()")

    def pixels(selector):
        return np.array(
            browser.execute_script(
                f"const c = document.querySelector('{selector}');"
                "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
            )
        ).reshape(
            browser.execute_script(
                f"const c = document.querySelector('{selector}'); return [c.height, c.width]"
            )
            + [4]
        )

    drawing = pixels("#draw")
    assert (drawing[0, 0, :3] == 255).all() and (drawing[16, 16, :3] == 0).all()  # white paper, black ink
    view = pixels("#input-view")
    assert view[0, 0, 0] == 255 and view[4, 4, 0] < 128  # the model's input: blank white, ink dark
    data = page_json(digits_page)
    image = np.array(data["images"][0]["input"]["data"]).reshape(8, 8) * data["std"][0] + data["mean"][0]
    thumb = pixels("#test-images canvas")[..., 0]
    np.testing.assert_allclose(thumb, np.round(255 * (1 - np.clip(image, 0, 1))), atol=1)


def test_kernel_angles_are_the_angles_between_init_and_trained_kernels(browser, digits_page, run_dir):
    page = open_page(browser, digits_page)
    before = Sequential.load(run_dir / "init.npz").layers[0].weight.data.reshape(8, -1).astype(np.float64)
    after = Sequential.load(run_dir / "model.npz").layers[0].weight.data.reshape(8, -1).astype(np.float64)
    cosine = (before * after).sum(1) / np.linalg.norm(before, axis=1) / np.linalg.norm(after, axis=1)
    expected = np.degrees(np.arccos(cosine))
    np.testing.assert_allclose(page("kernelAngles()")["0"], expected, rtol=1e-6)
    labels = browser.find_elements("css selector", "#kernels .kernel-pair > div:last-child")
    assert [float(label.get_attribute("data-angle")) for label in labels] == pytest.approx(list(expected))


def test_occlusion_map_is_the_drop_in_the_predicted_probability(browser, digits_page, run_dir):
    page = open_page(browser, digits_page)
    page("selectImage(4)")
    page("flush()")
    result = page("state.occlusion")
    data = page_json(digits_page)
    x = np.array(page("input()"), np.float32).reshape(1, 1, 8, 8)
    model = Sequential.load(run_dir / "model.npz")
    base = model.predict_proba(x)[0]
    top = int(base.argmax())
    blanked = np.repeat(x, 64, axis=0)
    blank = (0 - data["mean"][0]) / data["std"][0]
    blanked.reshape(64, 64)[np.arange(64), np.arange(64)] = blank  # image k loses pixel k
    drops = base[top] - model.predict_proba(blanked)[:, top]
    assert result["predicted"] == top and result["patch"] == 1
    np.testing.assert_allclose(result["drops"], drops, atol=1e-5)


def test_screenshot_of_a_drawing_is_not_blank(browser, digits_page, tmp_path):
    import matplotlib.image

    page = open_page(browser, digits_page)
    page("clear()")
    draw(browser, [(60, 50), (120, 30), (190, 50), (195, 100), (120, 150), (60, 215), (200, 215)])  # a "2"
    page("flush()")
    png = browser.get_screenshot_as_png()
    pixels = matplotlib.image.imread(io.BytesIO(png))[..., :3]
    assert pixels.shape[0] > 500 and pixels.shape[1] == 1280
    assert pixels.mean(axis=2).var() > 0.01  # far from one flat colour
    assert (np.abs(pixels - pixels[0, 0]).sum(axis=2) > 0.1).mean() > 0.1
    if os.environ.get("MINICNN_UPDATE_FIGURES") == "1":  # the README's screenshot comes from here
        FIGURE.write_bytes(png)


def test_rgb_run_of_other_size_draws_in_colour_and_matches_minicnn(browser, rgb_run_dir):
    assert explore.main([str(rgb_run_dir)]) == 0
    page = open_page(browser, rgb_run_dir / "explore.html")
    check = page("selfCheck()")
    assert check["ok"] is True and check["maxRelativeError"] <= 1e-4
    assert browser.execute_script(
        "const c = document.getElementById('draw'); return [c.width, c.height]"
    ) == [48, 40]
    pixels = np.array(
        browser.execute_script(
            "const c = document.querySelector('#test-images canvas');"
            "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
        )
    ).reshape(10, 12, 4)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 50  # red and green differ: drawn in colour
    page("clear()")
    draw(browser, [(40, 40), (200, 200)])
    page("flush()")
    data = page_json(rgb_run_dir / "explore.html")
    bitmap = np.array(page("bitmap()")).reshape(40, 48)
    assert bitmap.any()
    x = np.array(page("input()")).reshape(3, 10, 12)
    np.testing.assert_allclose(x, expected_input(bitmap, (3, 10, 12), data["mean"], data["std"]), rtol=1e-6)
    model = Sequential.load(rgb_run_dir / "model.npz")
    np.testing.assert_allclose(
        page("probabilities()"), model.predict_proba(x[None].astype(np.float32))[0], atol=1e-5
    )
    result = page("state.occlusion")  # 2x2 patches (at most 8x8 of them), blanked in all three channels
    base = model.predict_proba(x[None].astype(np.float32))[0]
    blanked = np.repeat(x[None], 30, axis=0).astype(np.float32)
    blank = (0 - np.float32(data["mean"])) / np.float32(data["std"])
    for k in range(30):
        blanked[k, :, 2 * (k // 6) : 2 * (k // 6) + 2, 2 * (k % 6) : 2 * (k % 6) + 2] = blank[:, None, None]
    drops = base[base.argmax()] - model.predict_proba(blanked)[:, base.argmax()]
    assert (result["patch"], result["rows"], result["cols"]) == (2, 5, 6)
    np.testing.assert_allclose(result["drops"], drops, atol=1e-5)


def test_idx_run_of_another_size_gets_a_canvas_of_its_size_and_matches_minicnn(browser, idx_run_dir):
    assert explore.main([str(idx_run_dir)]) == 0
    page = open_page(browser, idx_run_dir / "explore.html")
    assert page("selfCheck()")["ok"] is True
    assert browser.execute_script(
        "const c = document.getElementById('draw'); return [c.width, c.height]"
    ) == [56, 56]
    page("clear()")
    draw(browser, [(30, 120), (220, 120)])  # a horizontal bar across the middle
    page("flush()")
    data = page_json(idx_run_dir / "explore.html")
    assert data["source"] == "idx" and data["input_shape"] == [1, 14, 14]
    bitmap = np.array(page("bitmap()")).reshape(56, 56)
    x = np.array(page("input()")).reshape(1, 14, 14)
    np.testing.assert_allclose(x, expected_input(bitmap, (1, 14, 14), data["mean"], data["std"]), rtol=1e-6)
    model = Sequential.load(idx_run_dir / "model.npz")
    np.testing.assert_allclose(
        page("probabilities()"), model.predict_proba(x[None].astype(np.float32))[0], atol=1e-5
    )


def test_nested_sequential_model_is_drawn_layer_by_layer(browser, tmp_path):
    rng = np.random.default_rng(3)
    block = Sequential(L.Conv2D(1, 3, 3, padding=1, rng=rng), L.BatchNorm2D(3), L.ReLU())
    model = Sequential(block, L.MaxPool2D(2), Sequential(L.Flatten(), L.Dense(48, 5, rng=rng)))
    images = rng.normal(size=(6, 1, 8, 8)).astype(np.float32)
    run = explore.Run(
        "nested",
        model,
        model,
        images,
        np.arange(6) % 5,
        np.zeros(1, np.float32),
        np.ones(1, np.float32),
        "npz",
        {},
    )
    data = explore.page_data(run)
    assert [layer["name"].split(":")[0] for layer in data["layers"]] == [
        "0.0",
        "0.1",
        "0.2",
        "1",
        "2.0",
        "2.1",
    ]
    assert list(data["init_kernels"]) == ["0"]
    path = tmp_path / "nested.html"
    path.write_text(explore.render_page(data))
    page = open_page(browser, path)
    assert page("selfCheck()")["ok"] is True
    assert page("kernelAngles()")["0"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-5)  # init and trained are one


def test_page_says_when_it_cannot_draw_a_model(browser, tmp_path):
    run = conv_only_run()
    path = tmp_path / "conv-only.html"
    path.write_text(explore.render_page(explore.page_data(run)))
    page = open_page(browser, path)
    message = browser.find_element("id", "unsupported")
    assert message.is_displayed() and "draws this model only in part" in message.text
    assert "(2, 6, 6)" in message.text
    # the convolution it can run is drawn, the prediction is not
    assert browser.find_element("id", "explorer").is_displayed()
    assert len(page("forward(window.minicnnExplorer.state.input)")) == 2  # the input and the conv's maps
    assert (
        browser.execute_script("return document.getElementById('prediction').textContent") == "-"
    )  # as before any


@st.composite
def random_models(draw_):
    """A model of random layers and sizes (every layer type can appear), its input shape and a seed."""
    channels, height, width = draw_(st.integers(1, 3)), draw_(st.integers(5, 9)), draw_(st.integers(5, 9))
    rng = np.random.default_rng(draw_(st.integers(0, 2**32 - 1)))
    stride = draw_(st.integers(1, 2))
    padding = draw_(st.sampled_from([0, 1, (1, 0), "same"] if stride == 1 else [0, 1, (0, 1)]))
    out = draw_(st.integers(1, 4))
    layers = [
        L.Conv2D(
            channels,
            out,
            (draw_(st.integers(1, 3)), draw_(st.integers(1, 3))),
            stride=stride,
            padding=padding,
            dilation=draw_(st.integers(1, 2)),
            rng=rng,
            bias=draw_(st.booleans()),
        )
    ]
    if draw_(st.booleans()):
        norm = L.BatchNorm2D(out)
        norm.running_mean[:], norm.running_var[:] = rng.normal(size=out), rng.uniform(0.5, 2, size=out)
        norm.weight.data[:], norm.bias.data[:] = rng.normal(size=out), rng.normal(size=out)
        layers.append(norm)
    layers.append(draw_(st.sampled_from([L.ReLU(), L.LeakyReLU(0.2), L.Tanh(), L.Sigmoid()])))
    layers += draw_(
        st.sampled_from(
            [
                [],
                [L.MaxPool2D(2)],
                [L.AvgPool2D(2, stride=1, padding=1)],
                [L.MaxPool2D(3, stride=2, padding=1)],
            ]
        )
    )
    if draw_(st.booleans()):
        layers.append(L.GlobalAvgPool2D())
        features = out
    else:
        layers.append(L.Flatten())
        features = None
    layers.append(L.Dropout(0.5))
    return layers, features, (channels, height, width), rng


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(random_models())
def test_page_forward_pass_matches_minicnn_for_random_models(browser, tmp_path, spec):
    layers, features, shape, rng = spec
    x = np.zeros((1,) + shape, np.float32)
    try:
        for layer in layers:
            x = layer.eval().forward(x)
    except ValueError:
        assume(False)  # the input is smaller than a kernel's reach: no such model
    model = Sequential(layers + [L.Dense(features or x.shape[1], 4, rng=rng)])
    images = rng.normal(size=(5,) + shape).astype(np.float32)
    run = explore.Run(
        "random",
        model,
        None,
        images,
        np.arange(5) % 4,
        rng.normal(size=shape[0]).astype(np.float32),
        rng.uniform(0.5, 2, size=shape[0]).astype(np.float32),
        "npz",
        {},
    )
    path = tmp_path / "random.html"
    path.write_text(explore.render_page(explore.page_data(run)))
    page = open_page(browser, path)
    check = page("selfCheck()")
    assert check["ok"] is True, (model, check)
    assert check["maxRelativeError"] <= 1e-4
