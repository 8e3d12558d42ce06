"""Which array library an array belongs to, and moving arrays between devices.

The readable math (:mod:`~minicnn.nn.functional`, the losses, the optimizers, :class:`Parameter`)
imports no array library for its arithmetic: it asks its arrays, ``xp = namespace(x)``, and calls
the functions the Python Array API standard names (``xp.reshape``, ``xp.exp``, ``xp.zeros``), so
the same code runs on NumPy, on CuPy (a GPU), or on ``array-api-strict`` (the tests' check that no
NumPy-only call slipped in). NumPy arrays get NumPy itself, without importing array_api_compat, so a
NumPy-only install needs nothing more; other arrays get array_api_compat's namespace when it is
installed, else ``x.__array_namespace__()``.

A device is ``"cpu"`` (NumPy), ``"cuda"`` (CuPy, imported only when asked for), an array namespace
module (``array_api_strict``: its default device), or a pair (namespace module, one of its devices),
e.g. ``(array_api_strict, array_api_strict.Device("device1"))``, a device NumPy refuses to read, as it
would a GPU's (the tests' way to catch a stray NumPy call). Random numbers are drawn on the host and
moved, so a seed gives the same initial weights on every device; files always hold NumPy arrays
(:func:`to_host`).

A few helpers below do in place for NumPy what the standard can only do with a new array (it has no
``out=``): the NumPy path then stays as fast as it was, and bit for bit the same.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

GPU_INSTALL = 'pip install -e ".[gpu]"'


class DeviceUnavailable(ValueError):
    """The device asked for cannot be used here (no CuPy, or no GPU). A ValueError, so commands
    report it in one line and exit 2."""


def _is_numpy(x: object) -> bool:
    return isinstance(x, (np.ndarray, np.generic))


def _is_cupy(x: object) -> bool:
    # by the type's module, so that asking never imports CuPy
    return type(x).__module__.split(".")[0] == "cupy"


def is_array(x: object) -> bool:
    """Whether ``x`` is an array of some Array API library (a NumPy ndarray included)."""
    return isinstance(x, np.ndarray) or hasattr(x, "__array_namespace__") or _is_cupy(x)


def namespace(*arrays) -> Any:
    """The array namespace of ``arrays``: NumPy itself for NumPy arrays (and Python scalars, None).

    Raises TypeError, naming the types, for a value that is not an array or arrays of two libraries.
    """
    for a in arrays:  # the common case first, in a few hundred nanoseconds
        if not isinstance(a, _NUMPY_OR_SCALAR) and a is not None:
            return _foreign_namespace(arrays)
    return np


_NUMPY_OR_SCALAR = (np.ndarray, np.generic, bool, int, float)


def _foreign_namespace(arrays) -> Any:
    found = [a for a in arrays if a is not None and not isinstance(a, (bool, int, float))]
    not_arrays = [type(a).__name__ for a in found if not is_array(a)]
    if not_arrays:
        raise TypeError(f"expected arrays, got {', '.join(not_arrays)}")
    try:
        import array_api_compat
    except ImportError:
        spaces = {type(a): a.__array_namespace__() for a in found}
        if len(set(map(id, spaces.values()))) == 1:
            return next(iter(spaces.values()))
    else:
        try:
            return array_api_compat.array_namespace(*found)
        except TypeError:
            pass
    kinds = sorted({f"{type(a).__module__}.{type(a).__name__}" for a in found})
    raise TypeError(f"expected arrays of one array library, got {' and '.join(kinds)}")


def device(x) -> Any:
    """The device ``x`` lives on, as its library names it (for ``xp.zeros(..., device=...)``)."""
    if isinstance(x, np.ndarray):
        return "cpu"
    try:
        import array_api_compat
    except ImportError:
        return x.device
    return array_api_compat.device(x)


def isdtype(x, kind: str) -> bool:
    """Whether array ``x``'s dtype is of ``kind`` ("real floating" or "integral", as the standard's
    ``isdtype``); NumPy's dtype kinds answer it without the standard function's overhead."""
    if isinstance(x, (np.ndarray, np.generic)):
        return x.dtype.kind in {"real floating": "f", "integral": "iu"}[kind]
    return bool(namespace(x).isdtype(x.dtype, kind))


#: The dtypes a layer may see, by the names NumPy and the Array API standard share.
_DTYPE_NAMES = tuple("float32 float64 float16 bool int8 int16 int32 int64 uint8 uint16 uint32 uint64".split())


def host_dtype(x) -> np.dtype:
    """The NumPy dtype of array ``x`` (of any library): what :func:`to_host` gives it."""
    if isinstance(x, (np.ndarray, np.generic)):
        return x.dtype
    xp = namespace(x)
    for name in _DTYPE_NAMES:
        if getattr(xp, name, None) == x.dtype:
            return np.dtype(name)
    raise TypeError(f"expected an array of a real or boolean dtype, got dtype {x.dtype}")


def dtype_in(xp, dtype) -> Any:
    """The NumPy dtype ``dtype`` as namespace ``xp`` names it (``xp.float32`` for ``np.float32``)."""
    return np.dtype(dtype) if xp is np else getattr(xp, np.dtype(dtype).name)


def size(x) -> int:
    """Number of elements (the standard lets ``x.size`` be None for unknown shapes; ours are known)."""
    return math.prod(x.shape)


# ----------------------------------------------------------------------------------------------
# In place for NumPy, a new array elsewhere
# ----------------------------------------------------------------------------------------------


def maximum_into(xp, target, other):
    """``maximum(target, other)``: written into ``target`` for NumPy (no temporary), a new array
    otherwise (the standard has no ``out=``). ``other`` may be a Python number. Use the result."""
    if xp is np:
        return np.maximum(target, other, out=target)
    if not is_array(other):
        other = xp.asarray(other, dtype=target.dtype, device=device(target))
    return xp.maximum(target, other)


def masked(xp, values, mask, dtype=None):
    """``values * mask`` for a boolean ``mask`` (zero where the mask is False), as ``dtype``.

    NumPy multiplies by the booleans directly; the standard has no arithmetic on booleans, so other
    libraries cast the mask first (the same numbers: ``v * 1.0`` and ``v * 0.0``).
    """
    dtype = dtype if dtype is not None else values.dtype if is_array(values) else None
    if xp is np:
        return np.multiply(values, mask, dtype=dtype)
    return values * xp.astype(mask, dtype)


def set_masked(xp, target, key, values, mask) -> None:
    """``target[key] = values * mask`` (see :func:`masked`); NumPy writes the product in place."""
    if xp is np:
        np.multiply(values, mask, out=target[key])
    else:
        target[key] = masked(xp, values, mask, target.dtype)


def contiguous(xp, x):
    """``x`` laid out contiguously: NumPy copies a strided view (only when it is one); other libraries
    choose their own layout, so ``x`` is returned."""
    return np.ascontiguousarray(x) if xp is np else x


# ----------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------


def _cupy() -> ModuleType:
    """CuPy with at least one GPU, or DeviceUnavailable saying what to install or that no GPU is seen."""
    try:
        import cupy
    except ImportError:
        raise DeviceUnavailable(
            f"device 'cuda' needs CuPy, which is not installed: install it with {GPU_INSTALL}"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # CUDARuntimeError, or a CUDA library that fails to load
        count = 0
    if count < 1:
        raise DeviceUnavailable("device 'cuda': CuPy is installed but finds no GPU (use device 'cpu')")
    return cupy


def to_host(array) -> np.ndarray:
    """``array`` as a NumPy array in host memory: a NumPy array is returned as it is, any other is
    copied (so the result never shares memory with a device array)."""
    if _is_numpy(array):
        return np.asarray(array)
    if _is_cupy(array):
        return array.get()
    if not is_array(array):
        raise TypeError(f"to_host: expected an array, got {type(array).__name__}")
    # DLPack is the standard's way to hand memory between libraries
    return np.array(np.from_dlpack(array), copy=True)


Device = str | ModuleType | tuple[ModuleType, Any]


def check_device(device: Device) -> None:
    """Raise, in one line, unless arrays can be moved to ``device`` here: DeviceUnavailable for "cuda"
    without CuPy or without a GPU, ValueError for what is not a device (see :func:`to_device`)."""
    to_device(np.zeros(0), device)


def to_device(array, device: Device):
    """``array`` on ``device``: "cpu" (a NumPy array), "cuda" (a CuPy array), an array namespace
    module (an array of that library on its default device, e.g. ``array_api_strict``), or a pair
    (namespace module, device of that library).

    An array already there is returned as it is; otherwise it is copied. Raises DeviceUnavailable
    (one line, naming what to install) for "cuda" without CuPy or without a GPU, and ValueError
    for any other device.
    """
    if isinstance(device, str) and device in ("cpu", "cuda"):
        if device == "cpu":
            return to_host(array)
        cupy = _cupy()
        return array if _is_cupy(array) else cupy.asarray(to_host(array))
    library, where = device if isinstance(device, tuple) and len(device) == 2 else (device, None)
    if not (isinstance(library, ModuleType) and hasattr(library, "asarray")):
        raise ValueError(
            f"device must be 'cpu', 'cuda', an array namespace module or (module, device), got {device!r}"
        )
    if library is np:
        return to_host(array)
    if is_array(array) and not _is_numpy(array) and namespace(array) is library:
        if where is None or array.device == where:
            return array
        return array.to_device(where)
    if where is None:
        return library.asarray(to_host(array), copy=True)
    return library.asarray(to_host(array), copy=True, device=where)


def asarray_like(value, like):
    """``value`` (an array of any library, or a list) as an array of ``like``'s library, on its device.

    NumPy: ``np.asarray(value)``. Otherwise an array already of ``like``'s library is returned as it
    is, and anything else goes through the host (labels and checkpoints arrive as NumPy arrays).
    """
    xp = namespace(like)
    if xp is np:
        return np.asarray(to_host(value) if is_array(value) else value)
    if is_array(value) and not _is_numpy(value) and namespace(value) is xp:
        return value
    host = to_host(value) if is_array(value) else np.asarray(value)
    return xp.asarray(host, device=device(like))
