"""Datasets, splits, batches and augmentation.

Images are float32 NCHW arrays ``(N, C, H, W)``; labels are int64 ``(N,)`` in ``[0, num_classes)``.
Everything random takes an explicit ``numpy.random.Generator``.

Sources (``data.source`` in a config):

- ``"digits"``: scikit-learn's 8x8 handwritten digits (1797 images), scaled to [0, 1].
- ``"idx"``: MNIST-format IDX files, raw or ``.gz`` (``images``, ``labels``, optionally
  ``test_images`` / ``test_labels``); uint8 pixels are scaled to [0, 1].
- ``"npz"``: a ``.npz`` file with arrays ``X`` (N, H, W) or (N, C, H, W) and ``y`` (N,)
  (``path``, optionally ``test_path``).

Splits: without separate test files, the test split is
``train_test_split(X, y, test_size=test_fraction, stratify=y, random_state=split_seed)``'s, so with the
defaults (0.2, seed 0) it is exactly the split scikit-learn users compare against. The validation split
is carved, stratified, from the remaining training part. The split seed is separate from the training
seed: runs with different training seeds are scored on the same test images.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np

SOURCES = ("digits", "idx", "npz")


class DataError(ValueError):
    """A data file is missing, unreadable or holds arrays of the wrong shape, type or range."""


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``X`` float32 (1797, 1, 8, 8) in [0, 1] and ``y`` int64 (1797,)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return X, digits.target.astype(np.int64)


# IDX type codes (the third byte of the magic number) -> big-endian NumPy dtypes.
_IDX_DTYPES: dict[int, np.dtype] = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), raw or gzip-compressed.

    The header is two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes; the values follow in C order. Returns an array of that shape in native byte order.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable gzip file: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>, "
                        f"got {raw[:4].hex(' ') or 'an empty file'})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions but the file is too short for them")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: IDX header declares shape {shape} of {dtype.name} ({expected} bytes with the "
                        f"header), but the file holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    codes = {v.newbyteorder("=").name: k for k, v in _IDX_DTYPES.items()}
    name = array.dtype.newbyteorder("=").name
    if name not in codes:
        raise DataError(f"write_idx: dtype {array.dtype} has no IDX type code; use one of {sorted(codes)}")
    code = codes[name]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def read_npz_xy(path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``X`` and ``y`` from a ``.npz`` file (never unpickled)."""
    from ..io import load_npz
    path = os.fspath(path)
    try:
        arrays = load_npz(path)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path}: expected arrays 'X' and 'y', missing {missing}; found {sorted(arrays)}")
    return arrays["X"], arrays["y"]


def as_images(X: np.ndarray, where: str) -> np.ndarray:
    """Check and convert images to float32 (N, C, H, W).

    (N, H, W) gains a channel axis. Integer pixels must be in [0, 255] and are scaled to [0, 1];
    float pixels are kept (they must be finite).
    """
    X = np.asarray(X)
    if X.ndim == 3:
        X = X[:, None, :, :]
    if X.ndim != 4:
        raise DataError(f"{where}: expected images of shape (N, H, W) or (N, C, H, W), got {X.shape}")
    if min(X.shape) < 1:
        raise DataError(f"{where}: got an empty image array of shape {X.shape}")
    if X.dtype.kind in "iu":
        lo, hi = int(X.min()), int(X.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: integer pixels must be in [0, 255], got values from {lo} to {hi}")
        return (X / 255.0).astype(np.float32)
    if X.dtype.kind != "f":
        raise DataError(f"{where}: pixels must be integers or floats, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        raise DataError(f"{where}: images contain NaN or infinite values")
    return X.astype(np.float32)


def as_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Check and convert labels to int64 (N,), non-negative, one per image."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: expected labels of shape (N,), got {y.shape}")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if len(y) != n:
        raise DataError(f"{where}: {n} images but {len(y)} labels; they must have equal lengths")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, got a minimum of {y.min()}")
    return y.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Splits and standardization
# ----------------------------------------------------------------------------------------------

def split_indices(y: np.ndarray, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0,
                  stratify: bool = True) -> dict[str, np.ndarray]:
    """Stratified train / validation / test indices into ``y``.

    The test indices are those ``train_test_split(X, y, test_size=test_fraction, stratify=y,
    random_state=seed)`` puts in its test part (in its order). ``val_fraction`` of the remaining
    part becomes the validation split (0 means none).

    Returns
    -------
    dict with int64 arrays ``"train"``, ``"val"``, ``"test"``: disjoint, together ``arange(len(y))``.
    """
    from sklearn.model_selection import train_test_split  # here, so `train.py --help` starts at once

    y = np.asarray(y)
    everything = np.arange(len(y))
    if test_fraction > 0:
        rest, test = train_test_split(everything, test_size=test_fraction, stratify=y if stratify else None,
                                      random_state=seed)
    else:
        rest, test = everything, everything[:0]
    if val_fraction > 0:
        train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest] if stratify else None,
                                      random_state=seed)
    else:
        train, val = rest, rest[:0]
    return {"train": train.astype(np.int64), "val": val.astype(np.int64), "test": test.astype(np.int64)}


