"""From a config's ``[data]`` section to a :class:`~minicnn.data.datasets.Dataset`: read the source it
names (the digits, IDX or .npz files, or a downloaded data set from :mod:`minicnn.data.sources`),
split it, standardize it."""

from __future__ import annotations

import numpy as np

from . import sources
from .datasets import (
    SOURCES,
    DataError,
    Dataset,
    Images,
    as_labels,
    as_pixels,
    channel_stats,
    load_digits_arrays,
    read_idx,
    read_npz_xy,
    split_indices,
    standardize,
)
from .download import TransferLimits


def _need(data_cfg, name: str) -> str:
    value = getattr(data_cfg, name)
    if not value:
        raise DataError(f"data.source = {data_cfg.source!r} needs data.{name} (a file path)")
    return value


def _read_idx_source(data_cfg):
    """(X, y, X_test, y_test) from ``source = "idx"`` files; the test pair is None without test files."""
    paths = [_need(data_cfg, "images"), _need(data_cfg, "labels")]
    X = as_pixels(read_idx(paths[0]), paths[0])
    y = as_labels(read_idx(paths[1]), len(X), paths[1])
    if bool(data_cfg.test_images) != bool(data_cfg.test_labels):
        raise DataError("data.test_images and data.test_labels must be given together (or neither)")
    if not data_cfg.test_images:
        return X, y, None, None
    X_test = as_pixels(read_idx(data_cfg.test_images), data_cfg.test_images)
    return X, y, X_test, as_labels(read_idx(data_cfg.test_labels), len(X_test), data_cfg.test_labels)


def _read_npz_source(data_cfg):
    """(X, y, X_test, y_test) from ``source = "npz"`` files."""
    path = _need(data_cfg, "path")
    X, y = read_npz_xy(path)
    X = as_pixels(X, f"{path}: X")
    y = as_labels(y, len(X), f"{path}: y")
    if not data_cfg.test_path:
        return X, y, None, None
    X_test, y_test = read_npz_xy(data_cfg.test_path)
    X_test = as_pixels(X_test, f"{data_cfg.test_path}: X")
    return X, y, X_test, as_labels(y_test, len(X_test), f"{data_cfg.test_path}: y")


def read_source(data_cfg, progress: bool = True):
    """The arrays a config's ``data.source`` names: ``(X, y, X_test, y_test)``.

    X is uint8 (8-bit sources) or float32 in [0, 1]-ish units, (N, C, H, W); y int64. ``X_test`` and
    ``y_test`` are None when the source has no separate test part (it is then split off ``X``).
    Downloaded sources (:mod:`minicnn.data.sources`) are fetched into the cache first.
    """
    source = data_cfg.source
    if source == "digits":
        return (*load_digits_arrays(), None, None)
    if source == "idx":
        return _read_idx_source(data_cfg)
    if source == "npz":
        return _read_npz_source(data_cfg)
    if source == "mnist5k":
        return (*sources.load_mnist5k(), None, None)
    if source in sources.DOWNLOADED:
        limits = TransferLimits(deadline_s=data_cfg.download_deadline_s, min_rate=data_cfg.download_min_rate)
        where = {
            "cache_dir": data_cfg.cache_dir,
            "base_url": data_cfg.base_url,
            "progress": progress,
            "limits": limits,
        }
        if source == "cifar10":
            parts = sources.load_cifar10(**where)
        else:
            parts = sources.load_idx_dataset(source, **where)
        return (*parts["train"], *parts["test"])
    raise DataError(f"data.source must be one of {SOURCES}, got {source!r}")


def load_dataset(data_cfg, progress: bool = True) -> Dataset:
    """Load, check, split and (optionally) standardize the data a config describes.

    ``data_cfg`` is a :class:`minicnn.train.config.DataConfig` (anything with its attributes).
    Deterministic: the same config always gives the same arrays, so the test split can be rebuilt
    from a run's ``config.toml``. ``progress`` shows download progress bars.
    """
    X, y, X_test, y_test = read_source(data_cfg, progress)
    if X_test is not None and X_test.shape[1:] != X.shape[1:]:
        raise DataError(f"test images have shape {X_test.shape[1:]} per image, training images {X.shape[1:]}")
    try:
        if X_test is None:
            idx = split_indices(y, data_cfg.test_fraction, data_cfg.val_fraction, data_cfg.split_seed)
            X_test, y_test = X[idx["test"]], y[idx["test"]]
        else:
            idx = split_indices(y, 0.0, data_cfg.val_fraction, data_cfg.split_seed)
            idx["test"] = np.arange(len(y_test), dtype=np.int64)
    except ValueError as exc:  # e.g. a class with a single example cannot be stratified
        raise DataError(f"cannot split the data (stratified by label): {exc}") from None
    X_train, y_train = X[idx["train"]], y[idx["train"]]
    X_val, y_val = X[idx["val"]], y[idx["val"]]
    if len(X_train) == 0:
        raise DataError("the training split is empty; lower data.test_fraction or data.val_fraction")

    channels = X.shape[1]
    mean, std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
    if data_cfg.standardize:
        mean, std = channel_stats(X_train)
    if X.dtype == np.uint8:
        if data_cfg.standardize:
            mean, std = mean / np.float32(255.0), std / np.float32(255.0)
        X_train, X_val, X_test = (Images(a, mean, std) for a in (X_train, X_val, X_test))
    elif data_cfg.standardize:
        X_train, X_val, X_test = (standardize(a, mean, std) for a in (X_train, X_val, X_test))
    num_classes = int(max(y.max(), y_test.max() if len(y_test) else 0)) + 1
    return Dataset(X_train, y_train, X_val, y_val, X_test, y_test, num_classes, mean, std, idx)
