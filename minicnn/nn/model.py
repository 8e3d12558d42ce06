"""The model class, :class:`~minicnn.nn.layers.containers.Sequential`: layers applied in order, with
batched prediction, a summary, and safe save / load (defined with the other containers in
:mod:`minicnn.nn.layers.containers`; importable from here, as before)."""

from __future__ import annotations

from .layers.containers import Sequential
from .layers.saving import FORMAT

__all__ = ["FORMAT", "Sequential"]
