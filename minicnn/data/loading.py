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


def check_split(split, count: int, test_count: int | None = None) -> dict[str, np.ndarray]:
    """Saved split indices (a mapping with ``"train"``, ``"val"``, ``"test"``) as int64 arrays, checked:
    train, validation and test together are each of the ``count`` images exactly once, or, when the
    data come with their own ``test_count`` test images, train and validation are and test is
    ``arange(test_count)``. DataError, naming what is wrong, otherwise."""
    idx = {}
    for key in ("train", "val", "test"):
        indices = np.asarray(split[key]) if key in split else None
        if indices is None or indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            found = "nothing" if indices is None else f"{indices.dtype} of shape {indices.shape}"
            raise DataError(f"split {key!r}: expected a 1-D array of integer indices, got {found}")
        idx[key] = indices.astype(np.int64)
    parts = ("train", "val", "test") if test_count is None else ("train", "val")
    together = np.sort(np.concatenate([idx[key] for key in parts]))
    if not np.array_equal(together, np.arange(count)):
        raise DataError(
            f"split: the {', '.join(parts)} indices do not cover the {count} images once each "
            f"({len(together)} indices from {together.min() if len(together) else '-'} to "
            f"{together.max() if len(together) else '-'}); the data changed since the split was saved"
        )
    if test_count is not None and not np.array_equal(idx["test"], np.arange(test_count)):
        raise DataError(f"split 'test': expected the indices 0 to {test_count - 1} of the data's test images")
    return idx


def _draw_split(data_cfg, y: np.ndarray, test_count: int | None) -> dict[str, np.ndarray]:
    """The config's stratified split of labels ``y``; with ``test_count`` (the data's own test
    images) only train and validation are drawn, and test is ``arange(test_count)``."""
    try:
        if test_count is None:
            return split_indices(y, data_cfg.test_fraction, data_cfg.val_fraction, data_cfg.split_seed)
        idx = split_indices(y, 0.0, data_cfg.val_fraction, data_cfg.split_seed)
    except ValueError as exc:  # e.g. a class with a single example cannot be stratified
        raise DataError(f"cannot split the data (stratified by label): {exc}") from None
    idx["test"] = np.arange(test_count, dtype=np.int64)
    return idx


def load_dataset(data_cfg, progress: bool = True, split: dict | None = None) -> Dataset:
    """Load, check, split and (optionally) standardize the data a config describes.

    ``data_cfg`` is a :class:`minicnn.train.config.DataConfig` (anything with its attributes).
    Deterministic: the same config always gives the same arrays, so the test split can be rebuilt
    from a run's ``config.toml``. ``progress`` shows download progress bars.

    ``split``: the ``"train"``, ``"val"`` and ``"test"`` indices a run saved (its ``split.npz``), used
    instead of drawing them again (:func:`~minicnn.data.datasets.split_indices`): the same indices
    without importing scikit-learn, which takes a second or two. They must partition the data
    (:func:`check_split`).
    """
    X, y, X_test, y_test = read_source(data_cfg, progress)
    if X_test is not None and X_test.shape[1:] != X.shape[1:]:
        raise DataError(f"test images have shape {X_test.shape[1:]} per image, training images {X.shape[1:]}")
    if split is not None:
        idx = check_split(split, len(y), None if X_test is None else len(y_test))
    else:
        idx = _draw_split(data_cfg, y, None if X_test is None else len(y_test))
    if X_test is None:
        X_test, y_test = X[idx["test"]], y[idx["test"]]
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
