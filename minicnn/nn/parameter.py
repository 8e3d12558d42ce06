"""Parameter: a trainable array and the gradient that backward passes accumulate into it."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend import Device, is_array, namespace, size, to_device


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
        self.grad = namespace(self.data).zeros_like(self.data)
        self.requires_grad = bool(requires_grad)

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
