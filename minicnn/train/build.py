"""Building a model from layer specs in the config's form (``{"type": "Conv2D", ...}`` dicts)."""

from __future__ import annotations

import difflib
import inspect

import numpy as np

from .. import io
from ..nn.layers import Layer, Sequential, UnknownLayerError, as_generator, layer_class

#: Arrays a trainable parameter costs while training: itself, its gradient and two optimizer moments.
_COPIES_PER_PARAMETER = 4


def build_model(layer_specs, input_shape, dtype=np.float32, rng=None, batch_size: int = 1) -> Sequential:
    """A :class:`Sequential` from layer specs in the config's form.

    Parameters
    ----------
    layer_specs : list of dict
        ``{"type": "Conv2D", "out_channels": 16, "kernel_size": 3, "padding": 1}``; any layer may add
        ``"trainable": False`` to freeze its parameters. A layer whose size follows its input declares
        which argument that is (``Conv2D.input_size_argument == "in_channels"``; ``in_features`` for
        Dense, ``num_features`` for BatchNorm2D): it is filled in from the incoming shape, which each
        layer's ``output_shape`` carries on to the next. Nothing is computed. ``type`` is a class
        name (``"Conv2D"``, or a layer of your own once its module is imported) or
        ``"package.module:ClassName"``, which imports that module (running its code, as any import
        does). A key holding a list of layer tables (a ``Residual``'s ``body`` and ``shortcut``) is
        built as a :class:`Sequential` that reads the block's input.
    input_shape : (C, H, W)
    dtype : float32 or float64, for layers that hold parameters
    rng : int seed, numpy.random.Generator or None
        Each layer that draws random numbers gets its own Generator, seeded from this one in order.
    batch_size : int
        The batch the memory estimate assumes (each layer's ``training_bytes``).

    Notes
    -----
    Raises ValueError naming ``model.layers[i]`` and the key for an unknown type or a bad argument,
    and the shapes for a layer that does not fit its input; MemoryError naming the layer when the
    parameters and one batch's activations would exceed the memory budget (:mod:`minicnn.io`), each
    layer checked before its weights are drawn.
    """
    rng = as_generator(rng)
    dtype = np.dtype(dtype)
    shape = (1,) + tuple(int(s) for s in input_shape)
    layers, _ = _build_sequence(layer_specs, shape, dtype, rng, "model.layers", batch_size)
    return Sequential(layers)


def _build_sequence(specs, shape, dtype: np.dtype, rng, where: str, batch_size: int, used: int = 0):
    """Layers from ``specs`` in order, each one's input size filled in from the shape before it;
    returns them and the output shape. ``used``: bytes the model takes before these layers."""
    layers = []
    for i, spec in enumerate(specs):
        here = f"{where}[{i}]"
        layer = _build_within(
            dict(spec), shape, dtype, rng, here, left=io.memory_budget() - used, batch=batch_size
        )
        out = _output_shape(layer, shape, where=here)
        used += layer.training_bytes(shape, batch_size, dtype.itemsize)
        io.check_budget(
            used, f"{here} ({type(layer).__name__}): the model so far, trained on batches of {batch_size},"
        )
        shape = out
        layers.append(layer)
    return layers, shape