def channel_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``X`` (N, C, H, W), each (C,) float32.

    A constant channel gets std 1, so standardizing never divides by zero.
    """
    mean = X.mean(axis=(0, 2, 3), dtype=np.float64)
    std = X.std(axis=(0, 2, 3), dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def standardize(X: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``(X - mean) / std`` per channel, returned as ``dtype``; X (N, C, H, W), mean and std (C,)."""
    return ((X - mean[None, :, None, None]) / std[None, :, None, None]).astype(dtype, copy=False)


@dataclass
class Dataset:
    """The three splits of a dataset, ready for a model (standardized if the config asks).

    Attributes
    ----------
    X_train, X_val, X_test : float32 arrays of shape (N_split, C, H, W)
    y_train, y_val, y_test : int64 arrays of shape (N_split,)
    num_classes : int
        1 + the largest label in any split.
    mean, std : float32 arrays of shape (C,)
        The standardization, computed on the training split (0 and 1 when it is off).
    indices : dict of int64 arrays
        ``"train"``, ``"val"``, ``"test"`` positions in the source arrays (with separate test files,
        ``"test"`` indexes the test file and the others the training file).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    indices: dict

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.X_train.shape[1:])


def _need(data_cfg, name: str) -> str:
    value = getattr(data_cfg, name)
    if not value:
        raise DataError(f"data.source = {data_cfg.source!r} needs data.{name} (a file path)")
    return value


def _read_source(data_cfg) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The images (N, C, H, W) and labels (N,) ``data_cfg.source`` names, checked, and the separate
    test files' (images, labels) when the config gives them (else None)."""
    source = data_cfg.source
    test = None
    if source == "digits":
        X, y = load_digits_arrays()
    elif source == "idx":
        paths = [_need(data_cfg, "images"), _need(data_cfg, "labels")]
        X = as_images(read_idx(paths[0]), paths[0])
        y = as_labels(read_idx(paths[1]), len(X), paths[1])
        if bool(data_cfg.test_images) != bool(data_cfg.test_labels):
            raise DataError("data.test_images and data.test_labels must be given together (or neither)")
        if data_cfg.test_images:
            X_test = as_images(read_idx(data_cfg.test_images), data_cfg.test_images)
            test = X_test, as_labels(read_idx(data_cfg.test_labels), len(X_test), data_cfg.test_labels)
    elif source == "npz":
        path = _need(data_cfg, "path")
        X, y = read_npz_xy(path)
        X = as_images(X, f"{path}: X")
        y = as_labels(y, len(X), f"{path}: y")
        if data_cfg.test_path:
            X_test, y_test = read_npz_xy(data_cfg.test_path)
            X_test = as_images(X_test, f"{data_cfg.test_path}: X")
            test = X_test, as_labels(y_test, len(X_test), f"{data_cfg.test_path}: y")
    else:
        raise DataError(f"data.source must be one of {SOURCES}, got {source!r}")
    return X, y, test


def load_dataset(data_cfg) -> Dataset:
    """Load, check, split and (optionally) standardize the data a config describes.

    ``data_cfg`` is a :class:`minicnn.train.config.DataConfig` (anything with its attributes).
    Deterministic: the same config always gives the same arrays, so the test split can be rebuilt
    from a run's ``config.toml``.
    """
    X, y, test = _read_source(data_cfg)
    if test is not None and test[0].shape[1:] != X.shape[1:]:
        raise DataError(f"test images have shape {test[0].shape[1:]} per image, training images {X.shape[1:]}")
    try:
        if test is None:
            idx = split_indices(y, data_cfg.test_fraction, data_cfg.val_fraction, data_cfg.split_seed)
            X_test, y_test = X[idx["test"]], y[idx["test"]]
        else:
            X_test, y_test = test
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
        X_train, X_val, X_test = (standardize(a, mean, std) for a in (X_train, X_val, X_test))
    num_classes = int(max(y.max(), y_test.max() if len(y_test) else 0)) + 1
    return Dataset(X_train, y_train, X_val, y_val, X_test, y_test, num_classes, mean, std, idx)


