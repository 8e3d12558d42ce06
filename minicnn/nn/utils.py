"""Small helpers that many layers share: argument pairs, checks, and the random generator."""

from __future__ import annotations

import numpy as np


def pair(value, name: str) -> tuple[int, int]:
    """Return ``(a, b)`` from an int or a pair of ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
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
