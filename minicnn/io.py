"""Safe files: ``.npz`` reading that never unpickles, and atomic writes of arrays and text.

Every file minicnn writes goes through :func:`save_npz_atomic` or :func:`write_text_atomic`: the
bytes go to a new temporary file in the target's folder (created exclusively, so a planted link is
never followed), are flushed to disk, and the file is renamed over the target. An interrupted write
never replaces a good file with a broken one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile

import numpy as np


@contextlib.contextmanager
def _atomic(path, suffix: str):
    """Yield a binary handle on a fresh temporary file beside ``path``; rename it over ``path`` on success."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npz_atomic(path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary file beside ``path``, flushed to disk, then renamed over it."""
    with _atomic(path, ".npz") as handle:
        np.savez(handle, **arrays)


def write_text_atomic(path, text: str) -> None:
    """Write a UTF-8 text file through a temporary file and a rename, so it is never left half written."""
    with _atomic(path, ".txt") as handle:
        handle.write(text.encode("utf-8"))


def load_npz(path) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file, loaded with ``allow_pickle=False``; clear errors for a missing,
    truncated, corrupt or pickled file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single array, not a .npz archive")
        with data:
            return {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a readable .npz file (truncated or corrupt?): {exc}") from None
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(f"{path} holds pickled objects, which minicnn never loads "
                             "(allow_pickle=False)") from None
        raise ValueError(f"{path} is not a readable .npz file: {exc}") from None
