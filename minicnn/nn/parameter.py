"""Parameter: a trainable array and the gradient that backward passes accumulate into it."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ._backend import Device, is_array, namespace, size, to_device

_placeholders = 0  # > 0 inside placeholders(): new Parameters allocate no gradient


class Parameter:
    """A trainable array with its gradient.

    Parameters
    ----------
    data : ndarray
        The values, an array of any Array API library (NumPy, CuPy, ...); anything else goes through
        ``np.asarray``. Kept as given (no copy), so ``layer.weight.data`` is the live array.
    requires_grad : bool
        False freezes the parameter: layers skip its gradient and optimizers skip its update.

    Attributes
    ----------
    data : ndarray
    grad : ndarray of the same shape, dtype, library and device as ``data``
        Backward passes *add* to it (as PyTorch does); ``zero_grad()`` clears it.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad: bool = True):
        foreign = is_array(data) and not isinstance(data, (np.ndarray, np.generic))
        self.data = data if foreign else np.asarray(data)
        # inside placeholders() the data is a stand-in soon replaced (adopt), so no gradient yet
        self.grad = self.data if _placeholders else namespace(self.data).zeros_like(self.data)
        self.requires_grad = bool(requires_grad)

    def adopt(self, values: np.ndarray) -> None:
        """Hold ``values`` (cast to this parameter's dtype, no copy when it already is) as the data,
        with a fresh zero gradient: how a loaded model takes its weights without a second copy."""
        self.data = np.ascontiguousarray(values, dtype=self.data.dtype)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def size(self) -> int:
        return size(self.data)

    def zero_grad(self) -> None:
        self.grad[...] = 0.0

    def to(self, device: Device) -> Parameter:
        """Move ``data`` and ``grad`` to ``device``: "cpu" (NumPy), "cuda" (CuPy), an array namespace
        module, or (module, device) (see :func:`minicnn.nn._backend.to_device`). Values are kept bit
        for bit; an array already there is not copied. Returns the parameter."""
        self.data, self.grad = to_device(self.data, device), to_device(self.grad, device)
        return self

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{frozen})"


@contextlib.contextmanager
def placeholders():
    """Within the block, a new :class:`Parameter` allocates no gradient (its ``grad`` is its data).

    For building a model whose every parameter is about to be replaced (:meth:`Parameter.adopt`),
    as loading a file does: with stand-in data that allocates nothing either, building costs no
    memory, and no initial weights are drawn only to be overwritten.
    """
    global _placeholders
    _placeholders += 1
    try:
        yield
    finally:
        _placeholders -= 1


class _StandIn(np.ndarray):
    """A zero-stride array of zeros: any shape for the memory of one element."""

    def astype(self, dtype, *args, **kwargs):
        return stand_in(self.shape, dtype)


def stand_in(shape, dtype=np.float64) -> np.ndarray:
    """Read-only zeros of ``shape`` that allocate one element (a broadcast view)."""
    return np.broadcast_to(np.zeros((), dtype=dtype), () if shape is None else shape).view(_StandIn)


class NoDrawGenerator(np.random.Generator):
    """A Generator whose ``normal`` and ``uniform`` draw nothing and return :func:`stand_in` zeros:
    passed as a layer's ``rng`` inside :func:`placeholders`, the layer is built without its initial
    weights being drawn or allocated."""

    def __init__(self) -> None:
        super().__init__(np.random.PCG64(0))

    def normal(self, loc=0.0, scale=1.0, size=None):
        return stand_in(size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return stand_in(size)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return stand_in(size, dtype)
