"""Test-session settings.

The tests multiply small matrices, where a second BLAS thread only adds synchronisation (and fights
any other process for the cores): one thread makes the suite several times faster on 2 cores. Speed
is measured in benchmarks/, never here. Worker processes started by joblib inherit the variable.
"""

import os
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
