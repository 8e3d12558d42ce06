"""Safe files: ``.npz`` and safetensors reading that never unpickles and checks sizes first, and
atomic writes (``.npz``, safetensors, text, bytes, figures).

Every file minicnn writes goes through :func:`write_atomic` (``save_npz_atomic``,
``write_text_atomic``, ``save_figure_atomic`` and the rest call it): the bytes go to a new temporary
file in the target's folder (created exclusively, so a planted link is never followed), are flushed
to disk, and the file is renamed over the target, with the permissions the user's umask gives. A
target name that exists as anything but a regular file (a link, folder, FIFO, device) is refused
(:func:`check_write_target`), so nothing outside the named file changes. An interrupted write never
replaces a good file with a broken one, and :func:`remove_stale_temporaries` clears what a killed
write left behind.

Reading checks before allocating: each array's declared shape and decompressed size must fit the
memory budget (:func:`memory_budget`, half the machine's memory unless set with
:func:`set_memory_budget`), and object arrays (pickles) are refused unread."""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from typing import BinaryIO

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


@contextlib.contextmanager
def budget_limited_to(nbytes: int):
    """Within the block, the memory budget is at most ``nbytes`` (at least 1 byte); then as before."""
    global _budget
    previous = _budget
    _budget = max(1, min(int(nbytes), memory_budget()))
    try:
        yield
    finally:
        _budget = previous


def check_budget(nbytes: int, what: str) -> None:
    """Raise :class:`MemoryError` with one readable line when ``what`` would need more than the budget."""
    budget = memory_budget()
    if nbytes > budget:
        raise MemoryError(
            f"{what} needs {nbytes / 2**20:,.1f} MiB, above the memory budget of "
            f"{budget / 2**20:,.0f} MiB (train.py --memory-budget MiB, train.memory_budget_mib "
            "or minicnn.io.set_memory_budget changes it)"
        )


