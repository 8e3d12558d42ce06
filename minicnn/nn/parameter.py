"""Parameter: a trainable array and the gradient that backward passes accumulate into it."""

from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array with its gradient.

    Parameters
    ----------
    data : ndarray
        The values. Kept as given (no copy), so ``layer.weight.data`` is the live array.
    requires_grad : bool
        False freezes the parameter: layers skip its gradient and optimizers skip its update.

    Attributes
    ----------
    data : ndarray
    grad : ndarray of the same shape and dtype as ``data``
        Backward passes *add* to it (as PyTorch does); ``zero_grad()`` clears it.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data: np.ndarray, requires_grad: bool = True):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{frozen})"