# ----------------------------------------------------------------------------------------------
# Batches and augmentation
# ----------------------------------------------------------------------------------------------

def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None = None):
    """Yield index arrays covering ``range(n)`` in batches of ``batch_size``, shuffled by ``rng``
    (in order when None). The last batch keeps the remainder, so every sample is seen each epoch."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def random_shift(X: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by a random whole number of pixels in [-max_shift, max_shift] on each axis.

    X : (N, C, H, W) -> a new array of the same shape. Uncovered pixels become the image's
    smallest value per channel (its background, also after standardization).
    """
    if max_shift <= 0:
        return X.copy()
    n, c, h, w = X.shape
    s = int(max_shift)
    background = X.min(axis=(2, 3), keepdims=True)
    padded = np.zeros((n, c, h + 2 * s, w + 2 * s), dtype=X.dtype)
    padded[:, :, s:s + h, s:s + w] = X - background
    dy, dx = rng.integers(-s, s + 1, size=(2, n))
    # output pixel (i, j) reads input pixel (i - dy, j - dx): the content moves by (dy, dx)
    rows = (s - dy)[:, None] + np.arange(h)
    cols = (s - dx)[:, None] + np.arange(w)
    out = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return out + background


def random_affine(X: np.ndarray, rotate: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate each image by a random angle in [-rotate, rotate] degrees and zoom it by a random
    factor in [1 - scale, 1 + scale], about its centre, with bilinear interpolation.

    X : (N, C, H, W) -> a new array of the same shape; uncovered pixels become the background
    (the image's smallest value per channel).
    """
    n, c, h, w = X.shape
    angle = np.deg2rad(rng.uniform(-rotate, rotate, size=n))
    zoom = rng.uniform(1.0 - scale, 1.0 + scale, size=n)
    background = X.min(axis=(2, 3), keepdims=True)
    # zero border of one pixel so out-of-range reads interpolate towards the background
    padded = np.zeros((n, c, h + 2, w + 2), dtype=X.dtype)
    padded[:, :, 1:-1, 1:-1] = X - background
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    i, j = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    cos, sin = (np.cos(angle) / zoom)[:, None, None], (np.sin(angle) / zoom)[:, None, None]
    # inverse map: where in the input each output pixel comes from
    src_i = np.clip(cos * i - sin * j + cy + 1, 0, h + 1)
    src_j = np.clip(sin * i + cos * j + cx + 1, 0, w + 1)
    i0 = np.minimum(np.floor(src_i).astype(np.intp), h)
    j0 = np.minimum(np.floor(src_j).astype(np.intp), w)
    fi, fj = (src_i - i0).astype(X.dtype)[:, None], (src_j - j0).astype(X.dtype)[:, None]
    b = np.arange(n)[:, None, None, None]
    ch = np.arange(c)[None, :, None, None]
    i0, j0 = i0[:, None], j0[:, None]
    top = padded[b, ch, i0, j0] * (1 - fj) + padded[b, ch, i0, j0 + 1] * fj
    bottom = padded[b, ch, i0 + 1, j0] * (1 - fj) + padded[b, ch, i0 + 1, j0 + 1] * fj
    return (top * (1 - fi) + bottom * fi + background).astype(X.dtype)


def augment(X: np.ndarray, augment_cfg, rng: np.random.Generator) -> np.ndarray:
    """Apply the augmentation an :class:`~minicnn.train.config.AugmentConfig` describes (rotation and zoom,
    then whole-pixel shifts); returns ``X`` itself when everything is off. Labels are unchanged."""
    if augment_cfg.rotate > 0 or augment_cfg.scale > 0:
        X = random_affine(X, augment_cfg.rotate, augment_cfg.scale, rng)
    if augment_cfg.shift > 0:
        X = random_shift(X, augment_cfg.shift, rng)
    return X
