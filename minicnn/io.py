"""Safe files: ``.npz`` reading that never unpickles and checks sizes first, and atomic writes.

Every file minicnn writes goes through :func:`save_npz_atomic` or :func:`write_text_atomic`: the
bytes go to a new temporary file in the target's folder (created exclusively, so a planted link is
never followed), are flushed to disk, and the file is renamed over the target, with the permissions
the user's umask gives. An interrupted write never replaces a good file with a broken one, and
:func:`remove_stale_temporaries` clears what a killed write left behind.

Reading checks before allocating: each array's declared shape and decompressed size must fit the
memory budget (:func:`memory_budget`, half the machine's memory unless set with
:func:`set_memory_budget`), and object arrays (pickles) are refused unread.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import zipfile

import numpy as np

TEMP_PREFIX = ".tmp-"
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"
_budget: int | None = None


class FileFormatError(ValueError):
    """A file is missing pieces, malformed, too large for the memory budget, or not what it claims."""


def show_path(path) -> str:
    """A path as it can be printed on one line (control characters such as NUL escaped)."""
    text = os.fspath(path)
    text = text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else text
    return text if text.isprintable() else ascii(text)[1:-1]


# --- memory budget ---------------------------------------------------------------------------------

def machine_memory() -> int:
    """Physical memory in bytes (8 GiB when the platform does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def memory_budget() -> int:
    """Bytes any one file, model or data set may ask for: half the machine's memory by default."""
    return _budget if _budget is not None else machine_memory() // 2


def set_memory_budget(nbytes: int | None) -> None:
    """Set the memory budget in bytes (None: back to the default, half the machine's memory)."""
    global _budget
    if nbytes is not None and (not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 1):
        raise ValueError(f"memory budget: expected a positive number of bytes or None, got {nbytes!r}")
    _budget = nbytes


def check_budget(nbytes: int, what: str) -> None:
    """Raise :class:`MemoryError` with one readable line when ``what`` would need more than the budget."""
    budget = memory_budget()
    if nbytes > budget:
        raise MemoryError(f"{what} needs {nbytes / 2**20:,.1f} MiB, above the memory budget of "
                          f"{budget / 2**20:,.0f} MiB (minicnn.io.set_memory_budget changes it)")


# --- writing ---------------------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _atomic(path, suffix: str):
    """Yield a binary handle on a fresh temporary file beside ``path``; rename it over ``path`` on success."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)   # O_EXCL: never a link
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp's 0600 would ignore the user's umask
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
        np.savez(handle, allow_pickle=False, **arrays)


def write_text_atomic(path, text: str) -> None:
    """Write a UTF-8 text file through a temporary file and a rename, so it is never left half written."""
    with _atomic(path, ".txt") as handle:
        handle.write(text.encode("utf-8"))


def remove_stale_temporaries(folder) -> list[str]:
    """Delete the ``.tmp-*`` files a killed write left in ``folder`` (links themselves, never their
    targets); returns the names removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if entry.name.startswith(TEMP_PREFIX) and (entry.is_symlink() or entry.is_file(follow_symlinks=False)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


# --- reading ---------------------------------------------------------------------------------------

def load_npz(path, budget: int | None = None) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file, checked before it is read.

    Raises FileNotFoundError for a missing file and :class:`FileFormatError` (a ValueError) naming
    the file for anything else: not a ``.npz`` archive, truncated, pickled (object) arrays, or
    declared shapes whose bytes exceed ``budget`` (default :func:`memory_budget`).
    """
    shown = show_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {shown}")
    with open(path, "rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    if not magic.startswith(_ZIP_MAGIC):
        if magic == _NPY_MAGIC:
            kind = "a single .npy array"
        elif magic[:1] == b"\x80" and magic[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            kind = "a pickled object, which minicnn never loads"
        else:
            kind = "not a zip archive"
        raise FileFormatError(f"{shown} is not a .npz file ({kind})")
    budget = memory_budget() if budget is None else budget
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_members(archive, shown, budget)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, FileFormatError):
            raise
        raise FileFormatError(f"{shown} is not a readable .npz file (truncated or corrupt?): {exc}") from None


def _read_members(archive: zipfile.ZipFile, shown: str, budget: int) -> dict[str, np.ndarray]:
    arrays, total = {}, 0
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise FileFormatError(f"{shown}: member {info.filename!r} is not a .npy array")
        total += info.file_size   # zipfile never inflates past the declared size
        if total > budget:
            raise FileFormatError(f"{shown}: its arrays inflate to more than {total / 2**20:,.1f} MiB, above "
                                  f"the memory budget of {budget / 2**20:,.0f} MiB")
        with archive.open(info) as member:
            arrays[info.filename[:-4]] = _read_npy(member, info, shown)
    return arrays


def _read_npy(member, info: zipfile.ZipInfo, shown: str) -> np.ndarray:
    """One ``.npy`` member: header first (dtype, shape), refused before reading when inconsistent."""
    name = info.filename[:-4]
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    if dtype.hasobject:
        raise FileFormatError(f"{shown}: array {name!r} holds pickled objects, which minicnn never loads")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > info.file_size:
        raise FileFormatError(f"{shown}: array {name!r} declares shape {shape} of {dtype} ({nbytes:,} bytes), "
                              f"but its member holds {info.file_size:,} bytes")
    data = member.read(nbytes)
    if len(data) != nbytes:
        raise FileFormatError(f"{shown}: array {name!r} is truncated")
    array = np.frombuffer(data, dtype=dtype)
    if fortran:
        return array.reshape(shape[::-1]).transpose().copy()
    return array.reshape(shape).copy()
