"""Small helpers that many layers share: argument pairs, checks, and the random generator."""

from __future__ import annotations

import math

import numpy as np


def pair(value, name: str) -> tuple[int, int]:
    """Return ``(a, b)`` from an int or a pair of ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def as_generator(rng) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a seed, a Generator (returned as is), or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}")


def check_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def positive_int(value, name: str, owner: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def positive_pair(value, name: str, owner: str, minimum: int = 1) -> tuple[int, int]:
    try:
        result = pair(value, name)
    except TypeError as exc:
        raise TypeError(f"{owner}: {exc}") from None
    if min(result) < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value!r}")
    return result


def check_bool(value, name: str, owner: str) -> bool:
    """``value`` if it is a real bool (no truthiness: ``"no"`` is not False)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def check_real(
    value,
    name: str,
    owner: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number (not a bool or a string) within ``[low, high]`` (ends open when asked)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
    number = float(value)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or below or above:
        left = ("(" if low_open else "[") if low is not None else "("
        right = ")" if high_open or high is None else "]"
        lower, upper = "-inf" if low is None else f"{low:g}", "inf" if high is None else f"{high:g}"
        span = f"{left}{lower}, {upper}{right}"
        raise ValueError(f"{owner}: {name} must be a finite number in {span}, got {value!r}")
    return number