def _build_within(spec: dict, shape, dtype: np.dtype, rng, where: str, left: int, batch: int) -> Layer:
    """:func:`_build_layer` with the budget its weights may take: what is ``left``, shared with their
    gradients and optimizer state, so that no weights are drawn that training could not hold."""
    try:
        with io.budget_limited_to(left // _COPIES_PER_PARAMETER):
            return _build_layer(spec, shape, dtype, rng, where, batch)
    except MemoryError as exc:
        raise MemoryError(
            f"{where}: {exc}; the weights, their gradients and optimizer state share the "
            f"{max(left, 0) / 2**20:,.0f} MiB left"
        ) from None


def _is_table(value) -> bool:
    return isinstance(value, dict) and "type" in value


def _build_children(spec: dict, shape, dtype: np.dtype, rng, where: str, batch: int) -> None:
    """Nested layer tables in ``spec`` (a Residual's ``body`` and ``shortcut``) become layers, in
    place: a list of tables a list of layers (which Residual makes a :class:`Sequential`), one table
    a layer; each list starts from the block's input shape."""
    for key, value in spec.items():
        if isinstance(value, list) and value and all(_is_table(v) for v in value):
            spec[key], _ = _build_sequence(value, shape, dtype, rng, f"{where}.{key}", batch)
        elif _is_table(value):
            (spec[key],), _ = _build_sequence([value], shape, dtype, rng, f"{where}.{key}", batch)


def _build_layer(
    spec: dict, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator, where: str, batch: int
) -> Layer:
    """One layer from its spec, its input size filled in from ``shape`` (batch axis first)."""
    cls = _layer_class(spec.pop("type", None), where)
    trainable = spec.pop("trainable", True)
    if not isinstance(trainable, bool):
        raise ValueError(f"{where}.trainable = {trainable!r}: expected true or false")
    params = inspect.signature(cls).parameters
    _check_arguments(cls, spec, [p for p in params if p not in ("rng", "dtype")], where)
    _check_input_ndim(cls, shape, where)
    size_argument = cls.input_size_argument
    if size_argument is not None:
        if size_argument in spec and spec[size_argument] != shape[1]:
            raise ValueError(
                f"{where}.{size_argument} = {spec[size_argument]!r}, but its input is {shape[1:]}, "
                f"which needs {shape[1]}; leave it out to infer it"
            )
        spec[size_argument] = shape[1]
    if "dtype" in params:
        spec["dtype"] = dtype
    if "rng" in params:
        spec["rng"] = np.random.default_rng(rng.integers(2**63))
    _build_children(spec, shape, dtype, rng, where, batch)
    try:
        layer = cls.from_config(spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({cls.__name__}): {exc}") from None
    return layer if trainable else layer.freeze()


def _layer_class(kind, where: str) -> type[Layer]:
    """The class a config's ``type`` names; the long form ``"package.module:ClassName"`` imports that
    module (which runs its code, as any import does)."""
    try:
        return layer_class(kind, allow_import=True)
    except UnknownLayerError as exc:
        raise ValueError(f"{where}.type = {kind!r}: {exc}") from None


def _check_arguments(cls: type[Layer], spec: dict, accepted: list[str], where: str) -> None:
    for key in spec:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted + ["trainable"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{where}.{key}: {cls.__name__} has no argument {key!r}{hint}; it takes "
                f"{', '.join(accepted + ['trainable']) or 'no arguments but trainable'}"
            )


def _check_input_ndim(cls: type[Layer], shape: tuple[int, ...], where: str) -> None:
    """The layer's declared number of input dimensions (``Layer.input_ndim``) against ``shape``."""
    ndim = cls.input_ndim
    if ndim is None or len(shape) == ndim:
        return
    if ndim == 2:
        raise ValueError(
            f"{where} ({cls.__name__}): its input has shape {shape[1:]}; add a Flatten or "
            "GlobalAvgPool2D layer before it"
        )
    expected = "an image input (C, H, W)" if ndim == 4 else f"an input of {ndim - 1} dimensions"
    raise ValueError(f"{where} ({cls.__name__}): needs {expected}, got shape {shape[1:]}")


def _output_shape(layer: Layer, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """``layer.output_shape(shape)``, refused when an axis would be empty (the input is too small)."""
    try:
        out = tuple(int(s) for s in layer.output_shape(shape))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} ({type(layer).__name__}): {exc}") from None
    if min(out[1:], default=1) < 1:
        raise ValueError(
            f"{where} ({type(layer).__name__}): its input {shape[1:]} is too small for {layer!r}; "
            f"the output would be {out[1:]}"
        )
    return out
