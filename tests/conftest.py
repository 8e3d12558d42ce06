"""Test-session settings.

The tests multiply small matrices, where a second BLAS thread only adds synchronisation (and fights
any other process for the cores): one thread makes the suite several times faster on 2 cores. Speed
is measured in benchmarks/, never here. Worker processes started by joblib inherit the variable.
"""

import os

import pytest
from threadpoolctl import threadpool_limits

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield
