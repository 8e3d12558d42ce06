"""Numerical gradient checking by central differences in float64.

Use it on any layer with the minicnn contract, including one you wrote yourself::

    from minicnn.nn.gradcheck import check_layer
    report = check_layer(MyLayer(...), x)      # x: a float64 array
    assert report.ok, report                   # worst relative error below report.tolerance

How it works: take a fixed random projection ``r`` of the output, so the scalar
``L = sum(r * layer.forward(x))`` has ``dL/d output = r``. Backward with ``r`` gives the analytic
gradients; each input element and each parameter element is then nudged by ``+-h`` and
``(L(+h) - L(-h)) / (2h)`` is the numerical one.

The relative error of one array is ``max|analytic - numeric| / max(max|analytic|, max|numeric|, tiny)``:
the worst element's error measured against the array's scale, which stays meaningful when some
gradients are exactly zero (ReLU, max pooling).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The largest relative error a correct float64 backward pass shows with ``h = 1e-6``: central
#: differences are accurate to about ``h**2`` plus rounding ``eps / h`` (about 1e-10 each), so a
#: layer's own errors stay near 1e-8, while a wrong backward is off by 1e-2 or more.
TOLERANCE = 1e-6


@dataclass
class GradCheckReport:
    """Relative error of each checked gradient (``"input"``, ``"weight"``, ...), the worst of them,
    and the verdict: ``ok`` when the worst is at most ``tolerance``."""

    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = TOLERANCE

    @property
    def worst(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    @property
    def ok(self) -> bool:
        """True when every checked gradient's relative error is at most ``tolerance`` (NaN fails)."""
        return bool(self.worst <= self.tolerance)

    def __str__(self) -> str:
        items = ", ".join(f"{k}: {v:.2e}" for k, v in self.errors.items())
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"GradCheckReport({verdict}: worst={self.worst:.2e} vs tolerance {self.tolerance:.0e}; {items})"
        )


def relative_error(analytic: np.ndarray, numeric: np.ndarray, tiny: float = 1e-12) -> float:
    """``max|a - n| / max(max|a|, max|n|, tiny)``."""
    largest = [float(np.max(np.abs(values), initial=0.0)) for values in (analytic, numeric)]
    scale = max(*largest, tiny)
    return float(np.max(np.abs(analytic - numeric), initial=0.0)) / scale


def numerical_gradient(f, array: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` with respect to ``array``, perturbed in place."""
    grad = np.zeros(array.shape, dtype=np.float64)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + h
        plus = f()
        flat[i] = original - h
        minus = f()
        flat[i] = original
        out[i] = (plus - minus) / (2 * h)
    return grad


def check_layer(
    layer, x: np.ndarray, h: float = 1e-6, seed: int = 0, check_input: bool = True
) -> GradCheckReport:
    """Compare a layer's backward pass with central differences, for the input and every parameter.

    Parameters
    ----------
    layer : a minicnn layer (or a ``Sequential``), built with ``dtype=np.float64``
    x : float64 ndarray, the input
    h : step of the central difference
    seed : seed of the random output projection
    check_input : also check d loss / d input

    Returns
    -------
    GradCheckReport
        ``.worst`` is the largest relative error; ``.errors`` has one entry per checked array.

    The layer's mode is left as it is; a layer whose forward pass is random (Dropout in training
    mode) must be made repeatable first (reset its generator before each forward).
    """
    x = np.array(x, dtype=np.float64)
    for name, p in _named_parameters(layer):
        if p.data.dtype != np.float64:
            raise TypeError(
                f"check_layer: parameter {name} is {p.data.dtype}; build the layer with dtype=np.float64"
            )
    out = layer.forward(x.copy())
    projection = np.random.default_rng(seed).standard_normal(out.shape)

    def loss() -> float:
        return float(np.sum(projection * layer.forward(x)))

    for _, p in _named_parameters(layer):
        p.grad[...] = 0
    layer.forward(x)
    dx = layer.backward(projection.copy())
    report = GradCheckReport()
    if check_input:
        report.errors["input"] = relative_error(dx, numerical_gradient(loss, x, h))
    for name, p in _named_parameters(layer):
        analytic = p.grad.copy()
        report.errors[name] = relative_error(analytic, numerical_gradient(loss, p.data, h))
    return report


def check_loss(loss_fn, outputs: np.ndarray, targets, h: float = 1e-6) -> GradCheckReport:
    """Compare ``loss_fn.backward()`` with central differences of ``loss_fn.forward(outputs, targets)``."""
    outputs = np.array(outputs, dtype=np.float64)
    loss_fn.forward(outputs, targets)
    analytic = loss_fn.backward()
    numeric = numerical_gradient(lambda: loss_fn.forward(outputs, targets), outputs, h)
    return GradCheckReport({"input": relative_error(analytic, numeric)})


def _named_parameters(layer):
    return layer.named_parameters() if hasattr(layer, "named_parameters") else []
