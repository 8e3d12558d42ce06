"""Losses: ``forward(outputs, targets)`` returns the mean loss as a float, ``backward()`` its gradient."""

from __future__ import annotations

import numpy as np

from .functional import log_softmax


class Loss:
    """Base class: a loss remembers what its backward pass needs from the last ``forward``.

    Subclasses implement ``forward(outputs, targets) -> float`` (the mean loss over the batch) and
    ``backward() -> ndarray`` (d loss / d outputs, the outputs' shape).
    """

    def forward(self, outputs: np.ndarray, targets) -> float:
        """The mean loss of ``outputs`` against ``targets``; keeps what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        """d loss / d outputs for the last :meth:`forward`, of the outputs' shape."""
        raise NotImplementedError

    def __call__(self, outputs: np.ndarray, targets) -> float:
        return self.forward(outputs, targets)

    def _outputs(self, outputs, expected: str) -> np.ndarray:
        if not isinstance(outputs, np.ndarray) or outputs.dtype.kind != "f":
            got = type(outputs).__name__ if not isinstance(outputs, np.ndarray) else f"dtype {outputs.dtype}"
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
        self._probs: np.ndarray | None = None
        self._target: np.ndarray | None = None

    def forward(self, outputs, targets) -> float:
        logits = self._outputs(outputs, "(N, K)")
        if logits.ndim != 2:
            raise ValueError(f"SoftmaxCrossEntropy: expected logits (N, K), got {logits.shape}")
        n, k = logits.shape
        targets = np.asarray(targets)
        if targets.shape != (n,) or targets.dtype.kind not in "iu":
            raise ValueError(
                f"SoftmaxCrossEntropy: expected integer labels of shape ({n},), "
                f"got {targets.dtype} array of shape {targets.shape}"
            )
        if n and (targets.min() < 0 or targets.max() >= k):
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must be in [0, {k}), "
                f"got values from {targets.min()} to {targets.max()}"
            )
        log_probs = log_softmax(logits, dtype=np.float64)
        target = np.full((n, k), self.label_smoothing / k)
        target[np.arange(n), targets] += 1.0 - self.label_smoothing
        self._probs = np.exp(log_probs).astype(logits.dtype)
        self._target = target.astype(logits.dtype)
        return float(-(target * log_probs).sum() / n)

    def backward(self) -> np.ndarray:
        probs = self._cached(self._probs)
        return (probs - self._target) / probs.shape[0]


class MSELoss(Loss):
    """Mean squared error over all elements: ``mean((outputs - targets)**2)``.

    ``forward(outputs, targets)``: arrays of the same shape; ``backward()``: ``2 (outputs - targets) / size``.
    """

    def __init__(self) -> None:
        self._diff: np.ndarray | None = None

    def forward(self, outputs, targets) -> float:
        outputs = self._outputs(outputs, "(N, ...)")
        targets = np.asarray(targets)
        if targets.shape != outputs.shape:
            raise ValueError(
                f"MSELoss: expected targets of the outputs' shape {outputs.shape}, got {targets.shape}"
            )
        self._diff = outputs - targets.astype(outputs.dtype, copy=False)
        return float(np.mean(self._diff * self._diff))

    def backward(self) -> np.ndarray:
        diff = self._cached(self._diff)
        return diff * (2.0 / diff.size)