# --- writing ---------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class UnsafeTargetError(ValueError):
    """A name to write exists as something other than a regular file (a link, folder, FIFO, device)."""


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(path) -> str | None:
    """What ``path`` is when it is not a regular file ("a symbolic link", "a folder", "a FIFO", ...);
    None for a regular file or nothing at all. Never follows a link."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None if stat.S_ISREG(mode) else "not a file")


def check_write_target(path) -> None:
    """Refuse, with one line, a name to write that exists as anything but a regular file: replacing it
    would turn a device or FIFO into a file, and writing through it would change what a link points to."""
    kind = file_kind(path)
    if kind is not None:
        raise UnsafeTargetError(
            f"{show_path(path)} is {kind}; minicnn writes only regular files and never through "
            "links: remove it or choose another name"
        )


@contextlib.contextmanager
def _atomic(path, suffix: str):
    """Yield a binary handle on a fresh temporary file beside ``path``; rename it over ``path`` on success.

    ``path`` must be a regular file or nothing (:func:`check_write_target`); an error while writing
    (disk full, ``ulimit -f``) names ``path``.
    """
    path = os.fspath(path)
    check_write_target(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)  # O_EXCL: never a link
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would ignore the user's umask
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        check_write_target(path)  # nothing planted under the name while the file was written
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, path) from None  # "No space left": say which file
        raise


def write_atomic(path, write: Callable[[BinaryIO], object], suffix: str = ".bin") -> None:
    """Call ``write(handle)`` on a fresh temporary file beside ``path``, then rename it over ``path``:
    the one way minicnn writes a file (``.npz``, safetensors, text, figures, GIFs, ONNX)."""
    with _atomic(path, suffix) as handle:
        write(handle)


def save_figure_atomic(fig, path, **savefig_kwargs) -> None:
    """Save a Matplotlib figure to ``path`` atomically, never through a link (the format from the
    name's extension, as ``savefig`` picks it)."""
    suffix = os.path.splitext(os.fspath(path))[1] or ".png"
    savefig_kwargs.setdefault("format", suffix[1:])
    write_atomic(path, lambda handle: fig.savefig(handle, **savefig_kwargs), suffix)


def save_npz_atomic(path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary file beside ``path``, flushed to disk, then renamed over it."""
    write_atomic(path, lambda handle: np.savez(handle, allow_pickle=False, **arrays), ".npz")


def write_bytes_atomic(path, data: bytes, suffix: str = ".bin") -> None:
    """Write ``data`` through a temporary file (named ``*suffix``) and a rename, never half written."""
    write_atomic(path, lambda handle: handle.write(data), suffix)


def write_text_atomic(path, text: str) -> None:
    """Write a UTF-8 text file through a temporary file and a rename, so it is never left half written."""
    write_atomic(path, lambda handle: handle.write(text.encode("utf-8")), ".txt")


def remove_stale_temporaries(folder) -> list[str]:
    """Delete the ``.tmp-*`` files a killed write left in ``folder`` (links themselves, never their
    targets); returns the names removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if entry.name.startswith(TEMP_PREFIX) and (
                entry.is_symlink() or entry.is_file(follow_symlinks=False)
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return removed


# --- reading ---------------------------------------------------------------------------------------


class NotAFileError(ValueError):
    """A name to read is a folder, FIFO, device or socket, not a regular file."""


def open_regular(path, what: str = "file") -> BinaryIO:
    """A binary handle on ``path`` once it is known to be a regular file.

    Opened without blocking (a FIFO would otherwise wait for a writer forever) and checked on the
    open descriptor, so nothing can swap the file between the check and the read. Raises
    FileNotFoundError ("no such file") or :class:`NotAFileError` naming ``path`` and what it is.
    """
    shown = show_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {shown}") from None
    except IsADirectoryError:
        raise NotAFileError(f"{shown} is a folder; expected a {what}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((kind for test, kind in _KINDS if test(mode)), "not a regular file")
        raise NotAFileError(f"{shown} is {kind}; expected a {what}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular_bytes(path, what: str = "file") -> bytes:
    """All bytes of a regular file (:func:`open_regular`)."""
    with open_regular(path, what) as handle:
        return handle.read()


def load_npz(path, budget: int | None = None) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` file, checked before it is read.

    Raises FileNotFoundError for a missing file and :class:`FileFormatError` (a ValueError) naming
    the file for anything else: not a ``.npz`` archive, truncated, pickled (object) arrays, or
    declared shapes whose bytes exceed ``budget`` (default :func:`memory_budget`).
    """
    shown = show_path(path)
    with open_regular(path, ".npz file") as handle:
        magic = handle.read(len(_NPY_MAGIC))
        if not magic.startswith(_ZIP_MAGIC):
            raise FileFormatError(f"{shown} is not a .npz file ({_not_zip_kind(magic)})")
        handle.seek(0)
        budget = memory_budget() if budget is None else budget
        try:
            with zipfile.ZipFile(handle) as archive:
                return _read_members(archive, shown, budget)
        # a damaged header can claim an unknown compression (NotImplementedError), encryption
        # (RuntimeError) or hold a broken deflate stream (zlib.error)
        except (
            zipfile.BadZipFile,
            EOFError,
            OSError,
            ValueError,
            NotImplementedError,
            RuntimeError,
            zlib.error,
        ) as exc:
            if isinstance(exc, FileFormatError):
                raise
            raise FileFormatError(
                f"{shown} is not a readable .npz file (truncated or corrupt?): {exc}"
            ) from None


def _not_zip_kind(magic: bytes) -> str:
    if magic == _NPY_MAGIC:
        return "a single .npy array"
    if magic[:1] == b"\x80" and magic[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickled object, which minicnn never loads"
    return "not a zip archive"


def _read_members(archive: zipfile.ZipFile, shown: str, budget: int) -> dict[str, np.ndarray]:
    arrays, total = {}, 0
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise FileFormatError(f"{shown}: member {info.filename!r} is not a .npy array")
        total += info.file_size  # zipfile never inflates past the declared size
        if total > budget:
            raise FileFormatError(
                f"{shown}: its arrays inflate to more than {total / 2**20:,.1f} MiB, above "
                f"the memory budget of {budget / 2**20:,.0f} MiB"
            )
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
        raise FileFormatError(
            f"{shown}: array {name!r} declares shape {shape} of {dtype} ({nbytes:,} bytes), "
            f"but its member holds {info.file_size:,} bytes"
        )
    # read straight into the array, a piece at a time: the peak stays the array's own size
    array = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
    if read_into(member, array) != nbytes:
        raise FileFormatError(f"{shown}: array {name!r} is truncated")
    return array.T if fortran else array


def read_into(stream, array: np.ndarray, chunk: int = 1 << 18) -> int:
    """Fill the C-contiguous ``array`` from ``stream`` in pieces of at most ``chunk`` bytes (so no
    second copy of the data is ever held); returns the bytes read (fewer when the stream ends)."""
    view = array.reshape(-1).view(np.uint8).data if array.size else memoryview(b"")
    position = 0
    while position < len(view):
        count = stream.readinto(view[position : position + chunk])
        if not count:
            break
        position += count
    return position


# --- safetensors ----------------------------------------------------------------------------------
# The format (https://github.com/huggingface/safetensors): an unsigned 64-bit little-endian header
# length n, n bytes of UTF-8 JSON ``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
# "__metadata__": {str: str}}``, then the tensors' bytes, little-endian, C order, offsets counted from
# the end of the header. Plain bytes and JSON: nothing in a file can run code when it is read.

#: safetensors dtype names and the little-endian NumPy types they are (bfloat16 and float8 have none).
SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U64": "<u8",
    "U32": "<u4",
    "U16": "<u2",
    "U8": "u1",
    "BOOL": "?",
}
_DTYPE_NAMES = {np.dtype(code): name for name, code in SAFETENSORS_DTYPES.items()}
#: The largest header minicnn reads (the reference implementation's limit too): 100 MB of JSON.
MAX_SAFETENSORS_HEADER = 100_000_000


def write_safetensors(path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (and string ``metadata``) as a safetensors file, atomically.

    Each tensor is stored little-endian in C order. As the reference writer does, the header is padded
    with spaces to a multiple of 8 bytes and tensors with larger items come first (otherwise in the
    order given), so every tensor starts at a multiple of its item size.
    """
    header: dict[str, dict] = {}
    blobs: list[bytes] = []
    offset = 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("write_safetensors: metadata keys and values must all be str")
        header["__metadata__"] = dict(metadata)
    arrays = {name: np.asarray(array) for name, array in tensors.items()}
    for name, array in arrays.items():
        if name == "__metadata__" or array.dtype.newbyteorder("<") not in _DTYPE_NAMES:
            raise ValueError(
                f"write_safetensors: cannot store {name!r} of dtype {array.dtype}; "
                f"storable: {', '.join(str(np.dtype(c)) for c in SAFETENSORS_DTYPES.values())}"
            )
    for name in sorted(arrays, key=lambda name: -arrays[name].dtype.itemsize):
        array = arrays[name]
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": _DTYPE_NAMES[array.dtype.newbyteorder("<")],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with _atomic(path, ".safetensors") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for data in blobs:
            handle.write(data)


def read_safetensors(path, budget: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` from a safetensors file.

    The header is checked completely before any tensor is allocated: its length against the file's
    size, each dtype, shape and offset range, and that the ranges tile the data without overlaps or
    gaps, so a malformed or hostile file raises :class:`FileFormatError` (a ValueError naming the file
    and what is wrong) instead of asking for memory; so does a data section larger than ``budget``
    (default :func:`memory_budget`). Links are not followed.
    """
    shown = show_path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {shown}") from None
    except OSError as exc:
        raise FileFormatError(
            f"{shown}: cannot open as a safetensors file (a link?): {exc.strerror}"
        ) from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        kind = next((kind for test, kind in _KINDS if test(status.st_mode)), "not a regular file")
        raise FileFormatError(f"{shown} is {kind}; expected a safetensors file")
    os.set_blocking(fd, True)
    size = status.st_size
    with os.fdopen(fd, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise FileFormatError(
                f"{shown}: a safetensors file starts with an 8-byte header length; the file has {size} bytes"
            )
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise FileFormatError(
                f"{shown}: header length {length} bytes exceeds what the file holds after "
                f"the length field ({size - 8} bytes; at most {MAX_SAFETENSORS_HEADER} "
                "are read)"
            )
        budget = memory_budget() if budget is None else budget
        if size - 8 - length > budget:
            raise FileFormatError(
                f"{shown}: its tensors take {(size - 8 - length) / 2**20:,.1f} MiB, above "
                f"the memory budget of {budget / 2**20:,.0f} MiB"
            )
        entries, metadata = _parse_safetensors_header(handle.read(length), size - 8 - length, shown)
        tensors = {}
        # the ranges tile the data in order (checked above): read each tensor straight into its array
        for name, (dtype, shape, _begin, count) in sorted(entries.items(), key=lambda item: item[1][2]):
            tensors[name] = np.empty(shape, dtype=dtype)
            if read_into(handle, tensors[name]) != count * dtype.itemsize:
                raise FileFormatError(f"{shown}: the file changed while it was read")
    return {name: tensors[name] for name in entries}, metadata


def _parse_safetensors_header(text: bytes, data_size: int, shown: str):
    """``({name: (dtype, shape, begin, count)}, metadata)`` from a header, every field checked."""
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{shown}: the safetensors header is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise FileFormatError(f"{shown}: the safetensors header is JSON nested too deeply") from None
    if not isinstance(header, dict):
        raise FileFormatError(
            f"{shown}: the safetensors header must be a JSON object, got {type(header).__name__}"
        )
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FileFormatError(f"{shown}: __metadata__ must map strings to strings, got {metadata!r:.200}")
    entries, ranges = {}, []
    for name, entry in header.items():
        dtype, shape, begin, end = _check_safetensors_entry(name, entry, data_size, shown)
        entries[name] = (dtype, shape, begin, (end - begin) // dtype.itemsize)
        ranges.append((begin, end, name))
    position, previous = 0, None
    for begin, end, name in sorted(ranges):
        if begin < position:
            raise FileFormatError(
                f"{shown}: tensor {name!r} (bytes {begin}..{end}) overlaps {previous!r} "
                f"(which ends at {position})"
            )
        if begin > position:
            raise FileFormatError(f"{shown}: bytes {position}..{begin} of the data belong to no tensor")
        position, previous = end, name
    if position != data_size:
        raise FileFormatError(
            f"{shown}: the tensors cover {position} bytes, but the file holds {data_size} after the header"
        )
    return entries, metadata


def _check_safetensors_entry(name: str, entry, data_size: int, shown: str):
    """``(dtype, shape, begin, end)`` of one header entry, or FileFormatError saying which field is wrong."""
    where = f"{shown}: tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise FileFormatError(f"{where}: expected {{'dtype', 'shape', 'data_offsets'}}, got {entry!r:.200}")
    if entry["dtype"] not in SAFETENSORS_DTYPES:
        raise FileFormatError(
            f"{where}: unknown dtype {entry['dtype']!r:.40}; minicnn reads {', '.join(SAFETENSORS_DTYPES)}"
        )
    shape, offsets = entry["shape"], entry["data_offsets"]
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    if not isinstance(shape, list) or not all(is_int(d) for d in shape):
        raise FileFormatError(f"{where}: shape must be a list of non-negative ints, got {shape!r:.200}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(is_int(v) for v in offsets)
        and offsets[0] <= offsets[1] <= data_size
    ):
        raise FileFormatError(
            f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end <= "
            f"{data_size} (the data's size), got {offsets!r:.200}"
        )
    dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
    expected = dtype.itemsize
    for d in shape:  # Python ints: a huge declared shape cannot overflow
        expected *= d
    if expected != offsets[1] - offsets[0]:
        raise FileFormatError(
            f"{where}: shape {shape!r:.200} of {entry['dtype']} needs {expected} bytes, "
            f"but data_offsets {offsets} span {offsets[1] - offsets[0]}"
        )
    return dtype, tuple(shape), offsets[0], offsets[1]
