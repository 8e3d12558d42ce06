"""CNNClassifier searches on a real Dask cluster: two worker processes on 127.0.0.1, joblib's "dask"
backend, the fits found in the cluster's task log, and the scores equal to a run in this process."""

import re

import numpy as np
import pytest
from dask.distributed import Client, LocalCluster, get_task_stream
from joblib import parallel_backend
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from minicnn.sklearn import CNNClassifier

#: A tiny CNN: one 4-filter convolution, so each of the 6 fits takes a fraction of a second.
LAYERS = [
    {"type": "Conv2D", "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "ReLU"},
    {"type": "MaxPool2D", "kernel_size": 2},
    {"type": "Flatten"},
    {"type": "Dense"},
]
FOLDS, RATES = 3, [1e-3, 3e-3]


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


def search() -> GridSearchCV:
    return GridSearchCV(
        CNNClassifier(layers=LAYERS, epochs=2, random_state=0), {"learning_rate": RATES}, cv=FOLDS
    )


def test_grid_search_runs_its_fits_on_the_dask_workers_with_the_same_scores(client):
    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    workers = set(client.scheduler_info()["workers"])
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    with get_task_stream(client) as tasks, parallel_backend("dask"):
        on_dask = search().fit(X, y)
    # joblib sends the fits in batches named "batch_of__fit_and_score_<n>_calls-<hash>"
    fits = [
        (int(re.search(r"_fit_and_score_(\d+)_calls", t["key"]).group(1)), t["worker"])
        for t in tasks.data
        if "_fit_and_score" in str(t["key"])
    ]
    assert sum(n for n, _ in fits) == FOLDS * len(RATES)
    assert {worker for _, worker in fits} <= workers and fits
    here = search().fit(X, y)
    for k in range(FOLDS):
        scores = on_dask.cv_results_[f"split{k}_test_score"]
        assert np.array_equal(scores, here.cv_results_[f"split{k}_test_score"]), k
    assert on_dask.best_params_ == here.best_params_
    assert np.array_equal(on_dask.predict_proba(X), here.predict_proba(X))
