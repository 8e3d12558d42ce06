"""Test-session settings.

The tests multiply small matrices, where a second BLAS thread only adds synchronisation (and fights
any other process for the cores): one thread makes the suite several times faster on 2 cores. Speed
is measured in benchmarks/, never here. Worker processes started by joblib inherit the variable.
"""

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings
from threadpoolctl import threadpool_limits

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Hypothesis: "ci" (the default) keeps the suite fast; HYPOTHESIS_PROFILE=long runs 50 times as many
# examples for a local search (tests/test_fuzz.py scales its example counts from this setting).
settings.register_profile("ci", max_examples=100)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


REPO = Path(__file__).resolve().parent.parent


def _train_run(out, *options: str, config="digits_fast.toml") -> Path:
    """``python train.py --config configs/<config> --set output.figures=false --out <out> --quiet
    <options>``, in this process (``config`` may also be an absolute path); asserts it succeeded and
    returns ``out``."""
    from minicnn.cli import main

    config_path = Path(config) if Path(config).is_absolute() else REPO / "configs" / config
    command = ["--config", str(config_path), "--set", "output.figures=false", "--out", str(out), "--quiet"]
    assert main([*command, *options]) == 0
    return Path(out)


@pytest.fixture(scope="session")
def train_run():
    """A function that trains a short run in this process: see :func:`_train_run`."""
    return _train_run


# ----------------------------------------------------------------------------------------------
# A real headless Chromium, for the explorer page (tests/test_explore.py, tests/test_layer_contract.py)
# ----------------------------------------------------------------------------------------------
def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium, 1280x1100, driven through chromedriver (no Selenium Manager download)."""
    found = _chromium()
    if found is None:
        if os.environ.get("MINICNN_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "MINICNN_REQUIRE_BROWSER=1 but chromium / chromedriver are not installed "
                "(apt-get install chromium chromium-driver)"
            )
        pytest.skip("no chromium / chromedriver on this machine (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
        "--allow-file-access-from-files",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def open_page(browser, path: Path):
    browser.get(Path(path).resolve().as_uri())
    assert browser.execute_script("return typeof window.minicnnExplorer") == "object", browser.execute_script(
        "return document.body.innerText"
    )[:500]
    return lambda script, *args: browser.execute_script("return window.minicnnExplorer." + script, *args)


# ----------------------------------------------------------------------------------------------
# A short finished run and one-line errors (tests/test_safety.py, tests/test_hostile.py)
# ----------------------------------------------------------------------------------------------
#: configs/digits_fast.toml, and train.py options for a one-epoch run of it without figures.
FAST = str(REPO / "configs" / "digits_fast.toml")
QUICK = [
    "--config",
    FAST,
    "--quiet",
    "--set",
    "train.epochs=1",
    "--set",
    "output.figures=false",
]


def one_line_exit_2(capsys, code):
    """The one ``error: ...`` line a command printed, checking it exited 2 with nothing else."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch run (:data:`QUICK`), once per test module."""
    from minicnn.cli import main as train_main

    run = tmp_path_factory.mktemp("runs") / "run"
    assert train_main(QUICK + ["--out", str(run)]) == 0
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    """A copy of :func:`finished_run` this test may change."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


@pytest.fixture
def default_memory_budget():
    """Restores the default memory budget after the test."""
    yield
    from minicnn import io

    io.set_memory_budget(None)
