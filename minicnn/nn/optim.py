"""Optimizers (SGD, Adam, AdamW), learning-rate schedules, and gradient clipping.

Optimizers update ``Parameter.data`` in place from ``Parameter.grad``; parameters with
``requires_grad=False`` are left alone. ``state_dict()`` holds plain NumPy arrays and numbers
(whatever device the parameters are on), so a checkpoint can be written with ``np.savez`` and
training resumed bit for bit, on the same device or another.

The updates use only the Python Array API standard, on the parameters' own library (NumPy, CuPy, ...);
``to(device)`` moves the optimizer's state arrays along with a model's parameters.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ._backend import Device, asarray_like, namespace, to_device, to_host
from .parameter import Parameter


class Optimizer:
    """Base class: keeps the parameter list, the learning rate and per-parameter state arrays."""

    _buffers: tuple[str, ...] = ()

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params: list[Parameter] = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"{type(self).__name__}: item {i} is a {type(p).__name__}, not a Parameter "
                    "(pass model.parameters())"
                )
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr!r}")
        if weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        self.state = {
            name: [namespace(p.data).zeros_like(p.data) for p in self.params] for name in self._buffers
        }

    def to(self, device: Device) -> Optimizer:
        """Move the state arrays (momentum, running averages) to ``device``: "cpu", "cuda", an array
        namespace module, or (module, device) (see :func:`minicnn.nn._backend.to_device`). Move the
        parameters too (the model's ``to``): an update needs both on one device. Returns the optimizer."""
        self.state = {name: [to_device(a, device) for a in arrays] for name, arrays in self.state.items()}
        return self

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        self.steps += 1
        for i, p in enumerate(self.params):
            if p.requires_grad:
                self._update(i, p)

    def _update(self, i: int, p: Parameter) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"lr", "steps", "<buffer>.<i>"}`` as NumPy arrays, host copies (ready for ``np.savez``)."""
        out = {"lr": np.array(self.lr), "steps": np.array(self.steps)}
        for name, arrays in self.state.items():
            out.update({f"{name}.{i}": np.array(to_host(a), copy=True) for i, a in enumerate(arrays)})
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (NumPy arrays) into the state arrays where they are
        (on their device); shapes must match this optimizer's parameters."""
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        for name, arrays in self.state.items():
            for i, target in enumerate(arrays):
                key = f"{name}.{i}"
                if key not in state:
                    raise KeyError(f"{type(self).__name__}.load_state_dict: missing {key!r}")
                value = asarray_like(state[key], target)
                if value.shape != target.shape:
                    raise ValueError(
                        f"{type(self).__name__}.load_state_dict: {key} expected shape "
                        f"{target.shape}, got {value.shape}"
                    )
                target[...] = value


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay, as PyTorch's:

    ``g = grad + weight_decay * w``; ``v = momentum * v + g``;
    ``w -= lr * (g + momentum * v if nesterov else v)``.
    """

    _buffers = ("velocity",)

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        super().__init__(params, lr, weight_decay)

    def _update(self, i, p):
        xp = namespace(p.data, p.grad)
        g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
        if self.momentum:
            v = self.state["velocity"][i]
            v *= self.momentum
            v += g
            g = g + self.momentum * v if self.nesterov else v
        p.data -= xp.astype(self.lr * g, p.data.dtype, copy=False)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; ``weight_decay`` adds an L2 term to the gradient."""

    _buffers = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(
        self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0
    ):
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas!r}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)
        super().__init__(params, lr, weight_decay)

    def _update(self, i, p):
        xp = namespace(p.data, p.grad)
        b1, b2 = self.betas
        g = p.grad
        if self.weight_decay:
            if self._decoupled:
                p.data *= 1.0 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p.data
        m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        step_size = self.lr / (1 - b1**self.steps)
        denom = xp.sqrt(v / (1 - b2**self.steps))
        denom += self.eps
        p.data -= xp.astype(step_size * m / denom, p.data.dtype, copy=False)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): ``w *= 1 - lr * weight_decay``
    before the Adam step. Default weight_decay 0.01, as PyTorch's."""

    _decoupled = True

    def __init__(
        self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01
    ):
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


# ----------------------------------------------------------------------------------------------
# Learning-rate schedules: call ``step()`` once per epoch (or per batch, with counts in batches).
# ----------------------------------------------------------------------------------------------


class LRSchedule:
    """Sets ``optimizer.lr = base_lr * factor(t)``, where t counts calls to :meth:`step`."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.t = 0
        optimizer.lr = self.base_lr * self.factor(0)

    def factor(self, t: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.t += 1
        self.optimizer.lr = self.base_lr * self.factor(self.t)

    def state_dict(self) -> dict:
        return {"t": np.array(self.t), "base_lr": np.array(self.base_lr)}

    def load_state_dict(self, state: dict) -> None:
        self.t, self.base_lr = int(state["t"]), float(state["base_lr"])
        self.optimizer.lr = self.base_lr * self.factor(self.t)


class ConstantLR(LRSchedule):
    """No change."""

    def factor(self, t):
        return 1.0


class StepLR(LRSchedule):
    """Multiply the rate by ``gamma`` every ``step_size`` steps."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size!r}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def factor(self, t):
        return self.gamma ** (t // self.step_size)


class CosineLR(LRSchedule):
    """Linear warm-up over ``warmup`` steps, then a cosine decay to ``min_factor`` at ``total`` steps.

    A run no longer than its warm-up (``warmup >= total``, e.g. a one-epoch try of a recipe) ends
    during the warm-up: the rate rises, never reaches the optimizer's learning rate and never decays;
    it warns (``UserWarning``) when built so.
    """

    def __init__(self, optimizer, total: int, warmup: int = 0, min_factor: float = 0.0):
        if total < 1 or warmup < 0:
            raise ValueError(f"CosineLR: need total >= 1 and warmup >= 0, got total={total}, warmup={warmup}")
        self.total, self.warmup, self.min_factor = int(total), int(warmup), float(min_factor)
        super().__init__(optimizer)
        if self.warmup >= self.total:
            warnings.warn(
                f"CosineLR: the warm-up ({self.warmup} epochs) is at least as long as the run "
                f"({self.total} epochs): the learning rate ends at {self.total / (self.warmup + 1):.2g} "
                f"of the set {self.base_lr:g} and never decays; train more epochs or set a shorter "
                "warmup_epochs",
                UserWarning,
                stacklevel=2,
            )

    def factor(self, t):
        if t < self.warmup:
            return (t + 1) / (self.warmup + 1)
        progress = min(1.0, (t - self.warmup) / max(1, self.total - self.warmup))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (inf or nan if a gradient is not finite; then nothing is scaled).
    """
    params = [p for p in params if p.requires_grad]
    total = math.sqrt(sum(_sum_of_squares(p.grad) for p in params))
    if math.isfinite(total) and total > max_norm > 0:
        scale = max_norm / (total + 1e-12)
        for p in params:
            p.grad *= scale
    return total


def _sum_of_squares(grad) -> float:
    """``sum(grad**2)``: NumPy's ``vdot`` (one BLAS call, the value checkpoints were made with); the
    Array API standard has no vdot, so other libraries take ``vecdot`` of the flattened array."""
    xp = namespace(grad)
    if xp is np:
        return float(np.vdot(grad, grad))
    flat = xp.reshape(grad, (-1,))
    return float(xp.vecdot(flat, flat))
