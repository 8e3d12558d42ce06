"""Losses: ``forward(outputs, targets)`` returns the mean loss as a float, ``backward()`` its gradient.

The outputs may come from any Array API library (NumPy, CuPy, ...): a loss computes in the outputs'
library (:mod:`minicnn.nn._backend`), and the targets are moved there when they arrive as NumPy
arrays or lists.
"""

from __future__ import annotations

from typing import Any

from ._backend import asarray_like, device, is_array, isdtype, namespace, size
from .functional import log_softmax


class Loss:
    """Base class: a loss remembers what its backward pass needs from the last ``forward``.

    Subclasses implement ``forward(outputs, targets) -> float`` (the mean loss over the batch) and
    ``backward() -> ndarray`` (d loss / d outputs, the outputs' shape).
    """

    def forward(self, outputs, targets) -> float:
        """The mean loss of ``outputs`` against ``targets``; keeps what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self):
        """d loss / d outputs for the last :meth:`forward`, of the outputs' shape."""
        raise NotImplementedError

    def __call__(self, outputs, targets) -> float:
        return self.forward(outputs, targets)

    def _outputs(self, outputs, expected: str):
        if not is_array(outputs) or not isdtype(outputs, "real floating"):
            got = type(outputs).__name__ if not is_array(outputs) else f"dtype {outputs.dtype}"
            raise TypeError(
                f"{type(self).__name__}: expected outputs as a float ndarray of shape {expected}, got {got}"
            )
        return outputs

    def _cached(self, value):
        if value is None:
            raise RuntimeError(f"{type(self).__name__}: backward() called before forward()")
        return value


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused so the log-softmax is numerically stable.

    Parameters
    ----------
    label_smoothing : float in [0, 1)
        The target distribution puts ``1 - label_smoothing`` on the true class and spreads
        ``label_smoothing`` evenly over all K classes (PyTorch's definition).

    Notes
    -----
    ``forward(logits, labels)``: logits (N, K) float, labels (N,) int in [0, K); returns the mean loss.
    ``backward()``: d loss / d logits, (N, K): ``(softmax(logits) - target) / N``.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(
                f"SoftmaxCrossEntropy: label_smoothing must be in [0, 1), got {label_smoothing!r}"
            )
        self.label_smoothing = float(label_smoothing)
        self._probs: Any = None
        self._target: Any = None

    def forward(self, outputs, targets) -> float:
        logits = self._outputs(outputs, "(N, K)")
        if logits.ndim != 2:
            raise ValueError(f"SoftmaxCrossEntropy: expected logits (N, K), got {logits.shape}")
        n, k = logits.shape
        xp = namespace(logits)
        targets = asarray_like(targets, logits)
        if targets.shape != (n,) or not isdtype(targets, "integral"):
            raise ValueError(
                f"SoftmaxCrossEntropy: expected integer labels of shape ({n},), "
                f"got {targets.dtype} array of shape {targets.shape}"
            )
        low, high = (int(xp.min(targets)), int(xp.max(targets))) if n else (0, 0)
        if low < 0 or high >= k:
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must be in [0, {k}), got values from {low} to {high}"
            )
        log_probs = log_softmax(logits, dtype=xp.float64)
        target = self._smoothed_one_hot(xp, targets, k, device(logits))
        self._probs = xp.astype(xp.exp(log_probs), logits.dtype)
        self._target = xp.astype(target, logits.dtype)
        return float(-xp.sum(target * log_probs) / n)

    def _smoothed_one_hot(self, xp, labels, k: int, where):
        """The target distribution, (N, K) float64: ``s/K + (1 - s)`` on each label, ``s/K`` elsewhere.

        Built by comparing with ``arange(K)``, not by writing at ``[arange(N), labels]``: the Array
        API standard has no integer-array assignment. (Adding ``(1 - s) * 0.0`` leaves ``s/K`` exact.)
        """
        is_label = xp.arange(k, device=where)[None, :] == labels[:, None]
        return self.label_smoothing / k + xp.astype(is_label, xp.float64) * (1.0 - self.label_smoothing)

    def backward(self):
        probs = self._cached(self._probs)
        return (probs - self._target) / probs.shape[0]


class MSELoss(Loss):
    """Mean squared error over all elements: ``mean((outputs - targets)**2)``.

    ``forward(outputs, targets)``: arrays of the same shape; ``backward()``: ``2 (outputs - targets) / size``.
    """

    def __init__(self) -> None:
        self._diff: Any = None

    def forward(self, outputs, targets) -> float:
        outputs = self._outputs(outputs, "(N, ...)")
        xp = namespace(outputs)
        targets = asarray_like(targets, outputs)
        if targets.shape != outputs.shape:
            raise ValueError(
                f"MSELoss: expected targets of the outputs' shape {outputs.shape}, got {targets.shape}"
            )
        self._diff = outputs - xp.astype(targets, outputs.dtype, copy=False)
        return float(xp.mean(self._diff * self._diff))

    def backward(self):
        diff = self._cached(self._diff)
        return diff * (2.0 / size(diff))
